use std::time::Duration;

use super::*;
use crate::store::Store;
use crate::store::requests::{HistoryEvent, NewRequest, RequestWrite, Transition, insert};

async fn store_with_request() -> Store {
    let store = Store::open_in_memory().unwrap();
    store
        .write("insert", |c| {
            insert(
                c,
                NewRequest {
                    id: "req-1".into(),
                    flow: "f".into(),
                    requester: "a@x.com".into(),
                    fields: serde_json::Map::new(),
                    created_by: "a@x.com".into(),
                    idempotency_key: None,
                    duration: Some(Duration::from_secs(60)),
                    requester_profile: None,
                    claim: None,
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
    store
}

fn to(from: &'static [State], to: State, decision: &str, actor: &str) -> Transition {
    Transition {
        from,
        to,
        decision: decision.into(),
        reason: Some(format!("why {to}")),
        actor: actor.into(),
        step: "s",
        expires_at: None,
    }
}

fn failed_hook() -> RequestWrite {
    RequestWrite::Entry(HistoryEntry {
        at: now_ms(),
        step: "request".into(),
        event: HistoryEvent::Hook {
            hook: "on_request".into(),
            ran: true,
            outcome: "failed".into(),
            reason: None,
            error: Some("trap: unreachable".into()),
            blame: Some("plugin".into()),
            elapsed_ms: 1.0,
            refusals: Vec::new(),
        },
    })
}

/// Every flow sends waiting and decided to `ops`, failures to `ops` and `oncall`; removed
/// goes nowhere.
fn route(_flow: &str, event: NotifyEvent) -> Vec<String> {
    match event {
        NotifyEvent::Waiting | NotifyEvent::Decided => vec!["ops".into()],
        NotifyEvent::HookFailed => vec!["ops".into(), "oncall".into()],
        NotifyEvent::Removed => vec![],
    }
}

async fn write(
    store: &Store,
    writes: Vec<RequestWrite>,
    then: Option<Transition>,
    fail_after: bool,
) -> rusqlite::Result<usize> {
    let result = store
        .write("write", move |c| {
            requests::write(c, "req-1", &writes, then.as_ref())?;
            let n = enqueue(c, "req-1", &writes, then.as_ref(), &route)?;
            if fail_after {
                // A later statement of the same commit fails: everything goes back.
                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            }
            Ok(n)
        })
        .await;
    result.map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))
}

fn all(store: &Store) -> Vec<Notification> {
    let mut rows = Vec::new();
    for channel in ["ops", "oncall"] {
        rows.extend(
            store
                .read("read", |c| due(c, channel, i64::MAX, 100))
                .unwrap()
                .0,
        );
    }
    rows.sort_by_key(|n| n.seq);
    rows
}

#[tokio::test]
async fn each_event_of_a_commit_is_queued_per_channel_with_its_own_state() {
    let store = store_with_request().await;
    let n = write(
        &store,
        vec![
            failed_hook(),
            RequestWrite::Transition(to(
                &[State::Requested],
                State::Pending,
                "continue",
                "warden",
            )),
        ],
        Some(to(&[State::Pending], State::Denied, "deny", "bob@x.com")),
        false,
    )
    .await
    .unwrap();
    assert_eq!(n, 4);
    let rows = all(&store);
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.channel.as_str(),
                r.event.as_str(),
                r.body["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ops", "hook_failed", "denied"),
            ("oncall", "hook_failed", "denied"),
            ("ops", "waiting", "pending"),
            ("ops", "decided", "denied"),
        ]
    );
    assert_eq!(rows[0].body["error"], "trap: unreachable");
    assert_eq!(rows[0].body["hook"], "on_request");
    assert_eq!(rows[3].body["actor"], "bob@x.com");
    assert_eq!(rows[3].body["reason"], "why denied");
    assert_eq!(rows[3].body["requester"], "a@x.com");
    assert_eq!(rows[3].body["flow"], "f");
    let ids: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.delivery_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "delivery ids are unique");
    assert_eq!(
        store.read("depth", depth).unwrap(),
        [("oncall".to_string(), 1), ("ops".to_string(), 3)]
    );
}

