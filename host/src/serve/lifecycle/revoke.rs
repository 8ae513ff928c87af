//! Removing access: when its time runs out (the expiry sleeper) and when someone ends it
//! early (`POST /v1/requests/{id}/revoke`). Both are the deescalate step, its hooks
//! included; they differ in who the hooks are told acts and how the history says it.
//!
//! Access is recorded removed only when `on_deescalate` did not fail. When it failed (the
//! plugin's error, its deadline, a provider that did not answer, a plugin that did not
//! load) the request stays `escalated`, its end moved to when the removal is tried again
//! (30 s after the first failure, doubling, at most an hour apart), so the expiry sleeper
//! tries until it works; a revoke that failed so is answered as such, not as access ended.

use std::time::Duration;

use crate::Warden;
use crate::runtime::event::UserInput;
use crate::runtime::hooks::HookName;
use crate::store::requests::{HistoryEvent, RequestRecord, State, Transition, now_ms, rfc3339};

use super::super::claim::Claim;
use super::super::view::requester_of;
use super::{Lifecycle, LifecycleError, RequestView, WARDEN};

/// Who removes access, and how the history and the audit log say it.
struct Removal<'a> {
    /// Who the hooks are told acts.
    acting: &'a UserInput,
    /// Who the history names.
    actor: &'a str,
    /// `deescalate` when time ran out, `revoke` when someone ended it early.
    step: &'static str,
    reason: Option<String>,
}

