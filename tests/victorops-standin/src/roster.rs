//! Who exists, which teams they are on, and who is on call right now.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The sample organisation, also shipped as `tests/fixtures/victorops-roster.toml`.
const SAMPLE_TOML: &str = include_str!("../../fixtures/victorops-roster.toml");

const DEFAULT_TIMESTAMP: &str = "2019-04-01T09:30:00Z";

/// The state of a VictorOps organisation, as the stand-in serves it.
///
/// Loaded from TOML (or JSON, by a `.json` extension) with [`Roster::from_file`],
/// or built in code:
///
/// ```
/// use victorops_standin::Roster;
/// let mut roster = Roster::new();
/// roster
///     .add_user("alice", "alice@example.com", "Alice", "Anders")
///     .on_call("platform", "platform-primary", "alice");
/// assert!(roster.is_on_call("alice"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub teams: Vec<Team>,
}

/// A user of the organisation. `username` is the VictorOps username, which is
/// what the on-call endpoint reports; `email` is what clients look users up by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default = "default_timestamp")]
    pub created_at: String,
    #[serde(default = "default_timestamp")]
    pub password_last_updated: String,
    #[serde(default = "default_true")]
    pub verified: bool,
}

/// A team, its members (usernames) and its escalation policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub slug: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub is_default_team: bool,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// An escalation policy and the usernames on call for it right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub on_call: Vec<String>,
}

fn default_timestamp() -> String {
    DEFAULT_TIMESTAMP.to_string()
}

fn default_true() -> bool {
    true
}

impl User {
    /// A verified user with placeholder timestamps.
    pub fn new(username: &str, email: &str, first_name: &str, last_name: &str) -> Self {
        User {
            username: username.to_string(),
            email: email.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            created_at: default_timestamp(),
            password_last_updated: default_timestamp(),
            verified: true,
        }
    }
}

impl Team {
    /// A team with no members and no policies.
    pub fn new(slug: &str, name: &str) -> Self {
        Team {
            slug: slug.to_string(),
            name: name.to_string(),
            description: None,
            is_default_team: false,
            version: 0,
            members: Vec::new(),
            policies: Vec::new(),
        }
    }
}

impl Roster {
    /// An empty organisation.
    pub fn new() -> Self {
        Roster::default()
    }

    /// The organisation of `tests/fixtures/victorops-roster.toml`: alice, bob,
    /// carol and dave; teams `platform` (policy `platform-primary`, alice on
    /// call) and `data` (policy `data-primary`, dave on call). bob is on no call.
    pub fn sample() -> Self {
        Roster::from_toml(SAMPLE_TOML).expect("the bundled sample roster is valid")
    }

