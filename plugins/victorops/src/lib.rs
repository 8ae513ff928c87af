//! Auto-approves access requests from engineers on call in Splunk On-Call (VictorOps);
//! everyone else's request goes to a human, as usual.
//!
//! This is the VictorOps example of Sym's "custom integrations" guide, and reads like it
//! (`get_custom_user`, `find_user_by_email`, `is_requester_on_call`, `on_request`). Where
//! it differs, it is for one of these reasons:
//!
//! - The API key is sent *sealed*: the host fills in `X-VO-Api-Key`, so the plugin never
//!   holds the key and cannot leak it, and the flow can run with `reveal_secrets = false`.
//! - VictorOps does not decode an `@` sent as `%40` in `?email=`, which is what the host's
//!   query encoding would send; so the lookup URL is built here, with the `@` left as is.
//! - Working clients read `oncallNow`/`onCalluser`, the vendor's spec says
//!   `onCallNow`/`onCallUser`: both are read. Usernames and emails are compared without
//!   case, since a mapping typed by hand in another case is still the same person.
//! - VictorOps answers 403 once its rate limit is reached, and every request would fetch
//!   the roster: the parsed roster is cached for `oncall_cache_seconds`.
//! - Failing to prove that someone is on call is never a reason to approve, nor to stop
//!   the request: any failure talking to VictorOps is logged as a warning and a human
//!   decides. A misconfigured flow (no such integration, no secret, a bad var) is a hook
//!   error instead, so the operator sees it; it fails closed all the same.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warden_sdk::prelude::*;

const DEFAULT_API_URL: &str = "https://api.victorops.com";

struct OnCall;

#[warden_sdk::plugin]
impl Plugin for OnCall {
    /// If the requester is on call, auto-approve their request.
    fn on_request(event: &Event) -> Result<Decision> {
        let vars = Vars::from_event(event)?;
        // event.flow.environment.integrations["victorops"]
        let integration = integration(vars.integration)?;
        if integration.type_ != "custom" {
            bail!(
                "integration `{}` is of type `{}`, not `custom`",
                vars.integration,
                integration.type_
            );
        }
        let api = VictorOps::new(&integration)?;
        match is_requester_on_call(event, &api, &vars) {
            Ok(true) => {
                let original_reason = event.text(vars.reason_field).unwrap_or_default();
                Ok(Decision::approve(format!(
                    "Auto-approved On-call engineer: {original_reason}"
                )))
            }
            Ok(false) => Ok(Decision::Continue),
            Err(error) => {
                warn!("{error}; a human decides");
                Ok(Decision::Continue)
            }
        }
    }
}

/// Check if the requesting user is currently on call in VictorOps, for the teams and
/// escalation policies the flow counts.
fn is_requester_on_call(event: &Event, api: &VictorOps, vars: &Vars) -> Result<bool> {
    let requester = &event.requester;
    let Some(username) = get_custom_user(requester, api)? else {
        info!("{} has no VictorOps user: a human decides", requester.email);
        return Ok(false);
    };
    let on_call = on_call_roster(api, vars.cache_ttl)?
        .iter()
        .any(|entry| vars.counts(entry) && same_name(&entry.username, &username));
    if on_call {
        info!("VictorOps user {username} is on call: approving");
    } else {
        info!("VictorOps user {username} is not on call: a human decides");
    }
    Ok(on_call)
}

/// The VictorOps username of `user`: the stored identity, or looked up by email and
/// persisted, so the next request needs no lookup.
fn get_custom_user(user: &User, api: &VictorOps) -> Result<Option<String>> {
    let external_id = &api.integration.external_id;
    if let Some(identity) = user.identity("custom", external_id)? {
        return Ok(Some(identity.user_id));
    }
    let Some(username) = find_user_by_email(&user.email, api)? else {
        return Ok(None);
    };
    info!("mapping {} to VictorOps user {username}", user.email);
    // Only a shortcut for next time: this request can go on without it.
    if let Err(error) = persist_user_identity(&user.email, "custom", external_id, &username) {
        warn!("cannot store {}'s VictorOps identity: {error}", user.email);
    }
    Ok(Some(username))
}

/// The username of the VictorOps user whose email is `email`.
fn find_user_by_email(email: &str, api: &VictorOps) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Users {
        #[serde(default)]
        users: Vec<UserEntry>,
    }
    #[derive(Deserialize)]
    struct UserEntry {
        username: String,
        #[serde(default)]
        email: String,
    }
    let found: Users = api.get(&format!("v2/user?email={}", encode_email(email)))?;
    Ok(found
        .users
        .into_iter()
        .find(|user| same_name(&user.email, email))
        .map(|user| user.username))
}

