//! Secret values while warden runs: env and file secrets as read at load, AWS Secrets Manager
//! secrets re-read as they age, so a rotated secret is picked up without a restart.
//!
//! An AWS value is used for `cache_seconds`. Once it is older than half of that, the next use
//! fetches it again; if that fetch fails the value in hand keeps being served until it is
//! `cache_seconds` old, and after that the hook gets `unavailable` (and so fails closed).
//! Every value ever served is remembered for redaction, by secret, so a flow's responses can
//! be cleaned of every value its own secrets ever had.

pub mod redact;
mod types;

pub use types::{
    AwsFetch, AwsSecret, DEFAULT_SECRET_CACHE_SECONDS, Secret, SecretSource, SecretValue,
    json_key_value,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use crate::Unpoisoned;
use crate::secrets::redact::Redactor;

/// How long one call to AWS may take, retries included. A hook's own deadline may cut it
/// shorter.
const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a failed read of a secret its uses see that failure again rather than ask
/// AWS: a hook looping on a sealed header while AWS refuses would otherwise ask on every turn
/// (and AWS throttles the account's calls, every flow's alike).
const FAILED_READ_QUIET: Duration = Duration::from_secs(1);
/// The largest answer to `GetSecretValue` read: a secret holds at most 64 KiB, which its
/// JSON answer escapes at worst six bytes for one (`\u0000`), with a few hundred bytes
/// of names and dates around it.
pub const MAX_AWS_ANSWER_BYTES: usize = 512 << 10;

/// Reads a secret's raw string from where the operator keeps it.
#[async_trait::async_trait]
pub trait SecretFetcher: Send + Sync {
    async fn fetch(&self, secret: &AwsSecret) -> Result<String, String>;
}

/// The current time; injectable so that expiry can be tested without waiting.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A secret's value could not be read and no usable value is cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretUnavailable(pub String);

struct Cached {
    value: SecretValue,
    fetched_at: Instant,
}

/// One AWS secret's last good value, its last failed read (when, and why) if later, and a
/// read of it in progress.
#[derive(Default)]
struct Slot {
    cached: Option<Cached>,
    failed: Option<(Instant, String)>,
    /// A task of its own, so that a use that stops waiting (its hook's deadline) does not
    /// cancel it: the next use takes its answer.
    reading: Option<SharedRead>,
}

/// A read of an AWS secret in progress, or done: when it was read, and what it gave.
type SharedRead = futures_util::future::Shared<
    futures_util::future::BoxFuture<'static, (Instant, Result<String, String>)>,
>;

/// How long a use of a secret whose cached value is still good waits for its refresh
/// before taking the cached value (the refresh goes on, for a later use): AWS answering
/// slowly costs each hook this much at most, not its whole deadline, while a value in hand
/// is good.
const REFRESH_WAIT: Duration = Duration::from_millis(100);

/// App-wide: shared by every flow and event of a `Warden`.
pub struct SecretStore {
    fetcher: Arc<dyn SecretFetcher>,
    clock: Clock,
    /// Per secret id, so one slow fetch holds up only users of that secret.
    cached: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    served: RwLock<Served>,
    /// The store of the config a reload put in this one's place: what this one serves
    /// after (hooks still running on the old config, a rotation read meanwhile) is
    /// redacted there too.
    successor: RwLock<std::sync::Weak<SecretStore>>,
}

/// Every value served so far.
struct Served {
    /// Per secret id, oldest first.
    by_id: HashMap<String, Vec<SecretValue>>,
    /// All of them. Redactors are kept until a new value is served: building one costs
    /// far more than a hook (BENCHMARKS.md), and every hook's report and every response
    /// is redacted.
    all: Arc<Redactor>,
    /// Per set of secret ids asked for (a flow's: as many as the config has flows).
    for_ids: HashMap<Vec<String>, Arc<Redactor>>,
}

impl SecretStore {
    /// Fetches from AWS Secrets Manager with the standard AWS credentials and settings.
    pub fn new(secrets: &BTreeMap<String, Arc<Secret>>) -> Self {
        Self::with(
            secrets,
            Arc::new(AwsFetcher::default()),
            Arc::new(Instant::now),
        )
    }

    /// Starts from the values the config read at load (`Config::secrets`).
    pub fn with(
        secrets: &BTreeMap<String, Arc<Secret>>,
        fetcher: Arc<dyn SecretFetcher>,
        clock: Clock,
    ) -> Self {
        let mut cached = HashMap::new();
        for secret in secrets.values() {
            if let SecretSource::AwsSecretsManager(_) = secret.source {
                cached.insert(
                    secret.id.clone(),
                    Arc::new(tokio::sync::Mutex::new(Slot {
                        cached: Some(Cached {
                            value: secret.value.clone(),
                            fetched_at: secret.loaded_at,
                        }),
                        failed: None,
                        reading: None,
                    })),
                );
            }
        }
        let by_id = secrets
            .values()
            .map(|s| (s.id.clone(), vec![s.value.clone()]))
            .collect();
        Self {
            fetcher,
            clock,
            cached: Mutex::new(cached),
            served: RwLock::new(Served {
                by_id,
                all: Arc::new(Redactor::new(
                    secrets.values().map(|s| s.value.clone()).collect(),
                )),
                for_ids: HashMap::new(),
            }),
            successor: RwLock::new(std::sync::Weak::new()),
        }
    }

    /// The secret's value now.
    pub async fn current(&self, secret: &Secret) -> Result<SecretValue, SecretUnavailable> {
        let SecretSource::AwsSecretsManager(aws) = &secret.source else {
            return Ok(secret.value.clone());
        };
        let slot = self
            .cached
            .lock()
            .unpoisoned()
            .entry(secret.id.clone())
            .or_default()
            .clone();
        let asked_at = (self.clock)();
        let age = |c: &Cached| asked_at.saturating_duration_since(c.fetched_at);
        // The slot is held only to look and to record, never across the wait for AWS: uses
        // of one secret wait for the one read side by side, not one after another.
        let (reading, good_in_hand) = {
            let mut slot = slot.lock().await;
            self.settle(&mut slot, &secret.id);
            if let Some(c) = slot.cached.as_ref()
                && age(c) < aws.cache_ttl / 2
            {
                return Ok(c.value.clone());
            }
            let good_in_hand = slot
                .cached
                .as_ref()
                .filter(|c| age(c) < aws.cache_ttl)
                .map(|c| c.value.clone());
            let quiet = slot
                .failed
                .as_ref()
                .filter(|(at, _)| asked_at.saturating_duration_since(*at) < FAILED_READ_QUIET);
            if let Some((_, error)) = quiet {
                return match good_in_hand {
                    Some(value) => Ok(value),
                    None => Err(self.unavailable(secret, aws, error, slot.cached.as_ref(), age)),
                };
            }
            let reading = slot.reading.get_or_insert_with(|| self.read(aws)).clone();
            (reading, good_in_hand)
        };
        let read = match &good_in_hand {
            Some(value) => match tokio::time::timeout(REFRESH_WAIT, reading).await {
                Ok(read) => read,
                // Still reading: the value in hand meanwhile; a later use takes the answer.
                Err(_) => return Ok(value.clone()),
            },
            None => reading.await,
        };
        let mut slot = slot.lock().await;
        self.settle(&mut slot, &secret.id);
        match read.1 {
            Ok(value) => Ok(SecretValue::new(value)),
            Err(error) => match good_in_hand {
                Some(value) => {
                    tracing::warn!(
                        secret = %secret.id,
                        "cannot refresh secret `{}` from AWS Secrets Manager ({error}); using the value in hand",
                        secret.id,
                    );
                    Ok(value)
                }
                None => Err(self.unavailable(secret, aws, &error, slot.cached.as_ref(), age)),
            },
        }
    }

    /// A read of `aws` on a task of its own (a use that stops waiting does not cancel it),
    /// its answer shared by every use that waits for it, with when it was read.
    fn read(&self, aws: &AwsSecret) -> SharedRead {
        let (fetcher, aws, clock) = (self.fetcher.clone(), aws.clone(), self.clock.clone());
        let task = tokio::spawn(async move {
            let read = fetcher
                .fetch(&aws)
                .await
                .and_then(|raw| apply_json_key(&aws, raw));
            (clock(), read)
        });
        let clock = self.clock.clone();
        async move {
            task.await
                .unwrap_or_else(|e| (clock(), Err(format!("the read failed: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// Takes a finished read into the slot as what it is: its value as of when it was read
    /// (cached if newer than the one in hand, and refreshed in turn once half its TTL has
    /// passed), its failure as of then.
    fn settle(&self, slot: &mut Slot, id: &str) {
        // Polled once here: a read whose task ended while no use waited has its answer
        // taken now, not at the next use that waits.
        let Some((at, read)) = slot.reading.as_ref().and_then(|r| r.clone().now_or_never()) else {
            return;
        };
        slot.reading = None;
        match read {
            Ok(value) => {
                if slot.cached.as_ref().is_none_or(|c| c.fetched_at <= at) {
                    let value = SecretValue::new(value);
                    self.remember(id, &value);
                    slot.cached = Some(Cached {
                        value,
                        fetched_at: at,
                    });
                }
            }
            Err(error) => {
                if slot.failed.as_ref().is_none_or(|(then, _)| *then <= at) {
                    slot.failed = Some((at, error));
                }
            }
        }
    }

    /// Why `secret` cannot be had now: `error`, and the value in hand too old if there is one.
    fn unavailable(
        &self,
        secret: &Secret,
        aws: &AwsSecret,
        error: &str,
        cached: Option<&Cached>,
        age: impl Fn(&Cached) -> Duration,
    ) -> SecretUnavailable {
        match cached {
            Some(c) => SecretUnavailable(format!(
                "secret `{}` (AWS Secrets Manager `{}`): {error}; the value fetched {}s ago has expired (cache_seconds = {})",
                secret.id,
                aws.secret_id,
                age(c).as_secs(),
                aws.cache_ttl.as_secs()
            )),
            None => SecretUnavailable(format!(
                "secret `{}` (AWS Secrets Manager `{}`): {error}",
                secret.id, aws.secret_id
            )),
        }
    }

    /// Hands every value this store served, and every one it serves from now on, to `next`
    /// (a reload's store), so what a reload rotated away stays redacted: a plugin, or a
    /// server it called, may still hold and echo the old value, and hooks still running on
    /// the old config go on reading through this store.
    pub fn hand_on_to(&self, next: &Arc<SecretStore>) {
        // Set before the copy: a value served meanwhile is in the copy or passed on.
        *self.successor.write().unpoisoned() = Arc::downgrade(next);
        let earlier: Vec<(String, SecretValue)> = self
            .served()
            .by_id
            .iter()
            .flat_map(|(id, values)| values.iter().map(|v| (id.clone(), v.clone())))
            .collect();
        let mut served = next.served.write().unpoisoned();
        let mut added = false;
        for (id, value) in earlier {
            let values = served.by_id.entry(id).or_default();
            if !values.contains(&value) {
                values.push(value);
                added = true;
            }
        }
        if added {
            let all = served.by_id.values().flatten().cloned().collect();
            served.all = Arc::new(Redactor::new(all));
            served.for_ids.clear();
        }
    }

    fn remember(&self, id: &str, value: &SecretValue) {
        {
            let mut served = self.served.write().unpoisoned();
            let values = served.by_id.entry(id.to_string()).or_default();
            if values.contains(value) {
                return;
            }
            values.push(value.clone());
            let all = served.by_id.values().flatten().cloned().collect();
            served.all = Arc::new(Redactor::new(all));
            served.for_ids.clear();
        }
        let next = self.successor.read().unpoisoned().upgrade();
        if let Some(next) = next {
            next.remember(id, value);
        }
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.served.read().unpoisoned()
    }

    /// Redacts every value ever served, rotated ones included.
    pub fn redactor(&self) -> Arc<Redactor> {
        self.served().all.clone()
    }

    /// Redacts every value ever served for the secrets `ids`: what a flow that can send
    /// those secrets sealed must never be shown.
    pub fn redactor_for<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Arc<Redactor> {
        let key: Vec<String> = ids.into_iter().map(str::to_string).collect();
        if let Some(kept) = self.served().for_ids.get(&key) {
            return kept.clone();
        }
        let mut served = self.served.write().unpoisoned();
        let values = key
            .iter()
            .filter_map(|id| served.by_id.get(id))
            .flatten()
            .cloned()
            .collect();
        let redactor = Arc::new(Redactor::new(values));
        served.for_ids.insert(key, redactor.clone());
        redactor
    }
}

fn apply_json_key(aws: &AwsSecret, raw: String) -> Result<String, String> {
    let value = match &aws.json_key {
        Some(key) => json_key_value(
            &raw,
            key,
            &format!("AWS Secrets Manager secret `{}`", aws.secret_id),
        )?,
        None => raw,
    };
    if value.is_empty() {
        return Err(format!(
            "AWS Secrets Manager secret `{}` is empty",
            aws.secret_id
        ));
    }
    Ok(value)
}

/// Fetches the raw string once, outside any async runtime the caller may be in; for
/// validating a config (which applies `json_key` itself).
pub fn fetch_blocking(secret: &AwsSecret) -> Result<String, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("host error: cannot start a runtime to fetch it: {e}"))?;
                runtime.block_on(AwsFetcher::default().fetch(secret))
            })
            .join()
            .unwrap_or_else(|_| Err("host error: fetching it panicked".into()))
    })
}

/// Where a client sends its requests: the secret's `region` and `endpoint`, when set.
type RegionAndEndpoint = (Option<String>, Option<String>);

/// AWS Secrets Manager through the official SDK: one client per region and endpoint.
#[derive(Default)]
pub struct AwsFetcher {
    clients: tokio::sync::Mutex<HashMap<RegionAndEndpoint, ClientOrError>>,
}

type ClientOrError = Result<aws_sdk_secretsmanager::Client, String>;

impl AwsFetcher {
    async fn client(&self, secret: &AwsSecret) -> ClientOrError {
        let key = (secret.region.clone(), secret.endpoint.clone());
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        let client = Self::build(secret).await;
        clients.insert(key, client.clone());
        client
    }

    async fn build(secret: &AwsSecret) -> ClientOrError {
        use aws_smithy_http_client::tls;
        // rustls on ring, as reqwest uses: the SDK's default would build aws-lc-rs.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(AWS_OPERATION_TIMEOUT)
                    .connect_timeout(AWS_CONNECT_TIMEOUT)
                    .build(),
            )
            // The cache is the retry: a failed refresh keeps the value in hand.
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(region) = &secret.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &secret.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(
                "no AWS region: set `region` on the secret, or AWS_REGION in warden's environment"
                    .into(),
            );
        }
        let config = aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .interceptor(BoundedAnswer)
            .build();
        Ok(aws_sdk_secretsmanager::Client::from_conf(config))
    }
}

