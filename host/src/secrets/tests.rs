//! The cache's timing, with a fake AWS and a hand-moved clock. The real API (moto) is
//! exercised end to end in `tests/tests/aws_secrets.rs`.

use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::config::Config;

/// Answers with whatever the test last put in it.
struct FakeAws {
    answer: Mutex<Result<String, String>>,
    calls: Mutex<usize>,
}

impl FakeAws {
    fn new(value: &str) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Ok(value.to_string())),
            calls: Mutex::new(0),
        })
    }

    fn set(&self, answer: Result<&str, &str>) {
        *self.answer.lock().unwrap() = answer.map(str::to_string).map_err(str::to_string);
    }

    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl SecretFetcher for FakeAws {
    async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
        *self.calls.lock().unwrap() += 1;
        self.answer.lock().unwrap().clone()
    }
}

struct ManualClock(Mutex<Instant>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

fn config(aws: &FakeAws, extra: &str) -> Config {
    let text = format!(
        r#"
[secrets.rotating]
source = "aws-secrets-manager"
path = "main/rotating"
cache_seconds = 60
{extra}

[secrets.plain]
source = "env"
name = "PLAIN"
"#
    );
    Config::parse_with(
        &text,
        Path::new("warden.toml"),
        &|name| (name == "PLAIN").then(|| "plain-value".to_string()),
        &|secret| futures_util::FutureExt::now_or_never(aws.fetch(secret)).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn store(config: &Config, aws: Arc<FakeAws>) -> (SecretStore, Arc<ManualClock>) {
    let loaded_at = config.secrets["rotating"].loaded_at;
    let clock = Arc::new(ManualClock(Mutex::new(loaded_at)));
    let reader = clock.clone();
    let store = SecretStore::with(
        &config.secrets,
        aws,
        Arc::new(move || *reader.0.lock().unwrap()),
    );
    (store, clock)
}

async fn value(store: &SecretStore, config: &Config, id: &str) -> Result<String, String> {
    store
        .current(&config.secrets[id])
        .await
        .map(|v| v.expose().to_string())
        .map_err(|e| e.0)
}

#[tokio::test]
async fn a_value_is_refreshed_after_half_its_ttl_and_every_one_served_is_redacted() {
    let aws = FakeAws::new("v1");
    let config = config(&aws, "");
    let (store, clock) = store(&config, aws.clone());
    assert_eq!(aws.calls(), 1, "fetched once at load");

    aws.set(Ok("v2"));
    clock.advance(Duration::from_secs(29));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v1");
    assert_eq!(aws.calls(), 1, "still fresh: no fetch");

    clock.advance(Duration::from_secs(2));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v2");
    assert_eq!(aws.calls(), 2);
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v2");
    assert_eq!(aws.calls(), 2, "the new value is fresh again");

    assert_eq!(
        value(&store, &config, "plain").await.unwrap(),
        "plain-value"
    );
    assert_eq!(
        store.redactor().redact("v1 v2 plain-value"),
        "[REDACTED] [REDACTED] [REDACTED]"
    );
}

#[tokio::test]
async fn a_failed_refresh_serves_the_last_good_value_until_it_expires() {
    let aws = FakeAws::new("good");
    let config = config(&aws, "");
    let (store, clock) = store(&config, aws.clone());

    aws.set(Err("AWS is down"));
    clock.advance(Duration::from_secs(45));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "good");
    assert_eq!(aws.calls(), 2, "a refresh was tried");
    clock.advance(Duration::from_secs(14));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "good");

    clock.advance(Duration::from_secs(2));
    let error = value(&store, &config, "rotating").await.unwrap_err();
    assert_eq!(
        error,
        "secret `rotating` (AWS Secrets Manager `main/rotating`): AWS is down; the value fetched 61s ago has expired (cache_seconds = 60)"
    );

    // AWS back: served again, and fresh, once a second has passed since the failure.
    aws.set(Ok("better"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "better");
}

#[tokio::test]
async fn a_failed_read_is_not_asked_again_for_a_second() {
    let aws = FakeAws::new("good");
    let config = config(&aws, "");
    let (store, clock) = store(&config, aws.clone());
    aws.set(Err("AWS is down"));
    // Past half the TTL: each use would ask AWS. The first does; the rest, within a second
    // of its failure, are served as it was (the last good value, still within its TTL).
    clock.advance(Duration::from_secs(31));
    for _ in 0..50 {
        assert_eq!(value(&store, &config, "rotating").await.unwrap(), "good");
    }
    assert_eq!(aws.calls(), 2, "read at load, then once");
    clock.advance(Duration::from_millis(999));
    value(&store, &config, "rotating").await.unwrap();
    assert_eq!(aws.calls(), 2);
    clock.advance(Duration::from_millis(1));
    value(&store, &config, "rotating").await.unwrap();
    assert_eq!(aws.calls(), 3, "asked again a second after the failure");
    // Past the TTL, the quiet failure is the error, naming why.
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        value(&store, &config, "rotating")
            .await
            .unwrap_err()
            .split(';')
            .next(),
        Some("secret `rotating` (AWS Secrets Manager `main/rotating`): AWS is down")
    );
    let calls = aws.calls();
    assert!(value(&store, &config, "rotating").await.is_err());
    assert_eq!(aws.calls(), calls);
}

#[tokio::test]
async fn a_rotated_value_that_breaks_json_key_counts_as_a_failed_refresh() {
    let aws = FakeAws::new(r#"{"api_key":"k1","other":"x"}"#);
    let config = config(&aws, r#"json_key = "api_key""#);
    let (store, clock) = store(&config, aws.clone());
    assert_eq!(config.secrets["rotating"].value.expose(), "k1");

    aws.set(Ok(r#"{"renamed":"k2"}"#));
    clock.advance(Duration::from_secs(31));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "k1");
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        value(&store, &config, "rotating").await.unwrap_err(),
        "secret `rotating` (AWS Secrets Manager `main/rotating`): AWS Secrets Manager secret `main/rotating` has no key `api_key` (its keys: renamed); the value fetched 61s ago has expired (cache_seconds = 60)"
    );
    // The whole JSON document was never served, so only the key's values are redacted.
    assert_eq!(store.redactor().redact("k1 renamed"), "[REDACTED] renamed");
}

#[tokio::test]
async fn cache_seconds_zero_fetches_on_every_use() {
    let aws = FakeAws::new("a");
    let text_config = {
        let text = r#"
[secrets.rotating]
source = "aws-secrets-manager"
path = "p"
cache_seconds = 0
"#;
        let fake = aws.clone();
        Config::parse_with(text, Path::new("w.toml"), &|_| None, &move |s| {
            futures_util::FutureExt::now_or_never(fake.fetch(s)).unwrap()
        })
        .unwrap()
    };
    let (store, _clock) = store(&text_config, aws.clone());
    value(&store, &text_config, "rotating").await.unwrap();
    value(&store, &text_config, "rotating").await.unwrap();
    assert_eq!(aws.calls(), 3);
    aws.set(Err("down"));
    assert!(value(&store, &text_config, "rotating").await.is_err());
    // A failure is not asked again for a second, even with nothing cached to serve.
    assert!(value(&store, &text_config, "rotating").await.is_err());
    assert_eq!(aws.calls(), 4);
}

#[tokio::test]
async fn a_secrets_redactor_covers_every_value_it_served_and_no_other_secrets() {
    let aws = FakeAws::new("first-value");
    let config = config(&aws, "");
    let (store, clock) = store(&config, aws.clone());
    for next in ["second-value", "third-value"] {
        // Asked for before each rotation: the one kept must not outlive it.
        assert_eq!(
            store.redactor_for(["rotating"]).redact(next),
            next,
            "not served yet"
        );
        aws.set(Ok(next));
        clock.advance(Duration::from_secs(31));
        assert_eq!(value(&store, &config, "rotating").await.unwrap(), next);
    }
    let rotating = store.redactor_for(["rotating"]);
    assert_eq!(
        rotating.redact("FIRST-VALUE second-value third-value plain-value"),
        "[REDACTED] [REDACTED] [REDACTED] plain-value"
    );
    assert_eq!(
        store
            .redactor_for(["plain"])
            .redact("first-value plain-value"),
        "first-value [REDACTED]"
    );
    assert_eq!(
        store.redactor_for(["no-such-secret"]).redact("plain-value"),
        "plain-value"
    );
    // The redactor of everything learned the rotated values too.
    assert_eq!(
        store
            .redactor()
            .redact("first-value third-value plain-value"),
        "[REDACTED] [REDACTED] [REDACTED]"
    );
}

#[tokio::test]
async fn what_an_old_store_served_before_and_after_a_reload_is_redacted_by_the_new_one() {
    let aws = FakeAws::new("v1");
    let config_then = config(&aws, "");
    let (old, clock) = store(&config_then, aws.clone());
    aws.set(Ok("v2"));
    clock.advance(Duration::from_secs(31));
    assert_eq!(value(&old, &config_then, "rotating").await.unwrap(), "v2");
    // A reload: the new config read the secret as it is now.
    aws.set(Ok("v9"));
    let config_now = config(&aws, "");
    let next = Arc::new(SecretStore::with(
        &config_now.secrets,
        aws.clone(),
        Arc::new(Instant::now),
    ));
    old.hand_on_to(&next);
    // A hook still running on the old config reads a value rotated since.
    aws.set(Ok("v3"));
    clock.advance(Duration::from_secs(31));
    assert_eq!(value(&old, &config_then, "rotating").await.unwrap(), "v3");
    assert_eq!(
        next.redactor().redact("v1 v2 v3 v9"),
        "[REDACTED] [REDACTED] [REDACTED] [REDACTED]"
    );
    assert_eq!(
        next.redactor_for(["rotating"]).redact("v1 v2 v3 v9"),
        "[REDACTED] [REDACTED] [REDACTED] [REDACTED]"
    );
    // A store no reload replaced any more passes nothing on.
    drop(next);
    aws.set(Ok("v4"));
    clock.advance(Duration::from_secs(31));
    assert_eq!(value(&old, &config_then, "rotating").await.unwrap(), "v4");
}

/// What a [`Scripted`] read does: answers after so many milliseconds of real time, or never.
enum Read {
    After(u64, Result<&'static str, &'static str>),
    Never,
}

/// AWS reading as `script` says for its `n`th read (from 1; the first is the load's).
struct Scripted {
    calls: Mutex<usize>,
    script: fn(usize) -> Read,
}

impl Scripted {
    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl SecretFetcher for Scripted {
    async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        match (self.script)(call) {
            Read::After(ms, answer) => {
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                answer.map(str::to_string).map_err(str::to_string)
            }
            Read::Never => std::future::pending().await,
        }
    }
}

/// Secret `rotating` in AWS, `cache_seconds = 10`, read as `script` says, on a hand-moved
/// clock.
fn on_scripted_aws(
    script: fn(usize) -> Read,
) -> (Arc<Scripted>, Config, SecretStore, Arc<ManualClock>) {
    let aws = Arc::new(Scripted {
        calls: Mutex::new(0),
        script,
    });
    let text = "[secrets.rotating]\nsource = \"aws-secrets-manager\"\npath = \"main/rotating\"\ncache_seconds = 10\n";
    let config = Config::parse_with(text, Path::new("warden.toml"), &|_| None, &|secret| {
        futures_util::FutureExt::now_or_never(aws.fetch(secret)).unwrap()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let loaded_at = config.secrets["rotating"].loaded_at;
    let clock = Arc::new(ManualClock(Mutex::new(loaded_at)));
    let reader = clock.clone();
    let store = SecretStore::with(
        &config.secrets,
        aws.clone(),
        Arc::new(move || *reader.0.lock().unwrap()),
    );
    (aws, config, store, clock)
}

#[tokio::test]
async fn a_refresh_aws_is_slow_to_answer_leaves_the_value_in_hand_served_at_once() {
    // The refresh was awaited in the use: a hook's deadline came first and cancelled it, so
    // every use past half the TTL failed although the value in hand was good.
    let (aws, config, store, clock) = on_scripted_aws(|n| match n {
        1 => Read::After(0, Ok("good")),
        _ => Read::Never,
    });
    clock.advance(Duration::from_secs(6));
    for _ in 0..3 {
        let used = tokio::time::timeout(Duration::from_secs(2), value(&store, &config, "rotating"))
            .await
            .expect("answered from the value in hand");
        assert_eq!(used.unwrap(), "good");
    }
    // One read in progress, whoever waited for it.
    assert_eq!(aws.calls(), 2);
    // Past the TTL nothing good is in hand: the use waits for the read (its own deadline
    // bounds it).
    clock.advance(Duration::from_secs(5));
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        value(&store, &config, "rotating"),
    )
    .await;
    assert!(waited.is_err(), "{waited:?}");
}

#[tokio::test]
async fn a_read_that_finished_long_before_a_use_took_it_is_read_again() {
    // A refresh no use waited out (AWS slow that once) finished; the next use, much later,
    // took its answer as fresh: a rotation since was not seen for another half TTL.
    let (aws, config, store, clock) = on_scripted_aws(|n| match n {
        1 => Read::After(0, Ok("v1")),
        2 => Read::After(300, Ok("v2")),
        _ => Read::After(0, Ok("v3")),
    });
    clock.advance(Duration::from_secs(6));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An hour on: v2 was read an hour ago.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v3");
    assert_eq!(aws.calls(), 3);
}

#[tokio::test]
async fn a_read_that_finished_while_no_use_waited_serves_while_it_is_good() {
    // Past the value in hand's TTL, the refresh that finished meanwhile (within its own) is
    // a good value: thrown away, the use waited for AWS, which failed it.
    let (_aws, config, store, clock) = on_scripted_aws(|n| match n {
        1 => Read::After(0, Ok("v1")),
        2 => Read::After(300, Ok("v2")),
        _ => Read::After(0, Err("AWS is down")),
    });
    clock.advance(Duration::from_secs(6));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    clock.advance(Duration::from_secs(6));
    assert_eq!(value(&store, &config, "rotating").await.unwrap(), "v2");
}

#[tokio::test]
async fn uses_of_one_secret_wait_for_its_read_side_by_side() {
    // The slot was held through each use's wait for the read: uses queued, each waiting its
    // 100 ms in turn, and thirty of them took three seconds with a good value in hand.
    let (aws, config, store, clock) = on_scripted_aws(|n| match n {
        1 => Read::After(0, Ok("good")),
        _ => Read::Never,
    });
    clock.advance(Duration::from_secs(6));
    let started = std::time::Instant::now();
    let uses = (0..30).map(|_| value(&store, &config, "rotating"));
    for used in futures_util::future::join_all(uses).await {
        assert_eq!(used.unwrap(), "good");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(aws.calls(), 2);
}
