//! What the Python tests share: the VictorOps stand-in, a warden whose flows run a Python
//! plugin against it (built once, compiled once, started one at a time), checks on a hook's
//! report, and a build that must fail. Kept apart so that python.rs holds only its tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::json;
use warden::{Config, Decision, EventInput, FailureKind, HookName, HookReport, Warden};
use warden_tests::victorops_standin::{Roster, StandIn, StandInConfig};
use warden_tests::{Scratch, python, toml_path};

pub(crate) const API_ID: &str = "vo-api-id-7c1e";
pub(crate) const API_KEY: &str = "vo-api-key-s3cr3t-9d2f";
pub(crate) const FLOW: &str = "oncall";
pub(crate) const REASON: &str = "Auto-approved On-call engineer: fix prod";

/// The compiled-plugin cache every warden of this binary shares, emptied once: each build
/// of a Python plugin differs, so older entries are never used again.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = python::build_dir().join("cache");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Wardens start one at a time: the first compiles a Python plugin (tens of seconds in a
/// debug build), the others find it in the cache.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) async fn plugin(dir: &'static str) -> PathBuf {
    tokio::task::spawn_blocking(move || python::plugin(dir))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

pub(crate) struct Setup {
    pub(crate) standin: StandIn,
    pub(crate) warden: Warden,
    _scratch: Scratch,
}

/// A flow of the warden `start` makes.
struct FlowSpec {
    name: String,
    reveal_secrets: bool,
    /// Entries of the flow's `vars` table.
    vars: String,
    /// More lines of the flow's table, e.g. `limits = { timeout_ms = 500 }`.
    extra: &'static str,
}

/// A stand-in serving the sample roster (alice on call, bob and carol not) and a warden
/// whose flows run `plugin` against it.
async fn start(plugin: &Path, key: &str, flows: &[FlowSpec]) -> Setup {
    let standin = StandIn::start(StandInConfig::new(API_ID, API_KEY, Roster::sample()))
        .await
        .unwrap();
    let scratch = Scratch::new();
    scratch.write("vo.key", key);
    let url = standin.url();
    let mut text = format!(
        r#"
[store]
path = "warden.db"

[cache]
dir = {cache}

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "{API_ID}"
secrets = ["vo_key"]
settings = {{ api_url = "{url}" }}

[environments.main]
integrations = {{ victorops = "victorops" }}
"#,
        cache = toml_path(&cache_dir().display().to_string()),
    );
    for flow in flows {
        text.push_str(&format!(
            r#"
[flows.{name}]
environment = "main"
plugin = {plugin}
allowed_hosts = ["{url}"]
reveal_secrets = {reveal}
vars = {{ {vars} }}
{extra}
"#,
            name = flow.name,
            plugin = toml_path(&plugin.display().to_string()),
            reveal = flow.reveal_secrets,
            vars = flow.vars,
            extra = flow.extra,
        ));
    }
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    let warden = {
        let _one_at_a_time = STARTING.lock().await;
        Warden::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    Setup {
        standin,
        warden,
        _scratch: scratch,
    }
}

/// The seed's port, in flow `oncall`, which does not reveal secrets.
pub(crate) async fn seed(key: &str) -> Setup {
    let plugin = plugin("plugins/victorops-python").await;
    let flow = FlowSpec {
        name: FLOW.into(),
        reveal_secrets: false,
        vars: String::new(),
        extra: "",
    };
    start(&plugin, key, &[flow]).await
}

impl Setup {
    pub(crate) async fn run(&self, flow: &str, email: &str) -> HookReport {
        let event = EventInput::from_json(
            &json!({"user": {"email": email}, "fields": {"reason": "fix prod"}}).to_string(),
        )
        .unwrap();
        let report = self
            .warden
            .run_hook(flow, HookName::OnRequest, &event)
            .await
            .unwrap();
        // Whatever happened, the key is nowhere in what the run reports.
        assert!(!format!("{report:?}").contains(API_KEY), "{report:#?}");
        report
    }

    pub(crate) async fn request(&self, email: &str) -> HookReport {
        self.run(FLOW, email).await
    }

    pub(crate) async fn identity(&self, email: &str) -> Option<String> {
        let stored = self
            .warden
            .identity_store()
            .identities_of(email)
            .await
            .unwrap();
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

/// The hook failed as a plugin error (and failed closed): its message.
pub(crate) fn plugin_error(report: &HookReport) -> &str {
    assert_eq!(report.decision(), Decision::Continue);
    match &report.outcome {
        Err(failure) => match &failure.kind {
            FailureKind::PluginError { message } => message,
            other => panic!("expected a plugin error, got {other:?}"),
        },
        Ok(decision) => panic!(
            "expected a failure, got {decision:?}\nlogs: {:#?}",
            report.logs
        ),
    }
}

pub(crate) fn assert_contains(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "expected {wanted:?} in:\n{text}");
}

/// The probe in one flow per probe, `s-<probe>` sealed (reveal_secrets = false) and
/// `r-<probe>` revealing; `extra` goes into every flow's table.
pub(crate) async fn probe_with(probes: &[&str], extra: &'static str) -> Setup {
    let plugin = plugin("tests/python-plugins/probe").await;
    let mut flows = Vec::new();
    for probe in probes {
        let name = probe.replace(':', "-");
        for (prefix, reveal_secrets) in [("s", false), ("r", true)] {
            flows.push(FlowSpec {
                name: format!("{prefix}-{name}"),
                reveal_secrets,
                vars: format!("probe = {probe:?}"),
                extra,
            });
        }
    }
    start(&plugin, API_KEY, &flows).await
}

pub(crate) async fn probe(probes: &[&str]) -> Setup {
    probe_with(probes, "").await
}

/// Builds `source` as a plugin.py in a scratch folder; the build must fail. Its stderr.
pub(crate) fn failed_build(source: &str) -> (String, PathBuf) {
    let scratch = Scratch::new();
    let dir = scratch.path().join("my-plugin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugin.py"), source).unwrap();
    let out = scratch.path().join("out.wasm");
    let output = python::run_build_script(&dir, &out);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the build succeeded:\n{stderr}");
    assert!(!out.exists());
    let dir = dir.canonicalize().unwrap();
    drop(scratch);
    (stderr, dir)
}