/// Bounds what an answer may make warden hold: the SDK reads an answer's whole body before
/// parsing it, so an endpoint answering without end (or announcing gigabytes) would grow
/// warden's memory for the whole operation timeout. One over [`MAX_AWS_ANSWER_BYTES`]
/// fails the read (announced: at once, unread).
#[derive(Debug)]
struct BoundedAnswer;

impl aws_sdk_secretsmanager::config::Intercept for BoundedAnswer {
    fn name(&self) -> &'static str {
        "BoundedAnswer"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_secretsmanager::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        let answer = context.response_mut();
        let announced = answer
            .headers()
            .get("content-length")
            .and_then(|n| n.trim().parse::<u64>().ok());
        if let Some(length) = announced.filter(|n| *n > MAX_AWS_ANSWER_BYTES as u64) {
            return Err(too_long(Some(length)).into());
        }
        let body = answer.take_body();
        let bounded = http_body_util::BodyExt::map_err(
            http_body_util::Limited::new(body, MAX_AWS_ANSWER_BYTES),
            |e| -> aws_sdk_secretsmanager::error::BoxError {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_long(None).into()
                } else {
                    e
                }
            },
        );
        *answer.body_mut() = aws_smithy_types::body::SdkBody::from_body_1_x(bounded);
        Ok(())
    }
}

