//! Removing access: when its time runs out (the expiry sleeper) and when someone ends it
//! early (`POST /v1/requests/{id}/revoke`). Both are the deescalate step, its hooks
//! included; they differ in who the hooks are told acts and how the history says it.

use crate::Warden;
use crate::runtime::event::UserInput;
use crate::runtime::hooks::HookName;
use crate::store::requests::{RequestRecord, State, Transition};

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
        if rec.state != State::Escalated {
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
        self.deescalate_step(&warden, &mut claim, &rec, removal)
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
        self.deescalate_step(&warden, &mut claim, &rec, removal)
            .await?;
        self.finish(claim).await
    }

    /// The deescalate step: `on_deescalate`, the transition, `after_deescalate`.
    async fn deescalate_step(
        &self,
        warden: &Warden,
        claim: &mut Claim,
        rec: &RequestRecord,
        removal: Removal<'_>,
    ) -> Result<(), LifecycleError> {
        self.hook(warden, claim, rec, HookName::OnDeescalate, removal.acting)
            .await?;
        claim.defer(Transition {
            from: &[State::Escalated],
            to: State::Deescalated,
            decision: rec.decision.clone(),
            reason: removal.reason,
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
        Ok(())
    }
}
