//! Hostile and broken input, case by case: configs, events for `warden hook`, and bodies for
//! the serve API. Each is refused with an error naming what is wrong and where, and nothing
//! of it is applied: no request stored, no config swapped in.

#[path = "malformed/setup.rs"]
mod setup;

use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::{Scratch, artifacts, start_serve, toml_path};

use setup::*;

#[test]
fn every_malformed_config_is_refused_naming_file_line_column_and_key() {
    let cases: &[(&str, String, &str)] = &[
        (
            "bad TOML syntax",
            broken("[flows.access]", "[flows.access"),
            "13:14: unclosed table",
        ),
        (
            "a string where a number belongs",
            broken("", "limits = { memory_mib = \"lots\" }\n"),
            "16:25: flows.access.limits.memory_mib: invalid type: string \"lots\", expected u64",
        ),
        (
            "a number where a string belongs",
            broken("external_id = \"ext-1\"", "external_id = 7"),
            "7:15: integrations.vo.external_id: invalid type: integer `7`, expected a string",
        ),
        (
            "an unknown key",
            broken("", "enviroment = \"main\"\n"),
            "16:1: flows.access.enviroment: unknown key",
        ),
        (
            "a missing required key",
            broken("plugin = \"plugin.wasm\"\n", ""),
            "missing field `plugin`",
        ),
        (
            "a secret whose variable is not set",
            broken("WARDEN_TEST_KEY", "WARDEN_UNSET_KEY"),
            "3:1: secrets.key.name: environment variable `WARDEN_UNSET_KEY` is not set",
        ),
        (
            "a secret file that does not exist",
            broken(
                "source = \"env\"\nname = \"WARDEN_TEST_KEY\"",
                "source = \"file\"\npath = \"nope.txt\"",
            ),
            "3:1: secrets.key.path: cannot read secret file",
        ),
        (
            "a secret file far too large to be a value",
            broken(
                "source = \"env\"\nname = \"WARDEN_TEST_KEY\"",
                "source = \"file\"\npath = \"huge.txt\"",
            ),
            "3:1: secrets.key.path: cannot read secret file",
        ),
        (
            "a token file far too large to be a token",
            broken(
                "",
                "[serve.tokens.a]\ntoken_file = \"huge.txt\"\nuser = \"a@example.com\"\nrole = \"admin\"\n",
            ),
            "huge.txt: it holds more than 64 KiB; it should hold the value alone",
        ),
        (
            "a flow name that cannot be part of a URL",
            broken("[flows.access]", "[flows.\"access/all\"]"),
            "13:8: flows.access/all: flow name `access/all` may hold only ASCII letters, digits, `-` and `_`",
        ),
        (
            "a secret source that does not exist",
            broken("source = \"env\"", "source = \"vault\""),
            "2:1: secrets.key.source: unknown source `vault`",
        ),
        (
            "an integration naming an undeclared secret",
            broken("secrets = [\"key\"]", "secrets = [\"kye\"]"),
            "8:1: integrations.vo.secrets: integration `vo` names secret `kye`, which is not declared under [secrets] (declared: key)",
        ),
        (
            "an integration with an empty external id",
            broken("external_id = \"ext-1\"", "external_id = \" \""),
            "7:1: integrations.vo.external_id: must not be empty",
        ),
        (
            "an integration setting that is a table",
            broken("", "[integrations.vo.settings]\nurl = { a = 1 }\n"),
            "17:1: integrations.vo.settings.url: must be a string, number or boolean",
        ),
        (
            "an environment naming an undeclared integration",
            broken("{ vo = \"vo\" }", "{ vo = \"victorops\" }"),
            "11:18: environments.main.integrations.vo: environment `main` names integration `victorops`, which is not declared under [integrations] (declared: vo)",
        ),
        (
            "a flow naming an undeclared environment",
            broken("environment = \"main\"", "environment = \"prod\""),
            "14:1: flows.access.environment: flow `access` names environment `prod`, which is not declared under [environments] (declared: main)",
        ),
        (
            "a plugin file that does not exist",
            broken("plugin.wasm", "missing.wasm"),
            "15:1: flows.access.plugin: plugin file",
        ),
        (
            "a memory limit of zero",
            broken("", "limits = { memory_mib = 0 }\n"),
            "16:12: flows.access.limits.memory_mib: must be between 1 and 4096, not 0",
        ),
        (
            "an HTTP request budget of zero",
            broken("", "limits = { http_requests = 0 }\n"),
            "16:12: flows.access.limits.http_requests: must be between 1 and 10000, not 0",
        ),
        (
            "a timeout beyond ten minutes",
            broken("", "limits = { timeout_ms = 600001 }\n"),
            "16:12: flows.access.limits.timeout_ms: must be between 1 and 600000, not 600001",
        ),
        (
            "a log cap too small to hold a line",
            broken("", "limits = { log_max_bytes = 10 }\n"),
            "16:12: flows.access.limits.log_max_bytes: must be between 1024 and 16777216, not 10",
        ),
        (
            "every host allowed",
            broken("", "allowed_hosts = [\"*\"]\n"),
            "16:1: flows.access.allowed_hosts: `*` would allow every host",
        ),
        (
            "an allowed host with a scheme other than http(s)",
            broken("", "allowed_hosts = [\"ftp://files.example.com\"]\n"),
            "16:1: flows.access.allowed_hosts: `ftp://files.example.com`: scheme must be http or https",
        ),
        (
            "a flow var that is a list",
            broken("", "vars = { teams = [\"ops\"] }\n"),
            "16:10: flows.access.vars.teams: must be a string, number or boolean",
        ),
        (
            "a field of an unknown type",
            broken("", "fields.reason = { type = \"text\" }\n"),
            "16:19: flows.access.fields.reason.type: unknown type `text`",
        ),
        (
            "a duration field that is not a duration",
            broken("", "fields.duration = { type = \"int\" }\n"),
            "16:21: flows.access.fields.duration.type: field `duration` says how long access lasts",
        ),
        (
            "a flow declared twice",
            broken("", "\n[flows.access]\nenvironment = \"main\"\n"),
            "17:8: duplicate key",
        ),
        (
            "a serve address that is not one",
            broken("", "[serve]\nlisten = \"localhost\"\n"),
            "17:1: serve.listen: `localhost` is not an address like 127.0.0.1:8080",
        ),
        (
            "no room for a single request in flight",
            broken("", "[serve]\nmax_in_flight = 0\n"),
            "17:1: serve.max_in_flight: must be between 1 and 100000, not 0",
        ),
        (
            "an API token with an unknown role",
            broken(
                "",
                "[serve.tokens.a]\ntoken_env = \"WARDEN_TEST_KEY\"\nuser = \"a@example.com\"\nrole = \"root\"\n",
            ),
            "19:1: serve.tokens.a.role: unknown role `root`",
        ),
        (
            "two API tokens with the same value",
            broken(
                "",
                "[serve.tokens.a]\ntoken_env = \"WARDEN_TEST_KEY\"\nuser = \"a@example.com\"\nrole = \"admin\"\n\
                 [serve.tokens.b]\ntoken_env = \"WARDEN_TEST_KEY\"\nuser = \"b@example.com\"\nrole = \"requester\"\n",
            ),
            "20:15: serve.tokens.b: has the same token as `a`",
        ),
    ];
    let scratch = Scratch::new();
    scratch.write("huge.txt", vec![b'x'; 65 * 1024 + 1]);
    assert!(parse(&scratch, VALID).is_ok(), "the base config is valid");
    let file = scratch.path().join("warden.toml").display().to_string();
    let mut failures = Vec::new();
    for (what, text, expected) in cases {
        match parse(&scratch, text) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(errors) => {
                let wanted = if expected.contains(": ") && expected.as_bytes()[0].is_ascii_digit() {
                    format!("{file}:{expected}")
                } else {
                    expected.to_string()
                };
                if !errors.iter().any(|e| e.contains(&wanted)) {
                    failures.push(format!("{what}: wanted `{wanted}` in {errors:#?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_events_for_warden_hook_are_refused_before_any_plugin_runs() {
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        "[environments.main]\n[flows.access]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = \"approve:ran\" }}\n",
        toml_path(artifacts::PROBE)
    ));
    let config = config.to_str().unwrap();
    let many_fields: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("f{i}"), json!(i))).collect();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "not JSON",
            "{\"user\": ".into(),
            "invalid event: EOF while parsing a value at line 1 column 9",
        ),
        (
            "a list instead of an object",
            r#"[{"email":"a@x.com"}]"#.into(),
            "invalid event: an event must be a JSON object, not a list",
        ),
        (
            "no requester email",
            r#"{"user":{}}"#.into(),
            "missing field `email`",
        ),
        (
            "an email that is a number",
            r#"{"user":{"email":7}}"#.into(),
            "invalid type: integer `7`, expected a string at line 1 column 18",
        ),
        (
            "an email that is not one",
            r#"{"user":{"email":"alice"}}"#.into(),
            "`user.email` `alice` is not an email address",
        ),
        (
            "a requester email that is blank",
            r#"{"user":{"email":"a@x.com"},"requester":{"email":"  "}}"#.into(),
            "`requester.email` `` is not an email address",
        ),
        (
            "fields that are a list",
            r#"{"user":{"email":"a@x.com"},"fields":[1]}"#.into(),
            "invalid type: sequence, expected a map",
        ),
        (
            "a null field",
            r#"{"user":{"email":"a@x.com"},"fields":{"reason":null}}"#.into(),
            "field `reason` is null",
        ),
        (
            "a fractional number",
            r#"{"user":{"email":"a@x.com"},"fields":{"n":1.5}}"#.into(),
            "field `n`: 1.5 is not a whole number",
        ),
        (
            "an object that is not a duration",
            r#"{"user":{"email":"a@x.com"},"fields":{"d":{"minutes":5}}}"#.into(),
            "field `d`: an object must be a duration",
        ),
        (
            "a timestamp that is not RFC 3339",
            r#"{"user":{"email":"a@x.com"},"timestamp":"yesterday"}"#.into(),
            "`timestamp` `yesterday` is not RFC 3339",
        ),
        (
            "an event for another step",
            r#"{"user":{"email":"a@x.com"},"name":"approve"}"#.into(),
            "`name` is `approve` but hook on_request runs on `request` events",
        ),
        (
            "an unknown key",
            r#"{"user":{"email":"a@x.com"},"feilds":{}}"#.into(),
            "unknown field `feilds`",
        ),
        (
            "a field over 64 KiB",
            json!({"user": {"email": "a@x.com"}, "fields": {"big": "x".repeat(70_000)}})
                .to_string(),
            "field `big` is over 65536 bytes",
        ),
        (
            "too many fields",
            json!({"user": {"email": "a@x.com"}, "fields": many_fields}).to_string(),
            "more than 256 fields",
        ),
        (
            "a stray character",
            "{\"user\":\u{fffd}}".into(),
            "invalid event: expected value at line 1 column 9",
        ),
    ];
    for (what, event, expected) in &cases {
        let out = warden(
            &[
                "hook", "--config", config, "--flow", "access", "--event", "-",
            ],
            event.as_bytes(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: wanted `{expected}` in {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{what}: a decision was printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Bytes that are not UTF-8 at all.
    let out = warden(
        &[
            "hook", "--config", config, "--flow", "access", "--event", "-",
        ],
        b"{\"user\":\xff}",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("standard input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_api_bodies_get_a_4xx_naming_the_problem_and_store_nothing() {
    let scratch = Scratch::new();
    let api = Api::start(&scratch).await;
    let (status, pending) = api.post("/v1/flows/human/requests", b"{}".to_vec()).await;
    assert_eq!(status, 201, "{pending}");
    assert_eq!(pending["state"], "pending");
    let id = pending["id"].as_str().unwrap().to_string();
    let audit_before = api.get("/v1/admin/audit").await["entries"].clone();

    let create = "/v1/flows/strict/requests";
    let approve = format!("/v1/requests/{id}/approve");
    let deny = format!("/v1/requests/{id}/deny");
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "not JSON",
            create,
            b"reason=x".to_vec(),
            422,
            "invalid JSON body: expected value at line 1 column 1",
        ),
        (
            "cut-off JSON",
            create,
            b"{\"fields\":{".to_vec(),
            422,
            "EOF while parsing",
        ),
        (
            "not UTF-8",
            create,
            b"{\"fields\":{\"reason\":\"\xff\"}}".to_vec(),
            422,
            "invalid JSON body",
        ),
        (
            "a JSON list",
            create,
            br#"[{"email":"a@example.com"},{}]"#.to_vec(),
            422,
            "it must be an object, not a list",
        ),
        (
            "fields that are a string",
            create,
            br#"{"fields":"x"}"#.to_vec(),
            422,
            "invalid type: string \"x\", expected a map",
        ),
        (
            "a requester with no email",
            create,
            br#"{"requester":{},"fields":{"reason":"x"}}"#.to_vec(),
            422,
            "missing field `email`",
        ),
        (
            "a requester email that is not one",
            create,
            br#"{"requester":{"email":"bob"},"fields":{"reason":"x"}}"#.to_vec(),
            422,
            "`user.email` `bob` is not an email address",
        ),
        (
            "a requester that is a string",
            create,
            br#"{"requester":"bob@example.com"}"#.to_vec(),
            422,
            "invalid type: string",
        ),
        (
            "a request id that is not UTF-8",
            "/v1/requests/%ff/approve",
            br#"{"reason":"x"}"#.to_vec(),
            400,
            "the path is not valid: Invalid URL: Invalid UTF-8",
        ),
        (
            "an unknown top-level key",
            create,
            br#"{"fields":{"reason":"x"},"priority":1}"#.to_vec(),
            422,
            "unknown field `priority`",
        ),
        (
            "a missing required field",
            create,
            br#"{"fields":{}}"#.to_vec(),
            422,
            "field `reason`: is required",
        ),
        (
            "an int field given text",
            create,
            br#"{"fields":{"reason":"x","count":"three"}}"#.to_vec(),
            422,
            "field `count`: must be an int",
        ),
        (
            "a zero duration",
            create,
            br#"{"fields":{"reason":"x","duration":"0s"}}"#.to_vec(),
            422,
            "field `duration`: must be between 1 second",
        ),
        (
            "a duration with a fraction of a second",
            create,
            br#"{"fields":{"reason":"x","duration":"1.9s"}}"#.to_vec(),
            422,
            "field `duration`: `1.9s` is not a whole number of seconds",
        ),
        (
            "a required list with no item",
            "/v1/flows/listed/requests",
            br#"{"fields":{"teams":[]}}"#.to_vec(),
            422,
            "field `teams`: is required and must not be blank",
        ),
        (
            "a required list of blank items",
            "/v1/flows/listed/requests",
            br#"{"fields":{"teams":[""," ","\u0000","\u200b"]}}"#.to_vec(),
            422,
            "field `teams`: is required and must not be blank",
        ),
        (
            "a null field on a flow without a schema",
            "/v1/flows/human/requests",
            br#"{"fields":{"x":null}}"#.to_vec(),
            422,
            "field `x` is null",
        ),
        (
            "a nested object field",
            "/v1/flows/human/requests",
            br#"{"fields":{"x":{"y":1}}}"#.to_vec(),
            422,
            "field `x`: an object must be a duration",
        ),
        (
            "a body over max_body_bytes",
            create,
            format!("{{\"fields\":{{\"reason\":\"{}\"}}}}", "x".repeat(5000)).into_bytes(),
            413,
            "larger than serve.max_body_bytes",
        ),
        (
            "an unknown flow",
            "/v1/flows/nope/requests",
            b"{}".to_vec(),
            404,
            "unknown flow `nope`",
        ),
        (
            "an approval that is not JSON",
            &approve,
            b"yes".to_vec(),
            422,
            "invalid JSON body",
        ),
        (
            "an approver with no email",
            &approve,
            br#"{"approver":{}}"#.to_vec(),
            422,
            "missing field `email`",
        ),
        (
            "an approver email that is not one",
            &approve,
            br#"{"approver":{"email":"carol"}}"#.to_vec(),
            422,
            "`approver.email` `carol` is not an email address",
        ),
        (
            "a denier email that is blank",
            &deny,
            br#"{"approver":{"email":" "}}"#.to_vec(),
            422,
            "`approver.email` `` is not an email address",
        ),
        (
            "a reason that is a number",
            &deny,
            br#"{"reason":5}"#.to_vec(),
            422,
            "invalid type: integer `5`, expected a string",
        ),
        (
            "an unknown decision key",
            &approve,
            br#"{"approved":true}"#.to_vec(),
            422,
            "unknown field `approved`",
        ),
    ];
    for (what, path, body, status, expected) in cases {
        let (got, reply) = api.post(path, body).await;
        assert_eq!(got, status, "{what}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{what}: wanted `{expected}` in {reply}"
        );
    }

    let requests = api.get("/v1/requests").await["requests"].clone();
    assert_eq!(
        requests.as_array().unwrap().len(),
        1,
        "only the valid request is stored: {requests:#}"
    );
    let now = api.get(&format!("/v1/requests/{id}")).await;
    assert_eq!(now["state"], "pending");
    assert_eq!(
        now["history"], pending["history"],
        "nothing was added to its history"
    );
    assert_eq!(
        api.get("/v1/admin/audit").await["entries"],
        audit_before,
        "nothing was audited"
    );
    api.server.shutdown().await.unwrap();
}

/// `warden serve` as a process whose config is replaced by a broken one, then SIGHUP.
#[test]
fn a_broken_config_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let scratch = Scratch::new();
    scratch.write("admin.token", ADMIN);
    let config = |action: &str, plugin: &str| {
        format!(
            "[store]\npath = \"warden.db\"\n\n[serve.tokens.admin]\ntoken_file = \"admin.token\"\nuser = \"admin@example.com\"\nrole = \"admin\"\n\n\
             [environments.main]\n\n[flows.access]\nenvironment = \"main\"\nplugin = {plugin}\nvars = {{ action = {action:?} }}\n"
        )
    };
    scratch.config(&config("deny:old", &toml_path(artifacts::PROBE)));
    let log = std::fs::File::create(scratch.path().join("serve.log")).unwrap();
    let served = start_serve(
        env!("CARGO_BIN_EXE_warden"),
        &scratch.path().join("warden.toml"),
        &[],
        log.into(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (mut child, url) = (served.child, served.url);
    let submit = |url: &str| -> Value {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{url}/v1/flows/access/requests"))
                .bearer_auth(ADMIN)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            serde_json::from_str(&response.text().await.unwrap()).unwrap()
        })
    };
    assert_eq!(submit(&url)["reason"], "old");

    // A new plugin action, but also a flow whose plugin is missing: all of it is refused.
    let mut broken = config("deny:new", &toml_path(artifacts::PROBE));
    broken.push_str("\n[flows.other]\nenvironment = \"main\"\nplugin = \"missing.wasm\"\n");
    scratch.config(&broken);
    signal(&child, "HUP");
    let log_path = scratch.path().join("serve.log");
    let mut refused = false;
    for _ in 0..100 {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if log.contains("config reload refused") && log.contains("missing.wasm") {
            // Each error is an event, a line of its own saying it is the refusal, not a
            // line break the log writes out as `\n` in one event.
            let refusal: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("config reload refused"))
                .collect();
            assert!(
                refusal.len() >= 2 && refusal.iter().all(|line| !line.contains("\\n")),
                "{log}"
            );
            assert!(
                refusal[0].contains("the old config keeps serving: 1 problem(s) in the config:"),
                "{log}"
            );
            assert!(
                refusal[1..].iter().any(
                    |line| line.contains("flows.other.plugin") && line.contains("missing.wasm")
                ),
                "{log}"
            );
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "the reload was not refused");
    assert_eq!(
        submit(&url)["reason"],
        "old",
        "the old config keeps serving"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}
