//! What `warden serve` replicas lean on besides the requests' own writes: claims on a
//! request (`claims`) and the notification outbox taken by one replica at a time (`outbox`),
//! on two stores (each with its own pool) over one database.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::PgStore;
use super::tests::{new, step};
use crate::config::NotifyEvent;
use crate::store::backend::{Backend, CLAIM_LEASE_MS, ClaimId, Hold, Step};
use crate::store::outbox::Router;
use crate::store::requests::{NewRequest, State, now_ms};
use crate::store::test_cluster;

async fn replicas() -> Option<(PgStore, PgStore)> {
    let url = test_cluster::database().await?;
    Some((
        PgStore::open(&url).await.unwrap(),
        PgStore::open(&url).await.unwrap(),
    ))
}

/// Request `id` filed and moved to pending, its notification queued for channel `ops`.
async fn filed_and_pending(store: &PgStore, id: &str) {
    store
        .insert_request(new(id, "a@x.com", None))
        .await
        .unwrap()
        .unwrap();
    store
        .commit_step(Step {
            id: id.into(),
            writes: Arc::default(),
            then: Some(step(&[State::Requested], State::Pending, "request")),
            read_back: false,
            hold: Hold::Keep,
            notify: Some(Arc::new(ToOps)),
        })
        .await
        .unwrap()
        .unwrap();
}

/// Every event of every flow goes to channel `ops`.
struct ToOps;

impl Router for ToOps {
    fn route(&self, _flow: &str, _event: NotifyEvent) -> Vec<String> {
        vec!["ops".into()]
    }
}

#[tokio::test]
async fn a_request_is_claimed_by_one_replica_until_released_or_run_out() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let stored = ClaimId::new();
    a.insert_request(NewRequest {
        claim: Some(stored),
        ..new("r1", "a@x.com", None)
    })
    .await
    .unwrap()
    .unwrap();
    // Stored by a: a holds it for its request step.
    let until = now_ms() + CLAIM_LEASE_MS;
    assert!(
        !b.claim_request("r1", ClaimId::new(), until).await.unwrap(),
        "held by a"
    );
    assert!(
        b.unclaimed_in(State::Requested, now_ms())
            .await
            .unwrap()
            .is_empty(),
        "nothing to resume while a holds it"
    );
    // The step's last write lets it go.
    let pending = step(&[State::Requested], State::Pending, "request");
    a.commit_step(Step {
        id: "r1".into(),
        writes: Arc::default(),
        then: Some(pending),
        read_back: true,
        hold: Hold::Release(stored),
        notify: None,
    })
    .await
    .unwrap()
    .unwrap();
    // Two claims at once: one wins, and the loser's letting go leaves the winner's.
    let (on_a, on_b) = (ClaimId::new(), ClaimId::new());
    let (x, y) = tokio::join!(
        a.claim_request("r1", on_a, until),
        b.claim_request("r1", on_b, until)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x != y, "exactly one wins");
    let (winner, loser) = if x { (on_a, on_b) } else { (on_b, on_a) };
    a.release_request("r1", loser).await.unwrap();
    assert!(
        !b.claim_request("r1", ClaimId::new(), until).await.unwrap(),
        "the winner's claim still holds"
    );
    b.release_request("r1", winner).await.unwrap();
    // A claim run out (its replica died) is free to take, and listed for resuming.
    let ran_out = ClaimId::new();
    assert!(a.claim_request("r1", ran_out, now_ms() - 1).await.unwrap());
    let taken_over = ClaimId::new();
    assert!(
        b.claim_request("r1", taken_over, until).await.unwrap(),
        "a's claim ran out"
    );
    assert!(!a.claim_request("r1", ClaimId::new(), until).await.unwrap());
    b.renew_request("r1", taken_over, now_ms() - 1)
        .await
        .unwrap();
    assert_eq!(
        a.unclaimed_in(State::Pending, now_ms()).await.unwrap(),
        ["r1"]
    );
    // A request that does not exist holds nothing to refuse.
    assert!(
        a.claim_request("nope", ClaimId::new(), until)
            .await
            .unwrap()
    );
}

