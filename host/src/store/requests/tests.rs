use super::*;
use crate::store::Store;

fn store() -> Store {
    Store::open_in_memory().unwrap()
}

fn new(id: &str, key: Option<&str>) -> NewRequest {
    NewRequest {
        id: id.into(),
        flow: "f".into(),
        requester: "a@x.com".into(),
        fields: serde_json::Map::new(),
        created_by: "a@x.com".into(),
        idempotency_key: key.map(str::to_string),
        duration: Some(Duration::from_secs(60)),
        requester_profile: None,
        claim: None,
    }
}

async fn insert(store: &Store, new: NewRequest) -> Result<RequestRecord, String> {
    store
        .write("insert", move |c| super::insert(c, new))
        .await
        .unwrap()
}

fn step(from: &'static [State], to: State, step: &'static str) -> Transition {
    Transition {
        from,
        to,
        decision: "approve".into(),
        reason: None,
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
            ran: false,
            outcome: "skipped".into(),
            reason: None,
            error: None,
            blame: None,
            elapsed_ms: 0.0,
            refusals: Vec::new(),
        },
    })
}

/// `id`'s history, each entry as its hook's name or `from -> to`.
fn steps(store: &Store, id: &str) -> Vec<String> {
    store
        .read("read", |c| history(c, id))
        .unwrap()
        .into_iter()
        .map(|e| match e.event {
            HistoryEvent::Hook { hook, .. } => hook,
            HistoryEvent::Transition { from, to, .. } => format!("{from:?} -> {to}"),
            HistoryEvent::Approval { approver, .. } => format!("approval by {approver}"),
            HistoryEvent::Notification { channel, .. } => format!("notify {channel}"),
        })
        .collect()
}

fn state(store: &Store, id: &str) -> State {
    store.read("read", |c| get(c, id)).unwrap().unwrap().state
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_request() {
    let s = store();
    assert_eq!(insert(&s, new("r1", Some("k"))).await.unwrap().id, "r1");
    assert_eq!(
        insert(&s, new("r2", Some("k"))).await.map(|rec| rec.id),
        Err("r1".to_string())
    );
    assert!(insert(&s, new("r3", None)).await.is_ok());
    assert!(s.read("read", |c| get(c, "r2")).unwrap().is_none());
    assert_eq!(state(&s, "r1"), State::Requested);
}

#[tokio::test]
async fn transitions_apply_only_from_the_named_states_and_are_recorded() {
    let s = store();
    insert(&s, new("r1", None)).await.unwrap();
    let to_pending = step(&[State::Requested], State::Pending, "request");
    let apply = |id: &'static str, t: &Transition| {
        let t = t.clone();
        s.write("write", move |c| write(c, id, &[], Some(&t)))
    };
    assert!(apply("r1", &to_pending).await.unwrap());
    assert!(!apply("r1", &to_pending).await.unwrap(), "already pending");
    assert!(!apply("nope", &to_pending).await.unwrap());
    assert_eq!(
        steps(&s, "r1"),
        ["None -> requested", "Some(Requested) -> pending"]
    );
    let audit = s.read("read", |c| audit_log(c, 10)).unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["request", "request"]
    );
    assert_eq!(audit[1].detail["to"], "pending");
}

#[tokio::test]
async fn a_batch_is_written_in_order_or_not_at_all() {
    let s = store();
    insert(&s, new("r1", None)).await.unwrap();
    let batch = vec![
        RequestWrite::Transition(step(&[State::Requested], State::Approved, "approve")),
        hook("after_approve"),
        RequestWrite::Transition(step(&[State::Approved], State::Escalated, "escalate")),
    ];
    // A closing transition that does not apply writes nothing of the batch.
    let (writes, then) = (
        batch.clone(),
        step(&[State::Pending], State::Denied, "deny"),
    );
    let written = s
        .write("write", move |c| write(c, "r1", &writes, Some(&then)))
        .await
        .unwrap();
    assert!(!written);
    assert_eq!(steps(&s, "r1"), ["None -> requested"]);

    let writes = batch.clone();
    let written = s
        .write("write", move |c| write(c, "r1", &writes, None))
        .await
        .unwrap();
    assert!(written);
    assert_eq!(state(&s, "r1"), State::Escalated);
    assert_eq!(
        steps(&s, "r1"),
        [
            "None -> requested",
            "Some(Requested) -> approved",
            "after_approve",
            "Some(Approved) -> escalated"
        ]
    );
    let audit = s.read("read", |c| audit_log(c, 10)).unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["request", "approve", "escalate"]
    );

    // A transition in the batch that no longer applies fails it, and nothing is written.
    let writes = vec![
        RequestWrite::Transition(step(&[State::Pending], State::Denied, "deny")),
        hook("after_deny"),
    ];
    let error = s
        .write("write", move |c| write(c, "r1", &writes, None))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("found it escalated"), "{error}");
    assert_eq!(steps(&s, "r1").len(), 4);
    assert_eq!(state(&s, "r1"), State::Escalated);
}

