//! The access-request lifecycle, independent of HTTP: request → (approve | deny) → escalate
//! → deescalate when the request's `duration` runs out.
//!
//! Each step runs the plugin's `on_<step>` hook first (a decision it may make replaces the
//! step's default; `continue` and `ignore` keep it), then the default transition, then
//! `after_<step>` (recorded, never acted on). A hook that fails is recorded and counted,
//! and the request takes the default path, which for a new request is to a human.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Warden;
use crate::config::{DURATION_FIELD, FieldType, Flow};
use crate::runtime::event::{EventInput, UserInput};
use crate::runtime::hooks::{Decision, HookName, step_name};
use crate::store::StoreError;

use super::metrics::{Metrics, outcome_label};
use crate::store::requests::{
    HistoryEntry, HistoryEvent, NewRequest, RequestRecord, Requests, State, Transition, now_ms,
    rfc3339,
};

/// Longest access a request may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest the expiry sleeper waits before looking at the store again.
const EXPIRY_POLL: Duration = Duration::from_secs(30);
/// Who the history names when warden itself moved a request.
const WARDEN: &str = "warden";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("unknown flow `{flow}` (flows: {known})")]
    UnknownFlow { flow: String, known: String },
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no request `{0}`")]
    NotFound(String),
    #[error("request `{id}` is {state}; only pending requests can be approved or denied")]
    WrongState { id: String, state: State },
    #[error("request `{0}` is being processed right now; try again")]
    Busy(String),
    #[error(
        "{approver} requested `{id}` and may not approve it: flow `{flow}` does not set allow_self_approval = true"
    )]
    SelfApproval {
        id: String,
        approver: String,
        flow: String,
    },
    #[error("warden's store failed (a host problem): {0}")]
    Store(#[from] StoreError),
}

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
    fn new(rec: RequestRecord, history: Option<Vec<HistoryEntry>>) -> Self {
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

/// Which way a request is decided, by its plugin or a human, and why.
enum Verdict {
    Approve(Option<String>),
    Deny(Option<String>),
}

impl Verdict {
    fn on_hook(&self) -> HookName {
        match self {
            Self::Approve(_) => HookName::OnApprove,
            Self::Deny(_) => HookName::OnDeny,
        }
    }

    fn after_hook(&self) -> HookName {
        match self {
            Self::Approve(_) => HookName::AfterApprove,
            Self::Deny(_) => HookName::AfterDeny,
        }
    }

    fn state(&self) -> State {
        match self {
            Self::Approve(_) => State::Approved,
            Self::Deny(_) => State::Denied,
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Self::Approve(reason) | Self::Deny(reason) => reason.as_deref(),
        }
    }

    /// The decision stored, and the name of its step.
    fn label(&self) -> &'static str {
        match self {
            Self::Approve(_) => "approve",
            Self::Deny(_) => "deny",
        }
    }
}

/// What one hook run means for the request.
struct HookOutcome {
    decision: Decision,
    /// Why the hook failed, when it did: the request took the default path.
    failure: Option<String>,
}

