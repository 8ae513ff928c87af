//! The operator's commands end to end: `warden users` against a store, and `warden check`
//! with a secret in AWS Secrets Manager (moto on loopback).

use std::path::Path;
use std::process::{Command, Output};

use warden_tests::moto::{self, Moto};
use warden_tests::{Scratch, artifacts, toml_path};

/// Two declared services. The env secret is unset and the plugin missing on purpose:
/// `warden users` needs neither.
const CONFIG: &str = r#"
[store]
path = "state.db"

[secrets.key]
source = "env"
name = "WARDEN_TEST_UNSET_VARIABLE"

[integrations.victorops]
type = "custom"
external_id = "aaabbcccddee"
secrets = ["key"]

[integrations.pagerduty]
type = "custom"
external_id = "pd-1"

[environments.main]
integrations = { victorops = "victorops" }

[flows.access]
environment = "main"
plugin = "missing.wasm"
"#;

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .expect("run warden")
}

fn users(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["users", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    warden(&all)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn users_set_list_export_and_delete() {
    let scratch = Scratch::new();
    let config = scratch.config(CONFIG);
    let set = |email: &str, service_id: &str, user_id: &str| {
        users(
            &config,
            &[
                "set-identity",
                email,
                "--service",
                "custom",
                "--service-id",
                service_id,
                "--user-id",
                user_id,
            ],
        )
    };
    assert_eq!(
        ok(&set("alice@example.com", "aaabbcccddee", "alice")),
        "created custom:aaabbcccddee of alice@example.com: alice\n"
    );
    assert_eq!(
        ok(&set("ALICE@example.com", "aaabbcccddee", "alice.vo")),
        "updated custom:aaabbcccddee of alice@example.com: alice -> alice.vo\n"
    );
    ok(&set("bob@example.com", "pd-1", "PBOB"));
    assert!(scratch.path().join("state.db").is_file());

    let undeclared = failed(&set("bob@example.com", "zzz", "x"));
    assert!(
        undeclared.contains("no integration in")
            && undeclared.contains("declares service `custom:zzz`")
            && undeclared.contains("--force"),
        "{undeclared}"
    );

    assert_eq!(
        ok(&users(&config, &["list"])),
        "email              custom:aaabbcccddee  custom:pd-1\n\
         alice@example.com  alice.vo             -\n\
         bob@example.com    -                    PBOB\n\
         2 user(s)\n"
    );
    assert_eq!(
        ok(&users(&config, &["list-identities", "Bob@Example.com"])),
        "service      user_id\ncustom:pd-1  PBOB\n1 identity(ies)\n"
    );

    let exported = scratch.path().join("users.csv");
    ok(&users(&config, &["export", exported.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        "sym:cloud,custom:aaabbcccddee,custom:pd-1\n\
         alice@example.com,alice.vo,\n\
         bob@example.com,,PBOB\n"
    );
    assert_eq!(
        ok(&users(&config, &["export", "-"])),
        std::fs::read_to_string(&exported).unwrap()
    );

    let missing = failed(&users(
        &config,
        &[
            "delete-identity",
            "bob@example.com",
            "--service",
            "custom",
            "--service-id",
            "aaabbcccddee",
        ],
    ));
    assert!(
        missing.contains("bob@example.com has no identity for custom:aaabbcccddee"),
        "{missing}"
    );
    ok(&users(
        &config,
        &[
            "delete-identity",
            "bob@example.com",
            "--service",
            "custom",
            "--service-id",
            "pd-1",
        ],
    ));
    assert_eq!(
        ok(&users(&config, &["delete", "ALICE@EXAMPLE.COM"])),
        "deleted user ALICE@EXAMPLE.COM and 1 identity(ies)\n"
    );
    assert_eq!(
        ok(&users(&config, &["list"])),
        "email            custom:aaabbcccddee  custom:pd-1\n\
         bob@example.com  -                    -\n\
         1 user(s)\n"
    );
    let gone = failed(&users(&config, &["delete", "alice@example.com"]));
    assert!(
        gone.contains("no user alice@example.com in the store"),
        "{gone}"
    );
}

#[test]
fn import_dry_run_changes_nothing_and_a_bad_file_changes_nothing() {
    let scratch = Scratch::new();
    let config = scratch.config(CONFIG);
    ok(&users(
        &config,
        &[
            "set-identity",
            "bob@example.com",
            "--service",
            "custom",
            "--service-id",
            "pd-1",
            "--user-id",
            "PBOB",
        ],
    ));
    let good = scratch.write(
        "good.csv",
        "User ID,sym:cloud,custom:aaabbcccddee,custom:pd-1\n\
         u-1,alice@example.com,alice,\n\
         u-2,BOB@example.com,bob,\n",
    );
    let before = ok(&users(&config, &["export", "-"]));
    let plan = ok(&users(
        &config,
        &["import", good.to_str().unwrap(), "--dry-run"],
    ));
    assert_eq!(
        plan,
        "create user   alice@example.com\n\
         create        alice@example.com custom:aaabbcccddee = alice\n\
         create        BOB@example.com custom:aaabbcccddee = bob\n\
         keep          BOB@example.com custom:pd-1 = PBOB (empty cell; delete with `warden users delete-identity`)\n\
         1 user(s) to create, 2 identity(ies) to create, 0 to update, 0 unchanged, 1 kept under empty cells\n\
         dry run: nothing was changed\n"
    );
    assert_eq!(ok(&users(&config, &["export", "-"])), before);

    let bad = scratch.write(
        "bad.csv",
        "sym:cloud,custom:aaabbcccddee\n\
         carol@example.com,carol\n\
         nobody,x\n\
         dave@example.com,d,extra\n",
    );
    let errors = failed(&users(&config, &["import", bad.to_str().unwrap()]));
    let bad_name = bad.display().to_string();
    assert!(errors.contains("2 problem(s) in"), "{errors}");
    assert!(
        errors.contains(&format!("{bad_name}:3: `nobody` is not an email address")),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{bad_name}:4: 3 field(s), but the header has 2")),
        "{errors}"
    );
    assert_eq!(
        ok(&users(&config, &["export", "-"])),
        before,
        "nothing of a bad file is applied"
    );
    // A spreadsheet's export in Latin-1: the line to fix is named.
    let latin1 = scratch.write(
        "latin1.csv",
        b"sym:cloud,custom:pd-1\nzoe@example.com,Z\xe9\n".as_slice(),
    );
    let errors = failed(&users(&config, &["import", latin1.to_str().unwrap()]));
    let latin1_name = latin1.display().to_string();
    assert!(
        errors.contains(&format!("{latin1_name}:2: not UTF-8 text")),
        "{errors}"
    );

    // A cell quoted by a problem is the file's: escaped, each problem on one line.
    let forged = scratch.write(
        "forged.csv",
        "sym:cloud,custom:aaabbcccddee\n\"no\nFAKE imported\x1b[31m\",x\n",
    );
    let errors = failed(&users(&config, &["import", forged.to_str().unwrap()]));
    assert!(errors.contains("no\\nFAKE imported\\x1b[31m"), "{errors}");
    assert!(
        !errors.contains('\x1b') && !errors.contains("\nFAKE"),
        "{errors}"
    );
    // Not a file to read whole: refused, not read (it would never end).
    let refused = failed(&users(&config, &["import", "/dev/zero"]));
    assert!(refused.contains("cannot read /dev/zero"), "{refused}");

    let undeclared = scratch.write("slack.csv", "sym:cloud,slack:T1\nerin@example.com,U1\n");
    let refused = failed(&users(&config, &["import", undeclared.to_str().unwrap()]));
    assert!(refused.contains("declares service `slack:T1`"), "{refused}");
    ok(&users(
        &config,
        &["import", undeclared.to_str().unwrap(), "--force"],
    ));

    let applied = ok(&users(&config, &["import", good.to_str().unwrap()]));
    assert!(
        applied.ends_with(&format!("imported {}\n", good.display())),
        "{applied}"
    );
    assert_eq!(
        ok(&users(&config, &["export", "-"])),
        "sym:cloud,custom:aaabbcccddee,custom:pd-1,slack:T1\n\
         alice@example.com,alice,,\n\
         bob@example.com,bob,PBOB,\n\
         erin@example.com,,,U1\n"
    );
}

#[test]
fn users_reports_a_broken_config_with_its_location() {
    let scratch = Scratch::new();
    let config = scratch.config("[integrations.vo]\ntype = \"custom\"\nexternal_id = \"\"\n");
    let error = failed(&users(&config, &["list"]));
    assert!(
        error.contains(&format!(
            "{}:3:1: integrations.vo.external_id: must not be empty",
            config.display()
        )),
        "{error}"
    );
}

#[test]
fn check_names_an_aws_secret_that_does_not_exist() {
    let moto = Moto::start();
    moto.create_secret("main/victorops", r#"{"api_key":"k"}"#);
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[secrets.present]
source = "aws-secrets-manager"
path = "main/victorops"
json_key = "api_key"
endpoint = "{endpoint}"

[secrets.absent]
source = "aws-secrets-manager"
path = "main/absent"
endpoint = "{endpoint}"

[integrations.victorops]
type = "custom"
external_id = "x"
secrets = ["present", "absent"]

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.access]
environment = "main"
plugin = {plugin}
"#,
        endpoint = moto.endpoint(),
        plugin = toml_path(artifacts::PROBE)
    ));
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["check", "--config", config.to_str().unwrap()])
            .envs(moto::aws_env())
            .output()
            .unwrap()
    };
    let error = failed(&run());
    assert!(error.contains("1 problem(s) in the config"), "{error}");
    assert!(
        error.contains(&format!(
            "{}:10:1: secrets.absent.path: secret `absent`: AWS Secrets Manager at {} has no secret `main/absent`",
            config.display(),
            moto.endpoint()
        )),
        "{error}"
    );
    moto.create_secret("main/absent", "now-here");
    ok(&run());
}

