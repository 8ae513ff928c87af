use std::time::Duration;

use super::*;
use crate::store::Store;
use crate::store::requests::{self, HistoryEvent, State};

fn setup() -> (Arc<Store>, Arc<Claims>) {
    let store = Arc::new(Store::open_in_memory().unwrap());
    (store.clone(), Claims::new(store))
}

async fn claim_new(claims: &Arc<Claims>, id: &str) -> Claim {
    let mut claim = claims.claim(id).unwrap();
    claim
        .insert(NewRequest {
            id: id.into(),
            flow: "f".into(),
            requester: "a@x.com".into(),
            fields: serde_json::Map::new(),
            created_by: "a@x.com".into(),
            idempotency_key: None,
            duration: Some(Duration::from_secs(60)),
            requester_profile: None,
            claim: None,
        })
        .await
        .unwrap()
        .unwrap();
    claim
}

fn note(hook: &str) -> HistoryEntry {
    HistoryEntry {
        at: now_ms(),
        step: "request".into(),
        event: HistoryEvent::Hook {
            hook: hook.into(),
            ran: true,
            outcome: "continue".into(),
            reason: None,
            error: None,
            blame: None,
            elapsed_ms: 0.0,
            refusals: Vec::new(),
        },
    }
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

/// `id`'s stored history, each entry as its hook's name or `-> to`.
fn stored(store: &Store, id: &str) -> Vec<String> {
    store
        .read("read", |c| requests::history(c, id))
        .unwrap()
        .into_iter()
        .map(|e| match e.event {
            HistoryEvent::Hook { hook, .. } => hook,
            HistoryEvent::Transition { to, .. } => format!("-> {to}"),
            HistoryEvent::Approval { approver, .. } => format!("approval by {approver}"),
            HistoryEvent::Notification { channel, .. } => format!("notify {channel}"),
        })
        .collect()
}

#[tokio::test]
async fn a_request_is_claimed_by_one_operation_at_a_time() {
    let (_, claims) = setup();
    let claim = claims.claim("r1").unwrap();
    assert!(claims.claim("r1").is_none(), "claimed twice");
    assert!(claims.claim("r2").is_some(), "another request is free");
    drop(claim);
    assert!(claims.claim("r1").is_some(), "released on drop");
}

#[tokio::test]
async fn notes_wait_for_the_next_write_and_go_in_order() {
    let (store, claims) = setup();
    let mut claim = claim_new(&claims, "r1").await;
    claim.note(note("on_request"));
    assert_eq!(stored(&store, "r1"), ["-> requested"], "a note waits");
    // A refused transition writes nothing, and the note keeps waiting.
    assert!(
        !claim
            .transition(step(&[State::Pending], State::Approved, "approve"))
            .await
            .unwrap()
    );
    assert_eq!(stored(&store, "r1"), ["-> requested"]);
    assert!(
        claim
            .transition(step(&[State::Requested], State::Pending, "request"))
            .await
            .unwrap()
    );
    claim.note(note("after_request"));
    claim.flush().await.unwrap();
    claim.flush().await.unwrap();
    assert_eq!(
        stored(&store, "r1"),
        ["-> requested", "on_request", "-> pending", "after_request"]
    );
    let commits = store.write_counts().1;
    claim.flush().await.unwrap();
    assert_eq!(store.write_counts().1, commits, "nothing waits: no write");
}

#[tokio::test]
async fn finish_commits_deferred_steps_with_the_answer_in_one_write() {
    let (store, claims) = setup();
    let mut claim = claim_new(&claims, "r1").await;
    claim.defer(step(&[State::Requested], State::Approved, "approve"));
    claim.note(note("after_approve"));
    claim.defer(step(&[State::Approved], State::Escalated, "escalate"));
    let state = |store: &Store| {
        store
            .read("read", |c| requests::get(c, "r1"))
            .unwrap()
            .unwrap()
            .state
    };
    assert_eq!(state(&store), State::Requested, "deferred, not written");
    let (writes, _) = store.write_counts();
    let (record, history) = claim.finish().await.unwrap().unwrap();
    assert_eq!(store.write_counts().0, writes + 1, "one write");
    assert_eq!(record.state, State::Escalated);
    assert_eq!(history.len(), 4);
    assert_eq!(
        stored(&store, "r1"),
        [
            "-> requested",
            "-> approved",
            "after_approve",
            "-> escalated"
        ]
    );
    assert!(claims.claim("r1").is_some(), "finish releases it");
}

#[tokio::test]
async fn a_deferred_step_that_no_longer_applies_writes_nothing() {
    let (store, claims) = setup();
    let mut claim = claim_new(&claims, "r1").await;
    claim.defer(step(&[State::Pending], State::Denied, "deny"));
    claim.note(note("after_deny"));
    let error = claim.flush().await.unwrap_err();
    assert!(error.to_string().contains("found it requested"), "{error}");
    assert!(
        error.to_string().contains("cannot record a request's step"),
        "{error}"
    );
    drop(claim);
    assert_eq!(stored(&store, "r1"), ["-> requested"]);
}

#[tokio::test]
async fn a_claim_dropped_early_still_records_what_it_noted() {
    let (store, claims) = setup();
    let mut claim = claim_new(&claims, "r1").await;
    claim.note(note("on_request"));
    claim.defer(step(&[State::Requested], State::Pending, "request"));
    drop(claim);
    assert_eq!(
        stored(&store, "r1"),
        ["-> requested", "on_request", "-> pending"]
    );
    assert!(claims.claim("r1").is_some());
}

/// Two replicas' stores on one new database of the test cluster; `None` (the test should
/// return) when there is no PostgreSQL to run.
async fn two_replicas() -> Option<(
    Arc<crate::store::postgres::PgStore>,
    crate::store::postgres::PgStore,
)> {
    use crate::store::postgres::PgStore;
    let url = crate::store::test_cluster::database().await?;
    Some((
        Arc::new(PgStore::open(&url).await.unwrap()),
        PgStore::open(&url).await.unwrap(),
    ))
}

/// On a shared store, a claim whose lease ran out while its replica was paused, and which
/// another replica then took, runs no more hooks: checked before each one, told as a lost
/// claim (the API's 409), and its letting go leaves the other's claim in place.
#[tokio::test]
async fn a_claim_taken_over_on_a_shared_store_is_found_lost_and_its_lease_ended_before_a_hook_runs()
{
    use crate::store::backend::ClaimId;
    let Some((here, there)) = two_replicas().await else {
        return;
    };
    let claims = Claims::new(here.clone());
    let before = now_ms();
    let mut claim = claim_new(&claims, "r1").await;
    claim.still_held().await.unwrap();
    let after = now_ms();
    // Its hooks may act for two thirds of the lease from its confirmation, by this clock.
    let lease = claim
        .lease
        .clone()
        .expect("a shared store's claim has a lease");
    let end = lease.end_ms().expect("a lease running");
    assert!(
        (before + ACTING_MS..=after + ACTING_MS).contains(&end),
        "confirmed between {before} and {after}, acting until {end}"
    );
    let confirmed = end - ACTING_MS;
    // The lease runs out (nothing renewed it while paused); the other replica resumes it.
    let stored = claim.held.expect("a shared store holds the claim");
    assert!(
        here.renew_request("r1", stored, now_ms() - 1)
            .await
            .unwrap()
    );
    let theirs = ClaimId::new();
    assert!(
        there
            .claim_request("r1", theirs, now_ms() + CLAIM_LEASE_MS)
            .await
            .unwrap()
    );
    // Within a third of the lease of its confirmation it asks no one, so still holds it
    // as far as it knows.
    claim
        .still_held_at(confirmed + CLAIM_LEASE_MS / 3 - 1)
        .await
        .unwrap();
    assert!(!lease.ended_at(confirmed));
    // As the other replica found it: not confirmed for longer than the lease.
    let lost = claim
        .still_held_at(confirmed + CLAIM_LEASE_MS)
        .await
        .unwrap_err();
    assert_eq!(lost.claim_lost(), Some("r1"), "{lost}");
    // A hook still running under it (or about to) sends nothing from now on.
    assert!(lease.ended_at(confirmed));
    drop(claim);
    // Let go in the background; the other replica's claim is untouched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !here
            .claim_request("r1", ClaimId::new(), now_ms() + CLAIM_LEASE_MS)
            .await
            .unwrap(),
        "the other replica still holds it"
    );
}