/// Why [`BoundedAnswer`] failed a read; found again in the SDK's error to be told plainly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AnswerTooLong(String);

fn too_long(announced: Option<u64>) -> AnswerTooLong {
    let what = announced.map_or_else(
        || "answered past".to_string(),
        |n| format!("announced an answer of {n} bytes, over"),
    );
    AnswerTooLong(format!(
        "{what} the {} KiB a secret's answer may be",
        MAX_AWS_ANSWER_BYTES >> 10
    ))
}

/// The [`AnswerTooLong`] somewhere in `error`'s sources.
fn answer_too_long<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a AnswerTooLong> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref())
}

#[async_trait::async_trait]
impl SecretFetcher for AwsFetcher {
    async fn fetch(&self, secret: &AwsSecret) -> Result<String, String> {
        let client = self.client(secret).await?;
        let where_ = secret
            .endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        let output = client
            .get_secret_value()
            .secret_id(&secret.secret_id)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(GetSecretValueError::ResourceNotFoundException(_)) => format!(
                    "AWS Secrets Manager{where_} has no secret `{}`",
                    secret.secret_id
                ),
                Some(service) => format!(
                    "AWS Secrets Manager{where_} refused to read `{}`: {}",
                    secret.secret_id,
                    DisplayErrorContext(service)
                ),
                None => match answer_too_long(&e) {
                    Some(too_long) => format!(
                        "cannot read `{}`: AWS Secrets Manager{where_} {too_long}",
                        secret.secret_id
                    ),
                    None => format!(
                        "cannot read `{}` from AWS Secrets Manager{where_}: {}",
                        secret.secret_id,
                        DisplayErrorContext(&e)
                    ),
                },
            })?;
        output.secret_string().map(str::to_string).ok_or_else(|| {
            format!(
                "AWS Secrets Manager secret `{}` holds binary data; only text (SecretString) is supported",
                secret.secret_id
            )
        })
    }
}

#[cfg(test)]
mod tests;