/// Who is on call now, from the cache when the flow keeps it.
fn on_call_roster(api: &VictorOps, ttl: Duration) -> Result<Vec<OnCallEntry>> {
    let key = format!("victorops/oncall/{}", api.integration.external_id);
    if !ttl.is_zero()
        && let Ok(Some(roster)) = cache::get_json(&key)
    {
        return Ok(roster);
    }
    let roster = roster(api.get("v1/oncall/current")?);
    if !ttl.is_zero()
        && let Err(error) = cache::set_json(&key, &roster, ttl)
    {
        warn!("cannot cache the on-call roster: {error}");
    }
    Ok(roster)
}

/// The flow's vars.
struct Vars<'a> {
    integration: &'a str,
    reason_field: &'a str,
    /// Team slugs that count, lowercased; empty: any team.
    teams: Vec<String>,
    /// Escalation-policy slugs that count, lowercased; empty: any policy.
    policies: Vec<String>,
    cache_ttl: Duration,
}

impl<'a> Vars<'a> {
    fn from_event(event: &'a Event) -> Result<Self> {
        let list = |name: &str| -> Vec<String> {
            event
                .var_or(name, "")
                .split(',')
                .map(str::trim)
                .filter(|slug| !slug.is_empty())
                .map(str::to_lowercase)
                .collect()
        };
        let seconds = event.var_or("oncall_cache_seconds", "30");
        let seconds: u32 = seconds.trim().parse().map_err(|_| {
            Error::msg(format!(
                "flow var `oncall_cache_seconds` must be a whole number of seconds, not `{seconds}`"
            ))
        })?;
        Ok(Vars {
            integration: event.var_or("victorops_integration", "victorops"),
            reason_field: event.var_or("reason_field", "reason"),
            teams: list("victorops_teams"),
            policies: list("victorops_policies"),
            cache_ttl: Duration::from_secs(seconds.into()),
        })
    }

    /// Whether being on call there counts.
    fn counts(&self, entry: &OnCallEntry) -> bool {
        let allows = |slugs: &[String], slug: &str| {
            slugs.is_empty() || slugs.iter().any(|s| same_name(s, slug))
        };
        allows(&self.teams, &entry.team) && allows(&self.policies, &entry.policy)
    }
}

/// The VictorOps public API, as the environment's custom integration reaches it.
struct VictorOps<'a> {
    integration: &'a Integration,
    key: &'a Secret,
    base_url: &'a str,
}

impl<'a> VictorOps<'a> {
    fn new(integration: &'a Integration) -> Result<Self> {
        Ok(VictorOps {
            integration,
            key: integration.secret(0)?,
            base_url: integration
                .setting("api_url")
                .unwrap_or(DEFAULT_API_URL)
                .trim_end_matches('/'),
        })
    }

    /// `GET /api-public/{path}`, its JSON answer parsed. `path` may carry a query, already
    /// encoded.
    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let call = format!("GET /api-public/{}", path.split('?').next().unwrap_or(path));
        let response = http::get(format!("{}/api-public/{path}", self.base_url))
            .header("Accept", "application/json")
            // We used the API ID as our custom integration's external ID.
            .header("X-VO-Api-Id", &self.integration.external_id)
            .header_secret("X-VO-Api-Key", self.key)
            .send()
            .map_err(|error| Error::msg(format!("VictorOps {call} failed: {error}")))?;
        let status = response.status();
        if !response.ok() {
            let message = error_message(&response.body);
            bail!("VictorOps {call} answered {status}: {message}");
        }
        response.json().map_err(|error| {
            Error::msg(format!(
                "VictorOps {call} answered {status} with unexpected JSON: {error}"
            ))
        })
    }
}

