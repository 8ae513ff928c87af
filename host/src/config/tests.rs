use std::path::{Path, PathBuf};

use super::*;

/// A folder with a plugin file and a secret file, so paths in configs resolve.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.path().join("key.txt"), "file-secret\n").unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("warden.toml")
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, &self.path(), &|name| match name {
            "VICTOROPS_API_KEY" => Some("env-secret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    fn errors(&self, text: &str) -> Vec<String> {
        self.parse(text)
            .expect_err("config should be rejected")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

const VALID: &str = r#"
[store]
path = "state/warden.db"

[secrets.victorops_api_key]
source = "env"
name = "VICTOROPS_API_KEY"

[secrets.from_file]
source = "file"
path = "key.txt"

[integrations.victorops]
type = "custom"
external_id = "aaabbcccddee"
secrets = ["victorops_api_key"]
settings = { api_url = "https://api.victorops.com", retries = 2 }

[integrations.other]
type = "custom"
external_id = "other-id"
secrets = ["from_file"]

[environments.main]
integrations = { victorops = "victorops" }

[flows.sensitive-access]
environment = "main"
plugin = "plugin.wasm"
allowed_hosts = ["https://api.victorops.com"]
vars = { victorops_teams = "", oncall_cache_seconds = 30 }
limits = { memory_mib = 32, timeout_ms = 2000 }
"#;

#[test]
fn the_documented_example_parses_into_the_model() {
    let fx = Fixture::new();
    let config = fx.parse(VALID).unwrap();
    assert_eq!(config.store_path, fx.dir.path().join("state/warden.db"));
    // Not beside the store: compiled plugins go to the user's own cache folder.
    assert_eq!(config.cache_dir, crate::runtime::plugin::user_cache_dir());
    let flow = config.flow("sensitive-access").unwrap();
    assert_eq!(flow.plugin, fx.dir.path().join("plugin.wasm"));
    assert_eq!(flow.limits.memory_bytes, 32 << 20);
    assert_eq!(flow.limits.timeout, Duration::from_millis(2000));
    assert_eq!(flow.limits.response_max_bytes, 1 << 20);
    assert_eq!(flow.vars["oncall_cache_seconds"], "30");
    assert!(flow.grants.reveal_secrets);
    let integration = &flow.grants.environment.integrations["victorops"];
    assert_eq!(integration.external_id, "aaabbcccddee");
    assert_eq!(integration.settings["retries"], "2");
    assert_eq!(integration.secrets[0].value.expose(), "env-secret");
    // Only the environment's integrations' secrets and services are granted.
    assert_eq!(
        flow.grants.secrets.keys().collect::<Vec<_>>(),
        ["victorops_api_key"]
    );
    assert!(
        flow.grants
            .services
            .contains(&("custom".into(), "aaabbcccddee".into()))
    );
    assert!(
        !flow
            .grants
            .services
            .contains(&("custom".into(), "other-id".into()))
    );
    assert_eq!(config.secrets["from_file"].value.expose(), "file-secret");
}

#[test]
fn secret_values_never_print() {
    let fx = Fixture::new();
    let config = fx.parse(VALID).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("env-secret"), "{debug}");
    assert!(!debug.contains("file-secret"), "{debug}");
    assert!(debug.contains("[REDACTED]"));
}

#[test]
fn every_unknown_key_is_reported_with_line_and_column() {
    let fx = Fixture::new();
    let text = VALID.replace(
        "limits = { memory_mib = 32, timeout_ms = 2000 }",
        "limits = { memory_mb = 32, timeout_ms = 2000 }\nallowed_host = []",
    ) + "\n[stores]\npath = \"x\"\n";
    let errors = fx.errors(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let file = fx.path().display().to_string();
    assert!(
        errors.contains(&format!(
            "{file}:32:12: flows.sensitive-access.limits.memory_mb: unknown key"
        )),
        "{errors:#?}"
    );
    assert!(
        errors.contains(&format!(
            "{file}:33:1: flows.sensitive-access.allowed_host: unknown key"
        )),
        "{errors:#?}"
    );
    assert!(
        errors.contains(&format!("{file}:35:2: stores: unknown key")),
        "{errors:#?}"
    );
}

#[test]
fn dangling_references_name_both_ends() {
    let fx = Fixture::new();
    let text = VALID
        .replace("environment = \"main\"", "environment = \"prod\"")
        .replace(
            "victorops = \"victorops\"",
            "victorops = \"victorops-typo\"",
        )
        .replace(
            "secrets = [\"from_file\"]",
            "secrets = [\"missing_secret\"]",
        );
    let errors = fx.errors(&text).join("\n");
    assert!(errors.contains("flow `sensitive-access` names environment `prod`, which is not declared under [environments] (declared: main)"), "{errors}");
    assert!(errors.contains("environment `main` names integration `victorops-typo`, which is not declared under [integrations] (declared: other, victorops)"), "{errors}");
    assert!(errors.contains("integration `other` names secret `missing_secret`, which is not declared under [secrets] (declared: from_file, victorops_api_key)"), "{errors}");
}

#[test]
fn unreadable_secrets_are_errors_naming_the_source() {
    let fx = Fixture::new();
    let text = VALID
        .replace(
            "name = \"VICTOROPS_API_KEY\"",
            "name = \"NOT_SET_ANYWHERE\"",
        )
        .replace("path = \"key.txt\"", "path = \"no-such-file.txt\"");
    let errors = fx.errors(&text).join("\n");
    assert!(
        errors.contains(
            "secrets.victorops_api_key.name: environment variable `NOT_SET_ANYWHERE` is not set"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("secrets.from_file.path: cannot read secret file"),
        "{errors}"
    );
    assert!(errors.contains("no-such-file.txt"), "{errors}");

    let text = VALID.replace("name = \"VICTOROPS_API_KEY\"", "name = \"EMPTY\"");
    assert!(
        fx.errors(&text)
            .join("\n")
            .contains("environment variable `EMPTY` is empty")
    );

    let text = VALID.replace("source = \"env\"", "source = \"vault\"");
    assert!(
        fx.errors(&text)
            .join("\n")
            .contains("unknown source `vault`; expected `env`, `file` or `aws-secrets-manager`")
    );
}

/// A FIFO named as a secret file or `ca_file` by mistake: opening it for reading would wait
/// for a writer that never comes, so the check must refuse it without opening it blocking.
#[test]
fn a_fifo_or_a_folder_where_a_file_belongs_is_named_not_waited_on() {
    let fx = Fixture::new();
    let dir = fx.dir.path();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        dir.join("pipe"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    std::fs::create_dir(dir.join("folder")).unwrap();
    let cases = [("pipe", "not a regular file"), ("folder", "a folder")];
    let (done, finished) = std::sync::mpsc::channel();
    let texts: Vec<(String, String)> = cases
        .iter()
        .flat_map(|(name, why)| {
            [
                VALID.replace("path = \"key.txt\"", &format!("path = \"{name}\"")),
                format!("{VALID}\n[http]\nca_file = \"{name}\"\n"),
            ]
            .map(|text| (text, why.to_string()))
        })
        .collect();
    let fx = std::sync::Arc::new(fx);
    let parsing = fx.clone();
    std::thread::spawn(move || {
        let errors: Vec<(Vec<String>, String)> = texts
            .iter()
            .map(|(text, why)| (parsing.errors(text), why.clone()))
            .collect();
        done.send(errors).unwrap();
    });
    let results = finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the config check waited on a FIFO");
    for (errors, why) in results {
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(&format!("it is {why}")), "{errors:?}");
    }
}

#[test]
fn a_missing_plugin_file_is_an_error() {
    let fx = Fixture::new();
    let text = VALID.replace("plugin.wasm", "plugins/nope.wasm");
    let errors = fx.errors(&text).join("\n");
    assert!(
        errors.contains("flows.sensitive-access.plugin: plugin file"),
        "{errors}"
    );
    assert!(errors.contains("nope.wasm does not exist"), "{errors}");
    // There, but not a file to read: named so.
    let errors = fx
        .errors(&VALID.replace("plugin.wasm", "/dev/zero"))
        .join("\n");
    assert!(
        errors.contains("plugin file /dev/zero is not a regular file"),
        "{errors}"
    );
}

#[test]
fn allowed_hosts_refuses_a_bare_star() {
    let fx = Fixture::new();
    let text = VALID.replace("[\"https://api.victorops.com\"]", "[\"*\"]");
    let errors = fx.errors(&text).join("\n");
    assert!(
        errors.contains("flows.sensitive-access.allowed_hosts: `*` would allow every host"),
        "{errors}"
    );
}

#[test]
fn limits_out_of_range_are_errors() {
    let fx = Fixture::new();
    let text = VALID.replace("memory_mib = 32", "memory_mib = 0");
    let errors = fx.errors(&text).join("\n");
    assert!(
        errors.contains("limits.memory_mib: must be between 1 and 4096, not 0"),
        "{errors}"
    );
}

#[test]
fn syntax_and_type_errors_carry_a_location() {
    let fx = Fixture::new();
    let errors = fx.errors("[flows.x]\nenvironment = \n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(&format!("{}:2:", fx.path().display())),
        "{errors:?}"
    );

    let errors = fx.errors(&VALID.replace("timeout_ms = 2000", "timeout_ms = \"2s\""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(":32:42:"), "{errors:?}");
}

#[test]
fn an_empty_store_path_is_named() {
    let fx = Fixture::new();
    let errors = fx.errors(&VALID.replace("path = \"state/warden.db\"", "path = \" \""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("store.path: is empty"), "{errors:?}");
}

#[test]
fn defaults_apply_when_optional_keys_are_absent() {
    let fx = Fixture::new();
    let text = "[environments.e]\n[flows.f]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\nreveal_secrets = false\n";
    let config = fx.parse(text).unwrap();
    assert_eq!(config.store_path, fx.dir.path().join("warden.db"));
    assert_eq!(config.cache_dir, crate::runtime::plugin::user_cache_dir());
    let with_cache = fx
        .parse(&format!("[cache]\ndir = \"compiled\"\n{text}"))
        .unwrap();
    assert_eq!(with_cache.cache_dir, Some(fx.dir.path().join("compiled")));
    let errors = fx
        .parse(&format!("[cache]\ndir = \" \"\n{text}"))
        .unwrap_err()
        .summary();
    assert!(errors.contains(":2:1: cache.dir: is empty"), "{errors}");
    let flow = config.flow("f").unwrap();
    assert_eq!(flow.limits, Limits::default());
    assert!(!flow.grants.reveal_secrets);
    assert!(flow.grants.hosts.rules().is_empty());
    let _: &Path = &config.source;
}

/// A stand-in for AWS Secrets Manager holding `main/json` (a JSON object) and `main/plain`.
fn fake_aws(secret: &AwsSecret) -> Result<String, String> {
    match secret.secret_id.as_str() {
        "main/json" => Ok(r#"{"api_key":"from-aws","n":7}"#.into()),
        "main/plain" => Ok("plain-aws".into()),
        other => Err(format!("AWS Secrets Manager has no secret `{other}`")),
    }
}

fn parse_aws(fx: &Fixture, text: &str) -> Result<Config, ConfigErrors> {
    Config::parse_with(
        text,
        &fx.path(),
        &|_| Some("{\"k\":\"env-json\"}".into()),
        &fake_aws,
    )
}

#[test]
fn aws_and_json_key_secrets_parse_into_the_model() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("key.json"), r#"{"token": "file-json"}"#).unwrap();
    let config = parse_aws(
        &fx,
        r#"
[secrets.from_aws]
source = "aws-secrets-manager"
path = "main/json"
json_key = "api_key"
region = "eu-west-1"
endpoint = "http://127.0.0.1:4566"
cache_seconds = 60

[secrets.plain_aws]
source = "aws-secrets-manager"
path = "main/plain"

[secrets.file_json]
source = "file"
path = "key.json"
json_key = "token"

[secrets.env_json]
source = "env"
name = "ANY"
json_key = "k"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let aws = &config.secrets["from_aws"];
    assert_eq!(aws.value.expose(), "from-aws");
    assert_eq!(aws.path, "main/json");
    assert_eq!(
        aws.source,
        SecretSource::AwsSecretsManager(AwsSecret {
            secret_id: "main/json".into(),
            json_key: Some("api_key".into()),
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:4566".into()),
            cache_ttl: Duration::from_secs(60),
        })
    );
    let SecretSource::AwsSecretsManager(plain) = &config.secrets["plain_aws"].source else {
        panic!("not an AWS secret");
    };
    assert_eq!(plain.cache_ttl, Duration::from_secs(300));
    assert_eq!(config.secrets["plain_aws"].value.expose(), "plain-aws");
    assert_eq!(config.secrets["file_json"].value.expose(), "file-json");
    assert_eq!(config.secrets["env_json"].value.expose(), "env-json");
}

#[test]
fn aws_secret_problems_are_config_errors_naming_the_secret() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("bad.json"), "{not json").unwrap();
    let errors: Vec<String> = parse_aws(
        &fx,
        r#"
[secrets.missing]
source = "aws-secrets-manager"
path = "main/gone"

[secrets.wrong_key]
source = "aws-secrets-manager"
path = "main/json"
json_key = "nope"

[secrets.not_json]
source = "aws-secrets-manager"
path = "main/plain"
json_key = "api_key"

[secrets.no_path]
source = "aws-secrets-manager"
cache_seconds = 100000
endpoint = "ftp://x"

[secrets.misplaced]
source = "env"
name = "X"
region = "eu-west-1"

[secrets.bad_file]
source = "file"
path = "bad.json"
json_key = "k"
"#,
    )
    .unwrap_err()
    .0
    .iter()
    .map(ToString::to_string)
    .collect();
    let file = fx.path().display().to_string();
    let expected = [
        format!(
            "{file}:4:1: secrets.missing.path: secret `missing`: AWS Secrets Manager has no secret `main/gone`"
        ),
        format!(
            "{file}:9:1: secrets.wrong_key.json_key: secret `wrong_key`: AWS Secrets Manager secret `main/json` has no key `nope` (its keys: api_key, n)"
        ),
        format!(
            "{file}:14:1: secrets.not_json.json_key: secret `not_json`: AWS Secrets Manager secret `main/plain` is not valid JSON (line 1, column 1), so `json_key` cannot be applied"
        ),
        format!(
            "{file}:16:10: secrets.no_path: `source = \"aws-secrets-manager\"` needs `path`, the secret's name or ARN"
        ),
        format!("{file}:19:1: secrets.no_path.endpoint: `ftp://x` is not an http(s) URL"),
        format!(
            "{file}:18:1: secrets.no_path.cache_seconds: must be between 0 and 86400, not 100000"
        ),
        format!(
            "{file}:24:1: secrets.misplaced.region: `region` is for `source = \"aws-secrets-manager\"`"
        ),
        format!(
            "{file}:29:1: secrets.bad_file.json_key: secret `bad_file` is not valid JSON (line 1, column 2), so `json_key` cannot be applied"
        ),
    ];
    for e in &expected {
        assert!(errors.contains(e), "missing {e}\nin {errors:#?}");
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn store_url_selects_postgres_and_refuses_path_beside_it_or_a_password() {
    let fx = Fixture::new();
    let rest = "[environments.e]\n[flows.f]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\nreveal_secrets = false\n";
    let config = fx
        .parse(&format!(
            "[store]\nurl = \"postgres://warden@127.0.0.1:5432/warden\"\n{rest}"
        ))
        .unwrap();
    assert_eq!(
        config.store_url.as_ref().map(StoreUrl::as_str),
        Some("postgres://warden@127.0.0.1:5432/warden")
    );
    assert!(
        fx.parse(rest).unwrap().store_url.is_none(),
        "SQLite by default"
    );
    let file = fx.path().display().to_string();
    let both = fx.errors(&format!(
        "[store]\npath = \"w.db\"\nurl = \"postgres://warden@db/warden\"\n{rest}"
    ));
    assert_eq!(
        both,
        [format!(
            "{file}:3:1: store.url: `url` (PostgreSQL) and `path` (SQLite) are both set; keep one"
        )]
    );
    let secret = fx.errors(&format!(
        "[store]\nurl = \"postgres://warden:hunter2@db/warden\"\n{rest}"
    ));
    assert_eq!(secret.len(), 1, "{secret:?}");
    assert!(
        secret[0].contains("store.url: must not hold a password"),
        "{secret:?}"
    );
    assert!(!secret[0].contains("hunter2"), "{secret:?}");
}

#[test]
fn the_outline_for_warden_users_takes_the_store_url_and_refuses_path_beside_it() {
    let fx = Fixture::new();
    let url = "postgres://warden@127.0.0.1:5432/warden";
    std::fs::write(fx.path(), format!("[store]\nurl = \"{url}\"\n")).unwrap();
    let outline = Outline::load(&fx.path()).unwrap();
    assert_eq!(outline.store_url.as_ref().map(StoreUrl::as_str), Some(url));
    std::fs::write(
        fx.path(),
        format!("[store]\npath = \"w.db\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let errors = Outline::load(&fx.path()).unwrap_err().summary();
    assert!(
        errors.contains("store.url: `url` (PostgreSQL) and `path` (SQLite) are both set"),
        "{errors}"
    );
    std::fs::write(fx.path(), "[store]\nurl = \"postgres://w:pw@db/w\"\n").unwrap();
    let errors = Outline::load(&fx.path()).unwrap_err().summary();
    assert!(
        errors.contains("must not hold a password") && !errors.contains(":pw@"),
        "{errors}"
    );
}

#[test]
fn managing_users_refuses_a_config_with_misspelt_keys_as_check_does() {
    let fx = Fixture::new();
    std::fs::write(
        fx.path(),
        "[store]\npaht = \"prod.db\"\n[integrations.vo]\ntype = \"custom\"\nexternal_id = \"vo\"\nsecert = \"k\"\n",
    )
    .unwrap();
    let errors = Outline::load(&fx.path()).unwrap_err().summary();
    assert!(errors.contains(":2:1: store.paht: unknown key"), "{errors}");
    assert!(
        errors.contains("integrations.vo.secert: unknown key"),
        "{errors}"
    );
}

#[test]
fn store_password_secret_names_a_declared_secret_and_never_shows_its_value() {
    let fx = Fixture::new();
    let rest = "[environments.e]\n[flows.f]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\nreveal_secrets = false\n";
    let store = "[store]\nurl = \"postgres://warden@db/warden\"\npassword_secret = \"db\"\n";
    let config = fx
        .parse(&format!(
            "{store}[secrets.db]\nsource = \"file\"\npath = \"key.txt\"\n{rest}"
        ))
        .unwrap();
    let url = config.store_url.unwrap();
    let secret = url.password_secret().expect("the named secret");
    assert_eq!(secret.value.expose(), "file-secret");
    assert_eq!(
        url.client_config().get_password(),
        Some(&b"file-secret"[..])
    );
    let shown = format!("{url:?} {url}");
    assert!(shown.contains("password_secret = db"), "{shown}");
    assert!(!shown.contains("file-secret"), "{shown}");

    let file = fx.path().display().to_string();
    assert_eq!(
        fx.errors(&format!(
            "{store}[secrets.other]\nsource = \"file\"\npath = \"key.txt\"\n{rest}"
        )),
        [format!(
            "{file}:3:1: store.password_secret: names secret `db`, which is not declared under [secrets] (declared: other)"
        )]
    );
    // A declared secret that cannot be read has its own error, not a second one.
    assert_eq!(
        fx.errors(&format!(
            "{store}[secrets.db]\nsource = \"env\"\nname = \"UNSET\"\n{rest}"
        )),
        [format!(
            "{file}:6:1: secrets.db.name: environment variable `UNSET` is not set"
        )]
    );
    assert_eq!(
        fx.errors(&format!(
            "[store]\npassword_secret = \"db\"\n[secrets.db]\nsource = \"file\"\npath = \"key.txt\"\n{rest}"
        )),
        [format!(
            "{file}:2:1: store.password_secret: is the password of a PostgreSQL store; set `url` too (SQLite has none)"
        )]
    );
}

#[test]
fn the_outline_for_warden_users_reads_the_store_password_secret_alone() {
    let fx = Fixture::new();
    let store = "[store]\nurl = \"postgres://warden@db/warden\"\npassword_secret = \"db\"\n";
    // Another secret that cannot be read is not looked at: `warden users` needs only the
    // store's.
    let unreadable = "[secrets.elsewhere]\nsource = \"env\"\nname = \"UNSET\"\n";
    std::fs::write(
        fx.path(),
        format!("{store}[secrets.db]\nsource = \"file\"\npath = \"key.txt\"\n{unreadable}"),
    )
    .unwrap();
    let outline = Outline::load(&fx.path()).unwrap();
    let url = outline.store_url.unwrap();
    assert_eq!(url.password_secret().unwrap().value.expose(), "file-secret");

    std::fs::write(fx.path(), format!("{store}{unreadable}")).unwrap();
    let errors = Outline::load(&fx.path()).unwrap_err().summary();
    assert!(
        errors.contains(
            "store.password_secret: names secret `db`, which is not declared under [secrets] (declared: elsewhere)"
        ),
        "{errors}"
    );
    std::fs::write(
        fx.path(),
        format!("{store}[secrets.db]\nsource = \"file\"\npath = \"missing.txt\"\n"),
    )
    .unwrap();
    let errors = Outline::load(&fx.path()).unwrap_err().summary();
    assert!(
        errors.contains("secrets.db.path: cannot read secret file"),
        "{errors}"
    );
}

#[test]
fn http_ca_file_is_read_beside_the_config_and_a_bad_one_is_named_with_its_key() {
    let fixture = Fixture::new();
    let ca = warden_tests::tls::authority("company authority");
    let dir = fixture.dir.path();
    std::fs::write(dir.join("company-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    std::fs::write(
        dir.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();

    let config = fixture.parse(VALID).unwrap();
    assert_eq!(
        config.http,
        HttpSettings::default(),
        "no [http]: nothing extra"
    );
    let config = fixture
        .parse(&format!("{VALID}\n[http]\nca_file = \"company-ca.pem\"\n"))
        .unwrap();
    let roots = config.http.extra_roots.expect("ca_file read");
    assert_eq!(roots.path, dir.join("company-ca.pem"));
    assert_eq!(roots.certs, [ca.der().clone()]);

    for (file, why) in [
        ("missing.pem", "cannot read it"),
        ("empty.pem", "holds no certificate"),
        ("junk.pem", "not valid PEM"),
    ] {
        let errors = fixture.errors(&format!("{VALID}\n[http]\nca_file = \"{file}\"\n"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let shown = dir.join(file);
        assert!(
            errors[0].contains(&format!("http.ca_file: file {}: {why}", shown.display())),
            "{file}: {errors:?}"
        );
    }
    let errors = fixture.errors(&format!("{VALID}\n[http]\nca_files = \"x.pem\"\n"));
    assert!(
        errors[0].contains("http.ca_files: unknown key"),
        "{errors:?}"
    );
}

#[test]
fn an_error_quoting_the_file_is_one_line_with_its_control_characters_written_out() {
    let fixture = Fixture::new();
    let errors = fixture.errors(&format!(
        "{VALID}\n[flows.forged]\nenvironment = \"main\"\nplugin = \"a\\nFAKE ok\\u001b[31m\"\n"
    ));
    let quoted: Vec<_> = errors.iter().filter(|e| e.contains("FAKE")).collect();
    assert_eq!(quoted.len(), 1, "{errors:?}");
    assert!(
        !quoted[0].contains('\n') && !quoted[0].contains('\x1b'),
        "{quoted:?}"
    );
    assert!(quoted[0].contains("a\\nFAKE ok\\x1b[31m"), "{quoted:?}");
}

#[test]
fn http_spin_wait_us_is_read_in_microseconds_and_one_over_a_millisecond_is_named() {
    let fixture = Fixture::new();
    let config = fixture.parse(VALID).unwrap();
    assert_eq!(
        config.http.spin_wait,
        std::time::Duration::from_micros(100),
        "default"
    );
    for (us, expected) in [
        (0, std::time::Duration::ZERO),
        (250, std::time::Duration::from_micros(250)),
    ] {
        let config = fixture
            .parse(&format!("{VALID}\n[http]\nspin_wait_us = {us}\n"))
            .unwrap();
        assert_eq!(config.http.spin_wait, expected);
    }
    // Not a whole number: refused where it stands (serde names the place, not the key).
    let line = VALID.lines().count() + 3;
    for bad in ["-1", "\"fast\""] {
        let errors = fixture.errors(&format!("{VALID}\n[http]\nspin_wait_us = {bad}\n"));
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].contains(&format!("warden.toml:{line}:")),
            "{bad}: {errors:?}"
        );
    }
    let errors = fixture.errors(&format!("{VALID}\n[http]\nspin_wait_us = 1001\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("http.spin_wait_us: must be between 0 and 1000, not 1001"),
        "{errors:?}"
    );
}

#[test]
fn compile_limits_are_read_with_their_defaults_and_out_of_range_ones_are_named() {
    let fixture = Fixture::new();
    let config = fixture.parse(VALID).unwrap();
    assert_eq!(config.compile, CompileLimits::default());
    assert_eq!(
        config.compile.timeout,
        std::time::Duration::from_secs(120),
        "default"
    );
    assert_eq!(config.compile.memory_bytes, 4096 << 20, "default");
    let config = fixture
        .parse(&format!(
            "{VALID}\n[compile]\ntimeout_seconds = 5\nmemory_mib = 512\n"
        ))
        .unwrap();
    assert_eq!(config.compile.timeout, std::time::Duration::from_secs(5));
    assert_eq!(config.compile.memory_bytes, 512 << 20);
    for (key, bad, message) in [
        ("timeout_seconds", 0, "must be between 1 and 3600, not 0"),
        (
            "timeout_seconds",
            3601,
            "must be between 1 and 3600, not 3601",
        ),
        ("memory_mib", 255, "must be between 256 and 65536, not 255"),
        (
            "memory_mib",
            65537,
            "must be between 256 and 65536, not 65537",
        ),
    ] {
        let errors = fixture.errors(&format!("{VALID}\n[compile]\n{key} = {bad}\n"));
        assert_eq!(errors.len(), 1, "{key} = {bad}: {errors:?}");
        assert!(
            errors[0].contains(&format!("compile.{key}: {message}")),
            "{errors:?}"
        );
    }
    let errors = fixture.errors(&format!("{VALID}\n[compile]\ntimeout_ms = 5\n"));
    assert!(
        errors[0].contains("compile.timeout_ms: unknown key"),
        "{errors:?}"
    );
}
