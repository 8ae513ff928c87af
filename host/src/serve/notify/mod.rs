//! Notifications: the outbox's rows ([`crate::store::outbox`], written by each claim in the
//! commit of the change they tell of) delivered to their channels by a background task.
//!
//! One task per configured channel, so a slow or dead receiver holds up only its own
//! channel; each attempt is bounded by the channel's `timeout_ms` and sends only to the
//! channel's own URL (redirects are not followed, the answer's body is not read). A failed
//! attempt is retried with doubling backoff until `retry_for_seconds` after the event, then
//! given up and recorded on the request. A channel's secrets (a Slack URL, a webhook's signing
//! key) are read for each attempt as plugins' are, so a rotated AWS secret is picked up without
//! a reload, and one that cannot be read fails the attempt like a receiver that does not
//! answer. Nothing here runs on an API call's path: a claim
//! only writes rows and wakes the tasks. Replicas sharing a PostgreSQL store each run these
//! tasks over the one outbox; a task *takes* its rows (`Backend::outbox_take`), so no row is
//! sent by two replicas.

pub mod message;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Warden;
use crate::config::{Channel, ChannelKind, NotifyEvent, slack_webhook_url};
use crate::secrets::{Secret, SecretStore};
use crate::store::backend::Backend;
use crate::store::outbox::{Notification, Router};
use crate::store::requests::now_ms;

use super::metrics::Metrics;

/// Longest a channel's task sleeps before looking at the outbox again (a wake from a
/// commit comes sooner); also how often new and removed channels are noticed.
const POLL: Duration = Duration::from_secs(1);
/// Notifications a channel's task takes from the outbox at a time.
const BATCH: usize = 32;
/// The first retry's wait; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long past due a notification of a channel this replica has never had waits, untaken,
/// before the replica gives it up. Another replica's config may have that channel (a rolling
/// change, or a reload refused on this one), and a replica delivering a channel takes each of
/// its rows within a second of its being due, even behind a backlog well within an hour.
const UNKNOWN_CHANNEL_GRACE: Duration = Duration::from_secs(3600);

/// The claims' side of the outbox: which channels a flow's event goes to, and a wake for
/// the delivery tasks after a commit that left rows.
pub struct Outbox {
    warden: Arc<ArcSwap<Warden>>,
    wake: watch::Sender<u64>,
}

impl Outbox {
    pub fn new(warden: Arc<ArcSwap<Warden>>) -> Arc<Self> {
        Arc::new(Self {
            warden,
            wake: watch::Sender::new(0),
        })
    }

    /// Whether any flow of the current config sends any event anywhere: when none does, a
    /// claim's commit does not look for notifications at all.
    pub fn active(&self) -> bool {
        self.warden
            .load()
            .config()
            .flows
            .values()
            .any(|f| !f.notify.is_empty())
    }