/// A replica paused past its claim's lease comes back to find its request claimed by
/// another: it can neither renew that claim, write under it, nor let it go.
#[tokio::test]
async fn a_claim_that_ran_out_and_was_taken_over_writes_nothing_and_lets_nothing_go() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let first = ClaimId::new();
    a.insert_request(NewRequest {
        claim: Some(first),
        ..new("r1", "a@x.com", None)
    })
    .await
    .unwrap()
    .unwrap();
    // a's claim runs out (its heartbeat stopped while paused); b takes the request over.
    assert!(a.renew_request("r1", first, now_ms() - 1).await.unwrap());
    let second = ClaimId::new();
    let until = now_ms() + CLAIM_LEASE_MS;
    assert!(b.claim_request("r1", second, until).await.unwrap());

    // a wakes up: its heartbeat finds the claim gone and renews nothing.
    assert!(!a.renew_request("r1", first, until).await.unwrap());
    // Its step's writes, renewing or letting go, are refused whole.
    for hold in [Hold::Renew(first, until), Hold::Release(first)] {
        let pending = step(&[State::Requested], State::Pending, "request");
        let refused = a
            .commit_step(Step {
                id: "r1".into(),
                writes: Arc::default(),
                then: Some(pending),
                read_back: false,
                hold,
                notify: Some(Arc::new(ToOps)),
            })
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("another replica took the request over"),
            "{refused}"
        );
        // Told apart from a failing store: the API answers it 409, not 503.
        assert_eq!(refused.claim_lost(), Some("r1"), "{refused}");
    }
    let (record, history) = b.request_with_history("r1").await.unwrap().unwrap();
    assert_eq!(record.state, State::Requested, "a's step did not move it");
    assert_eq!(history.len(), 1, "nor added to its history: {history:?}");
    assert!(b.outbox_depth().await.unwrap().is_empty(), "nor notified");
    // Letting go of the claim it lost leaves b's in place.
    a.release_request("r1", first).await.unwrap();
    assert!(
        !a.claim_request("r1", ClaimId::new(), until).await.unwrap(),
        "b still holds it"
    );
    assert!(
        a.unclaimed_in(State::Requested, now_ms())
            .await
            .unwrap()
            .is_empty()
    );
    // b's own step goes through and lets its claim go.
    let pending = step(&[State::Requested], State::Pending, "request");
    b.commit_step(Step {
        id: "r1".into(),
        writes: Arc::default(),
        then: Some(pending),
        read_back: false,
        hold: Hold::Release(second),
        notify: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(a.claim_request("r1", ClaimId::new(), until).await.unwrap());
}

#[tokio::test]
async fn notifications_commit_with_their_step_and_each_is_taken_by_one_replica() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    let ids: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    for id in &ids {
        filed_and_pending(&a, id).await;
    }
    // A refused step writes no notification either.
    let refused = step(&[State::Escalated], State::Deescalated, "deescalate");
    let nothing = b
        .commit_step(Step {
            id: "n0".into(),
            writes: Arc::default(),
            then: Some(refused),
            read_back: false,
            hold: Hold::Keep,
            notify: Some(Arc::new(ToOps)),
        })
        .await
        .unwrap();
    assert!(nothing.is_none());
    assert_eq!(b.outbox_depth().await.unwrap(), [("ops".to_string(), 20)]);

    // Both replicas take at once, in small batches: every row goes to exactly one.
    let lease = now_ms() + 60_000;
    let take = |store: &'static PgStore| async move {
        let mut taken = Vec::new();
        loop {
            let batch = store.outbox_take("ops", now_ms(), 3, lease).await.unwrap();
            if batch.is_empty() {
                return taken;
            }
            taken.extend(batch);
        }
    };
    let (a, b): (&'static PgStore, &'static PgStore) =
        (Box::leak(Box::new(a)), Box::leak(Box::new(b)));
    let (x, y) = tokio::join!(take(a), take(b));
    let requests: BTreeSet<String> = x.iter().chain(&y).map(|n| n.request_id.clone()).collect();
    assert_eq!(x.len() + y.len(), 20, "taken twice or lost");
    assert_eq!(requests, ids.iter().cloned().collect());
    assert!(x.iter().chain(&y).all(|n| n.event == NotifyEvent::Waiting));
    // Taken rows are not due again before the lease runs out, unless given back.
    assert!(
        a.outbox_take("ops", now_ms(), 50, lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.outbox_next_due("ops").await.unwrap(), Some(lease));
    let (first, second) = (
        &x.first().or(y.first()).unwrap(),
        &y.last().or(x.last()).unwrap(),
    );
    a.outbox_retry_at(first, now_ms() - 1, "receiver down")
        .await
        .unwrap();
    let again = b.outbox_take("ops", now_ms(), 50, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].seq, again[0].attempts), (first.seq, 1));
    // Handed back unattempted (a stop in the middle of a batch): due again now, no attempt
    // counted.
    let unattempted: Vec<i64> = x.iter().chain(&y).skip(2).take(3).map(|n| n.seq).collect();
    b.outbox_hand_back(&unattempted, lease, now_ms() - 1)
        .await
        .unwrap();
    let back = a.outbox_take("ops", now_ms(), 50, lease).await.unwrap();
    let mut seqs: Vec<i64> = back.iter().map(|n| n.seq).collect();
    seqs.sort();
    let mut expected = unattempted.clone();
    expected.sort();
    assert_eq!(seqs, expected);
    assert!(back.iter().all(|n| n.attempts == 0), "{back:?}");
    // Delivered, a row is gone; given up, it is recorded on its request's history.
    b.outbox_delivered(&again[0]).await.unwrap();
    b.outbox_give_up(second, 3, "receiver down").await.unwrap();
    a.outbox_give_up(second, 3, "receiver down").await.unwrap();
    assert_eq!(a.outbox_depth().await.unwrap(), [("ops".to_string(), 18)]);
    let history = a.history(&second.request_id).await.unwrap();
    let given_up = history.iter().filter(|e| e.step == "notify").count();
    assert_eq!(given_up, 1, "given up once, recorded once: {history:?}");
}

