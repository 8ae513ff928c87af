//! Console sessions held to one meaning on both backends, and shared by replicas.

use std::sync::Arc;

use super::PgStore;
use super::tests::backends;
use crate::store::backend::Backend;
use crate::store::sessions::{SessionRules, StoredSession};
use crate::store::test_cluster;

/// Small numbers, so each rule is reached in a few steps.
const RULES: SessionRules = SessionRules {
    lifetime_ms: 1000,
    idle_ms: 500,
    touch_every_ms: 100,
    per_token: 2,
    total: 3,
};

fn session(token: &str, at: i64) -> StoredSession {
    StoredSession {
        token_digest: token.into(),
        csrf: format!("csrf-{token}-{at}"),
        created_at: at,
        last_used: at,
    }
}

async fn stored(store: &dyn Backend, id: &str) -> Option<StoredSession> {
    store.session_read(id).await.unwrap()
}

#[tokio::test]
async fn console_sessions_mean_the_same_on_both_backends() {
    for (name, store, _dir) in backends().await {
        let store = &*store;
        let open = |id: &'static str, token: &'static str, at: i64| async move {
            store
                .session_open(id, &session(token, at), &RULES)
                .await
                .unwrap()
        };
        assert!(open("s1", "A", 0).await, "{name}");
        assert!(open("s2", "A", 1).await, "{name}");
        assert!(open("s3", "A", 2).await, "{name}");
        assert_eq!(stored(store, "s1").await, None, "{name}: A's oldest ended");
        assert_eq!(stored(store, "s3").await, Some(session("A", 2)), "{name}");
        assert!(open("s4", "B", 3).await, "{name}");
        assert!(!open("s5", "C", 4).await, "{name}: every place held");
        assert_eq!(stored(store, "s5").await, None, "{name}");

        // A use is recorded once it is touch_every_ms after the last one recorded.
        let used = store.session("s2", 50, &RULES).await.unwrap().unwrap();
        assert_eq!(used.last_used, 1, "{name}: not written yet");
        let used = store.session("s2", 450, &RULES).await.unwrap().unwrap();
        assert_eq!(used.last_used, 450, "{name}");
        assert_eq!(stored(store, "s2").await.unwrap().last_used, 450, "{name}");
        // Idle for idle_ms: ended, and gone from the store.
        assert_eq!(store.session("s3", 502, &RULES).await.unwrap(), None);
        assert_eq!(stored(store, "s3").await, None, "{name}");
        // Expired sessions make room: s4 (idle since 3) goes, s2 (used at 450) stays.
        assert!(open("s5", "C", 600).await, "{name}");
        assert_eq!(stored(store, "s4").await, None, "{name}");
        assert!(stored(store, "s2").await.is_some(), "{name}");
        // However recently used, a session ends lifetime_ms after it was opened.
        assert!(store.session("s2", 900, &RULES).await.unwrap().is_some());
        assert_eq!(store.session("s2", 1001, &RULES).await.unwrap(), None);
        store.session_close("s5").await.unwrap();
        assert_eq!(stored(store, "s5").await, None, "{name}");
    }
}

#[tokio::test]
async fn a_session_opened_on_one_replica_is_known_closed_and_capped_on_every_replica() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).await.unwrap());
    let b = Arc::new(PgStore::open(&url).await.unwrap());
    assert!(
        a.session_open("s1", &session("A", 0), &RULES)
            .await
            .unwrap()
    );
    assert_eq!(stored(&*b, "s1").await, Some(session("A", 0)));
    b.session_close("s1").await.unwrap();
    assert_eq!(stored(&*a, "s1").await, None);

    // Sign-ins of one token racing on both replicas still leave it per_token sessions.
    let rules = SessionRules {
        total: 100,
        ..RULES
    };
    let ids: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
    let opens = ids.iter().enumerate().map(|(i, id)| {
        let (store, id) = (if i % 2 == 0 { a.clone() } else { b.clone() }, id.clone());
        tokio::spawn(async move {
            store
                .session_open(&id, &session("T", 10 + i as i64), &rules)
                .await
                .unwrap()
        })
    });
    for opened in futures_util::future::join_all(opens).await {
        assert!(opened.unwrap());
    }
    let mut held = 0;
    for id in &ids {
        held += usize::from(stored(&*a, id).await.is_some());
    }
    assert_eq!(held, RULES.per_token);
}