    /// Tells the delivery tasks that a commit left rows.
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Router for Outbox {
    /// The channels flow `flow` sends `event` to, in the config current now.
    fn route(&self, flow: &str, event: NotifyEvent) -> Vec<String> {
        self.warden
            .load()
            .config()
            .flow(flow)
            .and_then(|f| f.notify.get(&event).cloned())
            .unwrap_or_default()
    }
}

/// Why an attempt failed, in words that never hold the channel's URL (for Slack it is the
/// credential) nor anything the receiver answered beyond its status.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}

/// Delivers the notifications of every configured channel until `stop`.
pub async fn run(
    outbox: Arc<Outbox>,
    store: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut builder = reqwest::Client::builder()
        // Only the configured URL: a receiver cannot send warden elsewhere, and no proxy
        // named by the environment sees a Slack URL (the credential).
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
    // A receiver behind the company's own authority, as plugins' APIs may be. Read at start:
    // a reload that changes it says a restart is needed.
    let extra_roots = outbox.warden.load().config().http.extra_roots.clone();
    for cert in extra_roots.iter().flat_map(|roots| &roots.certs) {
        match reqwest::Certificate::from_der(cert) {
            Ok(cert) => builder = builder.add_root_certificate(cert),
            Err(e) => tracing::error!("notifications: http.ca_file: {e}"),
        }
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("notifications are not delivered: cannot build an HTTP client: {e}");
            return;
        }
    };
    let mut running: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    // Every channel this replica's config has had since it started.
    let mut known = BTreeSet::new();
    loop {
        let warden = outbox.warden.load_full();
        let channels = &warden.config().channels;
        known.extend(channels.keys().cloned());
        running.retain(|_, task| !task.is_finished());
        for name in channels.keys() {
            if !running.contains_key(name) {
                let task = tokio::spawn(channel_loop(
                    name.clone(),
                    outbox.clone(),
                    store.clone(),
                    metrics.clone(),
                    client.clone(),
                    stop.clone(),
                ));
                running.insert(name.clone(), task);
            }
        }
        orphans(store.as_ref(), &metrics, channels, &known).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    // Each stops at once, leaving an attempt in progress undone.
    for (_, task) in running {
        let _ = task.await;
    }
}

/// Gives up notifications, due and taken by no replica, for channels not in the config:
/// at once for a channel a reload here removed (nothing can deliver them); for one this
/// replica never had, only past [`UNKNOWN_CHANNEL_GRACE`], as another replica's newer (or
/// older) config may route to it and deliver them meanwhile. Rows a replica holds are left
/// to it.
async fn orphans(
    store: &dyn Backend,
    metrics: &Metrics,
    channels: &BTreeMap<String, Arc<Channel>>,
    known: &BTreeSet<String>,
) {
    let depth = match store.outbox_depth().await {
        Ok(depth) => depth,
        Err(e) => {
            tracing::error!("notifications: {e}");
            return;
        }
    };
    for (channel, _) in depth {
        if channels.contains_key(&channel) {
            continue;
        }
        let removed_here = known.contains(&channel);
        let now = now_ms();
        let due_before = if removed_here {
            now
        } else {
            now - UNKNOWN_CHANNEL_GRACE.as_millis() as i64
        };
        let due = store
            .outbox_take(&channel, due_before, BATCH, now + lease(Duration::ZERO))
            .await;
        for n in due.unwrap_or_default() {
            let error = if removed_here {
                format!("channel `{channel}` is no longer in the config")
            } else {
                format!(
                    "channel `{channel}` is not in the config, and no replica took the notification within {} minutes of its being due",
                    UNKNOWN_CHANNEL_GRACE.as_secs() / 60
                )
            };
            // Not kept: the manager takes it again once its hold ends.
            let _ = give_up(store, metrics, &n, 0, error).await;
        }
    }
}

async fn give_up(
    store: &dyn Backend,
    metrics: &Metrics,
    n: &Notification,
    attempts: u32,
    error: String,
) -> Result<(), Unrecorded> {
    tracing::warn!(
        request = %n.request_id, channel = %n.channel, delivery = %n.delivery_id, attempts,
        "notification given up: {error}"
    );
    metrics.observe_delivery(&n.channel, "failed");
    Unrecorded::GiveUp { attempts, error }
        .record(store, n)
        .await
}

/// An attempt's outcome the store did not take (a full disk, a database restarting): kept
/// by the channel's task and written when the row is taken again, rather than the row sent
/// again at once, or its give-up counted again, as often as the store refuses.
#[derive(Debug, Clone)]
enum Unrecorded {
    Delivered,
    RetryAt { next_at: i64, error: String },
    GiveUp { attempts: u32, error: String },
}

/// Outcomes a channel's task keeps unrecorded at most; past it, the oldest is forgotten (its
/// row may then be sent once more).
const MAX_UNRECORDED: usize = 4 * BATCH;

impl Unrecorded {
    async fn record(self, store: &dyn Backend, n: &Notification) -> Result<(), Self> {
        let written = match &self {
            Self::Delivered => store.outbox_delivered(n).await,
            Self::RetryAt { next_at, error } => store.outbox_retry_at(n, *next_at, error).await,
            Self::GiveUp { attempts, error } => store.outbox_give_up(n, *attempts, error).await,
        };
        written.map_err(|e| {
            tracing::error!(channel = %n.channel, delivery = %n.delivery_id, "notifications: {e}");
            self
        })
    }
}

async fn channel_loop(
    name: String,
    outbox: Arc<Outbox>,
    store: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let mut wake = outbox.wake.subscribe();
    let mut unrecorded: std::collections::VecDeque<(i64, Unrecorded)> = Default::default();
    loop {
        wake.mark_unchanged();
        // A store that failed is given a moment: asked again at once it would fail again,
        // and the rows it could not record would be taken and sent again, as fast as it
        // answers.
        let mut store_failed = false;
        // Removed by a reload: the manager gives its rows up as they come due.
        let Some(timeout) = outbox
            .warden
            .load()
            .config()
            .channels
            .get(&name)
            .map(|c| c.timeout)
        else {
            return;
        };
        let now = now_ms();
        let held_until = now + lease(timeout);
        let taken = store.outbox_take(&name, now, BATCH, held_until);
        let due = match taken.await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(channel = %name, "notifications: {e}");
                store_failed = true;
                Vec::new()
            }
        };
        let mut full = due.len() == BATCH;
        let mut due = due.into_iter();
        let mut sending: Option<Sending> = None;
        while let Some(n) = due.next() {
            if let Some(at) = unrecorded.iter().position(|(seq, _)| *seq == n.seq) {
                let (_, outcome) = unrecorded.remove(at).expect("found");
                if let Err(outcome) = outcome.record(store.as_ref(), &n).await {
                    unrecorded.push_back((n.seq, outcome));
                    hand_back_rest(store.as_ref(), &name, due).await;
                    store_failed = true;
                    break;
                }
                continue;
            }
            // Made for the batch, and again after a reload during it: the rest go as the
            // channel now is or, removed, are left for the manager to give up.
            let stale = sending
                .as_ref()
                .is_none_or(|s| !Arc::ptr_eq(&s.warden, &outbox.warden.load()));
            if stale {
                sending = Sending::now(&outbox, &name);
            }
            let Some(sending) = &sending else {
                // For the manager to give up, rather than left held until the lease runs out.
                hand_back(store.as_ref(), &name, &n, due).await;
                return;
            };
            // An attempt that could outlast the hold (a reload lengthened the channel's
            // timeout) is not made: this row and the rest are handed back, due now, to be
            // taken again held as long as the channel now needs. Past the hold another
            // replica may take them, and both would send.
            if now_ms() + sending.channel.timeout.as_millis() as i64 > held_until {
                hand_back(store.as_ref(), &name, &n, due).await;
                full = true;
                break;
            }
            // A stop does not wait for a receiver: this row and the rest of the batch are
            // given back, to be delivered after the restart (or by another replica).
            let outcome = tokio::select! {
                _ = stop.cancelled() => {
                    hand_back(store.as_ref(), &name, &n, due).await;
                    return;
                }
                outcome = attempt(&client, &sending.channel, store.as_ref(), &metrics, &n, sending.public_url.as_deref(), &sending.secrets) => outcome,
            };
            if let Err(outcome) = outcome {
                if unrecorded.len() >= MAX_UNRECORDED {
                    unrecorded.pop_front();
                }
                unrecorded.push_back((n.seq, outcome));
                hand_back_rest(store.as_ref(), &name, due).await;
                store_failed = true;
                break;
            }
        }
        let wait = if store_failed {
            POLL
        } else if full {
            Duration::ZERO
        } else {
            match store.outbox_next_due(&name).await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64).min(POLL),
                _ => POLL,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Gives back row `first` and the rest of a batch taken and not attempted, due again now: for
/// this replica's next take, another replica's, or the manager to give up.
async fn hand_back(
    store: &dyn Backend,
    channel: &str,
    first: &Notification,
    rest: impl Iterator<Item = Notification>,
) {
    let left: Vec<i64> = std::iter::once(first.seq)
        .chain(rest.map(|n| n.seq))
        .collect();
    // One take, one hold for the whole batch.
    let held_until = first.held_until;
    if let Err(e) = store.outbox_hand_back(&left, held_until, now_ms()).await {
        tracing::error!(channel = %channel, "notifications: {e}");
    }
}

/// [`hand_back`] of what is left of a batch, if anything is.
async fn hand_back_rest(
    store: &dyn Backend,
    channel: &str,
    mut rest: impl Iterator<Item = Notification>,
) {
    if let Some(next) = rest.next() {
        hand_back(store, channel, &next, rest).await;
    }
}

/// A channel as the config serving now has it, and what its messages are made with.
struct Sending {
    warden: Arc<crate::Warden>,
    channel: Arc<Channel>,
    /// The channel's secrets' values now, and every value served (`SecretStore::redactor`).
    secrets: Arc<SecretStore>,
    public_url: Option<String>,
}

impl Sending {
    /// `None` when the config serving now has no channel `name`.
    fn now(outbox: &Outbox, name: &str) -> Option<Self> {
        let warden = outbox.warden.load_full();
        let config = warden.config();
        let channel = config.channels.get(name)?.clone();
        let secrets = warden.secret_store().clone();
        let public_url = config.serve.public_url.clone();
        Some(Self {
            warden,
            channel,
            secrets,
            public_url,
        })
    }
}

/// How long a replica's task holds the notifications it took (`Backend::outbox_take`): a
/// batch's attempts, each bounded by the channel's `timeout`, and a margin. Past it, rows
/// a dead replica took come due again for the others.
fn lease(timeout: Duration) -> i64 {
    let batch = timeout.saturating_mul(BATCH as u32);
    (batch + Duration::from_secs(30)).as_millis() as i64
}

/// How long after the `attempts`-th failed attempt the next is due.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The attempt's request, with the channel's secrets as they are now; or why there is none: a
/// secret that cannot be read, or a Slack URL a rotation made invalid (its value never shown).
async fn request<'a>(
    client: &reqwest::Client,
    channel: &'a Channel,
    n: &Notification,
    public_url: Option<&str>,
    secrets: &'a SecretStore,
) -> Result<reqwest::RequestBuilder, String> {
    // Why in the log, for the operator; on the request only which secret, since its history
    // is the requester's to read and the cause may name where the secret is kept.
    let current = |secret: &'a Arc<Secret>| async move {
        secrets.current(secret).await.map_err(|e| {
            tracing::warn!(channel = %channel.name, secret = %secret.id, "notification not sent: {e}");
            format!("cannot read secret `{}` now (warden's log says why)", secret.id)
        })
    };
    let request = match &channel.kind {
        ChannelKind::Slack { url } => {
            let value = current(url).await?;
            let Some(to) = slack_webhook_url(value.expose()) else {
                return Err(format!(
                    "the value of secret `{}` is not an https URL (a Slack incoming webhook)",
                    url.id
                ));
            };
            // Taken after the values are read: a value a rotation just brought is redacted too.
            let body = message::slack_body(n, public_url, &secrets.redactor());
            client
                .post(to)
                .header("content-type", "application/json")
                .body(body)
        }
        ChannelKind::Webhook { url, signing } => {
            let key = current(signing).await?;
            let body = message::webhook_body(n, public_url, &secrets.redactor());
            client
                .post(url.clone())
                .header("content-type", "application/json")
                .header(
                    message::SIGNATURE_HEADER,
                    message::signature(key.expose().as_bytes(), &body),
                )
                .header(message::DELIVERY_HEADER, &n.delivery_id)
                .header(message::EVENT_HEADER, n.event.as_str())
                .body(body)
        }
    };
    Ok(request)
}