#[tokio::test]
async fn a_replica_past_its_hold_moves_no_notification_another_has_taken_since() {
    let Some((a, b)) = replicas().await else {
        return;
    };
    filed_and_pending(&a, "r1").await;
    // `a` takes the row under a hold that has run out (as if it froze past it); `b` takes it
    // after, under its own.
    let stale = a
        .outbox_take("ops", now_ms(), 10, now_ms() - 1)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    let held_until = now_ms() + 60_000;
    let taken = b
        .outbox_take("ops", now_ms(), 10, held_until)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].held_until, held_until);
    let n = &stale[0];
    // Whatever `a` now writes of it changes nothing of `b`'s.
    a.outbox_retry_at(n, now_ms() - 1, "receiver down")
        .await
        .unwrap();
    a.outbox_hand_back(&[n.seq], n.held_until, now_ms() - 1)
        .await
        .unwrap();
    assert!(
        a.outbox_take("ops", now_ms(), 10, now_ms() + 60_000)
            .await
            .unwrap()
            .is_empty(),
        "a row b holds was made due again"
    );
    assert_eq!(a.outbox_next_due("ops").await.unwrap(), Some(held_until));
    a.outbox_delivered(n).await.unwrap();
    a.outbox_give_up(n, 3, "receiver down").await.unwrap();
    assert_eq!(a.outbox_depth().await.unwrap(), [("ops".to_string(), 1)]);
    let history = a.history("r1").await.unwrap();
    assert!(
        history.iter().all(|e| e.step != "notify"),
        "given up by a replica that no longer held it: {history:?}"
    );
    // `b`'s own writes go through: a failed attempt counted, then delivered.
    b.outbox_retry_at(&taken[0], now_ms() - 1, "receiver down")
        .await
        .unwrap();
    let again = b
        .outbox_take("ops", now_ms(), 10, held_until + 1)
        .await
        .unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    b.outbox_delivered(&again[0]).await.unwrap();
    assert!(b.outbox_depth().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_claim_waits_for_no_transaction_left_open_on_the_request() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let b = PgStore::open(&url).await.unwrap();
    b.insert_request(new("r1", "a@x.com", None))
        .await
        .unwrap()
        .unwrap();
    // A replica paused in the middle of a write: its transaction holds the row's lock.
    let (paused, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    paused
        .batch_execute("BEGIN; UPDATE requests SET updated_at = updated_at WHERE id = 'r1'")
        .await
        .unwrap();
    assert_eq!(
        b.unclaimed_in(State::Requested, now_ms()).await.unwrap(),
        ["r1"],
        "its claim ran out (it never had one here)"
    );
    let until = now_ms() + CLAIM_LEASE_MS;
    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        b.claim_request("r1", ClaimId::new(), until),
    )
    .await
    .expect("the claim waited for the open transaction");
    assert!(
        !claimed.unwrap(),
        "taken while another transaction holds it"
    );
    // A foreign key's share lock (a history row being written for it) holds no claim.
    paused
        .batch_execute("ROLLBACK; BEGIN; SELECT 1 FROM requests WHERE id = 'r1' FOR KEY SHARE")
        .await
        .unwrap();
    assert!(b.claim_request("r1", ClaimId::new(), until).await.unwrap());
    paused.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_notification_given_up_while_a_step_writes_its_request_is_recorded_after_it() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let a = PgStore::open(&url).await.unwrap();
    filed_and_pending(&a, "r1").await;
    let taken = a
        .outbox_take("ops", now_ms(), 10, now_ms() + 60_000)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    // Another replica's step on the request, in the middle of its transaction: the row
    // updated, one history entry appended past the last, not yet committed.
    let (step_tx, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    step_tx
        .batch_execute(
            "BEGIN;
             UPDATE requests SET updated_at = updated_at WHERE id = 'r1';
             INSERT INTO request_history (request_id, seq, entry)
                 SELECT 'r1', MAX(seq) + 1, '{}' FROM request_history WHERE request_id = 'r1';",
        )
        .await
        .unwrap();
    let before = a.history("r1").await.unwrap().len();
    let giving_up = tokio::spawn(async move {
        a.outbox_give_up(&taken[0], 3, "receiver down")
            .await
            .map(|()| a)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !giving_up.is_finished(),
        "the give-up did not wait for the step"
    );
    step_tx.batch_execute("COMMIT").await.unwrap();
    let a = giving_up
        .await
        .unwrap()
        .expect("given up after the step, not refused");
    // The step's entry (`{}`) is no entry warden reads back: rows are counted.
    let rows: i64 = step_tx
        .query_one(
            "SELECT COUNT(*) FROM request_history WHERE request_id = 'r1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows as usize,
        before + 2,
        "the step's entry and the give-up's"
    );
    assert!(a.outbox_depth().await.unwrap().is_empty());
}
