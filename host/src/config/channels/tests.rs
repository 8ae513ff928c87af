use std::path::Path;

use super::super::{Config, ConfigErrors};
use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugin.wasm"), b"\0asm").unwrap();
    let path = dir.path().join("warden.toml");
    Config::parse(text, Path::new(&path), &|name| match name {
        "SLACK_URL" => Some("https://hooks.slack.com/services/T0/B0/sekrit-part".into()),
        "LOCAL_SLACK" => Some("http://127.0.0.1:9999/slack".into()),
        "NOT_A_URL" => Some("sekrit-not-a-url".into()),
        "SIGNING" => Some("signing-key".into()),
        _ => None,
    })
}

fn errors(text: &str) -> String {
    parse(text).expect_err("should be rejected").to_string()
}

const SECRETS: &str = "[secrets.slack]\nsource = \"env\"\nname = \"SLACK_URL\"\n\
    [secrets.local]\nsource = \"env\"\nname = \"LOCAL_SLACK\"\n\
    [secrets.bad]\nsource = \"env\"\nname = \"NOT_A_URL\"\n\
    [secrets.signing]\nsource = \"env\"\nname = \"SIGNING\"\n";
const FLOW: &str = "[environments.e]\n[flows.f]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\n";

#[test]
fn channels_and_a_flows_routes_are_read() {
    let config = parse(&format!(
        "{SECRETS}{FLOW}[flows.f.notify]\nwaiting = [\"ops\", \"audit\", \"ops\"]\nhook_failed = [\"local\"]\n\
         [serve]\npublic_url = \"https://warden.example.com/\"\n\
         [channels.ops]\ntype = \"slack\"\nurl_secret = \"slack\"\n\
         [channels.local]\ntype = \"slack\"\nurl_secret = \"local\"\n\
         [channels.audit]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/warden\"\nsigning_secret = \"signing\"\ntimeout_ms = 250\nretry_for_seconds = 60\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.serve.public_url.as_deref(),
        Some("https://warden.example.com")
    );
    let ops = &config.channels["ops"];
    assert_eq!(ops.kind_name(), "slack");
    assert_eq!(
        ops.timeout,
        Duration::from_millis(DEFAULT_CHANNEL_TIMEOUT_MS)
    );
    assert_eq!(
        ops.retry_for,
        Duration::from_secs(DEFAULT_RETRY_FOR_SECONDS)
    );
    let audit = &config.channels["audit"];
    match &audit.kind {
        ChannelKind::Webhook { url, signing } => {
            assert_eq!(url.as_str(), "https://hooks.example.com/warden");
            assert_eq!(signing.value.expose(), "signing-key");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (audit.timeout, audit.retry_for),
        (Duration::from_millis(250), Duration::from_secs(60))
    );
    let flow = config.flow("f").unwrap();
    assert_eq!(flow.notify[&NotifyEvent::Waiting], ["ops", "audit"]);
    assert_eq!(flow.notify[&NotifyEvent::HookFailed], ["local"]);
    assert!(!flow.notify.contains_key(&NotifyEvent::Decided));
    // A secret's value never shows in the model's debug print.
    assert!(!format!("{config:?}").contains("sekrit-part"));
}

#[test]
fn bad_channels_and_routes_are_each_named() {
    let text = errors(&format!(
        "{SECRETS}{FLOW}[flows.f.notify]\ndecided = [\"nowhere\"]\n\
         [serve]\npublic_url = \"warden.example.com\"\n\
         [channels.a]\ntype = \"slack\"\nurl = \"https://hooks.slack.com/x\"\nurl_secret = \"slack\"\n\
         [channels.b]\ntype = \"slack\"\nurl_secret = \"missing\"\n\
         [channels.c]\ntype = \"slack\"\nurl_secret = \"bad\"\n\
         [channels.d]\ntype = \"webhook\"\nurl = \"ftp://x\"\nsigning_secret = \"signing\"\n\
         [channels.e]\ntype = \"webhook\"\nurl = \"https://x.example\"\n\
         [channels.g]\ntype = \"email\"\n\
         [channels.h]\ntype = \"webhook\"\nurl = \"https://x.example\"\nsigning_secret = \"signing\"\ntimeout_ms = 1\nretry_for_seconds = 0\nextra = 1\n\
         [channels.\"bad name\"]\ntype = \"webhook\"\nurl = \"https://x.example\"\nsigning_secret = \"signing\"\n"
    ));
    for expected in [
        "flows.f.notify.decided: flow `f` names channel `nowhere`, which is not declared under [channels] (declared: a, b, bad name, c, d, e, g, h)",
        "serve.public_url: `warden.example.com` is not an http(s) URL",
        "channels.a.url: `url` is for `type = \"webhook\"`; a Slack webhook URL is a credential",
        "channels.b.url_secret: channel `b` names secret `missing`, which is not declared under [secrets]",
        "channels.c.url_secret: the value of secret `bad` is not an https URL",
        "channels.d.url: `ftp://x` is not an http(s) URL",
        "channels.e: needs `signing_secret`",
        "channels.g.type: unknown type `email`; expected `slack` or `webhook`",
        "channels.h.timeout_ms: must be between 100 and 60000, not 1",
        "channels.h.retry_for_seconds: must be between 1 and 604800, not 0",
        "channels.h.extra: unknown key",
        "channels.bad name: a channel name may hold only",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Each error has its line.
    assert!(
        text.lines().all(|l| l.contains("warden.toml:")),
        "an error without its place:\n{text}"
    );
    assert!(!text.contains("sekrit"), "a secret leaked: {text}");
}

#[test]
fn a_channel_whose_secret_does_not_resolve_is_reported_once_at_the_secret() {
    let text = errors(
        "[secrets.gone]\nsource = \"env\"\nname = \"UNSET\"\n\
         [channels.a]\ntype = \"slack\"\nurl_secret = \"gone\"\n",
    );
    assert!(
        text.contains("secrets.gone.name: environment variable `UNSET` is not set"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}