    /// Reads a roster file: JSON when the name ends in `.json`, TOML otherwise.
    /// The roster is checked with [`Roster::validate`].
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading roster {}", path.display()))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let roster = if is_json {
            Roster::from_json(&text)
        } else {
            Roster::from_toml(&text)
        };
        roster.with_context(|| format!("in roster {}", path.display()))
    }

    /// Parses and validates a TOML roster.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let roster: Roster = toml::from_str(text).context("parsing TOML roster")?;
        roster.validate()?;
        Ok(roster)
    }

    /// Parses and validates a JSON roster (same field names as the TOML form).
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let roster: Roster = serde_json::from_str(text).context("parsing JSON roster")?;
        roster.validate()?;
        Ok(roster)
    }

    /// Checks that usernames, emails (case-insensitively), team slugs and
    /// policy slugs are unique, and that every member and on-call entry names
    /// a known user. The builder methods do not validate, so tests can serve
    /// odd states on purpose.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut usernames = HashSet::new();
        let mut emails = HashSet::new();
        for user in &self.users {
            if user.username.is_empty() {
                bail!("a user has an empty username");
            }
            if !usernames.insert(user.username.as_str()) {
                bail!("duplicate username {:?}", user.username);
            }
            if !emails.insert(user.email.to_lowercase()) {
                bail!("duplicate email {:?}", user.email);
            }
        }
        let mut team_slugs = HashSet::new();
        let mut policy_slugs = HashSet::new();
        for team in &self.teams {
            if !team_slugs.insert(team.slug.as_str()) {
                bail!("duplicate team slug {:?}", team.slug);
            }
            for member in &team.members {
                if !usernames.contains(member.as_str()) {
                    bail!("team {:?} lists unknown member {:?}", team.slug, member);
                }
            }
            for policy in &team.policies {
                if !policy_slugs.insert(policy.slug.as_str()) {
                    bail!("duplicate escalation policy slug {:?}", policy.slug);
                }
                for username in &policy.on_call {
                    if !usernames.contains(username.as_str()) {
                        bail!(
                            "policy {:?} of team {:?} has unknown user {:?} on call",
                            policy.slug,
                            team.slug,
                            username
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds (or replaces, by username) a user.
    pub fn add_user(
        &mut self,
        username: &str,
        email: &str,
        first_name: &str,
        last_name: &str,
    ) -> &mut Self {
        self.users.retain(|u| u.username != username);
        self.users
            .push(User::new(username, email, first_name, last_name));
        self
    }

    /// Removes a user, their team memberships and their on-call entries.
    pub fn remove_user(&mut self, username: &str) -> &mut Self {
        self.users.retain(|u| u.username != username);
        for team in &mut self.teams {
            team.members.retain(|m| m != username);
            for policy in &mut team.policies {
                policy.on_call.retain(|u| u != username);
            }
        }
        self
    }

    /// Adds a team, or renames it when the slug exists.
    pub fn add_team(&mut self, slug: &str, name: &str) -> &mut Self {
        match self.teams.iter_mut().find(|t| t.slug == slug) {
            Some(team) => team.name = name.to_string(),
            None => self.teams.push(Team::new(slug, name)),
        }
        self
    }

    /// Adds `username` to a team's members (creating the team, named after its
    /// slug, when missing).
    pub fn add_member(&mut self, team_slug: &str, username: &str) -> &mut Self {
        let team = self.team_entry(team_slug);
        if !team.members.iter().any(|m| m == username) {
            team.members.push(username.to_string());
        }
        self
    }

    /// Adds an escalation policy to a team (creating the team when missing),
    /// or renames it when the slug exists.
    pub fn add_policy(&mut self, team_slug: &str, policy_slug: &str, name: &str) -> &mut Self {
        let policy = self.policy_entry(team_slug, policy_slug);
        policy.name = name.to_string();
        self
    }

    /// Puts `username` on call for a team's escalation policy, creating the
    /// team and the policy (named after their slugs) when missing, and making
    /// the user a team member.
    pub fn on_call(&mut self, team_slug: &str, policy_slug: &str, username: &str) -> &mut Self {
        self.add_member(team_slug, username);
        let policy = self.policy_entry(team_slug, policy_slug);
        if !policy.on_call.iter().any(|u| u == username) {
            policy.on_call.push(username.to_string());
        }
        self
    }

    /// Takes `username` off call for one escalation policy.
    pub fn off_call(&mut self, team_slug: &str, policy_slug: &str, username: &str) -> &mut Self {
        if let Some(policy) = self
            .teams
            .iter_mut()
            .filter(|t| t.slug == team_slug)
            .flat_map(|t| t.policies.iter_mut())
            .find(|p| p.slug == policy_slug)
        {
            policy.on_call.retain(|u| u != username);
        }
        self
    }

    /// Nobody is on call anywhere.
    pub fn clear_on_call(&mut self) -> &mut Self {
        for policy in self.teams.iter_mut().flat_map(|t| t.policies.iter_mut()) {
            policy.on_call.clear();
        }
        self
    }

    /// The user with this email, compared case-insensitively.
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        let email = email.to_lowercase();
        self.users.iter().find(|u| u.email.to_lowercase() == email)
    }

    /// The user with this username.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    /// The team with this slug.
    pub fn team(&self, slug: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.slug == slug)
    }

    /// Whether `username` is on call for any escalation policy.
    pub fn is_on_call(&self, username: &str) -> bool {
        self.teams
            .iter()
            .flat_map(|t| &t.policies)
            .any(|p| p.on_call.iter().any(|u| u == username))
    }

    fn team_entry(&mut self, team_slug: &str) -> &mut Team {
        let index = match self.teams.iter().position(|t| t.slug == team_slug) {
            Some(index) => index,
            None => {
                self.teams.push(Team::new(team_slug, team_slug));
                self.teams.len() - 1
            }
        };
        &mut self.teams[index]
    }

    fn policy_entry(&mut self, team_slug: &str, policy_slug: &str) -> &mut Policy {
        let team = self.team_entry(team_slug);
        let index = match team.policies.iter().position(|p| p.slug == policy_slug) {
            Some(index) => index,
            None => {
                team.policies.push(Policy {
                    slug: policy_slug.to_string(),
                    name: policy_slug.to_string(),
                    on_call: Vec::new(),
                });
                team.policies.len() - 1
            }
        };
        &mut team.policies[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_matches_the_brief() {
        let roster = Roster::sample();
        assert_eq!(roster.teams.len(), 2);
        assert!(roster.team("platform").is_some());
        assert!(roster.team("data").is_some());
        let policies: usize = roster.teams.iter().map(|t| t.policies.len()).sum();
        assert_eq!(policies, 2);
        let alice = roster.user_by_email("ALICE@example.com").unwrap();
        assert!(roster.is_on_call(&alice.username));
        let bob = roster.user_by_email("bob@example.com").unwrap();
        assert!(!roster.is_on_call(&bob.username));
        assert!(
            roster
                .team("platform")
                .unwrap()
                .policies
                .iter()
                .any(|p| p.on_call.contains(&alice.username))
        );
    }

    #[test]
    fn validation_rejects_unknown_and_duplicate_names() {
        let mut roster = Roster::new();
        roster.on_call("t", "p", "ghost");
        let err = roster.validate().unwrap_err().to_string();
        assert!(err.contains("ghost"), "{err}");

        let mut roster = Roster::new();
        roster
            .add_user("a", "a@example.com", "A", "A")
            .add_user("b", "A@EXAMPLE.com", "B", "B");
        let err = roster.validate().unwrap_err().to_string();
        assert!(err.contains("duplicate email"), "{err}");

        let mut roster = Roster::new();
        roster
            .add_user("a", "a@example.com", "A", "A")
            .on_call("t1", "p", "a")
            .on_call("t2", "p", "a");
        let err = roster.validate().unwrap_err().to_string();
        assert!(err.contains("duplicate escalation policy"), "{err}");
    }

    #[test]
    fn builder_edits() {
        let mut roster = Roster::new();
        roster
            .add_user("a", "a@example.com", "A", "A")
            .add_policy("t", "p", "Primary")
            .on_call("t", "p", "a")
            .on_call("t", "p", "a");
        roster.validate().unwrap();
        let team = roster.team("t").unwrap();
        assert_eq!(team.members, vec!["a".to_string()]);
        assert_eq!(team.policies[0].name, "Primary");
        assert_eq!(team.policies[0].on_call, vec!["a".to_string()]);
        roster.off_call("t", "p", "a");
        assert!(!roster.is_on_call("a"));
        roster.on_call("t", "p", "a").clear_on_call();
        assert!(!roster.is_on_call("a"));
        roster.on_call("t", "p", "a").remove_user("a");
        assert!(roster.user("a").is_none());
        assert!(roster.team("t").unwrap().members.is_empty());
        assert!(!roster.is_on_call("a"));
    }

    #[test]
    fn from_file_reads_toml_and_json_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("r.json");
        std::fs::write(&json, serde_json::to_string(&Roster::sample()).unwrap()).unwrap();
        assert_eq!(Roster::from_file(&json).unwrap(), Roster::sample());

        let toml_path = dir.path().join("r.toml");
        std::fs::write(&toml_path, toml::to_string(&Roster::sample()).unwrap()).unwrap();
        assert_eq!(Roster::from_file(&toml_path).unwrap(), Roster::sample());

        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[users]]\nusername='a'\nemail='a@x'\nfirst_name='A'\nlast_name='A'\nphone='1'\n",
        )
        .unwrap();
        let err = format!("{:#}", Roster::from_file(&bad).unwrap_err());
        assert!(err.contains("phone"), "{err}");

        assert!(Roster::from_file(dir.path().join("missing.toml")).is_err());
    }
}
