//! One store query at a time for what anyone may ask without a token (`/metrics`' counts from
//! the store, `/readyz`'s ping), shared by everyone who asked before it began. A client asking
//! a thousand times at once then costs the store a query or two, not a thousand, while every
//! answer still comes from a query that began after its request arrived: a scraper or a load
//! balancer sees nothing older than it would have. Work may also be spaced: begun at most once
//! per [`Coalesced::spaced`] interval, callers in between waiting for the next (and sharing
//! it), so a query that is costly on a large store (`/metrics` counts every request) takes
//! at most its share of a CPU however often it is asked for.

use std::future::Future;
use std::time::Instant;

pub struct Coalesced<T> {
    last: tokio::sync::Mutex<Last<T>>,
    /// The least time between the starts of two works.
    spacing: std::time::Duration,
}

struct Last<T> {
    /// The last answer, and when the work that gave it began.
    answer: Option<(Instant, T)>,
    /// When the last work began, whether or not it gave an answer: work whose asker went
    /// away (a client that closed its connection) is dropped unfinished, and the query it
    /// began may still run in the store; the next waits its spacing all the same.
    began: Option<Instant>,
}

impl<T: Clone> Default for Coalesced<T> {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::new(Last {
                answer: None,
                began: None,
            }),
            spacing: std::time::Duration::ZERO,
        }
    }
}

impl<T: Clone> Coalesced<T> {
    /// Work begun at most once per `spacing`.
    pub fn spaced(spacing: std::time::Duration) -> Self {
        Self {
            spacing,
            ..Self::default()
        }
    }

    /// `work`'s answer, or the answer of work that began after this call did: callers that
    /// arrive while work runs wait for the next, which the first of them does for all.
    pub async fn get<F, Fut>(&self, work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((began, answer)) = &last.answer
            && *began >= asked
        {
            return answer.clone();
        }
        if let Some(began) = last.began {
            // Held meanwhile: whoever asks now waits, and shares what comes next.
            tokio::time::sleep_until((began + self.spacing).into()).await;
        }
        let began = Instant::now();
        last.began = Some(began);
        let answer = work().await;
        last.answer = Some((began, answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn many_asking_at_once_share_at_most_two_answers_and_a_later_ask_gets_its_own() {
        let shared = Arc::new(Coalesced::default());
        let worked = Arc::new(AtomicUsize::new(0));
        let ask = || {
            let (shared, worked) = (shared.clone(), worked.clone());
            tokio::spawn(async move {
                shared
                    .get(|| async {
                        let n = worked.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        n
                    })
                    .await
            })
        };
        let burst: Vec<_> = (0..50).map(|_| ask()).collect();
        for asked in burst {
            assert!((1..=2).contains(&asked.await.unwrap()));
        }
        let during_burst = worked.load(Ordering::SeqCst);
        assert!((1..=2).contains(&during_burst), "{during_burst}");
        // Asked after the last work began: never given its answer.
        assert_eq!(ask().await.unwrap(), during_burst + 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spaced_work_begins_at_most_once_per_interval_and_no_answer_predates_its_ask() {
        let shared = Arc::new(Coalesced::spaced(Duration::from_millis(200)));
        let started = Instant::now();
        let mut begins = Vec::new();
        for _ in 0..4 {
            let asked = started.elapsed();
            let began = shared.get(|| async { started.elapsed() }).await;
            assert!(
                began >= asked,
                "an answer from work begun before it was asked"
            );
            begins.push(began);
        }
        for pair in begins.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(200),
                "{begins:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn work_whose_asker_went_away_still_counts_against_the_spacing() {
        let shared = Arc::new(Coalesced::spaced(Duration::from_millis(200)));
        let started = Instant::now();
        let first = shared.get(|| async { started.elapsed() }).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Begun, then dropped unfinished (its client closed the connection).
        let abandoned = tokio::spawn({
            let shared = shared.clone();
            async move {
                shared
                    .get(|| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        started.elapsed()
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort();
        let _ = abandoned.await;
        let abandoned_began = first + Duration::from_millis(250);
        let next = shared.get(|| async { started.elapsed() }).await;
        assert!(
            next >= abandoned_began + Duration::from_millis(200),
            "began at {next:?}, the abandoned work at about {abandoned_began:?}"
        );
    }
}
