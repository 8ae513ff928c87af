//! The test file format, as written: file-wide defaults and `[[case]]`s that override them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole test file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The plugin file, relative to the test file; default: the crate's build output.
    pub plugin: Option<String>,
    /// Default `on_request`.
    pub hook: Option<String>,
    #[serde(default)]
    pub flow: FlowSpec,
    /// Secret id → the literal value to test with.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub integrations: BTreeMap<String, IntegrationSpec>,
    /// Identities stored before each case's run.
    pub identities: Option<Vec<IdentitySpec>>,
    /// Mocks every case shares; a case's own mocks are tried first.
    #[serde(default)]
    pub mock: Vec<MockSpec>,
    pub event: Option<toml::Value>,
    #[serde(default)]
    pub case: Vec<CaseSpec>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    pub allowed_hosts: Option<Vec<String>>,
    pub reveal_secrets: Option<bool>,
    /// Passed to the flow as written, so the real limits and their validation apply.
    pub limits: Option<toml::Table>,
}

impl FlowSpec {
    /// `self` with what `over` sets; vars are merged key by key.
    pub fn merged(&self, over: &FlowSpec) -> FlowSpec {
        let mut vars = self.vars.clone();
        vars.extend(over.vars.clone());
        FlowSpec {
            name: over.name.clone().or_else(|| self.name.clone()),
            vars,
            allowed_hosts: over
                .allowed_hosts
                .clone()
                .or_else(|| self.allowed_hosts.clone()),
            reveal_secrets: over.reveal_secrets.or(self.reveal_secrets),
            limits: over.limits.clone().or_else(|| self.limits.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub external_id: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub settings: toml::Table,
    /// The alias the plugin sees; default the integration's name.
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    pub email: String,
    #[serde(default = "custom")]
    pub service: String,
    pub service_id: String,
    pub user_id: String,
}

fn custom() -> String {
    "custom".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSpec {
    /// Any method when absent.
    pub method: Option<String>,
    /// `https://host/path` (that origin only) or `/path` (any origin the flow allows); a
    /// `?query` adds to `query`.
    pub url: String,
    /// Parameters the request must carry (decoded); others may be present.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Headers the request must carry (names case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSpec>,
    /// The request body, exactly.
    pub body: Option<String>,
    /// The request body, compared as JSON.
    pub body_json: Option<toml::Value>,
    /// How many calls the case must make to this mock.
    pub times: Option<usize>,
    /// The answer to every call.
    pub respond: Option<ResponseSpec>,
    /// Answers in order; the last one repeats.
    pub responses: Option<Vec<ResponseSpec>>,
}

/// What a mock expects of one header: its text, or a test secret's value.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum HeaderSpec {
    Text(String),
    /// The value of a test secret, usually sent sealed.
    Secret {
        secret: String,
    },
}

impl TryFrom<toml::Value> for HeaderSpec {
    type Error = String;

    /// Either shape exactly: a key beside `secret` (a misspelt option) is refused, not
    /// dropped.
    fn try_from(value: toml::Value) -> Result<Self, String> {
        const SHAPE: &str = "a header is a string or `{ secret = \"id\" }`";
        match value {
            toml::Value::String(text) => Ok(Self::Text(text)),
            toml::Value::Table(table) => {
                if let Some(other) = table.keys().find(|k| *k != "secret") {
                    return Err(format!("unknown key `{other}`: {SHAPE}"));
                }
                match table.get("secret") {
                    Some(toml::Value::String(id)) => Ok(Self::Secret { secret: id.clone() }),
                    Some(other) => Err(format!(
                        "`secret` is a {}, not a string: {SHAPE}",
                        other.type_str()
                    )),
                    None => Err(format!("`secret` is missing: {SHAPE}")),
                }
            }
            other => Err(format!("a {}: {SHAPE}", other.type_str())),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (`Content-Type: application/json` unless `headers` set one).
    pub json: Option<toml::Value>,
    pub body: Option<String>,
    /// A body read from a file, relative to the test file.
    pub body_file: Option<String>,
    /// No response: `timeout` or `connect`.
    pub error: Option<String>,
    /// Answer after this long (a timeout if the request's time runs out first).
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    pub name: String,
    pub plugin: Option<String>,
    pub hook: Option<String>,
    pub flow: Option<FlowSpec>,
    /// Shorthand for `flow.vars`, merged over the file's.
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub integrations: BTreeMap<String, IntegrationSpec>,
    /// Replaces the file's identities.
    pub identities: Option<Vec<IdentitySpec>>,
    #[serde(default)]
    pub mock: Vec<MockSpec>,
    pub event: Option<toml::Value>,
    pub expect: ExpectSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// `continue`, `approve`, `deny` or `ignore`.
    pub decision: Option<String>,
    /// The reason (or an ignore's message), exactly.
    pub reason: Option<String>,
    /// The reason must match this regular expression.
    pub reason_matches: Option<String>,
    /// The hook must fail; its failure must contain this text.
    pub failure: Option<String>,
    /// Every identity in the store after the run.
    pub identities: Option<Vec<IdentitySpec>>,
    /// Lines that must appear, in this order.
    #[serde(default)]
    pub logs: Vec<LogSpec>,
    /// Every HTTP request, in order: `METHOD url`.
    pub http_calls: Option<Vec<String>>,
    /// Grant refusals the run must make (each text found in one); any other fails the case.
    #[serde(default)]
    pub refusals: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// `trace`, `debug`, `info`, `warn` or `error`; any when absent.
    pub level: Option<String>,
    pub contains: Option<String>,
    pub matches: Option<String>,
}
