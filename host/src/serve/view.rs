//! What the lifecycle takes in and answers with: a new request as submitted, and a request
//! as the API shows it.

use serde::Serialize;

use crate::runtime::event::UserInput;
use crate::store::requests::{HistoryEntry, RequestRecord, State, rfc3339};

pub struct Submission {
    pub flow: String,
    pub requester: UserInput,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The API user who sent it; idempotency keys are per sender.
    pub created_by: String,
    pub idempotency_key: Option<String>,
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
            reason: rec.reason,
            requester: rec.requester,
            fields: rec.fields,
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