/// On a shared store, the heartbeat's renewal is a confirmation like any other: a hook within
/// a third of the lease of the last beat asks the store nothing (so a claim taken over since
/// is not noticed until then), and a beat that finds the claim taken over ends the lease.
#[tokio::test]
async fn a_heartbeat_renewal_spares_the_next_hooks_round_trip_and_a_lost_one_ends_the_lease() {
    use crate::store::backend::ClaimId;
    let Some((here, there)) = two_replicas().await else {
        return;
    };
    let claims = Claims::new(here.clone());
    let mut claim = claim_new(&claims, "r2").await;
    let lease = claim
        .lease
        .clone()
        .expect("a shared store's claim has a lease");
    let stored = claim.held.expect("a shared store holds the claim");
    let claimed = claim.confirmed_ms().unwrap();
    // Half a lease later by this replica's reckoning (the heartbeat beats every third, on
    // its own clock; this test's clock is its own), a beat renews it.
    let beaten = claimed + CLAIM_LEASE_MS / 2;
    assert!(beat(&*here, "r2", stored, &lease, beaten).await);
    assert_eq!(claim.confirmed_ms(), Some(beaten));
    assert_eq!(lease.end_ms(), Some(beaten + ACTING_MS));
    // The store's claim runs out and another replica takes the request.
    assert!(
        here.renew_request("r2", stored, now_ms() - 1)
            .await
            .unwrap()
    );
    assert!(
        there
            .claim_request("r2", ClaimId::new(), now_ms() + CLAIM_LEASE_MS)
            .await
            .unwrap()
    );
    // Two thirds of a lease after the claim, a third short of one after the beat: no round
    // trip, so the takeover is not seen. Without the beat's renewal it would have asked.
    let spared = beaten + CLAIM_LEASE_MS / 3 - 1;
    assert!(spared - claimed >= CLAIM_LEASE_MS / 3);
    claim.still_held_at(spared).await.unwrap();
    assert!(!lease.ended_at(spared));
    // The next beat asks, finds the claim lost and ends the lease.
    assert!(!beat(&*here, "r2", stored, &lease, spared + 1).await);
    assert!(lease.ended_at(spared));
    let lost = claim.still_held_at(spared + 1).await.unwrap_err();
    assert_eq!(lost.claim_lost(), Some("r2"), "{lost}");
}
