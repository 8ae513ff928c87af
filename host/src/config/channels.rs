//! `[channels.<name>]` (where notifications go: a Slack incoming webhook or a signed JSON
//! webhook), `[flows.<flow>.notify]` (which events of a flow go to which channels) and
//! `[serve] public_url` (what notifications link to). Delivery is `serve::notify`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::raw::RawConfig;
use super::validate::declared;
use super::{Secret, Validator};

pub const DEFAULT_CHANNEL_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_RETRY_FOR_SECONDS: u64 = 3_600;
const MAX_CHANNEL_TIMEOUT_MS: u64 = 60_000;
/// A week: beyond it a notification is news no longer.
const MAX_RETRY_FOR_SECONDS: u64 = 7 * 86_400;

/// `[channels.<name>]` as written.
#[derive(Debug, Deserialize)]
pub struct RawChannel {
    #[serde(rename = "type")]
    pub kind: String,
    /// `webhook`: where to POST.
    pub url: Option<String>,
    /// `slack`: the secret holding the incoming-webhook URL (the URL is the credential).
    pub url_secret: Option<String>,
    /// `webhook`: the secret the body is signed with.
    pub signing_secret: Option<String>,
    pub timeout_ms: Option<u64>,
    pub retry_for_seconds: Option<u64>,
}

/// `[flows.<flow>.notify]` as written: channel names per event.
#[derive(Debug, Default, Deserialize)]
pub struct RawNotify {
    #[serde(default)]
    pub waiting: Vec<String>,
    #[serde(default)]
    pub decided: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub hook_failed: Vec<String>,
}

/// What happened to a request that a flow may tell a channel about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// The request waits for a human.
    Waiting,
    /// Approved or denied, by the plugin or a person.
    Decided,
    /// Access was removed (deescalated).
    Removed,
    /// A hook failed (and the request failed closed).
    HookFailed,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] = [
        Self::Waiting,
        Self::Decided,
        Self::Removed,
        Self::HookFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Decided => "decided",
            Self::Removed => "removed",
            Self::HookFailed => "hook_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub enum ChannelKind {
    /// A Slack incoming webhook; its URL is a secret.
    Slack { url: Arc<Secret> },
    /// A JSON document POSTed to `url`, signed with HMAC-SHA256 under `signing`.
    Webhook { url: url::Url, signing: Arc<Secret> },
}

#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// One delivery attempt: reading the channel's secrets and connecting included.
    pub timeout: Duration,
    /// How long after the event delivery is retried before it is recorded as failed.
    pub retry_for: Duration,
}

impl Channel {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Webhook { .. } => "webhook",
        }
    }
}

/// A Slack incoming-webhook URL as a secret holds it: https, or plain http only to a loopback
/// address (for testing). Checked at load and again on each value a rotation brings.
pub(crate) fn slack_webhook_url(value: &str) -> Option<url::Url> {
    url::Url::parse(value.trim()).ok().filter(|u| {
        u.host_str().is_some()
            && (u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u)))
    })
}

