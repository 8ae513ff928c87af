use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::store::{Store, StoreChange};

const VO: &str = "custom:aaabbcccddee";

fn outline() -> Outline {
    let mut services = BTreeMap::new();
    services.insert(
        ("custom".to_string(), "aaabbcccddee".to_string()),
        vec!["victorops".to_string()],
    );
    services.insert(
        ("custom".to_string(), "pd-1".to_string()),
        vec!["pagerduty".to_string()],
    );
    Outline {
        source: PathBuf::from("warden.toml"),
        store_path: PathBuf::from(":memory:"),
        store_url: None,
        services,
    }
}

fn ids(store: &Store, email: &str) -> Vec<(String, String)> {
    store
        .identities_of(email)
        .unwrap()
        .into_iter()
        .map(|i| (format!("{}:{}", i.service, i.service_id), i.user_id))
        .collect()
}

fn pair(service: &str, user_id: &str) -> (String, String) {
    (service.to_string(), user_id.to_string())
}

#[test]
fn set_identity_creates_updates_and_refuses_undeclared_services_unless_forced() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    let created = users
        .set_identity(
            "Alice@Example.com",
            "custom",
            "aaabbcccddee",
            "alice",
            false,
        )
        .unwrap();
    assert!(matches!(created, SetOutcome::Created(_)), "{created:?}");
    let updated = users
        .set_identity(
            "alice@example.com",
            "custom",
            "aaabbcccddee",
            "alice2",
            false,
        )
        .unwrap();
    assert_eq!(
        updated.to_string(),
        "updated custom:aaabbcccddee of Alice@Example.com: alice -> alice2"
    );
    let same = users
        .set_identity(
            "ALICE@example.com",
            "custom",
            "aaabbcccddee",
            "alice2",
            false,
        )
        .unwrap();
    assert!(matches!(same, SetOutcome::Unchanged(_)), "{same:?}");

    let refused = users
        .set_identity("alice@example.com", "slack", "T123", "U1", false)
        .unwrap_err();
    assert!(
        refused.contains("no integration in warden.toml declares service `slack:T123`"),
        "{refused}"
    );
    assert!(
        refused.contains("custom:aaabbcccddee, custom:pd-1"),
        "{refused}"
    );
    assert!(refused.contains("--force"), "{refused}");
    assert_eq!(ids(&store, "alice@example.com").len(), 1);
    users
        .set_identity("alice@example.com", "slack", "T123", "U1", true)
        .unwrap();
    assert_eq!(ids(&store, "alice@example.com").len(), 2);

    for (email, user_id, expected) in [
        (
            "not-an-email",
            "u",
            "`not-an-email` is not an email address",
        ),
        ("a b@x.com", "u", "is not an email address"),
        ("", "u", "no email"),
        ("bob@x.com", "  ", "--user-id is empty"),
    ] {
        let e = users
            .set_identity(email, "custom", "aaabbcccddee", user_id, false)
            .unwrap_err();
        assert!(e.contains(expected), "{email:?}: {e}");
    }
}

#[test]
fn deletes_name_what_was_missing() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    users
        .set_identity("a@x.com", "custom", "aaabbcccddee", "a", false)
        .unwrap();
    let e = users
        .delete_identity("a@x.com", "custom", "pd-1")
        .unwrap_err();
    assert_eq!(e, "a@x.com has no identity for custom:pd-1");
    users
        .delete_identity("A@X.COM", "custom", "aaabbcccddee")
        .unwrap();
    assert_eq!(users.identities("a@x.com").unwrap(), vec![]);
    assert_eq!(users.delete_user("A@x.com").unwrap(), 0);
    assert_eq!(
        users.delete_user("a@x.com").unwrap_err(),
        "no user a@x.com in the store"
    );
    assert_eq!(
        users.identities("a@x.com").unwrap_err(),
        "no user a@x.com in the store"
    );
}