/// What an error answer says: its `message`, else its `error`, else the start of the
/// body (gateways answer HTML, or nothing at all).
fn error_message(body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let field = |name| json.get(name).and_then(|v| v.as_str()).map(str::trim);
        if let Some(text) = [field("message"), field("error")]
            .into_iter()
            .flatten()
            .find(|text| !text.is_empty())
        {
            return text.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return "(empty body)".to_string();
    }
    let text = words.join(" ");
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// `email` for the `?email=` query: percent-encoded, except the `@`, which VictorOps
/// wants as is.
fn encode_email(email: &str) -> String {
    email
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn same_name(a: &str, b: &str) -> bool {
    // Every roster entry is compared on every decision: ASCII names, nearly all of them,
    // compare in place rather than as two lowercased copies.
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase()
}

/// `GET /api-public/v1/oncall/current`, the parts we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnCallCurrent {
    #[serde(default)]
    teams_on_call: Vec<TeamOnCall>,
}

#[derive(Debug, Deserialize)]
struct TeamOnCall {
    #[serde(default)]
    team: Slug,
    #[serde(rename = "oncallNow", alias = "onCallNow", default)]
    oncall_now: Vec<PolicyOnCall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyOnCall {
    #[serde(default)]
    escalation_policy: Slug,
    #[serde(default)]
    users: Vec<ShiftUser>,
}

#[derive(Debug, Deserialize)]
struct ShiftUser {
    #[serde(rename = "onCalluser", alias = "onCallUser")]
    on_call_user: Username,
}

#[derive(Debug, Default, Deserialize)]
struct Slug {
    #[serde(default)]
    slug: String,
}

#[derive(Debug, Deserialize)]
struct Username {
    username: String,
}

/// One user on call, for one team's escalation policy: what the cache keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct OnCallEntry {
    team: String,
    policy: String,
    username: String,
}

/// Cached as `[team, policy, username]`, which reads back faster than an object with its
/// keys; the derived `Deserialize` reads either form.
impl Serialize for OnCallEntry {
    fn serialize<S: serde::Serializer>(&self, to: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.team, &self.policy, &self.username).serialize(to)
    }
}

