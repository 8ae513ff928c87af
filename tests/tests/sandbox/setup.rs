//! What the sandbox tests share: a config with two environments around the probe plugin,
//! ways to start it and run one action, and the checks on a hook's report. Kept apart so
//! that sandbox.rs and sandbox/http.rs hold only their tests.

use warden::capabilities::refusal::RefusalKind;
use warden::{
    Config, Decision, EventInput, FailureKind, HookName, HookReport, SharedEngine, StartOptions,
    Warden,
};
use warden_tests::{Scratch, artifacts, toml_path, two_environments};

pub(crate) const VO_SECRET: &str = "vo-secret-value-0123";
const BILLING_SECRET: &str = "billing-secret-4567";

/// A config with two environments: `main` (the victorops integration) and `finance` (the
/// billing integration); flow `probe` runs in `main`. `flow` adds lines to the flow's table.
pub(crate) fn config_text(scratch: &Scratch, plugin: &str, flow: &str) -> String {
    let environments = two_environments(
        scratch,
        &format!("{VO_SECRET}\n"),
        BILLING_SECRET,
        "settings = { api_url = \"http://127.0.0.1:1\" }",
    );
    format!(
        r#"
[store]
path = "warden.db"
{environments}
[flows.probe]
environment = "main"
plugin = {plugin}
{flow}
"#,
        plugin = toml_path(plugin)
    )
}

pub(crate) async fn warden(scratch: &Scratch, plugin: &str, flow: &str) -> Warden {
    let path = scratch.config(&config_text(scratch, plugin, flow));
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Warden::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The probe plugin's flow on a host whose instances come from `engine`.
pub(crate) async fn probe_on_engine(
    scratch: &Scratch,
    engine: &SharedEngine,
    flow: &str,
) -> Warden {
    let config = Config::load(&scratch.config(&config_text(scratch, artifacts::PROBE, flow)))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = std::sync::Arc::new(warden::store::Store::open_in_memory().unwrap());
    let secrets = std::sync::Arc::new(warden::secrets::SecretStore::new(&config.secrets));
    let options = StartOptions {
        engine: Some(engine.clone()),
        ..StartOptions::default()
    };
    Warden::start_with(config, store, secrets, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn event() -> EventInput {
    EventInput::from_json(
        r#"{"user":{"email":"alice@example.com"},"fields":{"reason":"fix prod"}}"#,
    )
    .unwrap()
}

pub(crate) async fn probe(action: &str, extra: &str) -> (HookReport, Scratch) {
    let scratch = Scratch::new();
    let flow = format!("vars = {{ action = {action:?} }}\n{extra}");
    let warden = warden(&scratch, artifacts::PROBE, &flow).await;
    let report = warden
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    (report, scratch)
}

pub(crate) fn approved(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Approve { reason: Some(r) }) => r.clone(),
        other => panic!("expected an approval, got {other:?}"),
    }
}

pub(crate) fn denied(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Deny { reason: Some(r) }) => r.clone(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

pub(crate) fn failure(report: &HookReport) -> FailureKind {
    match &report.outcome {
        Err(f) => f.kind.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

pub(crate) fn refusal_kinds(report: &HookReport) -> Vec<RefusalKind> {
    report.refusals.iter().map(|r| r.kind).collect()
}
