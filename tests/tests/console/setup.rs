//! The console tests' `warden serve`: the VictorOps plugin against its stand-in, five
//! tokens, and helpers that act through the JSON API or plain HTTP.

use serde_json::{Value, json};
use warden::serve::Server;
use warden_tests::victorops_standin::{Roster, StandIn, StandInConfig};
use warden_tests::{Scratch, artifacts, toml_path};

pub const API_ID: &str = "vo-api-id-7c1e";
pub const API_KEY: &str = "vo-api-key-s3cr3t-9d2f";
/// alice is on call (the stand-in's sample roster); bob is not. Both request.
pub const ALICE: &str = "alice-token-1111";
pub const BOB: &str = "bob-token-2222";
/// carol approves; she is on no call either.
pub const CAROL: &str = "carol-token-3333";
/// erin approves too: another approver's session.
pub const ERIN: &str = "erin-token-5555";
pub const DAVE: &str = "dave-token-4444";
pub const ON_CALL_REASON: &str = "Auto-approved On-call engineer: fix prod";
/// What the `markup` flow's plugin denies with.
pub const PLUGIN_MARKUP: &str = "<script>window.__xss = 3</script><b id=plugin-injected>x</b>";

/// A `warden serve` whose flow `oncall` runs the VictorOps plugin against the stand-in,
/// with declared fields, a flow `open` that declares none, and a flow `gated` that only
/// erin may decide.
pub struct Console {
    pub server: Option<Server>,
    _standin: StandIn,
    pub scratch: Scratch,
    pub http: reqwest::Client,
}

impl Console {
    pub async fn start() -> Self {
        let standin = StandIn::start(StandInConfig::new(API_ID, API_KEY, Roster::sample()))
            .await
            .unwrap();
        let scratch = Scratch::new();
        scratch.write("vo.key", format!("{API_KEY}\n"));
        let mut tokens = String::new();
        for (name, token, role) in [
            ("alice", ALICE, "requester"),
            ("bob", BOB, "requester"),
            ("carol", CAROL, "approver"),
            ("erin", ERIN, "approver"),
            ("dave", DAVE, "admin"),
        ] {
            scratch.write(&format!("tokens/{name}"), format!("{token}\n"));
            tokens.push_str(&format!(
                "[serve.tokens.{name}]\ntoken_file = \"tokens/{name}\"\nuser = \"{name}@example.com\"\nrole = \"{role}\"\n\n"
            ));
        }
        let url = standin.url();
        let text = format!(
            r#"
[store]
path = "warden.db"

# The sign-in tests come from several addresses, named by a proxy's header.
[serve]
trusted_proxies = ["127.0.0.1"]

{tokens}
[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "{API_ID}"
secrets = ["vo_key"]
settings = {{ api_url = "{url}" }}

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.oncall]
environment = "main"
plugin = {plugin}
allowed_hosts = ["{url}"]
vars = {{ oncall_cache_seconds = 0 }}

[flows.oncall.fields.reason]
type = "string"
required = true

[flows.oncall.fields.duration]
type = "duration"

[flows.oncall.fields.tickets]
type = "list"

[flows.open]
environment = "main"
plugin = {plugin}
allowed_hosts = ["{url}"]
vars = {{ oncall_cache_seconds = 0 }}

# Only erin decides (and only she, bob for his own, and admins revoke).
[flows.gated]
environment = "main"
plugin = {probe}
approvers = ["erin@example.com"]

# Two approvals, from carol and erin.
[flows.pair]
environment = "main"
plugin = {probe}
approvers = ["carol@example.com", "erin@example.com"]
approvals_required = 2

# A plugin whose reason is markup.
[flows.markup]
environment = "main"
plugin = {probe}
vars = {{ action = {markup:?} }}

# A plugin whose error is markup (it fails closed: a human decides).
[flows.markup-error]
environment = "main"
plugin = {raw}
vars = {{ action = {markup_error:?} }}
"#,
            plugin = toml_path(artifacts::VICTOROPS),
            probe = toml_path(artifacts::PROBE),
            markup = format!("deny:{PLUGIN_MARKUP}"),
            raw = toml_path(artifacts::RAW),
            markup_error = format!("forge:{PLUGIN_MARKUP}"),
        );
        let path = scratch.config(&text);
        let server = Server::start(&path, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            server: Some(server),
            _standin: standin,
            scratch,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.server.as_ref().unwrap().local_addr()
        )
    }

    /// Files a request through the JSON API; its id.
    pub async fn file(&self, token: &str, reason: &str) -> String {
        let reply = self
            .http
            .post(self.url("/v1/flows/oncall/requests"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({ "fields": { "reason": reason } }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Files a request for `requester` through the JSON API as `token` (an admin's); its id.
    pub async fn file_for(&self, token: &str, requester: &str, reason: &str) -> String {
        let body = json!({ "requester": { "email": requester }, "fields": { "reason": reason } });
        let reply = self
            .http
            .post(self.url("/v1/flows/oncall/requests"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Files a request in flow `flow` with no fields through the JSON API; its id.
    pub async fn file_in(&self, flow: &str, token: &str) -> String {
        let reply = self
            .http
            .post(self.url(&format!("/v1/flows/{flow}/requests")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let body: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// A request as the API shows it to an admin.
    pub async fn get(&self, id: &str) -> Value {
        self.admin_get(&format!("/v1/requests/{id}")).await
    }

    /// What the JSON API answers an admin's `GET path`.
    pub async fn admin_get(&self, path: &str) -> Value {
        let text = self
            .http
            .get(self.url(path))
            .bearer_auth(DAVE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:.2000}"))
    }

    /// Signs in over plain HTTP; the session cookie (`name=value`).
    pub async fn session(&self, token: &str) -> String {
        let reply = self
            .http
            .post(self.url("/signin"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next=%2F"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 303);
        let cookie = reply.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_string()
    }

    /// The CSRF token a session's page carries.
    pub async fn csrf_of(&self, cookie: &str) -> String {
        let page = self
            .http
            .get(self.url("/"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        page[at..at + 64].to_string()
    }
}
