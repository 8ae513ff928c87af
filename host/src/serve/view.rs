//! What the lifecycle takes in and shows: a new request as submitted, a request as the API
//! shows it, and as a hook sees it (its event).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::runtime::event::{EventInput, UserInput};
use crate::runtime::hooks::{HookName, step_name};
use crate::store::requests::{HistoryEntry, RequestRecord, State, rfc3339};

pub struct Submission {
    pub flow: String,
    pub requester: UserInput,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The API user who sent it; idempotency keys are per sender.
    pub created_by: String,
    pub idempotency_key: Option<String>,
    /// Its sender may file no new request now: it is answered only if it is a replay of
    /// one filed before under its key ([`LifecycleError::NotAReplay`] otherwise).
    ///
    /// [`LifecycleError::NotAReplay`]: super::lifecycle::LifecycleError::NotAReplay
    pub replay_only: bool,
}

pub struct Submitted {
    pub request: RequestView,
    /// The idempotency key was seen before: this is the earlier request, nothing new ran.
    pub replayed: bool,
}

/// A request as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub id: String,
    pub flow: String,
    pub state: State,
    pub decision: String,
    pub reason: Option<String>,
    pub requester: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Who filed it: its requester, or an admin acting for them.
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<serde_json::Value>>,
}

impl RequestView {
    pub(super) fn new(rec: RequestRecord, history: Option<Vec<HistoryEntry>>) -> Self {
        Self {
            id: rec.id,
            flow: rec.flow,
            state: rec.state,
            decision: rec.decision,
            // A human's decision without a reason stores an empty one (its own, in place
            // of what the request said before): none.
            reason: rec.reason.filter(|r| !r.is_empty()),
            requester: rec.requester,
            fields: rec.fields,
            created_by: rec.created_by,
            created_at: rfc3339(rec.created_at),
            updated_at: rfc3339(rec.updated_at),
            duration_seconds: rec.duration.map(|d| d.as_secs()),
            expires_at: rec.expires_at.map(rfc3339),
            history: history.map(|entries| {
                entries
                    .into_iter()
                    .map(|entry| {
                        let mut json = serde_json::to_value(&entry).expect("entries serialize");
                        json["at"] = rfc3339(entry.at).into();
                        json
                    })
                    .collect()
            }),
        }
    }
}

/// The requester as stored with the request, as a JSON user, so the hooks after the request
/// step see the user the request step saw.
pub(super) fn profile(user: &UserInput) -> String {
    serde_json::json!({
        "email": user.email.trim(),
        "username": user.username,
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
    })
    .to_string()
}

/// A request's requester: as submitted, or by email alone for a request stored before
/// warden kept the whole user (or whose stored user no longer reads).
pub(super) fn requester_of(rec: &RequestRecord) -> UserInput {
    rec.requester_profile
        .as_deref()
        .and_then(|text| serde_json::from_str::<UserInput>(text).ok())
        .filter(|u| u.email.trim().eq_ignore_ascii_case(&rec.requester))
        .unwrap_or_else(|| user(&rec.requester))
}

/// A user known by email only.
pub(super) fn user(email: &str) -> UserInput {
    UserInput {
        email: email.to_string(),
        username: None,
        id: None,
        first_name: None,
        last_name: None,
    }
}

/// What `hook` is told: who acts, for whom, and the request's fields.
pub(super) fn event(
    acting: &UserInput,
    requester: &UserInput,
    id: Option<&str>,
    fields: &serde_json::Map<String, serde_json::Value>,
    hook: HookName,
) -> EventInput {
    EventInput {
        id: id.map(str::to_string),
        name: Some(step_name(hook.step()).to_string()),
        timestamp: None,
        user: acting.clone(),
        requester: Some(requester.clone()),
        fields: fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::requests::State;

    fn record(profile: Option<&str>) -> RequestRecord {
        RequestRecord {
            id: "r1".into(),
            flow: "f".into(),
            requester: "alice@example.com".into(),
            fields: serde_json::Map::new(),
            state: State::Pending,
            decision: "continue".into(),
            reason: None,
            created_by: "alice@example.com".into(),
            duration: None,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            requester_profile: profile.map(str::to_string),
        }
    }

    #[test]
    fn the_requester_is_the_user_submitted_or_else_the_email_alone() {
        let submitted = UserInput {
            email: " Alice@example.com ".into(),
            username: Some("alice".into()),
            id: Some("U1".into()),
            first_name: Some("Alice".into()),
            last_name: None,
        };
        let back = requester_of(&record(Some(&profile(&submitted))));
        assert_eq!(
            (
                back.email.as_str(),
                back.username.as_deref(),
                back.id.as_deref()
            ),
            ("Alice@example.com", Some("alice"), Some("U1"))
        );
        assert_eq!(back.first_name.as_deref(), Some("Alice"));
        // Stored before warden kept the user, unreadable, or someone else's: email only.
        for stored in [
            None,
            Some("not json"),
            Some(r#"{"email":"mallory@example.com","username":"m"}"#),
        ] {
            let only = requester_of(&record(stored));
            assert_eq!(only.email, "alice@example.com");
            assert_eq!(only.username, None, "{stored:?}");
        }
    }
}