fn roster(body: OnCallCurrent) -> Vec<OnCallEntry> {
    let mut roster = Vec::new();
    for team in body.teams_on_call {
        for oncall in team.oncall_now {
            for user in oncall.users {
                roster.push(OnCallEntry {
                    team: team.team.slug.clone(),
                    policy: oncall.escalation_policy.slug.clone(),
                    username: user.on_call_user.username,
                });
            }
        }
    }
    roster
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_sdk::{Flow, Step};

    fn parse(json: &str) -> Vec<OnCallEntry> {
        roster(serde_json::from_str(json).unwrap())
    }

    fn entry(team: &str, policy: &str, username: &str) -> OnCallEntry {
        OnCallEntry {
            team: team.into(),
            policy: policy.into(),
            username: username.into(),
        }
    }

    const WORKING: &str = r#"{"teamsOnCall":[
        {"team":{"name":"Platform","slug":"platform"},"oncallNow":[
            {"escalationPolicy":{"name":"Primary","slug":"platform-primary"},
             "users":[{"onCalluser":{"username":"alice"}},{"onCalluser":{"username":"erin"}}]}]},
        {"team":{"name":"Data","slug":"data"},"oncallNow":[
            {"escalationPolicy":{"name":"Primary","slug":"data-primary"},
             "users":[{"onCalluser":{"username":"dave"}}]}]}]}"#;

    #[test]
    fn roster_parses_in_both_casings() {
        let expected = vec![
            entry("platform", "platform-primary", "alice"),
            entry("platform", "platform-primary", "erin"),
            entry("data", "data-primary", "dave"),
        ];
        assert_eq!(parse(WORKING), expected);
        let spec = WORKING
            .replace("oncallNow", "onCallNow")
            .replace("onCalluser", "onCallUser");
        assert_eq!(parse(&spec), expected);
    }

    #[test]
    fn the_cached_roster_reads_back_and_so_does_one_cached_as_objects() {
        let roster = parse(WORKING);
        let cached = serde_json::to_string(&roster).unwrap();
        assert_eq!(
            cached,
            r#"[["platform","platform-primary","alice"],["platform","platform-primary","erin"],["data","data-primary","dave"]]"#
        );
        assert_eq!(
            serde_json::from_str::<Vec<OnCallEntry>>(&cached).unwrap(),
            roster
        );
        // What earlier versions of this plugin cached.
        let objects = r#"[{"team":"data","policy":"data-primary","username":"dave"}]"#;
        assert_eq!(
            serde_json::from_str::<Vec<OnCallEntry>>(objects).unwrap(),
            vec![entry("data", "data-primary", "dave")]
        );
    }

    #[test]
    fn roster_tolerates_missing_parts() {
        assert_eq!(parse("{}"), vec![]);
        assert_eq!(parse(r#"{"teamsOnCall":[{"team":{"slug":"t"}}]}"#), vec![]);
        assert_eq!(
            parse(
                r#"{"teamsOnCall":[{"oncallNow":[{"users":[{"onCalluser":{"username":"x"}}]}]}]}"#
            ),
            vec![entry("", "", "x")]
        );
        let bad = r#"{"teamsOnCall":[{"oncallNow":[{"users":[{"someoneElse":{}}]}]}]}"#;
        assert!(serde_json::from_str::<OnCallCurrent>(bad).is_err());
    }

    fn event(vars: &[(&str, &str)]) -> Event {
        let user = User {
            email: "alice@example.com".into(),
            username: "alice".into(),
            id: None,
            first_name: None,
            last_name: None,
        };
        Event {
            id: "evt".into(),
            step: Step::Request,
            flow: Flow {
                name: "flow".into(),
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            user: user.clone(),
            requester: user,
            fields: vec![],
            timestamp: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn vars_have_defaults() {
        let event = event(&[]);
        let vars = Vars::from_event(&event).unwrap();
        assert_eq!(vars.integration, "victorops");
        assert_eq!(vars.reason_field, "reason");
        assert_eq!(vars.cache_ttl, Duration::from_secs(30));
        assert!(vars.teams.is_empty() && vars.policies.is_empty());
        assert!(vars.counts(&entry("any", "thing", "x")));
    }

    #[test]
    fn scoping_by_teams_and_policies() {
        let event = event(&[
            ("victorops_teams", " Platform, ,data-eng "),
            ("victorops_policies", ""),
            ("oncall_cache_seconds", "0"),
        ]);
        let vars = Vars::from_event(&event).unwrap();
        assert_eq!(vars.teams, ["platform", "data-eng"]);
        assert_eq!(vars.cache_ttl, Duration::ZERO);
        assert!(vars.counts(&entry("platform", "p", "x")));
        assert!(vars.counts(&entry("DATA-ENG", "p", "x")));
        assert!(!vars.counts(&entry("data", "p", "x")));

        let event = self::event(&[
            ("victorops_teams", "platform"),
            ("victorops_policies", "platform-primary"),
        ]);
        let vars = Vars::from_event(&event).unwrap();
        assert!(vars.counts(&entry("platform", "platform-primary", "x")));
        assert!(!vars.counts(&entry("platform", "platform-secondary", "x")));
        assert!(!vars.counts(&entry("data", "platform-primary", "x")));
    }

    #[test]
    fn a_bad_cache_ttl_is_a_config_error() {
        let event = event(&[("oncall_cache_seconds", "soon")]);
        let error = Vars::from_event(&event).err().unwrap();
        assert_eq!(
            error.to_string(),
            "flow var `oncall_cache_seconds` must be a whole number of seconds, not `soon`"
        );
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                r#"{"message":"API rate limit exceeded"}"#,
                "API rate limit exceeded",
            ),
            (r#"{"error":"Not Found"}"#, "Not Found"),
            (r#"{"message":"","error":"Forbidden"}"#, "Forbidden"),
            (r#"{"message":"m","error":"e"}"#, "m"),
            (r#"{"message":42}"#, r#"{"message":42}"#),
            ("", "(empty body)"),
            ("  \r\n ", "(empty body)"),
            (
                "<html>\r\n<head><title>503 Service Unavailable</title></head>\r\n</html>",
                "<html> <head><title>503 Service Unavailable</title></head> </html>",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(error_message(body.as_bytes()), expected, "{body}");
        }
        let long = "é".repeat(500);
        let shown = error_message(long.as_bytes());
        assert_eq!(shown, format!("{}...", "é".repeat(200)));
        assert_eq!(error_message(&[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn emails_keep_their_at_sign() {
        assert_eq!(encode_email("alice@example.com"), "alice@example.com");
        assert_eq!(
            encode_email("a.b+ops@example.co.uk"),
            "a.b%2Bops@example.co.uk"
        );
        assert_eq!(encode_email("x&y=z #1@ex.com"), "x%26y%3Dz%20%231@ex.com");
        assert_eq!(encode_email("zoë@ex.com"), "zo%C3%AB@ex.com");
    }

    #[test]
    fn names_compare_without_case() {
        assert!(same_name("Alice", "alice"));
        assert!(same_name("ALICE@Example.com", "alice@example.com"));
        assert!(!same_name("alice", "alicia"));
        assert!(!same_name("alice", "alice "));
        // Beyond ASCII, case is Unicode's.
        assert!(same_name("ÉLODIE", "élodie"));
        assert!(same_name("Zoë", "ZOË"));
        assert!(!same_name("zoë", "zoe"));
        assert!(!same_name("Élodie", "elodie"));
    }
}
