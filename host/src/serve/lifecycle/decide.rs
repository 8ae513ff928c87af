//! A human's decision on a pending request (`POST /v1/requests/{id}/approve`, `/deny`):
//! who may make it under the flow's policy, how approvals add up to `approvals_required`,
//! and the refusals, audited within a bound.

use crate::runtime::event::UserInput;
use crate::store::requests::{HistoryEntry, HistoryEvent, State, now_ms};

use super::super::policy::{approval_counts, approvals_so_far, not_an_approver, party, policy_of};
use super::{
    AUDITED_REFUSALS_PER_MINUTE, Lifecycle, LifecycleError, RequestView, Verdict, check_reason,
};

impl Lifecycle {
    /// A human approves a pending request. `admin`: the caller, when an admin (who may name
    /// another approver; the history and the audit log then name the admin too).
    pub async fn approve(
        &self,
        id: &str,
        approver: UserInput,
        reason: Option<String>,
        admin: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        self.human_decides(id, approver, Verdict::Approve(reason), admin)
            .await
    }

    /// A human denies a pending request; `admin` as for [`Self::approve`]. Only an admin may
    /// deny the requests of a flow a reload removed (which no one may approve).
    pub async fn deny(
        &self,
        id: &str,
        approver: UserInput,
        reason: Option<String>,
        admin: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        self.human_decides(id, approver, Verdict::Deny(reason), admin)
            .await
    }

    async fn human_decides(
        &self,
        id: &str,
        approver: UserInput,
        verdict: Verdict,
        admin: Option<String>,
    ) -> Result<RequestView, LifecycleError> {
        // Hooks could not be told who decided; refused before anything is recorded.
        approver
            .check("approver")
            .map_err(|e| LifecycleError::Invalid(e.0))?;
        let (Verdict::Approve(reason) | Verdict::Deny(reason)) = &verdict;
        check_reason(reason.as_deref())?;
        // Whether the request is pending and the caller may decide it is settled before the
        // request is claimed: a caller refused over and over (or deciding a request long
        // decided) would otherwise keep it busy for those who may, a revoke or its expiry.
        let rec = self.pending(id).await?;
        let warden = self.warden.load_full();
        let approver_email = approver.email.trim().to_string();
        let by_admin = admin.is_some();
        // The admin who named someone else: recorded beside them, and counted as the admin.
        let named_by = admin.filter(|a| !a.trim().eq_ignore_ascii_case(&approver_email));
        // Who called: counted for the refusals audited.
        let caller = named_by.as_deref().unwrap_or(&approver_email);
        // Who the history and the audit log say decided.
        let actor = match &named_by {
            Some(admin) => format!("{approver_email} (named by admin {admin})"),
            None => approver_email.clone(),
        };
        let policy = policy_of(warden.config(), &rec.flow);
        let flow = warden.config().flow(&rec.flow);
        let flow_removed = flow.is_none();
        let self_approval_allowed = flow.is_some_and(|f| f.allow_self_approval);
        if flow_removed && matches!(verdict, Verdict::Approve(_)) {
            self.refused(caller, &actor, id, "approve-refused", "flow removed")
                .await?;
            return Err(LifecycleError::FlowRemoved {
                id: id.to_string(),
                flow: rec.flow,
            });
        }
        let admin_clears_removed_flow = flow_removed && by_admin;
        if let Some(why) = not_an_approver(&policy, &rec.flow, &approver_email)
            && !admin_clears_removed_flow
        {
            self.refused(
                caller,
                &actor,
                id,
                "decide-refused",
                "not an approver of the flow",
            )
            .await?;
            return Err(LifecycleError::NotApprover(why));
        }
        if matches!(verdict, Verdict::Approve(_)) {
            // An admin naming someone else approves as the admin (and is counted so): their
            // own request no more than the one named.
            let self_approver = [Some(approver_email.as_str()), named_by.as_deref()]
                .into_iter()
                .flatten()
                .find_map(|who| party(&rec.requester, &rec.created_by, who).map(|how| (who, how)));
            if let Some((approver, how)) = self_approver
                && !self_approval_allowed
            {
                self.refused(caller, &actor, id, "approve-refused", "self-approval")
                    .await?;
                return Err(LifecycleError::SelfApproval {
                    id: id.to_string(),
                    approver: approver.trim().to_string(),
                    how,
                    flow: rec.flow,
                });
            }
        }
        let multi_approval =
            matches!(verdict, Verdict::Approve(_)) && policy.approvals_required > 1;
        // Who the approval counts as, and the approvals so far under the policy now serving:
        // one from someone a reload took off the flow's approvers (or a self-approval it no
        // longer allows) no longer counts. An approver approving again is refused before the
        // claim too, and checked again under it, unless the approvals so far already meet the
        // policy (a reload put an approver back, or asked for fewer): then any of those who
        // gave them completes it, with no second approval noted (`None`).
        let who = named_by.as_deref().unwrap_or(&approver_email).trim();
        let approvals = async |id: &str| -> Result<Option<Vec<String>>, LifecycleError> {
            let counts = approval_counts(
                &policy,
                self_approval_allowed,
                &rec.requester,
                &rec.created_by,
            );
            let so_far = approvals_so_far(&self.store.history(id).await?, counts);
            if so_far.contains(&who.to_ascii_lowercase()) {
                if so_far.len() >= policy.approvals_required as usize {
                    return Ok(None);
                }
                return Err(LifecycleError::AlreadyApproved {
                    id: id.to_string(),
                    approver: who.to_string(),
                    count: so_far.len(),
                    required: policy.approvals_required,
                });
            }
            Ok(Some(so_far))
        };
        if multi_approval {
            approvals(id).await?;
        }
        let mut claim = self.claim_stored(id).await?;
        // Again, now that no one else can move it.
        let rec = self.pending(id).await?;
        if let Verdict::Approve(reason) = &verdict
            && multi_approval
        {
            let required = policy.approvals_required;
            if let Some(so_far) = approvals(id).await? {
                let count = so_far.len() as u32 + 1;
                claim.note(HistoryEntry {
                    at: now_ms(),
                    step: "approve".into(),
                    event: HistoryEvent::Approval {
                        approver: approver_email.clone(),
                        by: named_by.clone(),
                        reason: reason.clone(),
                        count,
                        required,
                    },
                });
                if count < required {
                    return self.finish(claim).await;
                }
            }
        }
        self.decide_step(
            &warden,
            &mut claim,
            &rec,
            &approver,
            &actor,
            &[State::Pending],
            verdict,
        )
        .await?;
        self.finish(claim).await
    }

    /// Audits a refused decision (the refusal itself changes nothing): at most
    /// [`AUDITED_REFUSALS_PER_MINUTE`] for one caller, so a caller refused in a loop cannot
    /// grow the audit log without end (it is never pruned); past that they are counted in
    /// `warden_api_refusals_not_audited_total`, the first of them logged.
    async fn refused(
        &self,
        caller: &str,
        who: &str,
        id: &str,
        action: &str,
        why: &str,
    ) -> Result<(), LifecycleError> {
        if self
            .audited_refusals
            .attempt(caller, std::time::Instant::now())
            .is_err()
        {
            if self.metrics.refusal_not_audited() == 1 {
                tracing::warn!(
                    caller,
                    "more than {AUDITED_REFUSALS_PER_MINUTE} refused decisions in a minute; \
                     further ones are counted (warden_api_refusals_not_audited_total), not audited"
                );
            }
            return Ok(());
        }
        let detail = serde_json::json!({ "why": why });
        self.store.audit(who, action, Some(id), &detail).await?;
        Ok(())
    }
}
