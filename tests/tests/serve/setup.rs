//! What the `warden serve` tests share: a config with four tokens, the probe's flows, a
//! harness that starts, restarts and calls the server, and waits on what it does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::serve::Server;
use warden_tests::web::TestServer;
use warden_tests::{Scratch, artifacts, toml_path};

pub(crate) const ALICE: &str = "alice-token-1111";
pub(crate) const BOB: &str = "bob-token-2222";
pub(crate) const CAROL: &str = "carol-token-3333";
pub(crate) const DAVE: &str = "dave-token-4444";

/// Tokens: alice and dave request, bob approves, carol is an admin. `flows` is appended.
pub(crate) fn config_text(scratch: &Scratch, serve: &str, flows: &str) -> String {
    for (name, token) in [
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
        ("dave", DAVE),
    ] {
        scratch.write(&format!("tokens/{name}"), format!("{token}\n"));
    }
    format!(
        r#"
[store]
path = "warden.db"

[serve]
{serve}

[serve.tokens.alice]
token_file = "tokens/alice"
user = "alice@example.com"
role = "requester"

[serve.tokens.dave]
token_file = "tokens/dave"
user = "dave@example.com"
role = "requester"

[serve.tokens.bob]
token_file = "tokens/bob"
user = "bob@example.com"
role = "approver"

[serve.tokens.carol]
token_file = "tokens/carol"
user = "carol@example.com"
role = "admin"

[environments.main]

{flows}
"#
    )
}

pub(crate) fn probe_flow(name: &str, action: &str, extra: &str) -> String {
    format!(
        "[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\n{extra}\n",
        toml_path(artifacts::PROBE)
    )
}

/// The flows most tests use.
pub(crate) fn standard_flows() -> String {
    [
        probe_flow("auto", "approve:on call", ""),
        probe_flow("human", "continue", ""),
        probe_flow("strict", "continue", "[flows.strict.fields.reason]\ntype = \"string\"\nrequired = true\n[flows.strict.fields.duration]\ntype = \"duration\"\n[flows.strict.fields.tickets]\ntype = \"list\"\n"),
        probe_flow("refuse", "deny:not today", ""),
        probe_flow("broken", "panic", ""),
        probe_flow("selfok", "continue", "allow_self_approval = true"),
        probe_flow("nohost", "http:GET http://127.0.0.1:9/nope", ""),
        format!(
            "[flows.allow]\nenvironment = \"main\"\nplugin = {}\nvars = {{ auto_approve = \"alice@example.com\" }}\n",
            toml_path(artifacts::ALLOWLIST)
        ),
    ]
    .concat()
}

pub(crate) struct Harness {
    pub(crate) scratch: Scratch,
    pub(crate) server: Option<Server>,
    pub(crate) http: reqwest::Client,
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Harness {
    pub(crate) async fn start(serve: &str, flows: &str) -> Self {
        let scratch = Scratch::new();
        scratch.config(&config_text(&scratch, serve, flows));
        let mut harness = Self {
            scratch,
            server: None,
            http: reqwest::Client::new(),
        };
        harness.restart().await;
        harness
    }

    pub(crate) async fn standard() -> Self {
        Self::start("", &standard_flows()).await
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.scratch.path().join("warden.toml")
    }

    /// Starts the server (again) on a fresh port, with the same config and store.
    pub(crate) async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        let listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::start(&self.config_path(), Some(listen))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.server = Some(server);
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.server.as_ref().unwrap().local_addr()
        )
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send_with(method, path, token, body, &[]).await
    }

    pub(crate) async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        reply(request.send().await.unwrap()).await
    }

    pub(crate) async fn submit(&self, flow: &str, token: &str, fields: Value) -> Reply {
        self.send(
            "POST",
            &format!("/v1/flows/{flow}/requests"),
            Some(token),
            Some(json!({ "fields": fields })),
        )
        .await
    }

    pub(crate) async fn get(&self, id: &str) -> Value {
        let reply = self
            .send("GET", &format!("/v1/requests/{id}"), Some(CAROL), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body
    }

    pub(crate) async fn decide(&self, id: &str, verb: &str, token: &str, reason: &str) -> Reply {
        self.send(
            "POST",
            &format!("/v1/requests/{id}/{verb}"),
            Some(token),
            Some(json!({ "reason": reason })),
        )
        .await
    }

    pub(crate) async fn metrics(&self) -> String {
        let reply = self.send("GET", "/metrics", None, None).await;
        assert_eq!(reply.status, 200);
        reply.text
    }

    /// Submits a request to `flow` as alice without waiting: for hooks still in flight.
    pub(crate) fn submit_in_background(&self, flow: &str) -> tokio::task::JoinHandle<Reply> {
        let request = self
            .http
            .post(self.url(&format!("/v1/flows/{flow}/requests")))
            .bearer_auth(ALICE)
            .body("{}");
        tokio::spawn(async move { reply(request.send().await.unwrap()).await })
    }

    /// Polls until request `id` is in `state`, or panics after `within`.
    pub(crate) async fn wait_for_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let request = self.get(id).await;
            if request["state"] == state {
                return request;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} is {} after {within:?}, expected {state}",
                request["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn stop(mut self) -> Scratch {
        self.server.take().unwrap().shutdown().await.unwrap();
        self.scratch
    }
}

pub(crate) async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

pub(crate) fn hooks(request: &Value) -> Vec<(String, String)> {
    request["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "hook")
        .map(|e| {
            (
                e["hook"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn transitions(request: &Value) -> Vec<String> {
    request["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "transition")
        .map(|e| e["to"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The value of the metric line starting with `prefix` (name and labels), or 0.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Waits until the plugin's slow HTTP call has reached the test server.
pub(crate) async fn wait_for_hit(web: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while web.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the plugin never called the test server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn slow_flows(web: &TestServer, action_path: &str) -> String {
    probe_flow(
        "slow",
        &format!("http:GET {}{action_path}", web.origin()),
        &format!("allowed_hosts = [{:?}]", web.origin()),
    )
}

/// Store writes (`warden_store_writes_total`) that `step` costs.
pub(crate) async fn writes_of<F: std::future::Future<Output = Reply>>(
    h: &Harness,
    step: F,
) -> (f64, Reply) {
    let before = metric(&h.metrics().await, "warden_store_writes_total");
    let reply = step.await;
    let after = metric(&h.metrics().await, "warden_store_writes_total");
    (after - before, reply)
}
