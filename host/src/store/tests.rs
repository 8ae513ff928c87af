//! The store's tests: identities, migrations, the read connection and the identity cache.

use super::*;

#[test]
fn persist_creates_then_updates_and_lookup_ignores_email_case() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(
        store.lookup_identity("a@x.com", "custom", "id1").unwrap(),
        None
    );
    store
        .persist_identity("Alice@X.com", "custom", "id1", "alice")
        .unwrap();
    let again = store
        .persist_identity("alice@x.com", "custom", "id1", "alice2")
        .unwrap();
    assert_eq!(again.user_id, "alice2");
    let found = store
        .lookup_identity("ALICE@x.com", "custom", "id1")
        .unwrap()
        .unwrap();
    assert_eq!(found.user_id, "alice2");
    assert_eq!(
        store
            .lookup_identity("alice@x.com", "custom", "other")
            .unwrap(),
        None
    );
    assert_eq!(store.identities_of("alice@x.com").unwrap().len(), 1);
    store
        .persist_identity("b@x.com", "custom", "id1", "b")
        .unwrap();
    let all: Vec<String> = store
        .all_identities()
        .unwrap()
        .into_iter()
        .map(|i| i.user_id)
        .collect();
    assert_eq!(all, ["alice2", "b"]);
}

#[test]
fn users_lists_each_user_with_their_identities_whatever_the_email_case() {
    let store = Store::open_in_memory().unwrap();
    store
        .persist_identity("Bob@x.com", "custom", "id1", "bob")
        .unwrap();
    store
        .persist_identity("alice@x.com", "custom", "id2", "a2")
        .unwrap();
    store
        .persist_identity("ALICE@x.com", "custom", "id1", "a1")
        .unwrap();
    store
        .apply(&[StoreChange::EnsureUser {
            email: "carol@x.com".into(),
        }])
        .unwrap();
    let users = store.users().unwrap();
    let summary: Vec<(String, Vec<(String, String)>)> = users
        .iter()
        .map(|u| {
            (
                u.email.clone(),
                u.identities
                    .iter()
                    .map(|i| (i.service_id.clone(), i.user_id.clone()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "alice@x.com".to_string(),
                vec![("id1".into(), "a1".into()), ("id2".into(), "a2".into())]
            ),
            ("Bob@x.com".to_string(), vec![("id1".into(), "bob".into())]),
            ("carol@x.com".to_string(), vec![]),
        ]
    );
    assert_eq!(store.user("BOB@X.COM").unwrap().unwrap().email, "Bob@x.com");
    assert_eq!(store.user("nobody@x.com").unwrap(), None);
}

#[test]
fn deleting_an_identity_keeps_the_user_and_deleting_the_user_drops_its_identities() {
    let store = Store::open_in_memory().unwrap();
    store
        .persist_identity("a@x.com", "custom", "id1", "u1")
        .unwrap();
    store
        .persist_identity("a@x.com", "custom", "id2", "u2")
        .unwrap();
    assert!(store.delete_identity("A@X.com", "custom", "id1").unwrap());
    assert!(!store.delete_identity("a@x.com", "custom", "id1").unwrap());
    assert_eq!(store.identities_of("a@x.com").unwrap().len(), 1);
    assert!(store.user("a@x.com").unwrap().is_some());
    assert!(store.delete_user("A@x.COM").unwrap());
    assert!(!store.delete_user("a@x.com").unwrap());
    assert_eq!(
        store.lookup_identity("a@x.com", "custom", "id2").unwrap(),
        None
    );
    assert!(store.users().unwrap().is_empty());
}

#[test]
fn apply_is_all_or_nothing() {
    let store = Store::open_in_memory().unwrap();
    store
        .persist_identity("a@x.com", "custom", "id1", "old")
        .unwrap();
    // SQLite has no NOT NULL violation to trip from valid Rust strings, so a trigger
    // makes the second change fail the way a full disk or a constraint would.
    store
        .with("add a trigger", |c| {
            c.execute_batch(
                "CREATE TRIGGER refuse_z BEFORE INSERT ON users WHEN NEW.email = 'z@x.com'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
        })
        .unwrap();
    let set = |email: &str, user_id: &str| {
        StoreChange::SetIdentity(StoredIdentity {
            email: email.into(),
            service: "custom".into(),
            service_id: "id1".into(),
            user_id: user_id.into(),
        })
    };
    let error = store.apply(&[set("a@x.com", "new"), set("z@x.com", "z")]);
    assert!(error.is_err());
    assert_eq!(
        store
            .lookup_identity("a@x.com", "custom", "id1")
            .unwrap()
            .unwrap()
            .user_id,
        "old"
    );
    store
        .apply(&[set("a@x.com", "new"), set("b@x.com", "b")])
        .unwrap();
    assert_eq!(store.users().unwrap().len(), 2);
}

#[test]
fn opening_a_store_of_schema_two_keeps_its_history_in_the_clustered_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(MIGRATIONS[0]).unwrap();
    old.execute_batch(MIGRATIONS[1]).unwrap();
    old.execute_batch(
        "PRAGMA user_version = 2;
         INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
             created_at, updated_at)
             VALUES ('r1', 'f', 'a@x.com', '{}', 'pending', 'continue', 'a@x.com', 1, 1);
         INSERT INTO request_history VALUES ('r1', 2, 'second'), ('r1', 1, 'first');",
    )
    .unwrap();
    drop(old);

    let store = Store::open(&path).unwrap();
    let (entries, table): (Vec<String>, String) = store
        .read("read the history", |c| {
            let entries = c
                .prepare("SELECT entry FROM request_history WHERE request_id = 'r1' ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let table = c.query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'request_history'",
                [],
                |r| r.get(0),
            )?;
            Ok((entries, table))
        })
        .unwrap();
    assert_eq!(entries, ["first", "second"]);
    assert!(table.contains("WITHOUT ROWID"), "{table}");
    let version: usize = store
        .with("read a pragma", |c| {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
        })
        .unwrap();
    assert_eq!(version, MIGRATIONS.len());
}

#[test]
fn stores_opened_at_once_by_two_processes_migrate_once_and_keep_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    // A store of schema 6, the last release before migration 7 (which does nothing here):
    // an opening that re-ran it after another had gone on to 10 would set the version back
    // to 7, and every later opening would fail re-running migration 8.
    let old = Connection::open(&path).unwrap();
    old.pragma_update(None, "journal_mode", "WAL").unwrap();
    for sql in &MIGRATIONS[..6] {
        old.execute_batch(sql).unwrap();
    }
    old.execute_batch("PRAGMA user_version = 6;").unwrap();
    // Both openings read the version while a third connection holds the write lock, then
    // race for it when it is let go.
    old.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let openings: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Store::open(&path).map(drop))
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    old.execute_batch("COMMIT;").unwrap();
    for opening in openings {
        opening.join().unwrap().unwrap();
    }
    drop(old);

    let store = Store::open(&path).unwrap();
    let version: usize = store
        .with("read a pragma", |c| {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
        })
        .unwrap();
    assert_eq!(version, MIGRATIONS.len());
}