/// One attempt's sending: `Ok` on the receiver's `2xx`, else why not.
async fn deliver(
    client: &reqwest::Client,
    channel: &Channel,
    n: &Notification,
    public_url: Option<&str>,
    secrets: &SecretStore,
) -> Result<(), String> {
    // The channel's timeout bounds the whole attempt, reading its secrets included (AWS may
    // be slow to answer), so a batch stays within the lease its rows were taken for.
    let started = tokio::time::Instant::now();
    let made = tokio::time::timeout(
        channel.timeout,
        request(client, channel, n, public_url, secrets),
    );
    match made.await {
        Ok(Ok(request)) => {
            let left = channel.timeout.saturating_sub(started.elapsed());
            match request.timeout(left).send().await {
                // The body is not read: only the status matters, and a receiver cannot make
                // warden hold what it sends.
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("the receiver answered {}", response.status())),
                Err(e) => Err(describe(e, channel.timeout)),
            }
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(format!(
            "its secrets were not read within the {} ms timeout",
            channel.timeout.as_millis()
        )),
    }
}

/// One attempt at `n`, its outcome recorded; the outcome back if the store did not take it.
async fn attempt(
    client: &reqwest::Client,
    channel: &Channel,
    store: &dyn Backend,
    metrics: &Metrics,
    n: &Notification,
    public_url: Option<&str>,
    secrets: &SecretStore,
) -> Result<(), Unrecorded> {
    // Past its time already (it waited behind others for a receiver that hangs): given up
    // without another attempt, so a backlog drains at once instead of one timeout a row.
    let retry_for_ms = channel.retry_for.as_millis() as i64;
    if now_ms() > n.created_at + retry_for_ms {
        let error = format!(
            "not delivered in {} s ({} attempts); given up before another",
            channel.retry_for.as_secs(),
            n.attempts
        );
        let attempts = n.attempts;
        return give_up(store, metrics, n, attempts, error).await;
    }
    let outcome = deliver(client, channel, n, public_url, secrets).await;
    let error = match outcome {
        Ok(()) => {
            metrics.observe_delivery(&channel.name, "delivered");
            tracing::info!(request = %n.request_id, channel = %channel.name, delivery = %n.delivery_id, event = %n.event, "notification delivered");
            return Unrecorded::Delivered.record(store, n).await;
        }
        Err(error) => error,
    };
    let attempts = n.attempts + 1;
    let next_at = now_ms() + backoff(attempts).as_millis() as i64;
    if next_at > n.created_at + channel.retry_for.as_millis() as i64 {
        let error = format!(
            "not delivered in {} s ({attempts} attempts); the last: {error}",
            channel.retry_for.as_secs()
        );
        return give_up(store, metrics, n, attempts, error).await;
    }
    metrics.observe_delivery(&channel.name, "retried");
    tracing::warn!(request = %n.request_id, channel = %channel.name, delivery = %n.delivery_id, attempts, "notification not delivered, will retry: {error}");
    Unrecorded::RetryAt { next_at, error }
        .record(store, n)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::config::Config;
    use crate::secrets::{AwsSecret, SecretFetcher};

    /// Answers with whatever the test last put in it; once told to hang, after a minute.
    struct Aws {
        answer: Mutex<String>,
        hang: AtomicBool,
    }

    #[async_trait::async_trait]
    impl SecretFetcher for Aws {
        async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
            if self.hang.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(self.answer.lock().unwrap().clone())
        }
    }

    fn aws(value: &str) -> Arc<Aws> {
        Arc::new(Aws {
            answer: Mutex::new(value.into()),
            hang: AtomicBool::new(false),
        })
    }

    /// A config of channel `chat` (`channel`, its table's lines) whose secret `key` is kept in
    /// AWS, read at load from `aws`.
    fn config_with(aws: &Aws, channel: &str) -> Config {
        let text = format!(
            "[secrets.key]\nsource = \"aws-secrets-manager\"\npath = \"main/key\"\n\
             cache_seconds = 60\n[channels.chat]\n{channel}\n"
        );
        Config::parse_with(
            &text,
            std::path::Path::new("warden.toml"),
            &|_| None,
            &|secret| futures_util::FutureExt::now_or_never(aws.fetch(secret)).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn waiting() -> Notification {
        Notification {
            seq: 1,
            delivery_id: "dlv-1".into(),
            request_id: "req-1".into(),
            channel: "chat".into(),
            event: NotifyEvent::Waiting,
            body: serde_json::json!({ "flow": "human", "state": "pending" }),
            attempts: 0,
            created_at: now_ms(),
            held_until: now_ms(),
        }
    }

    /// A Slack URL kept in AWS is checked again as each attempt reads it: a rotation to a
    /// value that is not an https URL fails the attempt, sending nothing, and a good one is
    /// where the next attempt goes.
    #[tokio::test]
    async fn a_rotated_slack_url_is_checked_and_used_as_each_attempt_reads_it() {
        let aws = aws("https://hooks.slack.com/services/one");
        let config = config_with(&aws, "type = \"slack\"\nurl_secret = \"key\"");
        // Each attempt half of cache_seconds after the last: it asks AWS again.
        let now = Arc::new(Mutex::new(config.secrets["key"].loaded_at));
        let clock = now.clone();
        let secrets = SecretStore::with(
            &config.secrets,
            aws.clone(),
            Arc::new(move || *clock.lock().unwrap()),
        );
        let (channel, n, client) = (&config.channels["chat"], waiting(), reqwest::Client::new());
        let to = |answer: &str| {
            *aws.answer.lock().unwrap() = answer.to_string();
            *now.lock().unwrap() += Duration::from_secs(31);
            request(&client, channel, &n, None, &secrets)
        };

        let refused = to("http://hooks.example.com/services/two")
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            "the value of secret `key` is not an https URL (a Slack incoming webhook)"
        );
        let sent = to("https://hooks.slack.com/services/three").await.unwrap();
        assert_eq!(
            sent.build().unwrap().url().as_str(),
            "https://hooks.slack.com/services/three"
        );
    }

    /// The channel's timeout bounds an attempt whose secret AWS is slow to give when no good
    /// value is in hand: it fails in about that time, saying so, and nothing is sent. With
    /// one in hand (a refresh, past half `cache_seconds`), the attempt goes on with it.
    #[tokio::test]
    async fn an_attempt_whose_secret_is_slow_to_read_ends_at_the_channels_timeout() {
        let aws = aws("signing-key");
        let config = config_with(
            &aws,
            "type = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsigning_secret = \"key\"\n\
             timeout_ms = 200",
        );
        let attempt = |after: u64| {
            let later = config.secrets["key"].loaded_at + Duration::from_secs(after);
            let secrets = SecretStore::with(&config.secrets, aws.clone(), Arc::new(move || later));
            let channel = config.channels["chat"].clone();
            async move {
                let client = reqwest::Client::new();
                deliver(&client, &channel, &waiting(), None, &secrets).await
            }
        };
        aws.hang.store(true, Ordering::Relaxed);
        let started = std::time::Instant::now();
        assert_eq!(
            attempt(61).await,
            Err("its secrets were not read within the 200 ms timeout".to_string())
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Sent (to a port nobody listens on) with the value in hand.
        assert_eq!(attempt(31).await, Err("could not connect".to_string()));
    }

    #[test]
    fn backoff_doubles_from_a_quarter_second_to_a_minute() {
        let waits: Vec<u128> = (1..=10).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
