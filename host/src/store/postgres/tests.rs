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
pub(super) async fn backends() -> Vec<(&'static str, Arc<dyn Backend>, Option<tempfile::TempDir>)> {
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

pub(super) fn new(id: &str, requester: &str, key: Option<&str>) -> NewRequest {
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
        claim: None,
    }
}

pub(super) fn step(from: &'static [State], to: State, step: &'static str) -> Transition {
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

pub(super) fn hook(name: &str) -> RequestWrite {
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
pub(super) fn steps(history: &[HistoryEntry]) -> Vec<String> {
    history
        .iter()
        .map(|e| match &e.event {
            HistoryEvent::Hook { hook, .. } => hook.clone(),
            HistoryEvent::Transition { from, to, .. } => format!("{from:?} -> {to}"),
            HistoryEvent::Approval { approver, .. } => format!("approval by {approver}"),
            HistoryEvent::Notification { channel, .. } => format!("notify {channel}"),
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

        // Listing: newest first, by state, by requester without case, by flow, a page at a
        // time.
        use crate::store::requests::{Cursor, ListQuery, PendingOnly};
        let ids = |list: Vec<crate::store::requests::RequestRecord>| {
            list.into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
        let all = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        let pending = ListQuery {
            state: Some(State::Pending),
            ..all.clone()
        };
        assert_eq!(
            ids(store.list(&pending).await.unwrap().rows),
            ["r1"],
            "{name}"
        );
        let alices = ListQuery {
            requester: Some("a@X.com".into()),
            ..all.clone()
        };
        assert_eq!(
            ids(store.list(&alices).await.unwrap().rows),
            ["r1"],
            "{name}"
        );
        let everything = store.list(&all).await.unwrap().rows;
        assert_eq!(everything.len(), 2, "{name}");
        let of_flow = ListQuery {
            flow: Some(record.flow.clone()),
            ..all.clone()
        };
        assert!(
            ids(store.list(&of_flow).await.unwrap().rows).contains(&"r1".to_string()),
            "{name}"
        );
        let no_flow = ListQuery {
            flow: Some("no-such-flow".into()),
            ..all.clone()
        };
        assert!(
            store.list(&no_flow).await.unwrap().rows.is_empty(),
            "{name}"
        );
        // Pending requests only of some flows, and the caller's own.
        let pending_of = |flows: Vec<String>, requester: &str| ListQuery {
            pending_only: Some(PendingOnly {
                flows,
                requester: requester.into(),
            }),
            ..pending.clone()
        };
        let hidden = pending_of(vec!["another".into()], "someone@x.com");
        assert!(store.list(&hidden).await.unwrap().rows.is_empty(), "{name}");
        let of_its_flow = pending_of(vec![record.flow.clone()], "someone@x.com");
        assert_eq!(
            ids(store.list(&of_its_flow).await.unwrap().rows),
            ["r1"],
            "{name}"
        );
        let own = pending_of(Vec::new(), "A@x.COM");
        assert_eq!(ids(store.list(&own).await.unwrap().rows), ["r1"], "{name}");
        let everything_else = ListQuery {
            pending_only: hidden.pending_only.clone(),
            ..all.clone()
        };
        assert_eq!(
            store.list(&everything_else).await.unwrap().rows.len(),
            1,
            "{name}: requests in other states stay"
        );
        // A window of one request: the filters are tried on it alone, and the next query
        // goes on after it.
        let one = store
            .list(&ListQuery {
                window: 1,
                ..hidden.clone()
            })
            .await
            .unwrap();
        assert!(one.rows.is_empty(), "{name}");
        assert_eq!(
            one.window_end,
            Some(Cursor::after(&everything[0])),
            "{name}"
        );
        let last = store
            .list(&ListQuery {
                window: 2,
                ..all.clone()
            })
            .await
            .unwrap();
        assert_eq!(last.rows.len(), 2, "{name}");
        assert_eq!(
            last.window_end,
            Some(Cursor::after(&everything[1])),
            "{name}"
        );
        let past_the_end = store
            .list(&ListQuery {
                window: 3,
                ..all.clone()
            })
            .await
            .unwrap();
        assert_eq!(past_the_end.window_end, None, "{name}: the table ended");
        let first = store
            .list(&ListQuery {
                limit: 1,
                ..all.clone()
            })
            .await
            .unwrap()
            .rows;
        assert_eq!(ids(first.clone()), [everything[0].id.clone()], "{name}");
        let rest = ListQuery {
            before: Some(Cursor::after(&first[0])),
            ..all.clone()
        };
        assert_eq!(
            ids(store.list(&rest).await.unwrap().rows),
            [everything[1].id.clone()],
            "{name}: the next page starts after the last one given"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_while_requests_are_filed_give_no_request_twice_on_both_backends() {
    use crate::store::requests::ListQuery;
    for (name, store, _dir) in backends().await {
        for i in 0..6 {
            store
                .insert_request(new(&format!("old-{i}"), "a@x.com", None))
                .await
                .unwrap()
                .unwrap();
        }
        // Filing goes on while the pages are read, and the reading goes on until both have
        // done enough (however slow the machine, or a flushed commit): the race was run, many
        // times over.
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (walking, filed) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicUsize::new(0)),
        );
        let filing = tokio::spawn({
            let (store, walking, filed) = (store.clone(), walking.clone(), filed.clone());
            async move {
                while walking.load(Ordering::SeqCst) {
                    let id = format!("new-{:05}", filed.load(Ordering::SeqCst));
                    store
                        .insert_request(new(&id, "a@x.com", None))
                        .await
                        .unwrap()
                        .unwrap();
                    filed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let started = std::time::Instant::now();
        let mut walks = 0;
        while walks < 100 || filed.load(Ordering::SeqCst) < 30 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name}: {walks} walks, {} filed",
                filed.load(Ordering::SeqCst)
            );
            // The first two windows of three, going on as `serve::lifecycle::list` does.
            let mut query = ListQuery {
                limit: 100,
                window: 3,
                ..ListQuery::default()
            };
            let mut given = Vec::new();
            for _ in 0..2 {
                let chunk = store.list(&query).await.unwrap();
                given.extend(chunk.rows.into_iter().map(|r| r.id));
                match chunk.window_end {
                    Some(end) => query.before = Some(end),
                    None => break,
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for id in &given {
                assert!(seen.insert(id), "{name}: {id} given twice in {given:?}");
            }
            walks += 1;
            tokio::task::yield_now().await;
        }
        walking.store(false, Ordering::SeqCst);
        filing.await.unwrap();
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
        let orphan = store
            .write_request("nope", vec![hook("on_request")], None, false)
            .await;
        assert!(
            orphan.is_err(),
            "{name}: no history for a request not there"
        );
        let nothing = store
            .write_request("nope", vec![], None, false)
            .await
            .unwrap();
        assert_eq!(nothing, Some(None), "{name}: nothing to write");
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

#[tokio::test]
async fn an_approval_short_of_the_count_is_audited_in_its_batch_on_both_backends() {
    for (name, store, _dir) in backends().await {
        store
            .insert_request(new("r1", "a@x.com", None))
            .await
            .unwrap()
            .unwrap();
        let approval = RequestWrite::Entry(HistoryEntry {
            at: 1,
            step: "approve".into(),
            event: HistoryEvent::Approval {
                approver: "b@x.com".into(),
                by: None,
                reason: Some("fine".into()),
                count: 1,
                required: 2,
            },
        });
        let refused = step(&[State::Denied], State::Escalated, "x");
        let written = store.write_request("r1", vec![approval.clone()], Some(refused), false);
        assert!(written.await.unwrap().is_none(), "{name}");
        assert_eq!(
            store.audit_log(10).await.unwrap().len(),
            1,
            "{name}: no line left behind"
        );
        let written = store.write_request("r1", vec![approval], None, false);
        assert!(written.await.unwrap().is_some(), "{name}");
        let history = store.history("r1").await.unwrap();
        assert_eq!(
            steps(&history),
            ["None -> requested", "approval by b@x.com"],
            "{name}"
        );
        let audit = store.audit_log(10).await.unwrap();
        let line = audit.last().unwrap();
        assert_eq!(
            (line.actor.as_str(), line.action.as_str(), &line.detail),
            (
                "b@x.com",
                "approval",
                &serde_json::json!({ "count": 1, "required": 2, "reason": "fine" })
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn apply_is_all_or_nothing_on_postgres() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let store = PgStore::open(&url).await.unwrap();
    store
        .persist_identity("a@x.com", "custom", "id1", "old")
        .await
        .unwrap();
    // A trigger fails the second change as a full disk or a constraint would.
    store
        .client("test")
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION refuse_z() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.email = 'z@x.com' THEN RAISE EXCEPTION 'refused'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER refuse_z BEFORE INSERT ON users
                 FOR EACH ROW EXECUTE FUNCTION refuse_z();",
        )
        .await
        .unwrap();
    let set = |email: &str, user_id: &str| {
        StoreChange::SetIdentity(StoredIdentity {
            email: email.into(),
            service: "custom".into(),
            service_id: "id1".into(),
            user_id: user_id.into(),
        })
    };
    let err = store
        .apply(&[set("a@x.com", "new"), set("z@x.com", "z")])
        .await;
    let text = err.unwrap_err().to_string();
    assert!(
        text.contains("apply identity changes") && text.contains("ERROR: refused"),
        "{text}"
    );
    let kept = store
        .lookup_identity("a@x.com", "custom", "id1")
        .await
        .unwrap();
    assert_eq!(
        kept.unwrap().user_id,
        "old",
        "the first change was taken back"
    );
    store
        .apply(&[set("a@x.com", "new"), set("b@x.com", "b")])
        .await
        .unwrap();
    assert_eq!(store.users().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_database_not_there_is_an_error_naming_the_store_and_the_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url =
        crate::config::StoreUrl::parse(&format!("postgres://warden@127.0.0.1:{port}/w")).unwrap();
    let text = PgStore::open(&url)
        .await
        .err()
        .expect("nothing listens")
        .to_string();
    assert!(
        text.starts_with(&format!("the store {url}: cannot connect: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "the cause: {text}");
}
