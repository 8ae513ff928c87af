//! Who may decide a flow's requests: `[groups.<name>] members = [...]`, and per flow
//! `approvers` (emails and `group:NAME`) and `approvals_required`. Groups are expanded here,
//! once per load, so `warden serve` asks a set of emails and nothing else.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::Validator;

/// How `approvers` names a group.
pub const GROUP_PREFIX: &str = "group:";
/// The most approvals a flow may require: four eyes, six, ten; not a quorum of hundreds.
pub const MAX_APPROVALS_REQUIRED: u64 = 10;
/// The most members a group, and entries an `approvers` list, may hold.
const MAX_MEMBERS: usize = 10_000;

/// `[groups.<name>]`.
#[derive(Debug, Deserialize)]
pub struct RawGroup {
    #[serde(default)]
    pub members: Vec<String>,
}

/// A flow's approval policy, as `warden serve` applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// The emails (lowercase) that may approve or deny; `None`: anyone with the approver
    /// role (or an admin).
    pub approvers: Option<BTreeSet<String>>,
    /// `approvers` as written, for messages (`bob@x.com, group:oncall`).
    pub approvers_as_written: Vec<String>,
    /// Distinct people who must approve before the request is approved.
    pub approvals_required: u32,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            approvers: None,
            approvers_as_written: Vec::new(),
            approvals_required: 1,
        }
    }
}

impl ApprovalPolicy {
    /// Whether `email` may approve or deny this flow's requests (by the policy; the role
    /// and self-approval are checked beside it).
    pub fn allows(&self, email: &str) -> bool {
        self.approvers
            .as_ref()
            .is_none_or(|set| set.contains(&email.trim().to_ascii_lowercase()))
    }

    /// Who may decide, for messages.
    pub fn describe(&self) -> String {
        if self.approvers_as_written.is_empty() {
            "any approver".to_string()
        } else {
            self.approvers_as_written.join(", ")
        }
    }
}

