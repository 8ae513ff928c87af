//! A plugin that breaks the component model's contract in ways warden-sdk never would (the
//! `raw` test plugin, written with wit-bindgen alone): resource handles used after their drop
//! or never handed out, strings that are not UTF-8, enum cases that do not exist, pointers
//! outside its memory, in what it passes the host and in what it returns. Each is the
//! plugin's fault: the failure is blamed on it and names the cause (never only wasmtime's
//! "error while executing at wasm backtrace"), the request fails closed, and the host runs
//! the next event.

use std::sync::Arc;

use warden::secrets::SecretStore;
use warden::store::Store;
use warden::{Blame, Config, Decision, EventInput, HookName, StartOptions, Warden};
use warden_tests::{Scratch, artifacts, toml_path};

/// The raw plugin's flows, one per `(name, action)`, and `healthy`, which approves; all in an
/// environment holding one integration with secret `vo_key`.
async fn start(scratch: &Scratch, flows: &[(&str, &str)]) -> Warden {
    scratch.write("vo.key", "vo-secret-value");
    let mut text = r#"
[store]
path = "warden.db"

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = { victorops = "victorops" }
"#
    .to_string();
    for (name, action) in flows.iter().chain(&[("healthy", "approve:ok")]) {
        text.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\n",
            toml_path(artifacts::RAW)
        ));
    }
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(Store::open_in_memory().unwrap());
    let secrets = Arc::new(SecretStore::new(&config.secrets));
    Warden::start_with(config, store, secrets, StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event() -> EventInput {
    EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap()
}

/// Runs each `(flow, action, cause)`: a failure of kind `misuse`, blamed on the plugin, whose
/// message names `cause` and keeps wasmtime's backtrace out; the decision is `continue`; and
/// the healthy flow decides right after.
async fn each_is_the_plugins_fault(cases: &[(&str, &str, &str)]) {
    let scratch = Scratch::new();
    let flows: Vec<(&str, &str)> = cases.iter().map(|(f, a, _)| (*f, *a)).collect();
    let warden = start(&scratch, &flows).await;
    for (flow, _, cause) in cases {
        let report = warden
            .run_hook(flow, HookName::OnRequest, &event())
            .await
            .unwrap();
        let Err(failure) = &report.outcome else {
            panic!("{flow}: expected a failure, got {:?}", report.outcome);
        };
        let message = failure.to_string();
        let kind = serde_json::to_value(&failure.kind).unwrap();
        assert_eq!(kind["kind"], "misuse", "{flow}: {message}");
        assert_eq!(failure.blame(), Blame::Plugin, "{flow}: {message}");
        assert!(
            message.starts_with(&format!("flow `{flow}`, hook on_request: ")),
            "{flow}: {message}"
        );
        assert!(message.contains(cause), "{flow}: {message}");
        assert!(!message.contains("wasm backtrace"), "{flow}: {message}");
        assert!(!message.contains('\n'), "{flow}: {message}");
        assert_eq!(report.decision(), Decision::Continue, "{flow}");

        let next = warden
            .run_hook("healthy", HookName::OnRequest, &event())
            .await
            .unwrap();
        assert_eq!(
            next.outcome,
            Ok(Decision::Approve {
                reason: Some("ok".into())
            }),
            "after {flow}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_handle_used_after_its_drop_or_never_given_is_the_plugins_fault() {
    each_is_the_plugins_fault(&[
        (
            "use_after_drop",
            "use-after-drop:vo_key",
            "unknown handle index",
        ),
        (
            "forged_handle",
            "forged-handle",
            "unknown handle index 30583",
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_arguments_to_a_host_call_are_the_plugins_fault() {
    each_is_the_plugins_fault(&[
        ("invalid_utf8", "invalid-utf8", "invalid utf-8"),
        ("bad_level", "bad-level", "unexpected discriminant: 9"),
        (
            "bad_pointer",
            "bad-pointer",
            "string pointer/length out of bounds of memory",
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_return_value_is_the_plugins_fault() {
    each_is_the_plugins_fault(&[
        (
            "bad_result",
            "return-bad-result",
            "invalid expected discriminant",
        ),
        (
            "bad_decision",
            "return-bad-decision",
            "unexpected discriminant: 9",
        ),
        ("bad_utf8", "return-bad-utf8", "invalid utf-8"),
        (
            "bad_reason_pointer",
            "return-bad-pointer",
            "string pointer/length out of bounds of memory",
        ),
    ])
    .await;
}
