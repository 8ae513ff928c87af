//! Who may decide, see and revoke a request, by the flow's approval policy
//! ([`crate::config::ApprovalPolicy`]: `approvers`, `approvals_required`) beside the API
//! roles. The API and the console ask the same functions, so neither is a way around the
//! other.
//!
//! - Deciding (approve or deny): the acting approver must be one of the flow's `approvers`
//!   (any approver when it names none); checked by [`super::lifecycle::Lifecycle`].
//! - Seeing: a pending request is shown to those who may decide it, its requester and admins;
//!   other approvers do not see it (requests in other states stay visible to every approver).
//! - Revoking escalated access: its requester, the flow's approvers, and admins.

use crate::config::{ApprovalPolicy, Config, Role};
use crate::store::requests::{HistoryEntry, HistoryEvent, PendingOnly, State};

use super::api::{ApiError, Caller};
use super::view::RequestView;

/// The flow's policy. A flow a reload removed names no approvers at all: its rules went
/// with it, and guessing them (any approver, one approval) would let anyone decide what
/// only a few could; its requests are then its requesters' and admins' (an admin may deny
/// a pending one, [`super::lifecycle::Lifecycle::deny`]; none can be approved).
pub(crate) fn policy_of(config: &Config, flow: &str) -> ApprovalPolicy {
    match config.flow(flow) {
        Some(f) => f.policy.clone(),
        None => ApprovalPolicy {
            approvers: Some(Default::default()),
            approvers_as_written: vec![format!(
                "none: flow `{flow}` is no longer in the config; an admin may deny its requests"
            )],
            approvals_required: 1,
        },
    }
}

/// Why `email` may not decide requests of `flow`, if it may not.
pub(crate) fn not_an_approver(policy: &ApprovalPolicy, flow: &str, email: &str) -> Option<String> {
    (!policy.allows(email)).then(|| {
        format!(
            "{} may not decide requests of flow `{flow}`: only its approvers may ({})",
            email.trim(),
            policy.describe()
        )
    })
}

/// How `who` is a party to the request of `requester` that `created_by` filed, if they are:
/// they asked for it (`"requested"`) or filed it for its requester (`"filed"`: an admin acts
/// for others, naming the requester's username and id as well). A party approves only where
/// the flow allows self-approval; otherwise one admin could file a request for anyone, with
/// a username of their choosing to be granted, and approve it alone.
pub(crate) fn party(requester: &str, created_by: &str, who: &str) -> Option<&'static str> {
    let who = who.trim();
    if who.eq_ignore_ascii_case(requester.trim()) {
        Some("requested")
    } else if who.eq_ignore_ascii_case(created_by.trim()) {
        Some("filed")
    } else {
        None
    }
}

/// Whether an approval by `approver` (named by the admin `by`, if one did) counts towards
/// the policy of a request of `requester` that `created_by` filed: its approver is still one
/// of the flow's and, unless the flow allows self-approval, neither they nor the admin who
/// named them is a [`party`] to it.
pub(crate) fn approval_counts<'a>(
    policy: &'a ApprovalPolicy,
    self_approval_allowed: bool,
    requester: &'a str,
    created_by: &'a str,
) -> impl Fn(&str, Option<&str>) -> bool + 'a {
    move |approver, by| {
        let party = |who| party(requester, created_by, who).is_some();
        policy.allows(approver)
            && (self_approval_allowed || !(party(approver) || by.is_some_and(party)))
    }
}

/// The distinct people (lowercase emails) whose approvals count so far, from the request's
/// history: each approval `counts` keeps (given the approver and the admin who named them,
/// if one did), counted as the approver or that admin (an admin's approvals, whoever they
/// named, are the admin's).
pub(crate) fn approvals_so_far(
    history: &[HistoryEntry],
    counts: impl Fn(&str, Option<&str>) -> bool,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for entry in history {
        if let HistoryEvent::Approval { approver, by, .. } = &entry.event {
            if !counts(approver, by.as_deref()) {
                continue;
            }
            let who = by.as_ref().unwrap_or(approver).trim().to_ascii_lowercase();
            if !seen.contains(&who) {
                seen.push(who);
            }
        }
    }
    seen
}

impl Caller {
    /// Whether the caller may decide requests of `flow` as themselves: an approver (or
    /// admin) whom the flow's policy names.
    pub(crate) fn may_decide(&self, config: &Config, flow: &str) -> Result<(), ApiError> {
        self.require(Role::Approver)?;
        match not_an_approver(&policy_of(config, flow), flow, &self.user) {
            Some(why) => Err(ApiError::forbidden(why)),
            None => Ok(()),
        }
    }

