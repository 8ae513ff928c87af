//! The event JSON `warden hook` reads (and `warden serve` builds): parsing and turning it into
//! what each hook receives never panics; a refusal says why.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::{EventInput, HookName};
use warden_fuzz::FIXTURE;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match EventInput::from_json(text) {
        Ok(input) => {
            for flow in FIXTURE.config.flows.values() {
                for hook in HookName::ALL {
                    if let Err(e) = input.to_wit(flow, hook) {
                        assert!(!e.0.trim().is_empty(), "an empty refusal");
                    }
                }
            }
        }
        Err(e) => assert!(!e.0.trim().is_empty(), "an empty refusal"),
    }
});