/// Marks a request as being worked on; another step on it is refused until this drops.
struct Claim {
    busy: Arc<Mutex<HashSet<String>>>,
    requests: Requests,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Operations flush their hook entries before answering; this catches those that
        // stopped early on an error, so no hook run goes unrecorded.
        if let Err(e) = self.requests.flush_now(&self.id) {
            tracing::error!(request = %self.id, "cannot record hook runs: {e}");
        }
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

pub struct Lifecycle {
    runtime: Arc<ArcSwap<Warden>>,
    requests: Requests,
    metrics: Arc<Metrics>,
    busy: Arc<Mutex<HashSet<String>>>,
    expiry_changed: Notify,
}

impl Lifecycle {
    pub fn new(runtime: Arc<ArcSwap<Warden>>, requests: Requests, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            requests,
            metrics,
            busy: Arc::default(),
            expiry_changed: Notify::new(),
        }
    }

    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    fn claim(&self, id: &str) -> Result<Claim, LifecycleError> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id.to_string()) {
            return Err(LifecycleError::Busy(id.to_string()));
        }
        Ok(Claim {
            busy: self.busy.clone(),
            requests: self.requests.clone(),
            id: id.to_string(),
        })
    }

    fn record(&self, id: &str) -> Result<RequestRecord, LifecycleError> {
        self.requests
            .get(id)?
            .ok_or_else(|| LifecycleError::NotFound(id.to_string()))
    }

    pub fn view(&self, id: &str) -> Result<RequestView, LifecycleError> {
        let rec = self.record(id)?;
        let history = self.requests.history(id)?;
        Ok(RequestView::new(rec, Some(history)))
    }

    /// Writes what the operation left waiting and returns the request as it now stands.
    async fn finish(&self, id: &str) -> Result<RequestView, LifecycleError> {
        let (rec, history) = self
            .requests
            .finish(id)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id.to_string()))?;
        Ok(RequestView::new(rec, Some(history)))
    }

    pub fn list(
        &self,
        state: Option<State>,
        requester: Option<&str>,
    ) -> Result<Vec<RequestView>, LifecycleError> {
        Ok(self
            .requests
            .list(state, requester)?
            .into_iter()
            .map(|rec| RequestView::new(rec, None))
            .collect())
    }

    /// Stores a new request and runs its request step (and, when the plugin approves or
    /// denies it, the steps that follow).
    pub async fn submit(&self, submission: Submission) -> Result<Submitted, LifecycleError> {
        let warden = self.runtime.load_full();
        let flow = warden
            .config()
            .flow(&submission.flow)
            .cloned()
            .ok_or_else(|| LifecycleError::UnknownFlow {
                flow: submission.flow.clone(),
                known: warden
                    .config()
                    .flows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let fields = validate_fields(&flow, submission.fields)?;
        let duration = fields
            .get(DURATION_FIELD)
            .and_then(|v| v["seconds"].as_u64())
            .map(Duration::from_secs);
        let requester = submission.requester;
        // Emails and field values as hooks will see them; a problem here is the caller's.
        event(&requester, &requester, None, &fields, HookName::OnRequest)
            .to_wit(&flow, HookName::OnRequest)
            .map_err(|e| LifecycleError::Invalid(e.0))?;

        let id = new_request_id();
        let _claim = self.claim(&id)?;
        let inserted = self
            .requests
            .insert(&NewRequest {
                id: &id,
                flow: &flow.name,
                requester: requester.email.trim(),
                fields: &fields,
                created_by: &submission.created_by,
                idempotency_key: submission.idempotency_key.as_deref(),
                duration,
            })
            .await?;
        let rec = match inserted {
            Ok(rec) => rec,
            Err(earlier) => {
                return Ok(Submitted {
                    request: self.view(&earlier)?,
                    replayed: true,
                });
            }
        };
        self.request_step(&warden, &rec, &requester).await?;
        Ok(Submitted {
            request: self.finish(&id).await?,
            replayed: false,
        })
    }

    async fn request_step(
        &self,
        warden: &Warden,
        rec: &RequestRecord,
        requester: &UserInput,
    ) -> Result<(), LifecycleError> {
        let plugin = format!("flow `{}` plugin", rec.flow);
        let on = self
            .hook(warden, rec, HookName::OnRequest, requester)
            .await?;
        let verdict = match on.decision {
            Decision::Approve { reason } => Verdict::Approve(Some(
                reason.unwrap_or_else(|| "approved by the flow's plugin".into()),
            )),
            Decision::Deny { reason } => Verdict::Deny(Some(
                reason.unwrap_or_else(|| "denied by the flow's plugin".into()),
            )),
            Decision::Continue | Decision::Ignore { .. } => {
                let reason = match (&on.failure, on.decision) {
                    (Some(failure), _) => format!("{failure}; failing closed: a human decides"),
                    (None, Decision::Ignore { message: Some(m) }) => m,
                    _ => "awaiting a human".to_string(),
                };
                self.requests.defer(
                    &rec.id,
                    &Transition {
                        from: &[State::Requested],
                        to: State::Pending,
                        decision: "continue",
                        reason: Some(&reason),
                        actor: WARDEN,
                        step: "request",
                        expires_at: None,
                    },
                );
                self.hook(warden, rec, HookName::AfterRequest, requester)
                    .await?;
                return Ok(());
            }
        };
        self.hook(warden, rec, HookName::AfterRequest, requester)
            .await?;
        self.decide_step(
            warden,
            rec,
            requester,
            &plugin,
            &[State::Requested],
            verdict,
        )
        .await
    }

    /// A human approves a pending request.
    pub async fn approve(
        &self,
        id: &str,
        approver: UserInput,
        reason: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        self.human_decides(id, approver, Verdict::Approve(reason))
            .await
    }

    /// A human denies a pending request.
    pub async fn deny(
        &self,
        id: &str,
        approver: UserInput,
        reason: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        self.human_decides(id, approver, Verdict::Deny(reason))
            .await
    }

    async fn human_decides(
        &self,
        id: &str,
        approver: UserInput,
        verdict: Verdict,
    ) -> Result<RequestView, LifecycleError> {
        // Hooks could not be told who decided; refused before anything is recorded.
        approver
            .check("approver")
            .map_err(|e| LifecycleError::Invalid(e.0))?;
        let _claim = self.claim(id)?;
        let rec = self.pending(id)?;
        let warden = self.runtime.load_full();
        let approver_email = approver.email.trim().to_string();
        if matches!(verdict, Verdict::Approve(_)) {
            let self_approval = approver_email.eq_ignore_ascii_case(&rec.requester);
            let allowed = warden
                .config()
                .flow(&rec.flow)
                .is_some_and(|f| f.allow_self_approval);
            if self_approval && !allowed {
                self.requests.audit(
                    &approver_email,
                    "approve-refused",
                    Some(id),
                    &serde_json::json!({ "why": "self-approval" }),
                )?;
                return Err(LifecycleError::SelfApproval {
                    id: id.to_string(),
                    approver: approver_email,
                    flow: rec.flow,
                });
            }
        }
        self.decide_step(
            &warden,
            &rec,
            &approver,
            &approver_email,
            &[State::Pending],
            verdict,
        )
        .await?;
        self.finish(id).await
    }

    fn pending(&self, id: &str) -> Result<RequestRecord, LifecycleError> {
        let rec = self.record(id)?;
        if rec.state != State::Pending {
            return Err(LifecycleError::WrongState {
                id: id.to_string(),
                state: rec.state,
            });
        }
        Ok(rec)
    }

    fn moved(&self, rec: &RequestRecord) -> LifecycleError {
        match self.requests.get(&rec.id) {
            Ok(Some(now)) => LifecycleError::WrongState {
                id: rec.id.clone(),
                state: now.state,
            },
            Ok(None) => LifecycleError::NotFound(rec.id.clone()),
            Err(e) => e.into(),
        }
    }

    /// The approve or deny step: its `on_` hook, the transition, its `after_` hook; an
    /// approval then escalates.
    async fn decide_step(
        &self,
        warden: &Warden,
        rec: &RequestRecord,
        user: &UserInput,
        actor: &str,
        from: &[State],
        verdict: Verdict,
    ) -> Result<(), LifecycleError> {
        // on_approve and on_deny may only continue or ignore; anything else is a failure,
        // already recorded, and the decision stands.
        self.hook(warden, rec, verdict.on_hook(), user).await?;
        // Written before the next hook that runs, or with the answer. `from` is where the
        // request stood when this operation claimed it, so it still applies.
        self.requests.defer(
            &rec.id,
            &Transition {
                from,
                to: verdict.state(),
                decision: verdict.label(),
                reason: verdict.reason(),
                actor,
                step: verdict.label(),
                expires_at: None,
            },
        );
        self.hook(warden, rec, verdict.after_hook(), user).await?;
        match verdict {
            Verdict::Approve(_) => self.escalate_step(warden, rec, user).await,
            Verdict::Deny(_) => Ok(()),
        }
    }

    async fn escalate_step(
        &self,
        warden: &Warden,
        rec: &RequestRecord,
        user: &UserInput,
    ) -> Result<(), LifecycleError> {
        self.hook(warden, rec, HookName::OnEscalate, user).await?;
        let expires_at = rec.duration.map(|d| now_ms() + d.as_millis() as i64);
        let escalated = Transition {
            from: &[State::Approved],
            to: State::Escalated,
            decision: "approve",
            reason: None,
            actor: WARDEN,
            step: "escalate",
            expires_at,
        };
        if expires_at.is_some() {
            // Written now, so the expiry timer woken here finds it.
            if !self.requests.transition(&rec.id, &escalated).await? {
                return Err(self.moved(rec));
            }
            self.expiry_changed.notify_one();
        } else {
            self.requests.defer(&rec.id, &escalated);
        }
        self.hook(warden, rec, HookName::AfterEscalate, user)
            .await?;
        Ok(())
    }

    /// Removes access whose time has run out. Doing it twice does nothing the second time.
    pub async fn deescalate(&self, id: &str) -> Result<(), LifecycleError> {
        let _claim = match self.claim(id) {
            Ok(claim) => claim,
            Err(LifecycleError::Busy(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = self.record(id)?;
        if rec.state != State::Escalated {
            return Ok(());
        }
        let warden = self.runtime.load_full();
        let requester = user(&rec.requester);
        self.hook(&warden, &rec, HookName::OnDeescalate, &requester)
            .await?;
        self.requests.defer(
            id,
            &Transition {
                from: &[State::Escalated],
                to: State::Deescalated,
                decision: &rec.decision,
                reason: None,
                actor: WARDEN,
                step: "deescalate",
                expires_at: None,
            },
        );
        self.hook(&warden, &rec, HookName::AfterDeescalate, &requester)
            .await?;
        self.requests.flush(id).await?;
        Ok(())
    }

    /// After a restart: requests whose request step was cut short go to a human (their
    /// hook's answer was never recorded); approved requests that were not yet escalated are
    /// escalated. Returns how many requests were touched.
    pub async fn recover(&self) -> Result<usize, LifecycleError> {
        let mut touched = 0;
        for id in self.requests.ids_in(State::Requested)? {
            let _claim = self.claim(&id)?;
            self.requests.transition(
                &id,
                &Transition {
                    from: &[State::Requested],
                    to: State::Pending,
                    decision: "continue",
                    reason: Some(
                        "warden stopped while this request's hooks ran; failing closed: a human decides",
                    ),
                    actor: WARDEN,
                    step: "request",
                    expires_at: None,
                },
            )
            .await?;
            touched += 1;
        }
        let warden = self.runtime.load_full();
        for id in self.requests.ids_in(State::Approved)? {
            let _claim = self.claim(&id)?;
            let rec = self.record(&id)?;
            let requester = user(&rec.requester);
            self.escalate_step(&warden, &rec, &requester).await?;
            self.requests.flush(&id).await?;
            touched += 1;
        }
        Ok(touched)
    }

    /// Deescalates requests as their access runs out, until `stop`: one sleeper over the
    /// earliest expiry in the store, so timers survive restarts (overdue ones fire at once).
    pub async fn expire_loop(self: Arc<Self>, tasks: TaskTracker, stop: CancellationToken) {
        loop {
            let now = now_ms();
            match self.requests.expired(now) {
                Ok(ids) => {
                    for id in ids {
                        let lifecycle = self.clone();
                        tasks.spawn(async move {
                            if let Err(e) = lifecycle.deescalate(&id).await {
                                tracing::error!(request = %id, "deescalation failed: {e}");
                            }
                        });
                    }
                }
                Err(e) => tracing::error!("cannot read expiring requests: {e}"),
            }
            let wait = match self.requests.next_expiry(now) {
                Ok(Some(at)) => Duration::from_millis((at - now).max(0) as u64).min(EXPIRY_POLL),
                Ok(None) => EXPIRY_POLL,
                Err(e) => {
                    tracing::error!("cannot read the next expiry: {e}");
                    EXPIRY_POLL
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.expiry_changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs one hook, records it in the request's history and the metrics, and says what it
    /// means for the request.
    async fn hook(
        &self,
        warden: &Warden,
        rec: &RequestRecord,
        hook: HookName,
        acting: &UserInput,
    ) -> Result<HookOutcome, LifecycleError> {
        // A hook sees the request as stored: deferred transitions are written before one
        // runs. Only a hook the plugin is known not to implement (it runs nothing) skips that.
        let absent = warden
            .implemented(&rec.flow)
            .is_some_and(|hooks| !hooks.contains(&hook));
        if !absent && self.requests.has_deferred(&rec.id) {
            self.requests.flush(&rec.id).await?;
        }
        let requester = user(&rec.requester);
        let input = event(acting, &requester, Some(&rec.id), &rec.fields, hook);
        let step = step_name(hook.step()).to_string();
        let (outcome, event) = match warden.run_hook(&rec.flow, hook, &input).await {
            Ok(report) => {
                self.metrics.observe_hook(&report);
                let failure = report.outcome.as_ref().err().map(|f| {
                    let blame = match f.blame() {
                        crate::Blame::Plugin => "plugin",
                        crate::Blame::Host => "host",
                    };
                    (f.to_string(), blame)
                });
                let reason = match &report.outcome {
                    Ok(Decision::Approve { reason } | Decision::Deny { reason }) => reason.clone(),
                    Ok(Decision::Ignore { message }) => message.clone(),
                    _ => None,
                };
                if let Some((error, blame)) = &failure {
                    tracing::warn!(request = %rec.id, flow = %rec.flow, %hook, blame, "hook failed, failing closed: {error}");
                } else if report.ran {
                    tracing::info!(request = %rec.id, flow = %rec.flow, %hook, outcome = outcome_label(&report), elapsed_ms = report.elapsed.as_secs_f64() * 1e3, "hook ran");
                }
                let event = HistoryEvent::Hook {
                    hook: hook.to_string(),
                    ran: report.ran,
                    outcome: outcome_label(&report).to_string(),
                    reason,
                    error: failure.as_ref().map(|(e, _)| e.clone()),
                    blame: failure.as_ref().map(|(_, b)| b.to_string()),
                    elapsed_ms: report.elapsed.as_secs_f64() * 1e3,
                    refusals: report.refusals.iter().map(ToString::to_string).collect(),
                };
                let outcome = HookOutcome {
                    decision: report.decision(),
                    failure: failure.map(|(e, _)| e),
                };
                (outcome, event)
            }
            // The flow is gone after a reload, or stored fields no longer fit: the host's
            // side; the request still takes the default path.
            Err(e) => {
                self.metrics.observe_unrunnable(&rec.flow, hook.as_str());
                let error = format!("flow `{}`, hook {hook}: host error: {e}", rec.flow);
                tracing::warn!(request = %rec.id, "{error}; failing closed");
                let event = HistoryEvent::Hook {
                    hook: hook.to_string(),
                    ran: false,
                    outcome: "failed".into(),
                    reason: None,
                    error: Some(error.clone()),
                    blame: Some("host".into()),
                    elapsed_ms: 0.0,
                    refusals: Vec::new(),
                };
                (
                    HookOutcome {
                        decision: Decision::Continue,
                        failure: Some(error),
                    },
                    event,
                )
            }
        };
        self.requests.note(
            &rec.id,
            HistoryEntry {
                at: now_ms(),
                step,
                event,
            },
        );
        Ok(outcome)
    }
}

fn user(email: &str) -> UserInput {
    UserInput {
        email: email.to_string(),
        username: None,
        id: None,
        first_name: None,
        last_name: None,
    }
}

fn event(
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

fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("req-{nanos:x}-{n:x}")
}

/// Checks `fields` against the flow's schema (when it declares one) and turns the
/// `duration` field into `{"seconds": N}`.
pub fn validate_fields(
    flow: &Flow,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, LifecycleError> {
    let invalid = |field: &str, message: String| LifecycleError::InvalidField {
        field: field.to_string(),
        message,
    };
    if !flow.fields.is_empty() {
        if let Some(name) = fields.keys().find(|k| !flow.fields.contains_key(*k)) {
            let known: Vec<&str> = flow.fields.keys().map(String::as_str).collect();
            return Err(invalid(
                name,
                format!(
                    "flow `{}` has no such field (fields: {})",
                    flow.name,
                    known.join(", ")
                ),
            ));
        }
        for (name, spec) in &flow.fields {
            let value = fields.get(name).filter(|v| !v.is_null());
            let blank = value
                .and_then(|v| v.as_str())
                .is_some_and(|s| s.trim().is_empty());
            match value {
                None if spec.required => return Err(invalid(name, "is required".into())),
                Some(_) if blank && spec.required => {
                    return Err(invalid(name, "is required and must not be blank".into()));
                }
                None => {
                    fields.remove(name);
                }
                Some(v) => {
                    let checked = check_type(spec.kind, v).map_err(|m| invalid(name, m))?;
                    fields.insert(name.clone(), checked);
                }
            }
        }
    }
    if let Some(v) = fields.get(DURATION_FIELD) {
        let checked = check_type(FieldType::Duration, v).map_err(|m| invalid(DURATION_FIELD, m))?;
        fields.insert(DURATION_FIELD.to_string(), checked);
    }
    Ok(fields)
}

fn check_type(kind: FieldType, value: &serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let ok = match kind {
        FieldType::String => value.is_string(),
        FieldType::Int => value.as_i64().is_some(),
        FieldType::Bool => value.is_boolean(),
        FieldType::List => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        FieldType::Duration => {
            let seconds = match value {
                Value::String(text) => humantime::parse_duration(text.trim())
                    .map_err(|e| format!("`{text}` is not a duration like \"30m\" or \"2h\": {e}"))?
                    .as_secs(),
                Value::Object(map) if map.len() == 1 && map.contains_key("seconds") => {
                    map["seconds"]
                        .as_u64()
                        .ok_or("`seconds` must be a whole number")?
                }
                _ => {
                    return Err(
                        "must be a duration: {\"seconds\": N} or a string like \"2h\"".into(),
                    );
                }
            };
            if seconds == 0 || seconds > MAX_DURATION.as_secs() {
                return Err(format!(
                    "must be between 1 second and {} days",
                    MAX_DURATION.as_secs() / 86400
                ));
            }
            return Ok(serde_json::json!({ "seconds": seconds }));
        }
    };
    if ok {
        Ok(value.clone())
    } else {
        let article = match kind {
            FieldType::Int => "an int (a whole number)",
            FieldType::Bool => "a bool",
            FieldType::List => "a list of strings",
            _ => "a string",
        };
        Err(format!("must be {article}"))
    }
}