    /// [`Caller::may_see`], and a pending request only for those who may decide it.
    pub(crate) fn may_see_request(
        &self,
        config: &Config,
        view: &RequestView,
    ) -> Result<(), ApiError> {
        self.may_see(&view.requester)?;
        let own = view.requester.eq_ignore_ascii_case(&self.user);
        if self.role == Role::Approver
            && view.state == State::Pending
            && !own
            && let Some(why) =
                not_an_approver(&policy_of(config, &view.flow), &view.flow, &self.user)
        {
            return Err(ApiError::forbidden(format!(
                "pending request `{}` is shown only to those who may decide it: {why}",
                view.id
            )));
        }
        Ok(())
    }

    /// Which pending requests a listing may show the caller, for the store to filter by
    /// ([`Caller::may_see_request`], as a query): an approver sees those of the flows whose
    /// policy names them, and their own; others are not narrowed here.
    pub(crate) fn pending_scope(&self, config: &Config) -> Option<PendingOnly> {
        (self.role == Role::Approver).then(|| PendingOnly {
            flows: config
                .flows
                .iter()
                .filter(|(_, flow)| flow.policy.allows(&self.user))
                .map(|(name, _)| name.clone())
                .collect(),
            requester: self.user.clone(),
        })
    }

    /// Whether the caller may end request `view`'s access early: its requester, an approver
    /// the flow's policy names, or an admin.
    pub(crate) fn may_revoke(&self, config: &Config, view: &RequestView) -> Result<(), ApiError> {
        if self.role >= Role::Admin || view.requester.eq_ignore_ascii_case(&self.user) {
            return Ok(());
        }
        if self.role < Role::Approver {
            return Err(ApiError::forbidden(format!(
                "{} may revoke only their own requests' access",
                self.user
            )));
        }
        match not_an_approver(&policy_of(config, &view.flow), &view.flow, &self.user) {
            Some(why) => Err(ApiError::forbidden(format!(
                "{why}, the requester, or an admin may revoke its access"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(approver: &str) -> HistoryEntry {
        HistoryEntry {
            at: 0,
            step: "approve".into(),
            event: HistoryEvent::Approval {
                approver: approver.into(),
                by: None,
                reason: None,
                count: 1,
                required: 2,
            },
        }
    }

    #[test]
    fn approvals_count_each_person_once_whatever_the_case() {
        let history = [
            approval("Bob@example.com"),
            approval("bob@example.com "),
            approval("erin@example.com"),
        ];
        assert_eq!(
            approvals_so_far(&history, |_, _| true),
            ["bob@example.com", "erin@example.com"]
        );
    }

    #[test]
    fn the_requester_and_whoever_filed_for_them_are_parties_whatever_the_case() {
        let (requester, filer) = ("alice@example.com", "carol@example.com");
        assert_eq!(
            party(requester, filer, " Alice@Example.com"),
            Some("requested")
        );
        assert_eq!(party(requester, filer, "CAROL@example.com "), Some("filed"));
        assert_eq!(
            party(requester, requester, "alice@example.com"),
            Some("requested")
        );
        assert_eq!(party(requester, filer, "bob@example.com"), None);
        // An approval an admin gave naming someone counts as the admin's: not counted when
        // the admin filed the request (nor the requester's), unless the flow allows it.
        let mut named = approval("erin@example.com");
        if let HistoryEvent::Approval { by, .. } = &mut named.event {
            *by = Some(filer.into());
        }
        let history = [approval("bob@example.com"), named, approval(requester)];
        let policy = ApprovalPolicy {
            approvers: None,
            approvers_as_written: vec![],
            approvals_required: 2,
        };
        let counted = approvals_so_far(&history, approval_counts(&policy, false, requester, filer));
        assert_eq!(counted, ["bob@example.com"]);
        let counted = approvals_so_far(&history, approval_counts(&policy, true, requester, filer));
        assert_eq!(counted, ["bob@example.com", filer, requester]);
    }

    #[test]
    fn only_named_approvers_may_decide() {
        let policy = ApprovalPolicy {
            approvers: Some(["bob@example.com".to_string()].into()),
            approvers_as_written: vec!["group:oncall".into()],
            approvals_required: 1,
        };
        assert_eq!(not_an_approver(&policy, "f", "BOB@example.com"), None);
        assert_eq!(
            not_an_approver(&policy, "f", "eve@example.com").as_deref(),
            Some(
                "eve@example.com may not decide requests of flow `f`: only its approvers may (group:oncall)"
            )
        );
        assert_eq!(
            not_an_approver(&ApprovalPolicy::default(), "f", "eve@example.com"),
            None
        );
    }
}