#[tokio::test]
async fn a_write_is_read_back_by_the_read_connection_once_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("warden.db")).unwrap();
    store
        .write("insert a user", |c| {
            c.execute("INSERT INTO users (email) VALUES ('w@x.com')", [])
        })
        .await
        .unwrap();
    assert!(store.user("w@x.com").unwrap().is_some());
    let refused = store
        .write("insert a user", |c| {
            c.execute("INSERT INTO users (email) VALUES ('w@x.com')", [])
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("UNIQUE"), "{refused}");
    assert!(refused.to_string().contains("warden.db"), "{refused}");
    assert_eq!(store.write_counts(), (2, 2));
}

#[test]
fn a_file_store_survives_reopening_and_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    Store::open(&path)
        .unwrap()
        .persist_identity("a@x.com", "custom", "id1", "u")
        .unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .lookup_identity("a@x.com", "custom", "id1")
            .unwrap()
            .unwrap()
            .user_id,
        "u"
    );
    let mode: String = store
        .with("read a pragma", |c| {
            c.pragma_query_value(None, "journal_mode", |r| r.get(0))
        })
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_store_path_is_a_path_and_never_an_sqlite_uri() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.db");
    // As a URI this would open `target` without locking; as a path it names a file in a
    // folder `file:` that does not exist.
    let uri = format!("file:{}?vfs=unix-none", target.display());
    let opened = Store::open(Path::new(&uri));
    assert!(opened.is_err(), "opened {uri} as a URI");
    assert!(!target.exists());
}

#[test]
fn a_new_store_file_and_its_wal_are_owner_only_and_an_existing_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        format!("{:o}", mode & 0o777)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let store = Store::open(&path).unwrap();
    store
        .persist_identity("a@x.com", "custom", "id1", "u")
        .unwrap();
    assert_eq!(mode(&path), "600", "{}", path.display());
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("warden.db{suffix}"));
        assert_eq!(mode(&side), "600", "{}", side.display());
    }
    drop(store);

    let existing = dir.path().join("shared.db");
    std::fs::write(&existing, b"").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
    Store::open(&existing).unwrap();
    assert_eq!(mode(&existing), "640");

    // A link to a file not there yet (a first start's layout): the file made is 0600 too.
    let target = dir.path().join("data/warden.db");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let link = dir.path().join("linked.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    Store::open(&link).unwrap();
    assert_eq!(mode(&target), "600", "{}", target.display());
}

