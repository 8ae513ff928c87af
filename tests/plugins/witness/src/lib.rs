//! A plugin for warden's tests of the hooks after the request step: each says, in its
//! decision's reason (recorded in the request's history), who it was told acts and the
//! whole requester. `on_request` continues, or does what the flow var `action` says
//! (`ignore:<message>`, `approve:<reason>`); `on_deescalate` answers with `ignore`, which the
//! host must record and go on from (access is removed all the same), after sleeping when
//! the flow var `deescalate_action` is `sleep:<ms>`.

use warden_sdk::prelude::*;

struct Witness;

/// `acting=<email> requester=<email>|<username>|<id>|<first name>|<last name>`.
fn seen(event: &Event) -> String {
    let r = &event.requester;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "acting={} requester={}|{}|{}|{}|{}",
        event.user.email,
        r.email,
        r.username,
        or_dash(&r.id),
        or_dash(&r.first_name),
        or_dash(&r.last_name)
    )
}

#[warden_sdk::plugin]
impl Plugin for Witness {
    fn on_request(event: &Event) -> Result<Decision> {
        let action = event.var_or("action", "continue");
        let (verb, arg) = action.split_once(':').unwrap_or((action, ""));
        match verb {
            "ignore" => Ok(Decision::ignore(arg)),
            "approve" => Ok(Decision::approve(arg)),
            _ => Ok(Decision::Continue),
        }
    }

    fn after_approve(event: &Event) -> Result<Decision> {
        Ok(Decision::approve(seen(event)))
    }

    fn after_escalate(event: &Event) -> Result<Decision> {
        Ok(Decision::approve(seen(event)))
    }

    fn on_deescalate(event: &Event) -> Result<Decision> {
        // `deescalate_action = "sleep:<ms>"`: a hook that takes its time (an integration that
        // answers slowly), past the flow's timeout if it is shorter.
        if let Some(ms) = event
            .var("deescalate_action")
            .and_then(|a| a.strip_prefix("sleep:"))
        {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse()?));
        }
        Ok(Decision::ignore(seen(event)))
    }

    fn after_deescalate(event: &Event) -> Result<Decision> {
        Ok(Decision::approve(seen(event)))
    }
}