#[test]
fn export_then_import_into_an_empty_store_reproduces_it() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    users
        .set_identity(
            "alice@x.com",
            "custom",
            "aaabbcccddee",
            "alice, the \"first\"",
            false,
        )
        .unwrap();
    users
        .set_identity("bob@x.com", "custom", "pd-1", "PBOB", false)
        .unwrap();
    store
        .apply(&[StoreChange::EnsureUser {
            email: "carol@x.com".into(),
        }])
        .unwrap();
    let csv = users.export().unwrap();
    assert_eq!(
        csv,
        "sym:cloud,custom:aaabbcccddee,custom:pd-1\n\
         alice@x.com,\"alice, the \"\"first\"\"\",\n\
         bob@x.com,,PBOB\n\
         carol@x.com,,\n"
    );

    let fresh = Store::open_in_memory().unwrap();
    let into = Users {
        outline: &outline,
        store: &fresh,
    };
    let plan = into.plan_import(&csv, false).unwrap();
    assert_eq!(plan.new_users.len(), 3);
    assert_eq!(plan.created.len(), 2);
    fresh.apply(&plan.changes()).unwrap();
    assert_eq!(into.export().unwrap(), csv);
}

#[test]
fn import_plans_creates_updates_and_keeps_what_empty_cells_leave() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    users
        .set_identity("alice@x.com", "custom", "aaabbcccddee", "alice", false)
        .unwrap();
    users
        .set_identity("bob@x.com", "custom", "aaabbcccddee", "bob", false)
        .unwrap();
    users
        .set_identity("bob@x.com", "custom", "pd-1", "PBOB", false)
        .unwrap();
    users
        .set_identity("zed@x.com", "custom", "pd-1", "PZED", false)
        .unwrap();

    // symflow's own layout: its User ID column first, the email under sym:cloud.
    let csv = "User ID,sym:cloud,custom:aaabbcccddee,custom:pd-1\n\
               abcd-1,ALICE@x.com,alice,PALICE\n\
               abcd-2,bob@x.com,bobby,\n\
               abcd-3,dave@x.com,,\n";
    let plan = users.plan_import(csv, false).unwrap();
    let mut out = Vec::new();
    plan.write(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "create user   dave@x.com\n\
         create        ALICE@x.com custom:pd-1 = PALICE\n\
         update        bob@x.com custom:aaabbcccddee = bobby (was bob)\n\
         keep          bob@x.com custom:pd-1 = PBOB (empty cell; delete with `warden users delete-identity`)\n\
         1 user(s) to create, 1 identity(ies) to create, 1 to update, 1 unchanged, 1 kept under empty cells\n"
    );
    // Planning changed nothing.
    assert_eq!(ids(&store, "bob@x.com")[0], pair(VO, "bob"));
    assert!(store.user("dave@x.com").unwrap().is_none());

    store.apply(&plan.changes()).unwrap();
    assert_eq!(
        ids(&store, "alice@x.com"),
        vec![pair(VO, "alice"), pair("custom:pd-1", "PALICE")]
    );
    assert_eq!(
        ids(&store, "bob@x.com"),
        vec![pair(VO, "bobby"), pair("custom:pd-1", "PBOB")]
    );
    assert!(store.user("dave@x.com").unwrap().is_some());
    // Users absent from the file are left alone.
    assert_eq!(ids(&store, "zed@x.com"), vec![pair("custom:pd-1", "PZED")]);
}

#[test]
fn import_reports_every_bad_row_with_its_line_and_changes_nothing() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    let csv = "sym:cloud,custom:aaabbcccddee\n\
               good@x.com,g\n\
               not-an-email,x\n\
               \n\
               short@x.com\n\
               GOOD@x.com,again\n\
               ctl@x.com,\"a\u{7}b\"\n";
    let errors = users.plan_import(csv, false).unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "3: `not-an-email` is not an email address",
            "5: 1 field(s), but the header has 2",
            "6: GOOD@x.com is already on line 2 (emails are compared ignoring case)",
            "7: column `custom:aaabbcccddee` contains a control character",
        ]
    );
    assert!(store.users().unwrap().is_empty());
}

#[test]
fn import_checks_the_header() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    let users = Users {
        outline: &outline,
        store: &store,
    };
    let errors = users
        .plan_import(
            "sym:cloud,slack:T1,bogus,custom:pd-1,custom: pd-1\na@x.com,u,v,w,x\n",
            false,
        )
        .unwrap_err();
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with(
            "1: column 2 (`slack:T1`): no integration in warden.toml declares service `slack:T1`"
        ),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].starts_with("1: column 3 (`bogus`): not a service"),
        "{}",
        shown[1]
    );
    assert_eq!(
        shown[2],
        "1: column 5 (`custom: pd-1`): the same heading as column 4"
    );

    let errors = users.plan_import("custom:pd-1\nx\n", false).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "1: no email column: one column must be headed `sym:cloud` (or `email`)"
    );
    assert!(
        users.plan_import("", false).unwrap_err()[0]
            .message
            .contains("the file is empty")
    );

    // --force accepts an undeclared service; `email` is accepted for the email column, and a
    // byte-order mark (as spreadsheets write) is ignored.
    let plan = users
        .plan_import("\u{feff}Email,slack:T1\na@x.com,U1\n", true)
        .unwrap();
    assert_eq!(plan.created[0].service, "slack");
    assert_eq!(plan.created[0].user_id, "U1");
}