fn user_id(store: &Store) -> String {
    store
        .lookup_identity("alice@example.com", "custom", "vo")
        .unwrap()
        .expect("alice's identity")
        .user_id
}

#[test]
fn lookups_of_huge_emails_are_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("warden.db")).unwrap();
    let huge = format!("{}@example.com", "a".repeat(4 << 20));
    for _ in 0..2 {
        assert_eq!(store.lookup_identity(&huge, "custom", "vo").unwrap(), None);
    }
    assert_eq!(store.identity_lookups_from_memory(), 0);
    store
        .lookup_identity("b@example.com", "custom", "vo")
        .unwrap();
    store
        .lookup_identity("b@example.com", "custom", "vo")
        .unwrap();
    assert_eq!(store.identity_lookups_from_memory(), 1, "short ones are");
}

#[test]
fn an_identity_changed_by_another_connection_is_seen_by_the_next_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let store = Store::open(&path).unwrap();
    store
        .persist_identity("alice@example.com", "custom", "vo", "alice")
        .unwrap();
    assert_eq!(user_id(&store), "alice");
    assert_eq!(store.identity_lookups_from_memory(), 0, "the first is read");
    assert_eq!(user_id(&store), "alice");
    assert_eq!(
        store.identity_lookups_from_memory(),
        1,
        "the second is remembered"
    );

    // What `warden users` does from its own process: its own connection and commit.
    let other = Connection::open(&path).unwrap();
    other
        .execute("UPDATE identities SET user_id = 'alice-2'", [])
        .unwrap();
    assert_eq!(user_id(&store), "alice-2");
    // A commit that changes anything else is noticed the same way.
    other
        .execute("INSERT INTO users (email) VALUES ('bob@example.com')", [])
        .unwrap();
    assert_eq!(user_id(&store), "alice-2");
    assert_eq!(store.identity_lookups_from_memory(), 1);
    assert_eq!(user_id(&store), "alice-2");
    assert_eq!(store.identity_lookups_from_memory(), 2);
}

#[tokio::test]
async fn the_stores_own_writes_keep_remembered_identities_unless_they_change_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("warden.db")).unwrap();
    store
        .persist_identity("alice@example.com", "custom", "vo", "alice")
        .unwrap();
    assert_eq!(user_id(&store), "alice");

    let write = |sql: &'static str| store.write("run a test write", move |c| c.execute(sql, []));
    write("INSERT INTO users (email) VALUES ('bob@example.com')")
        .await
        .unwrap();
    assert_eq!(user_id(&store), "alice");
    assert_eq!(
        store.identity_lookups_from_memory(),
        1,
        "kept across the write"
    );

    write("UPDATE identities SET user_id = 'alice-2'")
        .await
        .unwrap();
    assert_eq!(user_id(&store), "alice-2");
    // A write that fails changes nothing: the answer read after it is still right.
    write("INSERT INTO users (email) VALUES ('bob@example.com')")
        .await
        .unwrap_err();
    assert_eq!(user_id(&store), "alice-2");
    assert_eq!(store.identity_lookups_from_memory(), 2);
}

#[test]
fn a_store_error_names_the_file_and_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let store = Store::open(&path).unwrap();
    let error = store
        .read("list requests", |c| {
            c.execute_batch("SELECT * FROM no_such_table")
        })
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "the store {}: cannot list requests: ",
            path.display()
        )),
        "{error}"
    );
    assert!(error.contains("no_such_table"), "{error}");
    assert!(!error.contains("identity store"), "{error}");
}

#[test]
fn a_store_of_a_newer_warden_is_refused_untouched_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    drop(Store::open(&path).unwrap());
    let newer = MIGRATIONS.len() + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let error = Store::open(&path).err().expect("refused").to_string();
    assert_eq!(
        error,
        format!(
            "the store {}: cannot use it: its schema version {newer} is newer than this warden knows ({}); upgrade warden",
            path.display(),
            MIGRATIONS.len()
        )
    );
    let version: usize = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, newer);
}

#[test]
fn each_commit_is_flushed_to_disk_before_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("warden.db")).unwrap();
    let level: i64 = store
        .conn
        .lock()
        .unwrap()
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .unwrap();
    // 2: FULL, the WAL synced at every commit (1, NORMAL, only at checkpoints).
    assert_eq!(level, 2);
}
