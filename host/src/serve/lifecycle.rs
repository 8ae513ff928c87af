//! The access-request lifecycle, independent of HTTP: request → (approve | deny | ignored)
//! → escalate → deescalate when the request's `duration` runs out or someone revokes it.
//!
//! Each step runs the plugin's `on_<step>` hook first (a decision it may make replaces the
//! step's default; `continue` keeps it), then the default transition, then `after_<step>`
//! (recorded, never acted on). `ignore` from `on_request` closes the request as `ignored`
//! (Sym's "take no action on this request": no human is asked); from a later `on_` hook it
//! is recorded and the step goes on, so a human's decision stands and removing access is
//! never skipped. A hook that fails is recorded and counted, and the request takes the
//! default path, which for a new request is to a human.
//!
//! Humans decide by the flow's approval policy ([`super::policy`]): only its `approvers`,
//! and with `approvals_required` of 2 or more, each approval is recorded and the request
//! stays pending until that many different people approved; one deny ends it.
//!
//! Every operation reads the same way: claim the request ([`super::claim`]: the claim holds
//! the operation's writes until they can share one commit), run the step's hooks and
//! transitions, finish (write what waits, and answer with the request as committed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::Warden;
use crate::config::DURATION_FIELD;
use crate::runtime::event::UserInput;
use crate::runtime::hooks::{Decision, HookName, step_name};
use crate::store::StoreError;
use crate::store::backend::Backend;
use crate::store::requests::{
    HistoryEntry, HistoryEvent, NewRequest, RequestRecord, State, Transition, now_ms,
};

use super::claim::{Claim, Claims};
pub use super::fields::{MAX_DURATION, validate_fields};
use super::metrics::{Metrics, outcome_label};
use super::notify::Outbox;
pub use super::view::{RequestView, Submission, Submitted};
use super::view::{event, profile, requester_of};

mod decide;
mod error;
mod list;
mod resume;
mod revoke;

pub use error::LifecycleError;

/// Longest the expiry sleeper waits before looking at the store again.
const EXPIRY_POLL: Duration = Duration::from_secs(30);
/// Who the history names when warden itself moved a request.
const WARDEN: &str = "warden";

/// Which way a request is decided, by its plugin or a human, and why.
/// Longest reason a human gives with a decision or a revoke (it goes into the history, the
/// audit log and every notification).
pub const MAX_REASON_BYTES: usize = 2000;

/// A person's reason for a decision or a revoke: at most [`MAX_REASON_BYTES`], and no NUL
/// (which PostgreSQL's text cannot hold: the change would fail when written).
pub(crate) fn check_reason(reason: Option<&str>) -> Result<(), LifecycleError> {
    match reason {
        Some(r) if r.len() > MAX_REASON_BYTES => Err(LifecycleError::Invalid(format!(
            "`reason` is longer than {MAX_REASON_BYTES} bytes"
        ))),
        Some(r) if r.contains('\0') => Err(LifecycleError::Invalid(
            "`reason` holds a NUL character".into(),
        )),
        _ => Ok(()),
    }
}

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

pub struct Lifecycle {
    warden: Arc<ArcSwap<Warden>>,
    store: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    claims: Arc<Claims>,
    expiry_changed: Notify,
    outbox: Arc<Outbox>,
    /// When requests cut short elsewhere were last looked for (a shared store only).
    last_resume: std::sync::Mutex<std::time::Instant>,
    /// Refused decisions audited per caller, per minute.
    audited_refusals: super::throttle::PerUser,
}

/// Refused decisions audited for one caller in a minute (per replica).
pub const AUDITED_REFUSALS_PER_MINUTE: u32 = 20;

