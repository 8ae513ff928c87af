//! `warden check` on notification settings: a channel whose secret is missing and a flow
//! naming a channel that is not declared are each reported with file, line and key, and
//! the Slack URL is never printed.

use std::process::Command;

use warden_tests::{Scratch, artifacts, toml_path};

fn check(scratch: &Scratch, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["check", "--config"])
        .arg(scratch.path().join("warden.toml"))
        .envs(env.iter().copied())
        .output()
        .expect("run warden");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn config(scratch: &Scratch, notify: &str) {
    scratch.config(&format!(
        r#"
[secrets.slack]
source = "env"
name = "WARDEN_NOTIFY_CLI_SLACK_URL"

[channels.ops]
type = "slack"
url_secret = "slack"

[channels.audit]
type = "webhook"
url = "https://hooks.example.com/warden"
signing_secret = "signing"

[environments.main]

[flows.access]
environment = "main"
plugin = {}

[flows.access.notify]
{notify}
"#,
        toml_path(artifacts::PROBE)
    ));
}

#[test]
fn check_reports_a_missing_channel_secret_and_an_unknown_channel() {
    let scratch = Scratch::new();
    config(&scratch, "waiting = [\"ops\", \"pager\"]");
    let slack = (
        "WARDEN_NOTIFY_CLI_SLACK_URL",
        "https://hooks.slack.com/services/T/B/s3cr3t",
    );
    let (ok, text) = check(&scratch, &[slack]);
    assert!(!ok, "{text}");
    let file = scratch.path().join("warden.toml");
    for expected in [
        format!(
            "{}:13:1: channels.audit.signing_secret: channel `audit` names secret `signing`, which is not declared under [secrets] (declared: slack)",
            file.display()
        ),
        format!(
            "{}:22:1: flows.access.notify.waiting: flow `access` names channel `pager`, which is not declared under [channels] (declared: audit, ops)",
            file.display()
        ),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("s3cr3t"), "the Slack URL leaked:\n{text}");

    // All declared: check passes and lists where each event goes.
    scratch.write("signing.key", "k");
    let declared = scratch.path().join("warden.toml");
    let text = std::fs::read_to_string(&declared).unwrap().replace(
        "[environments.main]",
        "[secrets.signing]\nsource = \"file\"\npath = \"signing.key\"\n\n[environments.main]",
    );
    std::fs::write(&declared, text.replace("\"pager\"", "\"audit\"")).unwrap();
    let (ok, text) = check(&scratch, &[slack]);
    assert!(ok, "{text}");
    assert!(
        text.contains("  notify            waiting → ops audit\n"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "the Slack URL leaked:\n{text}");

    // The Slack URL's variable unset: reported at the secret, and still never a value.
    config(&scratch, "waiting = [\"ops\"]");
    let (ok, text) = check(&scratch, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "secrets.slack.name: environment variable `WARDEN_NOTIFY_CLI_SLACK_URL` is not set"
        ),
        "{text}"
    );
}