#[test]
fn an_open_store_sees_the_identity_warden_users_changes_from_another_process() {
    let scratch = Scratch::new();
    let config = scratch.config(CONFIG);
    let set = |user_id: &str| {
        ok(&users(
            &config,
            &[
                "set-identity",
                "alice@example.com",
                "--service",
                "custom",
                "--service-id",
                "aaabbcccddee",
                "--user-id",
                user_id,
            ],
        ))
    };
    set("alice");
    // As `warden serve` holds it: open, answering lookups from memory while nothing changes.
    let store = warden::store::Store::open(&scratch.path().join("state.db")).unwrap();
    let lookup = || {
        store
            .lookup_identity("alice@example.com", "custom", "aaabbcccddee")
            .unwrap()
            .expect("alice's identity")
            .user_id
    };
    assert_eq!(lookup(), "alice");
    assert_eq!(lookup(), "alice");
    assert_eq!(store.identity_lookups_from_memory(), 1);

    set("alice.vo");
    assert_eq!(lookup(), "alice.vo");
    assert_eq!(store.identity_lookups_from_memory(), 1);
}

#[test]
fn check_names_a_flow_whose_approvers_name_an_unknown_group() {
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[groups.oncall]
members = ["bob@example.com"]

[environments.main]

[flows.access]
environment = "main"
plugin = {plugin}
approvers = ["group:on-call", "lead@example.com"]
"#,
        plugin = toml_path(artifacts::PROBE)
    ));
    let error = failed(&warden(&["check", "--config", config.to_str().unwrap()]));
    assert!(error.contains("1 problem(s) in the config"), "{error}");
    assert!(
        error.contains(&format!(
            "{}:10:1: flows.access.approvers: flow `access` names group `on-call`, which is not declared under [groups] (declared: oncall)",
            config.display()
        )),
        "{error}"
    );
}