fn is_email(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.contains('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Validator<'_> {
    /// `[groups.*]`: each group's members, lowercase.
    pub(super) fn groups(
        &mut self,
        raw: &BTreeMap<String, RawGroup>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for (name, group) in raw {
            if !valid_group_name(name) {
                self.error(
                    &["groups", name],
                    format!("group name `{name}` may hold only ASCII letters, digits, `-` and `_`"),
                );
                continue;
            }
            if group.members.len() > MAX_MEMBERS {
                self.error(
                    &["groups", name, "members"],
                    format!("has more than {MAX_MEMBERS} members"),
                );
                continue;
            }
            let mut members = BTreeSet::new();
            for member in &group.members {
                if member.trim().starts_with(GROUP_PREFIX) {
                    self.error(
                        &["groups", name, "members"],
                        format!("`{member}`: a group holds emails, not other groups"),
                    );
                } else if !is_email(member) {
                    self.error(
                        &["groups", name, "members"],
                        format!("`{member}` is not an email address"),
                    );
                } else {
                    members.insert(member.trim().to_ascii_lowercase());
                }
            }
            out.insert(name.clone(), members);
        }
        out
    }

    /// A flow's `approvers` and `approvals_required`, groups expanded.
    pub(super) fn approval_policy(
        &mut self,
        flow: &str,
        approvers: Option<&[String]>,
        approvals_required: Option<u64>,
        groups: &BTreeMap<String, BTreeSet<String>>,
    ) -> ApprovalPolicy {
        let required = match approvals_required {
            None => 1,
            Some(n) if (1..=MAX_APPROVALS_REQUIRED).contains(&n) => n as u32,
            Some(n) => {
                self.error(
                    &["flows", flow, "approvals_required"],
                    format!("must be between 1 and {MAX_APPROVALS_REQUIRED}, not {n}"),
                );
                1
            }
        };
        let Some(entries) = approvers else {
            return ApprovalPolicy {
                approvals_required: required,
                ..ApprovalPolicy::default()
            };
        };
        let key = ["flows", flow, "approvers"];
        if entries.is_empty() {
            self.error(
                &key,
                "is empty, so no one could decide this flow's requests; leave `approvers` out to let any approver decide",
            );
        }
        if entries.len() > MAX_MEMBERS {
            self.error(&key, format!("has more than {MAX_MEMBERS} entries"));
        }
        let mut set = BTreeSet::new();
        for entry in entries {
            let entry = entry.trim();
            if let Some(group) = entry.strip_prefix(GROUP_PREFIX) {
                match groups.get(group) {
                    Some(members) => set.extend(members.iter().cloned()),
                    None => {
                        let declared: Vec<&str> = groups.keys().map(String::as_str).collect();
                        let declared = if declared.is_empty() {
                            " (none are declared)".to_string()
                        } else {
                            format!(" (declared: {})", declared.join(", "))
                        };
                        self.error(
                            &key,
                            format!(
                                "flow `{flow}` names group `{group}`, which is not declared under [groups]{declared}"
                            ),
                        );
                    }
                }
            } else if is_email(entry) {
                set.insert(entry.to_ascii_lowercase());
            } else {
                self.error(
                    &key,
                    format!("`{entry}` is neither an email address nor `group:NAME`"),
                );
            }
        }
        if !entries.is_empty() && set.len() < required as usize {
            self.error(
                &["flows", flow, "approvals_required"],
                format!(
                    "needs {required} approvals from different people, but `approvers` names only {} {}",
                    set.len(),
                    if set.len() == 1 { "person" } else { "people" }
                ),
            );
        }
        ApprovalPolicy {
            approvers: Some(set),
            approvers_as_written: entries.iter().map(|e| e.trim().to_string()).collect(),
            approvals_required: required,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigErrors};
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.wasm"), b"\0asm").unwrap();
        let path = dir.path().join("warden.toml");
        Config::parse(text, Path::new(&path), &|_| None)
    }

    fn flow(name: &str, extra: &str) -> String {
        format!("[flows.{name}]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\n{extra}\n")
    }

    #[test]
    fn approvers_expand_groups_and_default_to_anyone() {
        let config = parse(&format!(
            "[environments.e]\n[groups.oncall]\nmembers = [\"Bob@Example.com\", \"erin@example.com\"]\n{}{}",
            flow(
                "gated",
                "approvers = [\"group:oncall\", \"carol@example.com\"]\napprovals_required = 2"
            ),
            flow("open", "")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let gated = &config.flow("gated").unwrap().policy;
        assert_eq!(gated.approvals_required, 2);
        assert!(gated.allows("bob@example.com"));
        assert!(gated.allows(" ERIN@example.com "));
        assert!(gated.allows("carol@example.com"));
        assert!(!gated.allows("mallory@example.com"));
        assert_eq!(gated.describe(), "group:oncall, carol@example.com");
        let open = &config.flow("open").unwrap().policy;
        assert_eq!(open, &ApprovalPolicy::default());
        assert!(open.allows("anyone@example.com"));
        assert_eq!(
            config.groups["oncall"],
            BTreeSet::from(["bob@example.com".into(), "erin@example.com".into()])
        );
    }

    #[test]
    fn bad_policies_are_each_named() {
        let text = parse(&format!(
            "[environments.e]\n[groups.oncall]\nmembers = [\"not-an-email\", \"group:other\"]\n[groups.\"bad name\"]\nmembers = []\n{}{}{}{}",
            flow("unknown", "approvers = [\"group:nope\"]"),
            flow("empty", "approvers = []"),
            flow("toomany", "approvers = [\"a@x.com\"]\napprovals_required = 2"),
            flow("zero", "approvals_required = 0\napprovers = [\"a@x.com\", \"bogus\"]"),
        ))
        .expect_err("should be rejected")
        .to_string();
        for expected in [
            "flows.unknown.approvers: flow `unknown` names group `nope`, which is not declared under [groups] (declared: oncall)",
            "flows.empty.approvers: is empty, so no one could decide",
            "flows.toomany.approvals_required: needs 2 approvals from different people, but `approvers` names only 1 person",
            "flows.zero.approvals_required: must be between 1 and 10, not 0",
            "flows.zero.approvers: `bogus` is neither an email address nor `group:NAME`",
            "groups.oncall.members: `not-an-email` is not an email address",
            "groups.oncall.members: `group:other`: a group holds emails, not other groups",
            "may hold only ASCII letters, digits, `-` and `_`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