#[tokio::test]
async fn a_commit_that_fails_leaves_no_notification() {
    let store = store_with_request().await;
    let written = write(
        &store,
        vec![RequestWrite::Transition(to(
            &[State::Requested],
            State::Pending,
            "continue",
            "warden",
        ))],
        None,
        true,
    )
    .await;
    assert!(written.is_err());
    assert!(all(&store).is_empty());
    // Nothing notable, nothing queued: the request's insert and escalation are not events.
    assert!(!notable(
        &[RequestWrite::Transition(to(
            &[State::Approved],
            State::Escalated,
            "approve",
            "warden"
        ))],
        None
    ));
}

#[tokio::test]
async fn retries_move_a_row_later_and_giving_up_records_it_on_the_request() {
    let store = store_with_request().await;
    write(
        &store,
        vec![RequestWrite::Transition(to(
            &[State::Requested],
            State::Pending,
            "continue",
            "warden",
        ))],
        None,
        false,
    )
    .await
    .unwrap();
    let row = all(&store).remove(0);
    let seq = row.seq;
    let later = now_ms() + 60_000;
    store
        .write("retry", move |c| {
            retry_at(c, seq, later, "the receiver answered 500")
        })
        .await
        .unwrap();
    assert!(
        store
            .read("due", |c| due(c, "ops", now_ms(), 10))
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        store.read("next", |c| next_due(c, "ops")).unwrap(),
        Some(later)
    );
    let row = all(&store).remove(0);
    assert_eq!(row.attempts, 1);
    let kept = row.clone();
    store
        .write("give up", move |c| give_up(c, &kept, 2, "not delivered"))
        .await
        .unwrap();
    assert!(all(&store).is_empty());
    let history = store
        .read("history", |c| requests::history(c, "req-1"))
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.step, "notify");
    assert_eq!(
        last.event,
        HistoryEvent::Notification {
            channel: "ops".into(),
            event: "waiting".into(),
            delivery: row.delivery_id.clone(),
            attempts: 2,
            error: "not delivered".into(),
        }
    );
    let audit = store.read("audit", |c| requests::audit_log(c, 10)).unwrap();
    let line = audit.last().unwrap();
    assert_eq!(
        (line.action.as_str(), line.request_id.as_deref()),
        ("notify-failed", Some("req-1"))
    );
    assert_eq!(line.detail["channel"], "ops");
}

/// The request, gone to a human: its `waiting` notification queued for `ops`.
async fn store_with_a_waiting_notification() -> Store {
    let store = store_with_request().await;
    let pending = to(&[State::Requested], State::Pending, "continue", "plugin");
    write(&store, vec![], Some(pending), false).await.unwrap();
    store
}

#[tokio::test]
async fn a_row_that_does_not_read_is_given_up_alone_and_the_rest_are_taken() {
    use crate::store::backend::Backend;
    let store = store_with_a_waiting_notification().await;
    // Written by another version, or by hand: an event this warden does not know, first.
    store
        .write("bad row", |c| {
            c.execute(
                "INSERT INTO outbox (delivery_id, request_id, channel, event, body, next_at, created_at)
                 VALUES ('dlv-bad', 'req-1', 'ops', 'bogus', '{}', 0, 0)",
                [],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
    let taken = store.outbox_take("ops", now_ms(), 32, 0).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].event, NotifyEvent::Waiting);
    let audit = store.read("audit", |c| requests::audit_log(c, 10)).unwrap();
    let given_up = audit
        .iter()
        .find(|e| e.action == "notify-failed")
        .expect("audited");
    assert_eq!(given_up.detail["delivery"], "dlv-bad");
    let error = given_up.detail["error"].as_str().unwrap();
    assert!(error.contains("unknown event `bogus`"), "{error}");
    // Gone: the next take finds only the good row.
    let again = store.outbox_take("ops", now_ms(), 32, 0).await.unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn a_notification_whose_request_is_gone_is_given_up_all_the_same() {
    let store = store_with_a_waiting_notification().await;
    let mut row = all(&store).remove(0);
    row.request_id = "req-gone".into();
    store
        .write("give up", move |c| give_up(c, &row, 3, "not delivered"))
        .await
        .unwrap();
    assert!(all(&store).is_empty());
}

#[tokio::test]
async fn an_empty_reason_a_human_left_is_sent_as_none() {
    let store = store_with_request().await;
    let mut t = to(&[State::Requested], State::Pending, "continue", "bob@x.com");
    t.reason = Some(String::new());
    write(&store, vec![failed_hook()], Some(t), false)
        .await
        .unwrap();
    let rows = all(&store);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for n in rows {
        assert!(n.body["reason"].is_null(), "{}", n.body);
    }
}
