//! The serve API's request bodies: a new request (parsed, its fields checked against each
//! flow, then turned into the event `on_request` gets, as `Lifecycle::submit` does) and an
//! approval or denial. Nothing panics; what passes the checks is stable under them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::serve::lifecycle::validate_fields;
use warden::serve::{DecisionBody, NewRequestBody, parse_body};
use warden::{EventInput, HookName};
use warden_fuzz::FIXTURE;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        new_request(body);
    } else if let Ok(decision) = parse_body::<DecisionBody>(body) {
        if let Some(approver) = decision.approver {
            let _ = approver.check("approver");
        }
    }
});

fn new_request(body: &[u8]) {
    let parsed: NewRequestBody = match parse_body(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            assert!(!e.trim().is_empty());
            return;
        }
    };
    let requester = parsed
        .requester
        .unwrap_or_else(|| warden::runtime::event::UserInput {
            email: "caller@example.com".into(),
            username: None,
            id: None,
            first_name: None,
            last_name: None,
        });
    for flow in FIXTURE.config.flows.values() {
        let Ok(fields) = validate_fields(flow, parsed.fields.clone()) else {
            continue;
        };
        // Stored fields are checked again as every later hook's event is built.
        let again = validate_fields(flow, fields.clone())
            .unwrap_or_else(|e| panic!("accepted fields refused on a second look: {e}"));
        assert_eq!(again, fields, "checking accepted fields changed them");
        let event = EventInput {
            id: None,
            name: Some("request".into()),
            timestamp: None,
            user: requester.clone(),
            requester: Some(requester.clone()),
            fields: fields.into_iter().collect(),
        };
        let _ = event.to_wit(flow, HookName::OnRequest);
    }
}
