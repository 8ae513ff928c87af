//! What the VictorOps tests share: the stand-in, a warden whose flow runs the plugin against
//! it, and the checks on what the hook decided and logged. Kept apart so that victorops.rs
//! holds only its tests.

use serde_json::json;
use warden::capabilities::log::LogLevel;
use warden::{Config, Decision, EventInput, HookName, HookReport, Warden};
use warden_tests::victorops_standin::{Roster, StandIn, StandInConfig};
use warden_tests::{Scratch, artifacts, toml_path};

pub(crate) const API_ID: &str = "vo-api-id-7c1e";
pub(crate) const API_KEY: &str = "vo-api-key-s3cr3t-9d2f";
pub(crate) const FLOW: &str = "oncall";

/// A stand-in serving the sample roster (alice on call for `platform`, dave for `data`,
/// bob and carol on no call) and a warden whose flow `oncall` runs the plugin against it.
pub(crate) struct Setup {
    pub(crate) standin: StandIn,
    warden: Warden,
    _scratch: Scratch,
}

/// How a test's flow differs from the default one.
pub(crate) struct Flow<'a> {
    /// Entries of the flow's `vars` table, e.g. `victorops_teams = "data"`.
    pub(crate) vars: &'a str,
    /// More lines of the flow's table, e.g. `limits = { timeout_ms = 500 }`.
    pub(crate) extra: &'a str,
    /// The key the integration's secret holds.
    pub(crate) key: &'a str,
    /// Appended to the stand-in's URL in the integration's `api_url`.
    pub(crate) api_url_suffix: &'a str,
    pub(crate) roster: Roster,
}

impl Default for Flow<'_> {
    fn default() -> Self {
        Flow {
            vars: "oncall_cache_seconds = 0",
            extra: "",
            key: API_KEY,
            api_url_suffix: "",
            roster: Roster::sample(),
        }
    }
}

impl Flow<'_> {
    pub(crate) async fn start(self) -> Setup {
        let standin = StandIn::start(StandInConfig::new(API_ID, API_KEY, self.roster))
            .await
            .unwrap();
        let scratch = Scratch::new();
        scratch.write("vo.key", format!("{}\n", self.key));
        let url = standin.url();
        let text = format!(
            r#"
[store]
path = "warden.db"

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "{API_ID}"
secrets = ["vo_key"]
settings = {{ api_url = "{url}{suffix}" }}

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.{FLOW}]
environment = "main"
plugin = {plugin}
allowed_hosts = ["{url}"]
# The plugin sends the key sealed: it never needs to read it.
reveal_secrets = false
vars = {{ {vars} }}
{extra}
"#,
            suffix = self.api_url_suffix,
            plugin = toml_path(artifacts::VICTOROPS),
            vars = self.vars,
            extra = self.extra,
        );
        let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
        let warden = Warden::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Setup {
            standin,
            warden,
            _scratch: scratch,
        }
    }
}

pub(crate) async fn setup() -> Setup {
    Flow::default().start().await
}

fn event(email: &str, reason: &str) -> EventInput {
    EventInput::from_json(
        &json!({"user": {"email": email}, "fields": {"reason": reason}}).to_string(),
    )
    .unwrap()
}

impl Setup {
    pub(crate) async fn request(&self, email: &str) -> HookReport {
        self.warden
            .run_hook(FLOW, HookName::OnRequest, &event(email, "fix prod"))
            .await
            .unwrap()
    }

    /// The VictorOps username stored for `email`, if any.
    pub(crate) async fn identity(&self, email: &str) -> Option<String> {
        let stored = self
            .warden
            .identity_store()
            .identities_of(email)
            .await
            .unwrap();
        assert!(stored.len() <= 1, "{stored:?}");
        stored.into_iter().next().map(|i| {
            assert_eq!(
                (i.service.as_str(), i.service_id.as_str()),
                ("custom", API_ID)
            );
            i.user_id
        })
    }

    pub(crate) async fn persist(&self, email: &str, username: &str) {
        self.warden
            .identity_store()
            .persist_identity(email, "custom", API_ID, username)
            .await
            .unwrap();
    }

    /// (path, query, status) of every request the stand-in received.
    pub(crate) fn calls(&self) -> Vec<(String, Option<String>, Option<u16>)> {
        self.standin
            .requests()
            .into_iter()
            .map(|r| (r.path, r.query, r.status))
            .collect()
    }
}

pub(crate) fn approved(report: &HookReport) -> &str {
    match &report.outcome {
        Ok(Decision::Approve {
            reason: Some(reason),
        }) => reason,
        other => panic!(
            "expected an approval, got {other:?}\nlogs: {:#?}",
            report.logs
        ),
    }
}

pub(crate) fn logs(report: &HookReport, level: LogLevel) -> Vec<&str> {
    report
        .logs
        .iter()
        .filter(|l| l.level == level)
        .map(|l| l.message.as_str())
        .collect()
}

/// The hook decided `continue` without a warning.
pub(crate) fn assert_human_decides(report: &HookReport) {
    assert_eq!(report.outcome, Ok(Decision::Continue), "{:#?}", report.logs);
    assert_eq!(logs(report, LogLevel::Warn), Vec::<&str>::new());
}

/// The hook decided `continue` after exactly one warning, which starts with `expected`.
pub(crate) fn assert_warned(report: &HookReport, expected: &str) {
    assert_eq!(report.outcome, Ok(Decision::Continue), "{:#?}", report.logs);
    let warnings = logs(report, LogLevel::Warn);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(expected) && warnings[0].ends_with("; a human decides"),
        "expected a warning starting with {expected:?}, got {:?}",
        warnings[0]
    );
}

pub(crate) const REASON: &str = "Auto-approved On-call engineer: fix prod";
pub(crate) const USER_LOOKUP: &str = "VictorOps GET /api-public/v2/user";
pub(crate) const ONCALL: &str = "VictorOps GET /api-public/v1/oncall/current";
