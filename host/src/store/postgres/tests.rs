//! The store's behaviour held to one meaning on both backends: each test runs against SQLite
//! and, when the test cluster runs (`store::test_cluster`), PostgreSQL; and what only
//! several replicas can do, on two PostgreSQL stores over one database.

use std::sync::Arc;
use std::time::Duration;

use super::PgStore;
use crate::store::backend::Backend;
use crate::store::requests::{
    HistoryEntry, HistoryEvent, NewRequest, RequestWrite, State, Transition, now_ms,
};
use crate::store::{Store, StoreChange, StoredIdentity, test_cluster};

/// SQLite (a file, as `warden serve` opens it) and PostgreSQL when there is one to run.
async fn backends() -> Vec<(&'static str, Arc<dyn Backend>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("warden.db")).unwrap();
    let mut all: Vec<(&'static str, Arc<dyn Backend>, Option<tempfile::TempDir>)> =
        vec![("sqlite", Arc::new(sqlite), Some(dir))];
    if let Some(url) = test_cluster::database().await {
        all.push((
            "postgres",
            Arc::new(PgStore::open(&url).await.unwrap()),
            None,
        ));
    }
    all
}

fn new(id: &str, requester: &str, key: Option<&str>) -> NewRequest {
    let mut fields = serde_json::Map::new();
    fields.insert("reason".into(), "incident 42".into());
    NewRequest {
        id: id.into(),
        flow: "f".into(),
        requester: requester.into(),
        fields,
        created_by: "a@x.com".into(),
        idempotency_key: key.map(str::to_string),
        duration: Some(Duration::from_secs(60)),
        requester_profile: Some(r#"{"email":"a@x.com"}"#.into()),
    }
}

fn step(from: &'static [State], to: State, step: &'static str) -> Transition {
    Transition {
        from,
        to,
        decision: "approve".into(),
        reason: Some(format!("{step} by test")),
        actor: "warden".into(),
        step,
        expires_at: None,
    }
}

fn hook(name: &str) -> RequestWrite {
    RequestWrite::Entry(HistoryEntry {
        at: now_ms(),
        step: "approve".into(),
        event: HistoryEvent::Hook {
            hook: name.into(),
            ran: true,
            outcome: "approve".into(),
            reason: None,
            error: None,
            blame: None,
            elapsed_ms: 1.5,
            refusals: vec!["http.send".into()],
        },
    })
}

/// A history as its hooks' names and `from -> to`.
fn steps(history: &[HistoryEntry]) -> Vec<String> {
    history
        .iter()
        .map(|e| match &e.event {
            HistoryEvent::Hook { hook, .. } => hook.clone(),
            HistoryEvent::Transition { from, to, .. } => format!("{from:?} -> {to}"),
            HistoryEvent::Approval { approver, .. } => format!("approval by {approver}"),
        })
        .collect()
}

#[tokio::test]
async fn requests_history_and_audit_mean_the_same_on_both_backends() {
    for (name, store, _dir) in backends().await {
        let first = store
            .insert_request(new("r1", "A@x.com", None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.state, State::Requested, "{name}");
        store
            .insert_request(new("r2", "b@x.com", None))
            .await
            .unwrap()
            .unwrap();
        let pending = step(&[State::Requested], State::Pending, "request");
        let written = store
            .write_request(
                "r1",
                vec![hook("on_request"), RequestWrite::Transition(pending)],
                None,
                true,
            )
            .await
            .unwrap();
        let (record, history) = written.flatten().expect("read back");
        assert_eq!(record.state, State::Pending, "{name}");
        assert_eq!(record.reason.as_deref(), Some("request by test"), "{name}");
        assert_eq!(record.fields["reason"], "incident 42", "{name}");
        assert_eq!(record.duration, Some(Duration::from_secs(60)), "{name}");
        assert_eq!(
            record.requester_profile.as_deref(),
            Some(r#"{"email":"a@x.com"}"#)
        );
        assert_eq!(
            steps(&history),
            [
                "None -> requested",
                "on_request",
                "Some(Requested) -> pending"
            ],
            "{name}"
        );
        assert_eq!(
            history[1],
            match &hook("on_request") {
                RequestWrite::Entry(e) => HistoryEntry {
                    at: history[1].at,
                    ..e.clone()
                },
                _ => unreachable!(),
            },
            "{name}: a hook's entry round-trips whole"
        );
        assert_eq!(store.history("r1").await.unwrap(), history, "{name}");
        assert_eq!(
            store.request_with_history("r1").await.unwrap(),
            Some((record.clone(), history.clone())),
            "{name}"
        );
        assert_eq!(store.request("nope").await.unwrap(), None, "{name}");

        // Listing: newest first, by state, by requester without case.
        let ids = |list: Vec<crate::store::requests::RequestRecord>| {
            list.into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.list(Some(State::Pending), None).await.unwrap()),
            ["r1"],
            "{name}"
        );
        assert_eq!(
            ids(store.list(None, Some("a@X.com")).await.unwrap()),
            ["r1"],
            "{name}"
        );
        assert_eq!(store.list(None, None).await.unwrap().len(), 2, "{name}");
        assert_eq!(
            store.ids_in(State::Requested).await.unwrap(),
            ["r2"],
            "{name}"
        );
        let counts = store.count_by_state().await.unwrap();
        assert_eq!(
            counts.len(),
            State::ALL.len(),
            "{name}: every state, zeros too"
        );
        assert!(counts.contains(&(State::Pending, 1)) && counts.contains(&(State::Requested, 1)));
        assert!(counts.contains(&(State::Denied, 0)), "{name}");

        // Expiry: an escalated request with an end is found once it has passed.
        let mut escalate = step(&[State::Pending], State::Escalated, "escalate");
        escalate.expires_at = Some(1_000);
        assert!(
            store
                .write_request("r1", vec![], Some(escalate), false)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store.expired(999).await.unwrap(),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(store.expired(1_000).await.unwrap(), ["r1"], "{name}");
        assert_eq!(store.next_expiry(500).await.unwrap(), Some(1_000), "{name}");
        assert_eq!(store.next_expiry(1_000).await.unwrap(), None, "{name}");

        // The audit log: every request and transition, in order, plus a line of its own.
        store
            .audit(
                "ops@x.com",
                "reload",
                None,
                &serde_json::json!({"flows": 2}),
            )
            .await
            .unwrap();
        let log = store.audit_log(10).await.unwrap();
        let lines: Vec<(&str, &str, Option<&str>)> = log
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str(), e.request_id.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                ("a@x.com", "request", Some("r1")),
                ("a@x.com", "request", Some("r2")),
                ("warden", "request", Some("r1")),
                ("warden", "escalate", Some("r1")),
                ("ops@x.com", "reload", None),
            ],
            "{name}"
        );
        assert_eq!(log[2].detail["from"], "requested", "{name}");
        assert_eq!(log[4].detail["flows"], 2, "{name}");
        assert!(
            log.windows(2).all(|w| w[0].seq < w[1].seq),
            "{name}: oldest first"
        );
        let page = store.audit_page(Some(log[4].seq), 2).await.unwrap();
        assert_eq!(
            page,
            [log[3].clone(), log[2].clone()],
            "{name}: newest first, before"
        );
        assert_eq!(
            store.audit_log(2).await.unwrap(),
            log[3..],
            "{name}: the newest, in order"
        );
    }
}

#[tokio::test]
async fn a_step_that_no_longer_applies_writes_nothing_at_all() {
    for (name, store, _dir) in backends().await {
        store
            .insert_request(new("r1", "a@x.com", None))
            .await
            .unwrap()
            .unwrap();
        let audited = store.audit_log(100).await.unwrap().len();
        // `then` does not apply: nothing is written, the hook entry before it included.
        let approve = step(&[State::Pending], State::Approved, "approve");
        let refused = store
            .write_request("r1", vec![hook("on_approve")], Some(approve), true)
            .await
            .unwrap();
        assert!(refused.is_none(), "{name}");
        // A deferred step that finds the request elsewhere is an error, and takes back the
        // entries written before it in the same operation.
        let deferred = RequestWrite::Transition(step(&[State::Pending], State::Denied, "deny"));
        let failed = store
            .write_request("r1", vec![hook("on_request"), deferred], None, false)
            .await;
        assert!(
            failed
                .unwrap_err()
                .to_string()
                .contains("its deferred step `deny`"),
            "{name}"
        );
        assert_eq!(
            steps(&store.history("r1").await.unwrap()),
            ["None -> requested"],
            "{name}"
        );
        assert_eq!(store.audit_log(100).await.unwrap().len(), audited, "{name}");
        assert!(
            store
                .write_request(
                    "nope",
                    vec![],
                    Some(step(&[State::Requested], State::Pending, "request")),
                    false
                )
                .await
                .unwrap()
                .is_none(),
            "{name}: no such request"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_request_on_both_backends() {
    for (name, store, _dir) in backends().await {
        let first = store
            .insert_request(new("r1", "a@x.com", Some("k")))
            .await
            .unwrap();
        assert_eq!(first.map(|r| r.id), Ok("r1".into()), "{name}");
        let again = store
            .insert_request(new("r2", "a@x.com", Some("k")))
            .await
            .unwrap();
        assert_eq!(again.map(|r| r.id), Err("r1".into()), "{name}");
        assert_eq!(
            store.request("r2").await.unwrap(),
            None,
            "{name}: nothing stored"
        );
        let mut other = new("r3", "a@x.com", Some("k"));
        other.created_by = "b@x.com".into();
        let theirs = store.insert_request(other).await.unwrap();
        assert_eq!(
            theirs.map(|r| r.id),
            Ok("r3".into()),
            "{name}: keys are per sender"
        );
    }
}

#[tokio::test]
async fn identities_and_users_mean_the_same_on_both_backends() {
    for (name, store, _dir) in backends().await {
        let stored = store
            .persist_identity("Ann@x.com", "pd", "P1", "U1")
            .await
            .unwrap();
        assert_eq!(stored.user_id, "U1", "{name}");
        let updated = store
            .persist_identity("ann@X.com", "pd", "P1", "U2")
            .await
            .unwrap();
        assert_eq!(
            (updated.email.as_str(), updated.user_id.as_str()),
            ("Ann@x.com", "U2"),
            "{name}"
        );
        let found = store
            .lookup_identity("ANN@x.com", "pd", "P1")
            .await
            .unwrap();
        assert_eq!(found.map(|i| i.user_id), Some("U2".into()), "{name}");
        assert_eq!(
            store
                .lookup_identity("ann@x.com", "pd", "P2")
                .await
                .unwrap(),
            None
        );
        let set = |email: &str, service: &str, id: &str| {
            StoreChange::SetIdentity(StoredIdentity {
                email: email.into(),
                service: service.into(),
                service_id: id.into(),
                user_id: format!("{service}-{id}"),
            })
        };
        store
            .apply(&[
                StoreChange::EnsureUser {
                    email: "zed@x.com".into(),
                },
                set("bob@x.com", "vo", "B"),
                set("bob@x.com", "Vo", "A"),
                set("ann@x.com", "a", "Z"),
            ])
            .await
            .unwrap();
        let users = store.users().await.unwrap();
        let shape: Vec<(String, Vec<String>)> = users
            .iter()
            .map(|u| {
                let ids = u
                    .identities
                    .iter()
                    .map(|i| format!("{}/{}", i.service, i.service_id));
                (u.email.clone(), ids.collect())
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("Ann@x.com".into(), vec!["a/Z".to_string(), "pd/P1".into()]),
                ("bob@x.com".into(), vec!["Vo/A".into(), "vo/B".into()]),
                ("zed@x.com".into(), vec![]),
            ],
            "{name}: emails without case, then services in binary order"
        );
        assert!(
            users
                .iter()
                .all(|u| u.created_at.ends_with('Z') && u.created_at.len() == 20)
        );
        let ann = store
            .user("ANN@X.COM")
            .await
            .unwrap()
            .expect("found without case");
        assert_eq!(ann.identities.len(), 2, "{name}");
        assert_eq!(
            store.identities_of("ann@x.com").await.unwrap(),
            ann.identities
        );
        assert!(
            store.delete_identity("ann@x.com", "a", "Z").await.unwrap(),
            "{name}"
        );
        assert!(
            !store.delete_identity("ann@x.com", "a", "Z").await.unwrap(),
            "{name}"
        );
        assert!(store.delete_user("ann@x.com").await.unwrap(), "{name}");
        assert_eq!(
            store
                .lookup_identity("ann@x.com", "pd", "P1")
                .await
                .unwrap(),
            None,
            "{name}: identities go with their user"
        );
        assert_eq!(store.user("ann@x.com").await.unwrap(), None, "{name}");
        assert!(!store.delete_user("ann@x.com").await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn migrations_apply_once_and_a_newer_database_is_refused() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let store = PgStore::open(&url).await.unwrap();
    let sqlite = Store::open_in_memory().unwrap();
    assert_eq!(
        store.schema_version(),
        sqlite.schema_version(),
        "one numbering"
    );
    store
        .persist_identity("a@x.com", "pd", "P", "U")
        .await
        .unwrap();
    drop(store);
    // Reopening applies nothing again and keeps the data.
    let again = PgStore::open(&url).await.unwrap();
    assert!(
        again
            .lookup_identity("a@x.com", "pd", "P")
            .await
            .unwrap()
            .is_some()
    );
    let client = again.client("test").await.unwrap();
    let version: i64 = client
        .query_one("SELECT version FROM warden_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version as usize, again.schema_version());
    client
        .execute("UPDATE warden_schema SET version = version + 1", &[])
        .await
        .unwrap();
    drop(client);
    let err = PgStore::open(&url)
        .await
        .err()
        .expect("a newer schema is refused");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "schema version {} is newer than this warden knows",
            version + 1
        )),
        "{text}"
    );
    assert!(
        text.contains(url.as_str()),
        "the error names the store: {text}"
    );
}

#[tokio::test]
async fn the_audit_log_is_append_only_on_postgres() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let store = PgStore::open(&url).await.unwrap();
    store
        .audit("a@x.com", "reload", None, &serde_json::json!({}))
        .await
        .unwrap();
    let client = store.client("test").await.unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = client.execute(sql, &[]).await.expect_err(sql);
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
}

/// Two replicas: two stores, each with its own pool, over one database.
async fn replicas() -> Option<(PgStore, PgStore)> {
    let url = test_cluster::database().await?;
    Some((
        PgStore::open(&url).await.unwrap(),
        PgStore::open(&url).await.unwrap(),
    ))
}

#[tokio::test]
async fn an_approval_racing_on_two_replicas_is_written_once() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    for round in 0..20 {
        let id = format!("r{round}");
        a.insert_request(new(&id, "a@x.com", None))
            .await
            .unwrap()
            .unwrap();
        let pending = step(&[State::Requested], State::Pending, "request");
        a.write_request(&id, vec![], Some(pending), false)
            .await
            .unwrap()
            .unwrap();
        let approve = || step(&[State::Pending], State::Approved, "approve");
        let (x, y) = tokio::join!(
            a.write_request(&id, vec![hook("on_approve")], Some(approve()), false),
            b.write_request(&id, vec![hook("on_approve")], Some(approve()), false),
        );
        let won = [x.unwrap().is_some(), y.unwrap().is_some()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
        assert_eq!(
            steps(&b.history(&id).await.unwrap()),
            [
                "None -> requested",
                "Some(Requested) -> pending",
                "on_approve",
                "Some(Pending) -> approved"
            ],
            "round {round}: the loser wrote nothing"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_retried_on_another_replica_returns_the_first_request() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let first = a
        .insert_request(new("r1", "a@x.com", Some("k")))
        .await
        .unwrap();
    assert!(first.is_ok());
    let retried = b
        .insert_request(new("r2", "a@x.com", Some("k")))
        .await
        .unwrap();
    assert_eq!(retried.map(|r| r.id), Err("r1".into()));
    // Sent to both at once: one request, and both answers name it.
    for round in 0..20 {
        let key = format!("race-{round}");
        let (x, y) = tokio::join!(
            a.insert_request(new(&format!("x{round}"), "a@x.com", Some(&key))),
            b.insert_request(new(&format!("y{round}"), "a@x.com", Some(&key))),
        );
        let id = |r: Result<crate::store::requests::RequestRecord, String>| match r {
            Ok(record) => record.id,
            Err(id) => id,
        };
        let (x, y) = (id(x.unwrap()), id(y.unwrap()));
        assert_eq!(x, y, "round {round}");
        assert_eq!(a.history(&x).await.unwrap().len(), 1, "round {round}");
    }
}

#[tokio::test]
async fn an_identity_changed_on_one_replica_is_seen_by_the_next_lookup_on_another() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    assert_eq!(b.lookup_identity("a@x.com", "pd", "P").await.unwrap(), None);
    a.persist_identity("a@x.com", "pd", "P", "U1")
        .await
        .unwrap();
    let seen = b.lookup_identity("a@x.com", "pd", "P").await.unwrap();
    assert_eq!(seen.map(|i| i.user_id), Some("U1".into()));
    a.persist_identity("a@x.com", "pd", "P", "U2")
        .await
        .unwrap();
    let seen = b.lookup_identity("a@x.com", "pd", "P").await.unwrap();
    assert_eq!(seen.map(|i| i.user_id), Some("U2".into()));
    a.delete_user("a@x.com").await.unwrap();
    assert_eq!(b.lookup_identity("a@x.com", "pd", "P").await.unwrap(), None);
}

#[test]
fn commands_not_yet_on_postgres_refuse_a_url_rather_than_open_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    let url = "postgres://warden@127.0.0.1:5432/warden";
    let err = Store::open_configured(&path, Some(url))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(url) && text.contains("does not run on PostgreSQL yet"),
        "{text}"
    );
    assert!(!path.exists(), "no SQLite file made in its place");
    assert!(Store::open_configured(&path, None).is_ok());
}

/// `n` requests escalated with access that ran out at 1000.
async fn expired_requests(store: &PgStore, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("e{i}");
        store
            .insert_request(new(&id, "a@x.com", None))
            .await
            .unwrap()
            .unwrap();
        let mut escalate = step(&[State::Requested], State::Escalated, "escalate");
        escalate.expires_at = Some(1_000);
        store
            .write_request(&id, vec![], Some(escalate), false)
            .await
            .unwrap()
            .unwrap();
        ids.push(id);
    }
    ids
}

/// One replica's expiry sleeper, as many times as it takes: lease, deescalate, release.
/// Returns the requests it deescalated.
async fn sweep_until_done(store: &PgStore) -> Vec<String> {
    let mut done = Vec::new();
    loop {
        let sweep = store.lease_expired(2_000).await.unwrap();
        if sweep.ids().is_empty() && store.expired(2_000).await.unwrap().is_empty() {
            sweep.release().await.unwrap();
            return done;
        }
        for id in sweep.ids() {
            let end = step(&[State::Escalated], State::Deescalated, "deescalate");
            let written = store.write_request(id, vec![hook("on_deescalate")], Some(end), false);
            assert!(
                written.await.unwrap().is_some(),
                "{id}: leased, so still escalated"
            );
            done.push(id.clone());
        }
        sweep.release().await.unwrap();
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_expiry_fires_once_across_replicas() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let ids = expired_requests(&a, 40).await;
    let (by_a, by_b) = tokio::join!(sweep_until_done(&a), sweep_until_done(&b));
    let mut all: Vec<String> = by_a.iter().chain(&by_b).cloned().collect();
    all.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        all,
        expected,
        "each exactly once (a: {}, b: {})",
        by_a.len(),
        by_b.len()
    );
    for id in &ids {
        let hooks = steps(&a.history(id).await.unwrap());
        assert_eq!(
            hooks.iter().filter(|h| *h == "on_deescalate").count(),
            1,
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_lease_held_is_skipped_and_one_lost_with_its_replica_is_taken_over() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let ids = expired_requests(&a, 2).await;
    let held = a.lease_expired(2_000).await.unwrap();
    assert_eq!(held.ids(), ids, "a leases both");
    let skipped = b.lease_expired(2_000).await.unwrap();
    assert!(
        skipped.ids().is_empty(),
        "b skips what a holds: {:?}",
        skipped.ids()
    );
    skipped.release().await.unwrap();
    // a dies before deescalating: its connection, and the leases, go with it.
    drop(held);
    // The server ends the session (and its locks) once it sees the connection close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let sweep = b.lease_expired(2_000).await.unwrap();
        if !sweep.ids().is_empty() || std::time::Instant::now() > deadline {
            break sweep;
        }
        sweep.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken.ids(), ids, "b takes them over");
    taken.release().await.unwrap();
    // A request deescalated meanwhile is not leased again.
    let end = step(&[State::Escalated], State::Deescalated, "deescalate");
    a.write_request(&ids[0], vec![], Some(end), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.lease_expired(2_000).await.unwrap().ids(), &ids[1..]);
}

/// `warden users` on PostgreSQL: each command, and an import all or nothing.
#[tokio::test]
async fn warden_users_runs_on_postgres() {
    use crate::cli::users::{UsersCommand, run};
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\n\n[integrations.pd]\ntype = \"custom\"\nexternal_id = \"pd-1\"\n"
        ),
    )
    .unwrap();
    let users = |command| {
        let mut out = Vec::new();
        run(&config, command, &mut out).map(|()| String::from_utf8(out).unwrap())
    };
    let set = |email: &str, user_id: &str| UsersCommand::SetIdentity {
        email: email.into(),
        service: "custom".into(),
        service_id: "pd-1".into(),
        user_id: user_id.into(),
        force: false,
    };
    assert!(
        users(set("Ann@x.com", "U1"))
            .unwrap()
            .starts_with("created")
    );
    let updated = users(set("ann@x.com", "U2")).unwrap();
    assert_eq!(updated.trim(), "updated custom:pd-1 of Ann@x.com: U1 -> U2");
    let listed = users(UsersCommand::ListIdentities {
        email: "ANN@x.com".into(),
    })
    .unwrap();
    assert!(listed.contains("U2"), "{listed}");

    // An import with one bad row changes nothing; a good one adds every row.
    let csv = dir.path().join("users.csv");
    std::fs::write(&csv, "email,custom:pd-1\nbob@x.com,B1\nnot-an-email,C1\n").unwrap();
    let import = |dry_run| UsersCommand::Import {
        file: csv.clone(),
        dry_run,
        force: false,
    };
    assert!(users(import(false)).is_err());
    let store = PgStore::open(&url).await.unwrap();
    assert_eq!(
        store.user("bob@x.com").await.unwrap(),
        None,
        "nothing imported"
    );
    std::fs::write(&csv, "email,custom:pd-1\nbob@x.com,B1\ncid@x.com,C1\n").unwrap();
    assert!(
        users(import(true))
            .unwrap()
            .contains("dry run: nothing was changed")
    );
    assert_eq!(
        store.user("bob@x.com").await.unwrap(),
        None,
        "a dry run imports nothing"
    );
    users(import(false)).unwrap();
    let emails: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(emails, ["Ann@x.com", "bob@x.com", "cid@x.com"]);
    let exported = users(UsersCommand::Export { file: "-".into() }).unwrap();
    assert!(
        exported.contains("bob@x.com,B1") && exported.contains("Ann@x.com,U2"),
        "{exported}"
    );
    let deleted = users(UsersCommand::Delete {
        email: "bob@x.com".into(),
    })
    .unwrap();
    assert_eq!(deleted.trim(), "deleted user bob@x.com and 1 identity(ies)");
    users(UsersCommand::DeleteIdentity {
        email: "ann@x.com".into(),
        service: "custom".into(),
        service_id: "pd-1".into(),
    })
    .unwrap();
    assert_eq!(
        store
            .lookup_identity("ann@x.com", "custom", "pd-1")
            .await
            .unwrap(),
        None
    );
    let listed = users(UsersCommand::List).unwrap();
    assert!(
        listed.contains("cid@x.com") && !listed.contains("bob@x.com"),
        "{listed}"
    );
}