#[tokio::test]
async fn an_approval_is_recorded_and_audited_in_its_batch_and_the_requester_kept() {
    let s = store();
    let mut first = new("r1", None);
    first.requester_profile = Some(r#"{"email":"a@x.com","username":"al"}"#.into());
    insert(&s, first).await.unwrap();
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
    // A batch that does not apply leaves no audit line behind either.
    let (writes, then) = (
        vec![approval.clone()],
        step(&[State::Denied], State::Escalated, "x"),
    );
    assert!(
        !s.write("write", move |c| write(c, "r1", &writes, Some(&then)))
            .await
            .unwrap()
    );
    assert!(
        s.write("write", move |c| write(c, "r1", &[approval], None))
            .await
            .unwrap()
    );
    assert_eq!(
        steps(&s, "r1"),
        ["None -> requested", "approval by b@x.com"]
    );
    let audit = s.read("read", |c| audit_log(c, 10)).unwrap();
    let line = audit.last().unwrap();
    assert_eq!(
        (line.actor.as_str(), line.action.as_str(), &line.detail),
        (
            "b@x.com",
            "approval",
            &serde_json::json!({ "count": 1, "required": 2, "reason": "fine" })
        )
    );
    assert_eq!(audit.len(), 2);
    let stored = s.read("read", |c| get(c, "r1")).unwrap().unwrap();
    assert_eq!(
        stored.requester_profile.as_deref(),
        Some(r#"{"email":"a@x.com","username":"al"}"#)
    );
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    let s = store();
    s.with("audit", |c| {
        audit(c, "admin@x.com", "reload", None, &serde_json::json!({}))
    })
    .unwrap();
    for sql in ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"] {
        let err = s.with("tamper", |c| c.execute(sql, [])).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert_eq!(s.read("read", |c| audit_log(c, 10)).unwrap().len(), 1);
}

#[tokio::test]
async fn expiries_are_found_by_time() {
    let s = store();
    for (id, expires) in [("a", 1_000), ("b", 5_000)] {
        insert(&s, new(id, None)).await.unwrap();
        let t = Transition {
            expires_at: Some(expires),
            ..step(&[State::Requested], State::Escalated, "escalate")
        };
        s.write("write", move |c| write(c, id, &[], Some(&t)))
            .await
            .unwrap();
    }
    assert_eq!(s.read("read", |c| expired(c, 2_000)).unwrap(), ["a"]);
    assert_eq!(
        s.read("read", |c| next_expiry(c, 2_000)).unwrap(),
        Some(5_000)
    );
    assert_eq!(s.read("read", |c| next_expiry(c, 5_000)).unwrap(), None);
    // A sweep's worth at most, earliest first, whatever the backlog.
    let limit = crate::store::backend::EXPIRY_SWEEP_LIMIT;
    for i in 0..limit + 10 {
        let id = format!("late-{i:04}");
        insert(&s, new(&id, None)).await.unwrap();
        let t = Transition {
            expires_at: Some(3_000 + i as i64),
            ..step(&[State::Requested], State::Escalated, "escalate")
        };
        s.write("write", move |c| write(c, &id, &[], Some(&t)))
            .await
            .unwrap();
    }
    let swept = s.read("read", |c| expired(c, 10_000)).unwrap();
    assert_eq!(swept.len(), limit);
    assert_eq!(swept[..2], ["a", "late-0000"]);
    let counts = s.read("read", count_by_state).unwrap();
    assert!(counts.contains(&(State::Escalated, 2 + limit as u64 + 10)));
    assert!(counts.contains(&(State::Pending, 0)));
}

/// Reads a file store's listing page by page, as `serve::lifecycle::list` goes on (after a
/// window's end), with a request filed from another connection during the `step`-th step
/// of the first page's reading; the ids given, in order, and whether the filing happened.
fn pages_with_a_filing_during_step(step: usize) -> (Vec<String>, bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.db");
    drop(Store::open(&path).unwrap());
    let writer = Connection::open(&path).unwrap();
    for i in 0..6 {
        super::insert(&writer, new(&format!("r{i}"), None))
            .unwrap()
            .unwrap();
    }
    let reader = Connection::open(&path).unwrap();
    let (steps, filed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (count, mark) = (steps.clone(), filed.clone());
    reader.progress_handler(
        1,
        Some(move || {
            if count.fetch_add(1, Ordering::SeqCst) + 1 == step {
                // Newer than every row: created now, and `s` sorts after `r` on a tie.
                super::insert(&writer, new("s-filed", None))
                    .unwrap()
                    .unwrap();
                mark.store(true, Ordering::SeqCst);
            }
            false
        }),
    );
    let mut query = ListQuery {
        limit: 100,
        window: 3,
        ..ListQuery::default()
    };
    let mut given = Vec::new();
    loop {
        let chunk = list(&reader, &query).unwrap();
        reader.progress_handler(0, None::<fn() -> bool>);
        given.extend(chunk.rows.into_iter().map(|r| r.id));
        match chunk.window_end {
            Some(end) => query.before = Some(end),
            None => break,
        }
    }
    (given, filed.load(Ordering::SeqCst))
}

#[test]
fn a_request_filed_while_a_page_is_read_is_neither_given_twice_nor_skips_one() {
    // Every step of reading the first window, in turn; a step past the reading's last files
    // nothing, and ends the walk.
    for step in 1.. {
        let (given, filed) = pages_with_a_filing_during_step(step);
        let mut seen = std::collections::BTreeSet::new();
        for id in &given {
            assert!(
                seen.insert(id),
                "step {step}: {id} given twice in {given:?}"
            );
        }
        for i in 0..6 {
            let id = format!("r{i}");
            assert!(seen.contains(&id), "step {step}: {id} skipped in {given:?}");
        }
        if !filed {
            assert!(step > 10, "the first page's reading took {step} steps");
            break;
        }
    }
}