/// Whether `u` names this machine: the one place a Slack URL may be plain http (a local
/// stand-in while testing).
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(name)) => super::is_localhost_name(name),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Validator<'_> {
    pub(super) fn public_url(&mut self, raw: Option<&str>) -> Option<String> {
        let text = raw?.trim();
        match url::Url::parse(text) {
            Ok(u)
                if (u.scheme() == "http" || u.scheme() == "https")
                    && u.host_str().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none() =>
            {
                Some(text.trim_end_matches('/').to_string())
            }
            _ => {
                self.error(
                    &["serve", "public_url"],
                    format!(
                        "`{text}` is not an http(s) URL without a query, like https://warden.example.com"
                    ),
                );
                None
            }
        }
    }

    /// A secret a channel names: found, or reported (once; a secret that failed to
    /// resolve already has its own error).
    fn channel_secret(
        &mut self,
        raw: &RawConfig,
        secrets: &BTreeMap<String, Arc<Secret>>,
        name: &str,
        key: &str,
        id: Option<&String>,
        what: &str,
    ) -> Option<Arc<Secret>> {
        let Some(id) = id else {
            self.error(
                &["channels", name],
                format!("needs `{key}`, the secret holding {what}"),
            );
            return None;
        };
        match secrets.get(id) {
            Some(s) => Some(s.clone()),
            None if raw.secrets.contains_key(id) => None,
            None => {
                self.error(
                    &["channels", name, key],
                    format!(
                        "channel `{name}` names secret `{id}`, which is not declared under [secrets]{}",
                        declared(raw.secrets.keys())
                    ),
                );
                None
            }
        }
    }

    pub(super) fn channels(
        &mut self,
        raw: &RawConfig,
        secrets: &BTreeMap<String, Arc<Secret>>,
    ) -> BTreeMap<String, Arc<Channel>> {
        let mut out = BTreeMap::new();
        for (name, channel) in &raw.channels {
            let errors_before = self.errors.len();
            // A channel's name is a metrics label and is stored with each notification.
            let plain = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !plain {
                self.error(
                    &["channels", name],
                    "a channel name may hold only ASCII letters, digits, `-` and `_` (at most 64)",
                );
            }
            let misplaced = |key: &'static str, present: bool, for_kind: &'static str| {
                present.then_some((key, for_kind))
            };
            let kind = match channel.kind.as_str() {
                "slack" => {
                    for (key, for_kind) in [
                        misplaced("url", channel.url.is_some(), "webhook"),
                        misplaced(
                            "signing_secret",
                            channel.signing_secret.is_some(),
                            "webhook",
                        ),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        let hint = if key == "url" {
                            "; a Slack webhook URL is a credential: put it in a secret and name it with `url_secret`"
                        } else {
                            ""
                        };
                        self.error(
                            &["channels", name, key],
                            format!("`{key}` is for `type = \"{for_kind}\"`{hint}"),
                        );
                    }
                    let url = self.channel_secret(
                        raw,
                        secrets,
                        name,
                        "url_secret",
                        channel.url_secret.as_ref(),
                        "the Slack incoming-webhook URL",
                    );
                    if let Some(secret) = &url {
                        // The value is never printed: it is the credential.
                        if slack_webhook_url(secret.value.expose()).is_none() {
                            self.error(
                                &["channels", name, "url_secret"],
                                format!(
                                    "the value of secret `{}` is not an https URL (a Slack incoming webhook looks like https://hooks.slack.com/services/...; plain http only to a loopback address, for testing)",
                                    secret.id
                                ),
                            );
                        }
                    }
                    url.map(|url| ChannelKind::Slack { url })
                }
                "webhook" => {
                    if channel.url_secret.is_some() {
                        self.error(
                            &["channels", name, "url_secret"],
                            "`url_secret` is for `type = \"slack\"`; a webhook has `url` and `signing_secret`",
                        );
                    }
                    let url = match channel.url.as_deref().map(str::trim) {
                        None => {
                            self.error(&["channels", name], "needs `url`, where to POST");
                            None
                        }
                        Some(text) => match url::Url::parse(text) {
                            Ok(u)
                                if (u.scheme() == "http" || u.scheme() == "https")
                                    && u.host_str().is_some()
                                    && u.username().is_empty()
                                    && u.password().is_none() =>
                            {
                                Some(u)
                            }
                            _ => {
                                self.error(
                                    &["channels", name, "url"],
                                    format!("`{text}` is not an http(s) URL without user info"),
                                );
                                None
                            }
                        },
                    };
                    let signing = self.channel_secret(
                        raw,
                        secrets,
                        name,
                        "signing_secret",
                        channel.signing_secret.as_ref(),
                        "the key the body is signed with",
                    );
                    url.zip(signing)
                        .map(|(url, signing)| ChannelKind::Webhook { url, signing })
                }
                other => {
                    self.error(
                        &["channels", name, "type"],
                        format!("unknown type `{other}`; expected `slack` or `webhook`"),
                    );
                    None
                }
            };
            let mut bounded =
                |key: &str, value: Option<u64>, min: u64, max: u64, default: u64| match value {
                    None => default,
                    Some(v) if (min..=max).contains(&v) => v,
                    Some(v) => {
                        self.error(
                            &["channels", name, key],
                            format!("must be between {min} and {max}, not {v}"),
                        );
                        default
                    }
                };
            let timeout = Duration::from_millis(bounded(
                "timeout_ms",
                channel.timeout_ms,
                100,
                MAX_CHANNEL_TIMEOUT_MS,
                DEFAULT_CHANNEL_TIMEOUT_MS,
            ));
            let retry_for = Duration::from_secs(bounded(
                "retry_for_seconds",
                channel.retry_for_seconds,
                1,
                MAX_RETRY_FOR_SECONDS,
                DEFAULT_RETRY_FOR_SECONDS,
            ));
            if let Some(kind) = kind
                && self.errors.len() == errors_before
            {
                out.insert(
                    name.clone(),
                    Arc::new(Channel {
                        name: name.clone(),
                        kind,
                        timeout,
                        retry_for,
                    }),
                );
            }
        }
        out
    }

    /// A flow's `[flows.<flow>.notify]`; `None` after reporting a channel that is not
    /// declared.
    pub(super) fn notify(
        &mut self,
        flow: &str,
        raw: &RawNotify,
        declared_channels: &BTreeMap<String, RawChannel>,
    ) -> Option<BTreeMap<NotifyEvent, Vec<String>>> {
        let errors_before = self.errors.len();
        let mut out = BTreeMap::new();
        for (event, names) in [
            (NotifyEvent::Waiting, &raw.waiting),
            (NotifyEvent::Decided, &raw.decided),
            (NotifyEvent::Removed, &raw.removed),
            (NotifyEvent::HookFailed, &raw.hook_failed),
        ] {
            let mut channels: Vec<String> = Vec::new();
            for name in names {
                if !declared_channels.contains_key(name) {
                    self.error(
                        &["flows", flow, "notify", event.as_str()],
                        format!(
                            "flow `{flow}` names channel `{name}`, which is not declared under [channels]{}",
                            declared(declared_channels.keys())
                        ),
                    );
                } else if !channels.contains(name) {
                    channels.push(name.clone());
                }
            }
            if !channels.is_empty() {
                out.insert(event, channels);
            }
        }
        (self.errors.len() == errors_before).then_some(out)
    }
}

#[cfg(test)]
mod tests;