impl Lifecycle {
    /// Removes access whose time has run out. Doing it twice does nothing the second time.
    /// `Ok(false)` when another operation, here or on another replica, has the request: it
    /// is to be tried again shortly.
    pub async fn deescalate(&self, id: &str) -> Result<bool, LifecycleError> {
        let mut claim = match self.claim_stored(id).await {
            Ok(claim) => claim,
            Err(LifecycleError::Busy(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let rec = self.record(id).await?;
        // Its end moved on since a sweep listed it (a removal failed meanwhile, and is put
        // off to its next try): not yet.
        if rec.state != State::Escalated || rec.expires_at.is_some_and(|at| at > now_ms()) {
            return Ok(true);
        }
        let warden = self.warden.load_full();
        let requester = requester_of(&rec);
        let removal = Removal {
            acting: &requester,
            actor: WARDEN,
            step: "deescalate",
            reason: None,
        };
        // A failure is in the history, and the removal tried again at its new end.
        let _ = self
            .deescalate_step(&warden, &mut claim, &rec, removal)
            .await?;
        claim.finish().await?;
        Ok(true)
    }

    /// Ends escalated access early (`POST /v1/requests/{id}/revoke`): the deescalate step
    /// runs with its hooks, told that `revoker` acts; the history and the audit log name
    /// them and `reason`. Who may revoke is the caller's check ([`super::policy`]).
    pub async fn revoke(
        &self,
        id: &str,
        revoker: UserInput,
        reason: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        revoker
            .check("revoker")
            .map_err(|e| LifecycleError::Invalid(e.0))?;
        super::check_reason(reason.as_deref())?;
        // Refused before the claim too: a caller revoking a request that is not escalated, over
        // and over, would otherwise keep it busy for its approvers.
        let escalated = async || -> Result<RequestRecord, LifecycleError> {
            let rec = self.record(id).await?;
            if rec.state != State::Escalated {
                return Err(LifecycleError::NotRevocable {
                    id: id.to_string(),
                    state: rec.state,
                });
            }
            Ok(rec)
        };
        escalated().await?;
        let mut claim = self.claim_stored(id).await?;
        let rec = escalated().await?;
        let warden = self.warden.load_full();
        let who = revoker.email.trim().to_string();
        let reason = match reason {
            Some(why) => format!("revoked by {who}: {why}"),
            None => format!("revoked by {who}"),
        };
        let removal = Removal {
            acting: &revoker,
            actor: &who,
            step: "revoke",
            reason: Some(reason),
        };
        let failed = self
            .deescalate_step(&warden, &mut claim, &rec, removal)
            .await?;
        let view = self.finish(claim).await?;
        match failed {
            None => Ok(view),
            Some(NotRemoved { error, retry_at }) => Err(LifecycleError::NotRemoved {
                id: id.to_string(),
                error,
                retry_at,
            }),
        }
    }

    /// The deescalate step: `on_deescalate`, the transition, `after_deescalate`; or, when
    /// `on_deescalate` failed, the request kept escalated until the removal is tried again.
    async fn deescalate_step(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        removal: Removal<'_>,
    ) -> Result<Option<NotRemoved>, LifecycleError> {
        let removed = self
            .hook(warden, claim, rec, HookName::OnDeescalate, removal.acting)
            .await?;
        if let Some(error) = removed.failure {
            let failures = 1 + failed_removals(&self.store.history(&rec.id).await?);
            let retry_at = now_ms() + removal_retry_delay(failures).as_millis() as i64;
            let when = rfc3339(retry_at);
            // Who asked and why stay in the history (a revoke's), with why it failed.
            let asked = removal
                .reason
                .map(|why| format!("{why}; "))
                .unwrap_or_default();
            claim.defer(Transition {
                from: &[State::Escalated],
                to: State::Escalated,
                decision: rec.decision.clone(),
                reason: Some(format!(
                    "{asked}{NOT_REMOVED} ({} attempt{} failed): {error}; warden tries again at {when}",
                    failures,
                    if failures == 1 { "" } else { "s" }
                )),
                actor: removal.actor.into(),
                step: removal.step,
                expires_at: Some(retry_at),
            });
            return Ok(Some(NotRemoved {
                error,
                retry_at: when,
            }));
        }
        // After failed tries (the request's reason says so, and its history shows them).
        let retried = rec
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(NOT_REMOVED))
            && failed_removals(&self.store.history(&rec.id).await?) > 0;
        let reason = removed_reason(retried, removal.reason);
        claim.defer(Transition {
            from: &[State::Escalated],
            to: State::Deescalated,
            decision: rec.decision.clone(),
            reason,
            actor: removal.actor.into(),
            step: removal.step,
            expires_at: None,
        });
        self.hook(
            warden,
            claim,
            rec,
            HookName::AfterDeescalate,
            removal.acting,
        )
        .await?;
        Ok(None)
    }
}

/// What a failed removal's reason says; a later removal that works replaces it.
const NOT_REMOVED: &str = "access not removed";

/// Why access was not removed, and when warden tries again (RFC 3339).
struct NotRemoved {
    error: String,
    retry_at: String,
}

/// The reason a removal that worked writes: its own (a revoke's), else, after failed tries
/// (`retried`: the request's reason says one failed), one that replaces that, so the removed
/// access does not read as still in place; else none (the request keeps its reason).
fn removed_reason(retried: bool, own: Option<String>) -> Option<String> {
    match own {
        None if retried => Some("access removed".to_string()),
        own => own,
    }
}

/// The failed runs of `on_deescalate` in a request's history.
fn failed_removals(history: &[crate::store::requests::HistoryEntry]) -> usize {
    history
        .iter()
        .filter(|entry| {
            matches!(&entry.event, HistoryEvent::Hook { hook, outcome, .. }
                if hook == "on_deescalate" && outcome == "failed")
        })
        .count()
}

/// How long after the `failures`-th failed removal it is tried again: 30 s, doubling, at
/// most an hour (a plugin broken for a day adds a few dozen entries to the history).
fn removal_retry_delay(failures: usize) -> Duration {
    let doublings = failures.saturating_sub(1).min(16) as u32;
    Duration::from_secs(30)
        .saturating_mul(1 << doublings)
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_that_works_after_failed_tries_says_so() {
        assert_eq!(
            removed_reason(true, None).as_deref(),
            Some("access removed")
        );
        let revoked = Some("revoked by carol@example.com".to_string());
        assert_eq!(removed_reason(true, revoked.clone()), revoked);
        assert_eq!(removed_reason(false, None), None);
    }

    #[test]
    fn a_removal_that_keeps_failing_is_tried_less_often_down_to_hourly() {
        let delays: Vec<u64> = [1, 2, 3, 7, 8, 100]
            .map(|n| removal_retry_delay(n).as_secs())
            .to_vec();
        assert_eq!(delays, [30, 60, 120, 1920, 3600, 3600]);
    }
}
