//! Why a lifecycle operation was refused or failed; the API maps each to its status code.

use crate::store::StoreError;
use crate::store::requests::State;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("unknown flow `{flow}` (flows: {known})")]
    UnknownFlow { flow: String, known: String },
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "Idempotency-Key `{key}` was used for request `{id}`, with another flow, requester or fields: a new request needs a new key"
    )]
    KeyReused { key: String, id: String },
    #[error("no request `{0}`")]
    NotFound(String),
    #[error("request `{id}` is {state}; only pending requests can be approved or denied")]
    WrongState { id: String, state: State },
    #[error("request `{0}` is being processed right now; try again")]
    Busy(String),
    #[error(
        "{approver} {how} `{id}` and may not approve it: flow `{flow}` does not set allow_self_approval = true"
    )]
    SelfApproval {
        id: String,
        approver: String,
        /// `requested` or `filed` ([`crate::serve::policy::party`]).
        how: &'static str,
        flow: String,
    },
    #[error("{0}")]
    NotApprover(String),
    #[error(
        "request `{id}` belongs to flow `{flow}`, which the config no longer has: no hook can run for it, so it cannot be approved; an admin may deny it"
    )]
    FlowRemoved { id: String, flow: String },
    #[error(
        "{approver} already approved `{id}`; it needs {required} approvals from different people ({count} so far)"
    )]
    AlreadyApproved {
        id: String,
        approver: String,
        count: usize,
        required: u32,
    },
    #[error("request `{id}` is {state}; only escalated requests can be revoked")]
    NotRevocable { id: String, state: State },
    /// `on_deescalate` failed: the request stays escalated and the removal is tried again.
    #[error(
        "access of request `{id}` was not removed: {error}; it stays escalated and warden tries again at {retry_at}"
    )]
    NotRemoved {
        id: String,
        error: String,
        retry_at: String,
    },
    /// Asked only for a replay (its sender filed as many new requests as it may) and the
    /// key names no earlier request.
    #[error("no earlier request under this Idempotency-Key, and no more new requests now")]
    NotAReplay,
    /// Its stored row does not read as a request (written by another version, or damaged).
    #[error(
        "request `{0}` is stored in a form this warden cannot read (its log says why); trying again will not help"
    )]
    Unreadable(String),
    #[error("warden's store failed (a host problem): {0}")]
    Store(StoreError),
}

impl From<StoreError> for LifecycleError {
    /// A write under a claim another replica took over is that replica's work in progress,
    /// as a claim refused at the start would have been (409), not a failing store.
    fn from(error: StoreError) -> Self {
        match error.claim_lost() {
            Some(id) => Self::Busy(id.to_string()),
            None => Self::Store(error),
        }
    }
}
