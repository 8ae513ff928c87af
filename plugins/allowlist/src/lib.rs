//! Auto-approve requests from an allowlist; optionally deny requests without a reason.
//!
//! Flow vars:
//! - `auto_approve`: comma-separated emails whose requests are approved at once
//!   (case-insensitive).
//! - `require_reason`: `"true"` to deny requests whose `reason` field is missing or blank.
//!
//! Every other request goes to a human, as usual.

use warden_sdk::prelude::*;

struct Allowlist;

#[warden_sdk::plugin]
impl Plugin for Allowlist {
    fn on_request(event: &Event) -> Result<Decision> {
        let email = event.requester.email.trim();

        let allowlisted = event
            .var_or("auto_approve", "")
            .split(',')
            .map(str::trim)
            .any(|entry| !entry.is_empty() && entry.eq_ignore_ascii_case(email));
        if allowlisted {
            info!("{email} is on the allowlist: approving");
            return Ok(Decision::approve(format!(
                "Auto-approved: {email} is on the allowlist"
            )));
        }

        let reason_required = event.var("require_reason") == Some("true");
        let reason = event.text("reason").unwrap_or_default().trim();
        if reason_required && reason.is_empty() {
            info!("{email} gave no reason: denying");
            return Ok(Decision::deny("A reason is required"));
        }

        info!("{email} is not on the allowlist: a human decides");
        Ok(Decision::Continue)
    }
}