#[test]
fn identities_a_plugin_persisted_with_control_characters_list_on_one_line() {
    let (outline, store) = (outline(), Store::open_in_memory().unwrap());
    // As a plugin's `persist` stores it: no `warden users` validation on the way in.
    store
        .persist_identity(
            "alice@example.com",
            "custom",
            "aaabbcccddee",
            "alice\nmallory@example.com  admin\x1b[2J",
        )
        .unwrap();
    let users = Users {
        outline: &outline,
        store: &store,
    };
    let mut out = Vec::new();
    users.list(&mut out).unwrap();
    let listed = String::from_utf8(out).unwrap();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("alice@example.com  alice\\nmallory@example.com  admin\\x1b[2J"),
        "{listed}"
    );
    assert!(!listed.contains('\x1b'), "{listed}");

    // Nor where an import plans to keep it, or a set-identity replaces it.
    let plan = users
        .plan_import("sym:cloud,custom:aaabbcccddee\nalice@example.com,\n", false)
        .unwrap();
    let mut out = Vec::new();
    plan.write(&mut out).unwrap();
    let planned = String::from_utf8(out).unwrap();
    assert_eq!(planned.lines().count(), 2, "{planned}");
    assert!(
        planned.contains("= alice\\nmallory@example.com  admin\\x1b[2J (empty cell"),
        "{planned}"
    );
    let replaced = users
        .set_identity(
            "alice@example.com",
            "custom",
            "aaabbcccddee",
            "alice",
            false,
        )
        .unwrap()
        .to_string();
    assert_eq!(
        replaced,
        "updated custom:aaabbcccddee of alice@example.com: alice\\nmallory@example.com  admin\\x1b[2J -> alice"
    );
}

#[test]
fn an_export_file_is_made_owner_only_and_a_link_or_fifo_at_its_path_is_not_written_through() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path| {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        format!("{:o}", mode & 0o777)
    };

    let file = dir.path().join("users.csv");
    write_export(&file, "sym:cloud\na@x.com\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "sym:cloud\na@x.com\n"
    );
    assert_eq!(mode(&file), "600");
    // Written again, shorter: overwritten whole, its mode kept.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_export(&file, "sym:cloud\n").unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "sym:cloud\n");
    assert_eq!(mode(&file), "640");

    // A link planted at the path, to a file or to where a file would be made.
    let target = dir.path().join("target");
    std::fs::write(&target, "kept").unwrap();
    let dangling = dir.path().join("made-through-the-link");
    for (link, points_to) in [("link.csv", &target), ("dangling.csv", &dangling)] {
        let link = dir.path().join(link);
        symlink(points_to, &link).unwrap();
        let error = write_export(&link, "sym:cloud\n").unwrap_err();
        assert_eq!(
            error,
            format!(
                "cannot write {}: it is a symbolic link, which is not followed",
                link.display()
            )
        );
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    assert!(!dangling.exists());

    // A FIFO with no reader is refused at once, not waited on.
    let fifo = dir.path().join("fifo.csv");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let error = write_export(&fifo, "sym:cloud\n").unwrap_err();
    assert!(
        error.starts_with(&format!("cannot write {}: ", fifo.display())),
        "{error}"
    );

    // A file another user planted at the path (as root here, one given to `nobody`) is not
    // written into: it would stay theirs to read.
    if rustix::process::geteuid().is_root() {
        let planted = dir.path().join("planted.csv");
        std::fs::write(&planted, "theirs").unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        let error = write_export(&planted, "sym:cloud\n").unwrap_err();
        assert_eq!(
            error,
            format!(
                "cannot write {}: it belongs to another user (uid 65534); remove it or export elsewhere",
                planted.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "theirs");
    }
}