impl Lifecycle {
    pub fn new(
        warden: Arc<ArcSwap<Warden>>,
        store: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let outbox = Outbox::new(warden.clone());
        Self {
            warden,
            claims: Claims::with_outbox(store.clone(), Some(outbox.clone())),
            store,
            metrics,
            expiry_changed: Notify::new(),
            outbox,
            last_resume: std::sync::Mutex::new(std::time::Instant::now()),
            audited_refusals: super::throttle::PerUser::new(
                AUDITED_REFUSALS_PER_MINUTE,
                std::time::Duration::from_secs(60),
            ),
        }
    }

    /// Where the claims' commits leave notifications for `serve::notify` to deliver.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn store(&self) -> &Arc<dyn Backend> {
        &self.store
    }

    /// Claims a request about to be stored.
    fn claim(&self, id: &str) -> Result<Claim, LifecycleError> {
        self.claims
            .claim(id)
            .ok_or_else(|| LifecycleError::Busy(id.to_string()))
    }

    /// Claims a stored request, here and (replicas sharing the store) in the store.
    async fn claim_stored(&self, id: &str) -> Result<Claim, LifecycleError> {
        self.claims
            .claim_stored(id)
            .await?
            .ok_or_else(|| LifecycleError::Busy(id.to_string()))
    }

    async fn record(&self, id: &str) -> Result<RequestRecord, LifecycleError> {
        if id.contains('\0') {
            return Err(LifecycleError::NotFound(id.to_string()));
        }
        match self.store.request(id).await {
            Ok(found) => found.ok_or_else(|| LifecycleError::NotFound(id.to_string())),
            Err(e) => Err(self.reading_failed(id, e).await),
        }
    }

    pub async fn view(&self, id: &str) -> Result<RequestView, LifecycleError> {
        // No request id holds a NUL, and PostgreSQL's text cannot be asked about one.
        if id.contains('\0') {
            return Err(LifecycleError::NotFound(id.to_string()));
        }
        let (rec, history) = match self.store.request_with_history(id).await {
            Ok(found) => found.ok_or_else(|| LifecycleError::NotFound(id.to_string()))?,
            Err(e) => return Err(self.reading_failed(id, e).await),
        };
        Ok(RequestView::new(rec, Some(history)))
    }

    /// Why request `id` could not be read: the store failing (worth trying again), or, when
    /// the store answers all the same, its row (written by another version, or damaged),
    /// which no retry reads, named in the log by the request's id.
    async fn reading_failed(&self, id: &str, error: StoreError) -> LifecycleError {
        if error.claim_lost().is_some() || self.store.ping().await.is_err() {
            return error.into();
        }
        tracing::error!(request = %id, "request `{id}` cannot be read: {error}");
        LifecycleError::Unreadable(id.to_string())
    }

    /// Writes what the operation left waiting in its claim, releases the request and
    /// returns it as it now stands.
    async fn finish(&self, claim: Claim) -> Result<RequestView, LifecycleError> {
        let id = claim.id().to_string();
        let (rec, history) = claim.finish().await?.ok_or(LifecycleError::NotFound(id))?;
        Ok(RequestView::new(rec, Some(history)))
    }

    /// Stores a new request and runs its request step (and, when the plugin approves or
    /// denies it, the steps that follow).
    pub async fn submit(&self, submission: Submission) -> Result<Submitted, LifecycleError> {
        let warden = self.warden.load_full();
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

        let key = submission.idempotency_key.clone();
        if submission.replay_only {
            let earlier = match &key {
                Some(key) => {
                    self.store
                        .request_for_key(&submission.created_by, key)
                        .await?
                }
                None => None,
            };
            let earlier = earlier.ok_or(LifecycleError::NotAReplay)?;
            return self
                .replay(earlier, &flow.name, &requester, &fields, key)
                .await;
        }
        let id = new_request_id();
        let mut claim = self.claim(&id)?;
        let inserted = claim
            .insert(NewRequest {
                id,
                flow: flow.name.clone(),
                requester: requester.email.trim().to_string(),
                fields: fields.clone(),
                created_by: submission.created_by,
                idempotency_key: submission.idempotency_key,
                duration,
                requester_profile: Some(profile(&requester)),
                claim: None,
            })
            .await?;
        let rec = match inserted {
            Ok(rec) => rec,
            Err(earlier) => {
                return self
                    .replay(earlier, &flow.name, &requester, &fields, key)
                    .await;
            }
        };
        self.request_step(&warden, &mut claim, &rec, &requester)
            .await?;
        Ok(Submitted {
            request: self.finish(claim).await?,
            replayed: false,
        })
    }

    /// The request `earlier`, filed before under the key a submission sent again: a retry
    /// asks for the same request; another request under a used key is a mistake, not a
    /// retry, and is told so rather than answered with the first. The same requester is the
    /// same person as hooks see them: their username, id and names too, not only their email.
    async fn replay(
        &self,
        earlier: String,
        flow: &str,
        requester: &UserInput,
        fields: &serde_json::Map<String, serde_json::Value>,
        key: Option<String>,
    ) -> Result<Submitted, LifecycleError> {
        let request = self.view(&earlier).await?;
        let stored = requester_of(&self.record(&earlier).await?);
        let same_person = |a: &UserInput, b: &UserInput| {
            a.email.trim().eq_ignore_ascii_case(b.email.trim())
                && (&a.username, &a.id, &a.first_name, &a.last_name)
                    == (&b.username, &b.id, &b.first_name, &b.last_name)
        };
        let same =
            request.flow == flow && same_person(&stored, requester) && &request.fields == fields;
        if !same {
            return Err(LifecycleError::KeyReused {
                key: key.unwrap_or_default(),
                id: earlier,
            });
        }
        Ok(Submitted {
            request,
            replayed: true,
        })
    }

    async fn request_step(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        requester: &UserInput,
    ) -> Result<(), LifecycleError> {
        let plugin = format!("flow `{}` plugin", rec.flow);
        let on = self
            .hook(warden, claim, rec, HookName::OnRequest, requester)
            .await?;
        let verdict = match on.decision {
            Decision::Approve { reason } => Verdict::Approve(Some(
                reason.unwrap_or_else(|| "approved by the flow's plugin".into()),
            )),
            Decision::Deny { reason } => Verdict::Deny(Some(
                reason.unwrap_or_else(|| "denied by the flow's plugin".into()),
            )),
            Decision::Continue | Decision::Ignore { .. } => {
                // A failed hook's decision is `continue`, so an ignore here is the plugin's.
                let ignored = matches!(on.decision, Decision::Ignore { .. });
                let reason = match (&on.failure, on.decision) {
                    (Some(failure), _) => format!("{failure}; failing closed: a human decides"),
                    (None, Decision::Ignore { message }) => {
                        message.unwrap_or_else(|| "ignored by the flow's plugin".into())
                    }
                    _ => "awaiting a human".to_string(),
                };
                let (to, decision) = if ignored {
                    (State::Ignored, "ignore")
                } else {
                    (State::Pending, "continue")
                };
                claim.defer(Transition {
                    from: &[State::Requested],
                    to,
                    decision: decision.into(),
                    reason: Some(reason),
                    actor: WARDEN.into(),
                    step: "request",
                    expires_at: None,
                });
                self.hook(warden, claim, rec, HookName::AfterRequest, requester)
                    .await?;
                return Ok(());
            }
        };
        self.hook(warden, claim, rec, HookName::AfterRequest, requester)
            .await?;
        self.decide_step(
            warden,
            claim,
            rec,
            requester,
            &plugin,
            &[State::Requested],
            verdict,
        )
        .await
    }

    async fn pending(&self, id: &str) -> Result<RequestRecord, LifecycleError> {
        let rec = self.record(id).await?;
        if rec.state != State::Pending {
            return Err(LifecycleError::WrongState {
                id: id.to_string(),
                state: rec.state,
            });
        }
        Ok(rec)
    }

    async fn moved(&self, rec: &RequestRecord) -> LifecycleError {
        match self.store.request(&rec.id).await {
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
    #[allow(clippy::too_many_arguments)]
    async fn decide_step(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        user: &UserInput,
        actor: &str,
        from: &'static [State],
        verdict: Verdict,
    ) -> Result<(), LifecycleError> {
        // on_approve and on_deny may only continue or ignore; anything else is a failure,
        // already recorded, and the decision stands.
        self.hook(warden, claim, rec, verdict.on_hook(), user)
            .await?;
        // This operation runs on the config it began with; a reload may have removed the
        // flow since (its check saw this request before it was approved). Granted now, the
        // access could never be removed: no hook of the flow can run any more.
        if matches!(verdict, Verdict::Approve(_))
            && self.warden.load().config().flow(&rec.flow).is_none()
        {
            return Err(LifecycleError::FlowRemoved {
                id: rec.id.clone(),
                flow: rec.flow.clone(),
            });
        }
        // Written before the next hook that runs, or with the answer. `from` is where the
        // request stood when this operation claimed it, so it still applies.
        // A human's decision is shown with their reason, none included: left out, the
        // request kept the reason before it ("awaiting a human", or the text of a plugin
        // that failed), shown as theirs. (Empty is none: `RequestView` shows it so.)
        let reason = match verdict.reason() {
            Some(reason) => Some(reason.to_string()),
            None if from == [State::Pending] => Some(String::new()),
            None => None,
        };
        claim.defer(Transition {
            from,
            to: verdict.state(),
            decision: verdict.label().into(),
            reason,
            actor: actor.into(),
            step: verdict.label(),
            expires_at: None,
        });
        self.hook(warden, claim, rec, verdict.after_hook(), user)
            .await?;
        match verdict {
            Verdict::Approve(_) => self.escalate_step(warden, claim, rec, user).await,
            Verdict::Deny(_) => Ok(()),
        }
    }

    async fn escalate_step(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        user: &UserInput,
    ) -> Result<(), LifecycleError> {
        self.hook(warden, claim, rec, HookName::OnEscalate, user)
            .await?;
        // Timed from the grant, just made; for a request resumed already approved (its
        // operation cut short), from the approval: its on_escalate may have granted then,
        // before a stop, and a restart an hour later would otherwise add the hour.
        let now = now_ms();
        let granted_at = if rec.state == State::Approved {
            rec.updated_at.min(now)
        } else {
            now
        };
        let expires_at = rec.duration.map(|d| granted_at + d.as_millis() as i64);
        let escalated = Transition {
            from: &[State::Approved],
            to: State::Escalated,
            decision: "approve".into(),
            reason: None,
            actor: WARDEN.into(),
            step: "escalate",
            expires_at,
        };
        if expires_at.is_some() {
            // Written now, so the expiry timer woken here finds it.
            if !claim.transition(escalated).await? {
                return Err(self.moved(rec).await);
            }
            self.expiry_changed.notify_one();
        } else {
            claim.defer(escalated);
        }
        self.hook(warden, claim, rec, HookName::AfterEscalate, user)
            .await?;
        Ok(())
    }

    /// Runs one hook, records it in the request's history and the metrics, and says what it
    /// means for the request.
    async fn hook(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        hook: HookName,
        acting: &UserInput,
    ) -> Result<HookOutcome, LifecycleError> {
        let requester = requester_of(rec);
        let input = event(acting, &requester, Some(&rec.id), &rec.fields, hook);
        let step = step_name(hook.step()).to_string();
        let (outcome, event) = match claim.run_hook(warden, &rec.flow, hook, &input).await? {
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
                self.metrics.observe_unrunnable(&rec.flow, hook);
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
        claim.note(HistoryEntry {
            at: now_ms(),
            step,
            event,
        });
        Ok(outcome)
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
