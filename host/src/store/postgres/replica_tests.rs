//! What only several replicas sharing one PostgreSQL database can do, on two stores (each
//! with its own pool) over one test database; and `warden users` on PostgreSQL.

use std::time::Duration;

use super::PgStore;
use super::tests::{hook, new, step, steps};
use crate::store::backend::Backend;
use crate::store::requests::State;
use crate::store::test_cluster;

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
    // The server ends the session (and its locks) once it sees the connection close; a
    // sweep meanwhile may find one lock gone and the other not yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let taken = loop {
        let sweep = b.lease_expired(2_000).await.unwrap();
        if sweep.ids().len() == ids.len() || std::time::Instant::now() > deadline {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_fails_while_the_database_is_down_and_recovers_by_itself() {
    let started = tokio::task::spawn_blocking(test_cluster::dedicated);
    let Some(mut server) = started.await.unwrap() else {
        return;
    };
    let url = format!("postgres://warden@127.0.0.1:{}/warden", server.port);
    let url = crate::config::StoreUrl::parse(&url).unwrap();
    let store = PgStore::open(&url).await.unwrap();
    // Several connections in the pool, all to be lost.
    let inserts = (0..4).map(|i| store.insert_request(new(&format!("r{i}"), "a@x.com", None)));
    for inserted in futures_util::future::join_all(inserts).await {
        inserted.unwrap().unwrap();
    }
    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let down = tokio::time::timeout(
        Duration::from_secs(20),
        store.insert_request(new("lost", "a@x.com", None)),
    )
    .await
    .expect("an error, not a wait without end");
    let text = down.expect_err("nothing stored while down").to_string();
    assert!(
        text.starts_with(&format!("the store {url}: cannot ")),
        "{text}"
    );
    let server = tokio::task::spawn_blocking(move || {
        server.run().unwrap();
        server
    })
    .await
    .unwrap();
    // Back: the next operations work on new connections, and nothing was half-written.
    for i in 0..4 {
        let id = format!("after{i}");
        store
            .insert_request(new(&id, "a@x.com", None))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(store.request("lost").await.unwrap(), None);
    let all = crate::store::requests::ListQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list(&all).await.unwrap().rows.len(), 8);
    drop(store);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
