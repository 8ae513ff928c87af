//! `warden serve`'s approval policies end to end through its HTTP API: per-flow approvers
//! and groups, several approvals from different people, revoking escalated access, what
//! `ignore` from `on_request` does, and the whole requester in the hooks after the request
//! step (told by the witness plugin, whose reasons say who each hook saw).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::serve::Server;
use warden_tests::{Scratch, artifacts, toml_path};

const ALICE: &str = "alice-token-1111"; // requester
const DAVE: &str = "dave-token-4444"; // requester
const BOB: &str = "bob-token-2222"; // approver, in group oncall
const ERIN: &str = "erin-token-5555"; // approver, in group oncall
const FRANK: &str = "frank-token-6666"; // approver, in no group
const CAROL: &str = "carol-token-3333"; // admin
/// Not an API token: what a scraper of `/metrics` sends when the config asks for one.
const SCRAPER: &str = "scraper-token-7777";

fn config_text(scratch: &Scratch) -> String {
    let mut tokens = String::new();
    for (name, token, role) in [
        ("alice", ALICE, "requester"),
        ("dave", DAVE, "requester"),
        ("bob", BOB, "approver"),
        ("erin", ERIN, "approver"),
        ("frank", FRANK, "approver"),
        ("carol", CAROL, "admin"),
    ] {
        scratch.write(&format!("tokens/{name}"), format!("{token}\n"));
        tokens.push_str(&format!(
            "[serve.tokens.{name}]\ntoken_file = \"tokens/{name}\"\nuser = \"{name}@example.com\"\nrole = \"{role}\"\n"
        ));
    }
    scratch.write("tokens/metrics", format!("{SCRAPER}\n"));
    let flow = |name: &str, extra: &str| {
        format!(
            "[flows.{name}]\nenvironment = \"main\"\nplugin = {}\n{extra}\n[flows.{name}.fields.duration]\ntype = \"duration\"\n",
            toml_path(artifacts::WITNESS)
        )
    };
    format!(
        "[store]\npath = \"warden.db\"\n[serve]\n{tokens}\n[environments.main]\n\
         [groups.oncall]\nmembers = [\"Bob@example.com\", \"erin@example.com\"]\n{}{}{}{}{}",
        flow("gated", "approvers = [\"group:oncall\"]"),
        flow(
            "four",
            "approvers = [\"group:oncall\", \"frank@example.com\"]\napprovals_required = 2"
        ),
        flow("open", ""),
        flow("quiet", "vars = { action = \"ignore:not for humans\" }"),
        // Approves, and cannot remove access: its on_deescalate outlasts its deadline.
        flow(
            "stuck",
            "vars = { action = \"approve:ok\", deescalate_action = \"sleep:3000\" }\nlimits = { timeout_ms = 300 }"
        ),
    )
}

struct Harness {
    _scratch: Scratch,
    server: Server,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    body: Value,
    text: String,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `serve` lines added to `[serve]`.
    async fn start_with(serve: &str) -> Self {
        let scratch = Scratch::new();
        let text = config_text(&scratch).replacen("[serve]\n", &format!("[serve]\n{serve}\n"), 1);
        let path = scratch.config(&text);
        let server = Server::start(&path, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            _scratch: scratch,
            server,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let url = format!("http://{}{path}", self.server.local_addr());
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// Files a request to `flow` as alice (with `requester`, when given) and returns its id.
    async fn submit(&self, flow: &str, requester: Option<Value>, expect: &str) -> String {
        let mut body = json!({ "fields": { "duration": "1h" } });
        if let Some(requester) = requester {
            body["requester"] = requester;
        }
        let r = self
            .send(
                "POST",
                &format!("/v1/flows/{flow}/requests"),
                ALICE,
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["state"], expect, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn act(&self, id: &str, verb: &str, token: &str, reason: &str) -> Reply {
        self.send(
            "POST",
            &format!("/v1/requests/{id}/{verb}"),
            token,
            Some(json!({ "reason": reason })),
        )
        .await
    }

    /// An approval by admin carol naming `email` as the approver.
    async fn approve_naming(&self, id: &str, email: &str) -> Reply {
        let named = json!({ "approver": { "email": email }, "reason": "ok" });
        self.send(
            "POST",
            &format!("/v1/requests/{id}/approve"),
            CAROL,
            Some(named),
        )
        .await
    }

    /// The refused decisions the audit log holds.
    async fn refusals_audited(&self) -> usize {
        self.audit()
            .await
            .iter()
            .filter(|e| e["action"] == "decide-refused")
            .count()
    }

    async fn get(&self, id: &str) -> Value {
        let r = self
            .send("GET", &format!("/v1/requests/{id}"), CAROL, None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    async fn listed(&self, token: &str) -> Vec<String> {
        let r = self.send("GET", "/v1/requests", token, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    async fn audit(&self) -> Vec<Value> {
        let r = self.send("GET", "/v1/admin/audit", CAROL, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["entries"].as_array().unwrap().clone()
    }

    async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = self.get(id).await;
            if request["state"] == state {
                return request;
            }
            assert!(Instant::now() < deadline, "{id} is {}", request["state"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn entries<'a>(request: &'a Value, kind: &str) -> Vec<&'a Value> {
    request["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// The reason the hook `hook` recorded (the witness says who it saw).
fn hook_reason(request: &Value, hook: &str) -> String {
    entries(request, "hook")
        .into_iter()
        .find(|e| e["hook"] == hook)
        .unwrap_or_else(|| panic!("no {hook} in {request:#}"))["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_flows_approvers_decide_and_see_its_pending_requests() {
    let h = Harness::start().await;
    let id = h.submit("gated", None, "pending").await;
    for verb in ["approve", "deny"] {
        let r = h.act(&id, verb, FRANK, "me").await;
        assert_eq!(r.status, 403, "{}", r.text);
        assert_eq!(
            r.body["error"],
            "frank@example.com may not decide requests of flow `gated`: only its approvers may (group:oncall)"
        );
    }
    // Frank may not decide it, so he does not see it while it waits; bob and alice do.
    assert!(!h.listed(FRANK).await.contains(&id));
    let r = h
        .send("GET", &format!("/v1/requests/{id}"), FRANK, None)
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.text.contains("shown only to those who may decide it"),
        "{}",
        r.text
    );
    assert!(h.listed(BOB).await.contains(&id));
    assert!(h.listed(ALICE).await.contains(&id));
    assert_eq!(
        h.get(&id).await["state"],
        "pending",
        "refusals change nothing"
    );
    let refused = h.audit().await;
    assert!(refused.iter().any(|e| e["action"] == "decide-refused"
        && e["actor"] == "frank@example.com"
        && e["request_id"] == id.as_str()));

    // Any one of the group's members decides: erin's deny ends it.
    let r = h.act(&id, "deny", ERIN, "not now").await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("denied")),
        "{}",
        r.text
    );
    // Decided, it is visible to every approver again.
    assert!(h.listed(FRANK).await.contains(&id));

    // bob is in the group by email, whatever its case in the config.
    let id = h.submit("gated", None, "pending").await;
    let r = h.act(&id, "approve", BOB, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    // A flow without `approvers` is open to any approver, frank too.
    let id = h.submit("open", None, "pending").await;
    let r = h.act(&id, "approve", FRANK, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_approvals_from_different_people_approve_and_one_deny_ends_it() {
    let h = Harness::start().await;
    let id = h.submit("four", None, "pending").await;
    let r = h.act(&id, "approve", BOB, "looks fine").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["state"], "pending",
        "one approval of two: still pending"
    );
    // The same person again is refused, and not counted.
    let r = h.act(&id, "approve", BOB, "really").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.body["error"],
        format!(
            "bob@example.com already approved `{id}`; it needs 2 approvals from different people (1 so far)"
        )
    );
    // An admin is not one of the flow's approvers either.
    assert_eq!(h.act(&id, "approve", CAROL, "x").await.status, 403);
    assert_eq!(h.get(&id).await["state"], "pending");

    let r = h.act(&id, "approve", FRANK, "second pair of eyes").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let approvals: Vec<(String, u64)> = entries(&r.body, "approval")
        .iter()
        .map(|e| {
            assert_eq!(e["required"], 2);
            (
                e["approver"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        approvals,
        [
            ("bob@example.com".to_string(), 1),
            ("frank@example.com".to_string(), 2)
        ]
    );
    let approved = entries(&r.body, "transition")
        .into_iter()
        .find(|e| e["to"] == "approved")
        .unwrap()
        .clone();
    assert_eq!(approved["actor"], "frank@example.com");
    let audit = h.audit().await;
    let partial: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "approval" && e["request_id"] == id.as_str())
        .collect();
    assert_eq!(partial.len(), 2, "each approval is audited: {audit:#?}");
    assert_eq!(partial[0]["actor"], "bob@example.com");
    assert_eq!(partial[0]["detail"]["reason"], "looks fine");

    // One approval, then a deny by another allowed approver: denied.
    let id = h.submit("four", None, "pending").await;
    assert_eq!(
        h.act(&id, "approve", ERIN, "ok").await.body["state"],
        "pending"
    );
    let r = h.act(&id, "deny", BOB, "no").await;
    assert_eq!(r.body["state"], "denied", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_ends_access_early_running_the_deescalate_hooks() {
    let h = Harness::start().await;
    let mut escalated = Vec::new();
    for flow in ["open", "open", "gated"] {
        let id = h.submit(flow, None, "pending").await;
        assert_eq!(
            h.act(&id, "approve", BOB, "ok").await.body["state"],
            "escalated"
        );
        escalated.push(id);
    }
    let [own, approvers, gated] = [&escalated[0], &escalated[1], &escalated[2]];

    // Another requester, and an approver the gated flow does not name, may not.
    let r = h.act(own, "revoke", DAVE, "mine now").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = h.act(gated, "revoke", FRANK, "x").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text
            .contains("only its approvers may (group:oncall), the requester, or an admin"),
        "{}",
        r.text
    );
    assert_eq!(h.get(gated).await["state"], "escalated");

    // The requester ends their own access, saying why.
    let r = h.act(own, "revoke", ALICE, "done early").await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("deescalated")),
        "{}",
        r.text
    );
    let revoked = entries(&r.body, "transition")
        .into_iter()
        .find(|e| e["to"] == "deescalated")
        .unwrap()
        .clone();
    assert_eq!(revoked["step"], "revoke");
    assert_eq!(revoked["actor"], "alice@example.com");
    assert_eq!(
        revoked["reason"],
        "revoked by alice@example.com: done early"
    );
    // Both deescalate hooks ran, told alice acts; on_deescalate's `ignore` did not keep the
    // access.
    assert!(hook_reason(&r.body, "on_deescalate").starts_with("acting=alice@example.com "));
    assert!(hook_reason(&r.body, "after_deescalate").starts_with("acting=alice@example.com "));
    let ran: Vec<(&str, &str)> = entries(&r.body, "hook")
        .iter()
        .filter(|e| e["hook"].as_str().unwrap().ends_with("deescalate"))
        .map(|e| (e["hook"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ran,
        [("on_deescalate", "ignore"), ("after_deescalate", "approve")]
    );
    let audit = h.audit().await;
    let line = audit
        .iter()
        .find(|e| e["action"] == "revoke" && e["request_id"] == own.as_str())
        .unwrap_or_else(|| panic!("no revoke in {audit:#?}"));
    assert_eq!(line["actor"], "alice@example.com");
    assert_eq!(
        line["detail"]["reason"],
        "revoked by alice@example.com: done early"
    );

    // An approver of the flow, and an admin of any flow.
    let r = h.act(approvers, "revoke", FRANK, "").await;
    assert_eq!(r.body["state"], "deescalated", "{}", r.text);
    assert_eq!(
        entries(&r.body, "transition").last().unwrap()["reason"],
        "revoked by frank@example.com"
    );
    let r = h.act(gated, "revoke", CAROL, "incident over").await;
    assert_eq!(r.body["state"], "deescalated", "{}", r.text);

    // Only escalated access can be revoked.
    let r = h.act(gated, "revoke", CAROL, "again").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text
            .contains("is deescalated; only escalated requests can be revoked")
    );
    let pending = h.submit("open", None, "pending").await;
    assert_eq!(h.act(&pending, "revoke", ALICE, "x").await.status, 409);
    let long = "x".repeat(2001);
    assert_eq!(h.act(&pending, "revoke", ALICE, &long).await.status, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_from_on_request_closes_the_request_without_asking_a_human() {
    let h = Harness::start().await;
    let id = h.submit("quiet", None, "ignored").await;
    let request = h.get(&id).await;
    assert_eq!(request["decision"], "ignore");
    assert_eq!(request["reason"], "not for humans");
    let last = *entries(&request, "transition").last().unwrap();
    assert_eq!(
        (&last["from"], &last["to"], &last["actor"], &last["reason"]),
        (
            &json!("requested"),
            &json!("ignored"),
            &json!("warden"),
            &json!("not for humans")
        )
    );
    // No human is asked, and none can decide it.
    let r = h.act(&id, "approve", BOB, "anyway").await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = h.send("GET", "/v1/requests?state=ignored", BOB, None).await;
    assert_eq!(r.body["requests"][0]["id"], id.as_str());
    let r = h.send("GET", "/v1/requests?state=pending", BOB, None).await;
    assert_eq!(r.body["requests"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_after_the_request_step_see_the_whole_requester() {
    let h = Harness::start().await;
    let alice = json!({
        "email": "alice@example.com", "username": "alice", "id": "U123",
        "first_name": "Alice", "last_name": "Liddell",
    });
    let whole = "requester=alice@example.com|alice|U123|Alice|Liddell";
    // Only an admin names a user's username, id or names (the next test: others may not).
    let r = h
        .send(
            "POST",
            "/v1/flows/open/requests",
            CAROL,
            Some(json!({ "requester": alice, "fields": { "duration": "1h" } })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h.act(&id, "approve", BOB, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    for hook in ["after_approve", "after_escalate"] {
        assert_eq!(
            hook_reason(&r.body, hook),
            format!("acting=bob@example.com {whole}"),
            "{hook}"
        );
    }
    let r = h.act(&id, "revoke", CAROL, "").await;
    assert_eq!(
        hook_reason(&r.body, "after_deescalate"),
        format!("acting=carol@example.com {whole}")
    );

    // Access that runs out: the expiry's hooks see the whole requester too, acting for
    // themselves.
    let body = json!({
        "requester": { "email": "alice@example.com", "username": "al", "first_name": "A" },
        "fields": { "duration": { "seconds": 1 } },
    });
    let r = h
        .send("POST", "/v1/flows/open/requests", CAROL, Some(body))
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    h.act(&id, "approve", BOB, "ok").await;
    let request = h.wait_for_state(&id, "deescalated").await;
    assert_eq!(
        hook_reason(&request, "on_deescalate"),
        "acting=alice@example.com requester=alice@example.com|al|-|A|-"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_name_a_users_username_id_or_names() {
    let h = Harness::start().await;
    // A requester naming herself by email alone is fine; naming her own `username` (which a
    // plugin may grant access to) is not, nor is any other part of who she is.
    for (field, value) in [
        ("username", "bob"),
        ("id", "U-bob"),
        ("first_name", "Bob"),
        ("last_name", "Brown"),
    ] {
        let body = json!({
            "requester": { "email": "alice@example.com", field: value },
            "fields": { "duration": "1h" },
        });
        let r = h
            .send("POST", "/v1/flows/open/requests", ALICE, Some(body))
            .await;
        assert_eq!(r.status, 403, "{field}: {}", r.text);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("may not set the requester's `{field}`")),
            "{}",
            r.text
        );
    }
    let r = h.send("GET", "/v1/requests", CAROL, None).await;
    assert_eq!(r.body["requests"], json!([]), "nothing was filed");

    // Approvers are known by their token's email in the same way.
    let id = h
        .submit(
            "open",
            Some(json!({ "email": "alice@example.com" })),
            "pending",
        )
        .await;
    let r = h
        .send(
            "POST",
            &format!("/v1/requests/{id}/approve"),
            BOB,
            Some(json!({ "approver": { "email": "bob@example.com", "username": "carol" } })),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(h.get(&id).await["state"], "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_may_not_remove_a_flow_whose_plugin_granted_access_still_held() {
    let h = Harness::start().await;
    let id = h.submit("open", None, "pending").await;
    let r = h.act(&id, "approve", BOB, "fine").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let text = config_text(&h._scratch);
    let (start, end) = (
        text.find("[flows.open]").unwrap(),
        text.find("[flows.quiet]").unwrap(),
    );
    h._scratch
        .config(&format!("{}{}", &text[..start], &text[end..]));
    // Only the flow's plugin removes what it granted: an expiry or a revoke without it
    // would say the access was removed when nothing removed it.
    let r = h.send("POST", "/v1/admin/reload", CAROL, None).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text.contains(&format!(
            "flow `open` is removed, but access its plugin granted is still held ({id})"
        )),
        "{}",
        r.text
    );
    // The old config serves on: the request is revoked through its plugin, and then the
    // flow may go.
    let r = h.act(&id, "revoke", ALICE, "done").await;
    assert_eq!(r.body["state"], "deescalated", "{}", r.text);
    let r = h.send("POST", "/v1/admin/reload", CAROL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flow_a_reload_removed_leaves_its_requests_to_admins_to_deny_and_none_to_approve() {
    let h = Harness::start().await;
    let id = h.submit("four", None, "pending").await;
    let r = h.act(&id, "approve", BOB, "one of two").await;
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    // The flow (two approvals from its approvers) leaves the config.
    let text = config_text(&h._scratch);
    let (start, end) = (
        text.find("[flows.four]").unwrap(),
        text.find("[flows.open]").unwrap(),
    );
    h._scratch
        .config(&format!("{}{}", &text[..start], &text[end..]));
    let r = h.send("POST", "/v1/admin/reload", CAROL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Its rules went with it: no one approves (the second approval would have escalated
    // with no hook to grant anything), whether or not they were its approvers.
    for token in [ERIN, FRANK, CAROL] {
        let r = h.act(&id, "approve", token, "").await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("which the config no longer has"),
            "{}",
            r.text
        );
    }
    // Approvers may not deny it nor see it pending; its requester still sees it.
    let r = h.act(&id, "deny", ERIN, "").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("no longer in the config"), "{}", r.text);
    let r = h
        .send("GET", "/v1/requests?state=pending", ERIN, None)
        .await;
    assert_eq!(r.body["requests"], json!([]), "{}", r.text);
    let r = h
        .send("GET", "/v1/requests?state=pending", ALICE, None)
        .await;
    assert_eq!(r.body["requests"][0]["id"], id.as_str(), "{}", r.text);
    // An admin clears it.
    let r = h.act(&id, "deny", CAROL, "flow retired").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "denied", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tokens_from_one_address_are_cut_off_for_a_minute_right_guess_or_not() {
    let h = Harness::start().await;
    guess_api_tokens(&h, 0..warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE).await;
    // Over the limit the token is not even compared: the right one is refused too.
    let r = list_as_carol(&h).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    let text = r.text().await.unwrap();
    assert!(text.contains("too many unknown tokens"), "{text}");
    // Counted where an operator looks.
    let metrics = h
        .http
        .get(format!("http://{}/metrics", h.server.local_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "warden_api_unknown_tokens_total {}",
            warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE
        )),
        "{metrics}"
    );
    // The console's sign-in compares no token from there either.
    let r = sign_in(&h, CAROL).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("Too many unknown tokens"));
}

async fn sign_in(h: &Harness, token: &str) -> reqwest::Response {
    h.http
        .post(format!("http://{}/signin", h.server.local_addr()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_guessed_at_the_consoles_sign_in_count_against_the_apis_limit() {
    let h = Harness::start().await;
    let limit = warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE;
    // The sign-in's own limit is 10 tries a minute; each wrong one counts for the API too.
    for i in 0..10 {
        assert_eq!(sign_in(&h, &format!("guess-{i}")).await.status(), 401);
    }
    guess_api_tokens(&h, 10..limit).await;
    assert_eq!(list_as_carol(&h).await.status(), 429);
}

/// Wrong tokens `guess-N` for each N of `range`, each refused 401.
async fn guess_api_tokens(h: &Harness, range: std::ops::Range<u32>) {
    for i in range {
        let r = h
            .send("GET", "/v1/requests", &format!("guess-{i}"), None)
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
}

/// `GET /v1/requests` with the right token, an admin's.
async fn list_as_carol(h: &Harness) -> reqwest::Response {
    let url = format!("http://{}/v1/requests", h.server.local_addr());
    h.http.get(&url).bearer_auth(CAROL).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_come_a_page_at_a_time_filtered_before_they_are_cut() {
    let h = Harness::start().await;
    let open = h.submit("open", None, "pending").await;
    let mut gated = Vec::new();
    for _ in 0..3 {
        gated.push(h.submit("gated", None, "pending").await);
    }
    // Frank may not decide `gated`: its newer requests, hidden from him, take no place on his
    // page.
    let r = h
        .send("GET", "/v1/requests?state=pending&limit=1", FRANK, None)
        .await;
    assert_eq!(r.body["requests"][0]["id"], open.as_str(), "{}", r.text);
    assert_eq!(r.body["requests"].as_array().unwrap().len(), 1);

    // Carol sees all four, two at a time, each page going on from the last.
    let mut seen: Vec<String> = Vec::new();
    let mut path = "/v1/requests?limit=2".to_string();
    loop {
        let r = h.send("GET", &path, CAROL, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["requests"].as_array().unwrap();
        assert!(page.len() <= 2, "{}", r.text);
        seen.extend(page.iter().map(|v| v["id"].as_str().unwrap().to_string()));
        match r.body["next"].as_str() {
            Some(next) => path = format!("/v1/requests?limit=2&before={next}"),
            None => break,
        }
        assert!(seen.len() <= 4, "{seen:?}");
    }
    // Each once (requests filed in the same millisecond are ordered by id, not by filing).
    let mut all: Vec<String> = gated.iter().chain([&open]).cloned().collect();
    all.sort();
    seen.sort();
    assert_eq!(seen, all);
    let r = h.send("GET", "/v1/requests?flow=open", CAROL, None).await;
    assert_eq!(
        r.body["requests"].as_array().unwrap().len(),
        1,
        "{}",
        r.text
    );
    assert_eq!(r.body["next"], Value::Null, "{}", r.text);

    for bad in ["limit=0", "limit=201", "before=yesterday", "order=oldest"] {
        let r = h
            .send("GET", &format!("/v1/requests?{bad}"), CAROL, None)
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_counts_only_while_its_approver_is_one() {
    let h = Harness::start().await;
    let id = h.submit("four", None, "pending").await;
    let r = h.act(&id, "approve", FRANK, "one of two").await;
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    // A reload takes Frank off flow `four`'s approvers.
    let text = config_text(&h._scratch).replace(
        "approvers = [\"group:oncall\", \"frank@example.com\"]",
        "approvers = [\"group:oncall\"]",
    );
    h._scratch.config(&text);
    let r = h.send("POST", "/v1/admin/reload", CAROL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Bob's approval is then the first that counts, not the second.
    let r = h.act(&id, "approve", BOB, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    let r = h.act(&id, "approve", ERIN, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_naming_approvers_counts_once_and_is_named_beside_them() {
    let h = Harness::start().await;
    let id = h.submit("four", None, "pending").await;
    let r = h.approve_naming(&id, "bob@example.com").await;
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    // A second approver named by the same admin is not a second person's approval.
    let r = h.approve_naming(&id, "erin@example.com").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.text.contains("carol@example.com already approved"),
        "{}",
        r.text
    );
    // Erin herself makes it two, and the history says who named whom.
    let r = h.act(&id, "approve", ERIN, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let request = h.get(&id).await;
    let approvals = entries(&request, "approval");
    assert_eq!(approvals[0]["approver"], "bob@example.com");
    assert_eq!(approvals[0]["by"], "carol@example.com");
    let audit = h.send("GET", "/v1/admin/audit", CAROL, None).await;
    assert!(
        audit.text.contains("\"by\":\"carol@example.com\""),
        "{}",
        audit.text
    );
    // The approval's own line names the admin beside the approver, as a decision's does.
    let entries = audit.body["entries"].as_array().expect("audit entries");
    let approval = entries
        .iter()
        .find(|e| e["action"] == "approval" && e["request_id"] == id.as_str())
        .expect("the approval's audit line");
    assert_eq!(
        approval["actor"], "bob@example.com (named by admin carol@example.com)",
        "{approval}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_a_reload_makes_enough_are_completed_by_any_who_gave_them() {
    let h = Harness::start().await;
    let reload_requiring = |n: u32| {
        let text = config_text(&h._scratch).replace(
            "approvals_required = 2",
            &format!("approvals_required = {n}"),
        );
        h._scratch.config(&text);
        async {
            let r = h.send("POST", "/v1/admin/reload", CAROL, None).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    reload_requiring(3).await;
    let id = h.submit("four", None, "pending").await;
    for token in [BOB, ERIN] {
        let r = h.act(&id, "approve", token, "ok").await;
        assert_eq!(r.body["state"], "pending", "{}", r.text);
    }
    let r = h.act(&id, "approve", BOB, "again").await;
    assert_eq!(r.status, 409, "two of three: {}", r.text);
    // Two now suffice: either of the two completes it, with no third approval noted.
    reload_requiring(2).await;
    let r = h.act(&id, "approve", BOB, "enough now").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    assert_eq!(entries(&h.get(&id).await, "approval").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decisions_reason_is_bounded_as_a_revokes_is() {
    let h = Harness::start().await;
    let id = h.submit("open", None, "pending").await;
    for verb in ["approve", "deny"] {
        let r = h.act(&id, verb, BOB, &"r".repeat(2001)).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains("longer than 2000 bytes"), "{}", r.text);
    }
    assert_eq!(h.get(&id).await["state"], "pending");
    let r = h.act(&id, "deny", BOB, &"r".repeat(2000)).await;
    assert_eq!(r.body["state"], "denied", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_files_at_most_new_requests_per_minute_and_admins_are_not_counted() {
    let h = Harness::start_with("new_requests_per_minute = 3").await;
    for _ in 0..3 {
        h.submit("open", None, "pending").await;
    }
    let r = h
        .send(
            "POST",
            "/v1/flows/open/requests",
            ALICE,
            Some(json!({ "fields": { "duration": "1h" } })),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(
        r.text.contains("serve.new_requests_per_minute"),
        "{}",
        r.text
    );
    // Others are not held up by her, nor is an admin filing for her.
    let r = h
        .send("POST", "/v1/flows/open/requests", DAVE, Some(json!({})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let for_alice = json!({ "requester": { "email": "alice@example.com" } });
    let r = h
        .send("POST", "/v1/flows/open/requests", CAROL, Some(for_alice))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_refused_filings_do_not_count_as_new_requests() {
    let h = Harness::start_with("new_requests_per_minute = 2").await;
    let file = |key: Option<&'static str>, flow: &'static str, duration: &'static str| {
        let url = format!("http://{}/v1/flows/{flow}/requests", h.server.local_addr());
        let mut request = h
            .http
            .post(url)
            .bearer_auth(ALICE)
            .header("content-type", "application/json")
            .body(json!({ "fields": { "duration": duration } }).to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(file(Some("k-1"), "open", "1h").await, 201);
    // A retry (its answer lost, say) is the same request, however often.
    for _ in 0..3 {
        assert_eq!(file(Some("k-1"), "open", "1h").await, 200);
    }
    // Refused, nothing filed: a flow that is not there, a field that is not valid.
    assert_eq!(file(None, "nowhere", "1h").await, 404);
    assert_eq!(file(None, "open", "forever").await, 422);
    assert_eq!(file(None, "open", "1h").await, 201);
    assert_eq!(file(None, "open", "1h").await, 429, "the third new one");
    // At the limit, a retry of a request filed before is still its replay; a new key is not.
    assert_eq!(file(Some("k-1"), "open", "1h").await, 200);
    assert_eq!(file(Some("k-2"), "open", "1h").await, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_reads_back_a_page_at_a_time() {
    let h = Harness::start().await;
    for _ in 0..3 {
        h.submit("open", None, "pending").await;
    }
    let all = h.send("GET", "/v1/admin/audit", CAROL, None).await;
    let all = all.body["entries"].as_array().unwrap().clone();
    assert!(all.len() >= 4, "{all:?}");
    let seqs = |entries: &[Value]| -> Vec<i64> {
        entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
    };
    // The newest two, oldest first; then the two before them, from the first one's `seq`.
    let r = h.send("GET", "/v1/admin/audit?limit=2", CAROL, None).await;
    let newest = r.body["entries"].as_array().unwrap().clone();
    assert_eq!(seqs(&newest), seqs(&all[all.len() - 2..]));
    let before = newest[0]["seq"].as_i64().unwrap();
    let r = h
        .send(
            "GET",
            &format!("/v1/admin/audit?limit=2&before={before}"),
            CAROL,
            None,
        )
        .await;
    let older = r.body["entries"].as_array().unwrap().clone();
    assert_eq!(seqs(&older), seqs(&all[all.len() - 4..all.len() - 2]));
    let r = h
        .send("GET", "/v1/admin/audit?before=yesterday", CAROL, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["error"].is_string(), "a JSON error: {}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_proxy_the_unknown_token_limit_can_be_turned_off() {
    let h = Harness::start_with("unknown_tokens_per_minute = 0").await;
    for i in 0..warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE + 5 {
        let r = h
            .send("GET", "/v1/requests", &format!("guess-{i}"), None)
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = h.send("GET", "/v1/requests", CAROL, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_client_is_counted_apart() {
    let h = Harness::start_with("trusted_proxies = [\"127.0.0.1\"]").await;
    let url = format!("http://{}/v1/requests", h.server.local_addr());
    let from = |client: &'static str, token: String| {
        h.http
            .get(&url)
            .bearer_auth(token)
            .header("x-forwarded-for", client)
            .send()
    };
    for i in 0..warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE {
        let r = from("192.0.2.1", format!("guess-{i}")).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(from("192.0.2.1", CAROL.into()).await.unwrap().status(), 429);
    // Another client behind the same proxy is not held up.
    assert_eq!(from("192.0.2.2", CAROL.into()).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_naming_another_approver_does_not_approve_their_own_request() {
    let h = Harness::start().await;
    let r = h
        .send(
            "POST",
            "/v1/flows/open/requests",
            CAROL,
            Some(json!({ "fields": { "duration": "1h" } })),
        )
        .await;
    assert_eq!(r.body["state"], "pending", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = h.approve_naming(&id, "bob@example.com").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("carol@example.com"), "{}", r.text);
    assert_eq!(h.get(&id).await["state"], "pending");
    // Bob himself may.
    let r = h.act(&id, "approve", BOB, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_who_filed_a_request_for_someone_may_not_approve_it() {
    let h = Harness::start().await;
    // Admin carol files for alice, naming herself as the username a plugin may grant.
    async fn filed(h: &Harness, flow: &str) -> String {
        let body = json!({
            "requester": { "email": "alice@example.com", "username": "carol", "id": "carol-uid" },
            "fields": { "duration": "1h" },
        });
        let r = h
            .send(
                "POST",
                &format!("/v1/flows/{flow}/requests"),
                CAROL,
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["requester"], "alice@example.com", "{}", r.text);
        assert_eq!(r.body["created_by"], "carol@example.com", "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }
    let id = filed(&h, "open").await;
    let r = h.act(&id, "approve", CAROL, "mine").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text.contains("carol@example.com filed") && r.text.contains("allow_self_approval"),
        "{}",
        r.text
    );
    // Nor by naming another approver.
    let r = h.approve_naming(&id, "bob@example.com").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(h.get(&id).await["state"], "pending");
    // Another approver may; and the filer may still deny.
    let r = h.act(&id, "approve", BOB, "ok").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let id = filed(&h, "open").await;
    let r = h.act(&id, "deny", CAROL, "filed in error").await;
    assert_eq!(r.body["state"], "denied", "{}", r.text);
    // A request alice filed herself shows her as its filer.
    let own = h.submit("open", None, "pending").await;
    assert_eq!(h.get(&own).await["created_by"], "alice@example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_decisions_in_a_loop_keep_no_one_else_waiting_and_are_audited_within_a_bound() {
    let h = std::sync::Arc::new(Harness::start().await);
    let gated = h.submit("gated", None, "pending").await;
    // Frank may not decide `gated`'s requests.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    // Requests of `four` (two approvals) bob approved once, approving them again in a loop;
    // and alice revoking her own pending request in a loop. Each is refused (409), and
    // neither may keep the request from its approvers.
    let mut fours = Vec::new();
    for _ in 0..5 {
        let id = h.submit("four", None, "pending").await;
        let r = h.act(&id, "approve", BOB, "ok").await;
        assert_eq!(r.body["state"], "pending", "{}", r.text);
        fours.push(id);
    }
    let other_refusals = {
        let (h, stop, fours, gated) = (h.clone(), stop.clone(), fours.clone(), gated.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &fours {
                    let r = h.act(id, "approve", BOB, "again").await;
                    assert_eq!(r.status, 409, "{}", r.text);
                }
                let r = h.act(&gated, "revoke", ALICE, "never granted").await;
                assert_eq!(r.status, 409, "{}", r.text);
            }
        })
    };
    for _ in 0..4 {
        let (h, stop, gated) = (h.clone(), stop.clone(), gated.clone());
        loops.push(tokio::spawn(async move {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = h.act(&gated, "approve", FRANK, "let me").await;
                assert_eq!(r.status, 403, "{}", r.text);
                refused += 1;
            }
            refused
        }));
    }
    // Meanwhile those who may decide are never told the request is busy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let id = h.submit("gated", None, "pending").await;
        let r = h.act(&id, "approve", BOB, "ok").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = h.act(&id, "revoke", CAROL, "done").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for id in &fours {
        let r = h.act(id, "approve", ERIN, "ok").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["state"], "escalated", "{}", r.text);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // (Bob approving one erin escalated: refused as not pending, 409 as well.)
    other_refusals.await.unwrap();
    let mut refused = 0;
    for l in loops {
        refused += l.await.unwrap();
    }
    let r = h.act(&gated, "approve", ERIN, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(refused > 20, "only {refused} refusals were tried");
    assert_eq!(h.refusals_audited().await, 20, "of {refused} refusals");
    let metrics = h.send("GET", "/metrics", CAROL, None).await.text;
    assert!(
        metrics.contains(&format!(
            "warden_api_refusals_not_audited_total {}",
            refused - 20
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_in_a_reason_an_id_or_a_filter_is_refused_or_finds_nothing() {
    // PostgreSQL's text cannot hold a NUL: refused before anything is written, on every
    // store alike.
    let h = Harness::start().await;
    let id = h.submit("open", None, "pending").await;
    for (verb, token) in [("approve", BOB), ("deny", BOB)] {
        let r = h.act(&id, verb, token, "ok\u{0}").await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains("NUL"), "{}", r.text);
    }
    assert_eq!(h.act(&id, "approve", BOB, "ok").await.status, 200);
    let r = h.act(&id, "revoke", ALICE, "done\u{0}").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(h.get(&id).await["state"], "escalated");
    let r = h.send("GET", "/v1/requests/a%00b", CAROL, None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    for query in ["flow=a%00", "before=1-a%00"] {
        let r = h
            .send("GET", &format!("/v1/requests?{query}"), CAROL, None)
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        assert_eq!(r.body["requests"], json!([]), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admins_refusals_are_audited_within_the_bound_whoever_they_name() {
    let h = Harness::start().await;
    let id = h.submit("gated", None, "pending").await;
    for i in 0..25 {
        let r = h.approve_naming(&id, &format!("x{i}@example.com")).await;
        assert_eq!(r.status, 403, "{}", r.text);
    }
    assert_eq!(h.refusals_audited().await, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_ask_for_their_own_token_when_the_config_sets_one() {
    let h = Harness::start_with("metrics_token_file = \"tokens/metrics\"").await;
    let scrape = |token: Option<&'static str>| {
        let mut request = h
            .http
            .get(format!("http://{}/metrics", h.server.local_addr()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, text) = scrape(None).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("missing `Authorization: Bearer <token>`"),
        "{text}"
    );
    // An API token, even an admin's, is not the scraper's.
    let (status, text) = scrape(Some(CAROL)).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unknown token"), "{text}");
    let (status, text) = scrape(Some(SCRAPER)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("warden_api_unknown_tokens_total 1"),
        "the admin's token tried on /metrics is counted as a guess: {text}"
    );
    // Nor is the scraper's token an API token.
    let r = h.send("GET", "/v1/requests", SCRAPER, None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    // Guessing it is cut off as guessing API tokens is.
    guess_api_tokens(&h, 2..warden::config::DEFAULT_UNKNOWN_TOKENS_PER_MINUTE).await;
    let (status, text) = scrape(Some(SCRAPER)).await;
    assert_eq!(status, 429, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_a_hook_failed_to_remove_stays_escalated_and_is_tried_again() {
    let h = Harness::start().await;
    let not_removed = |request: &Value, attempts: &str| {
        assert_eq!(request["state"], "escalated", "{request:#}");
        let failed = entries(request, "hook")
            .iter()
            .filter(|e| e["hook"] == "on_deescalate" && e["outcome"] == "failed")
            .count();
        let last = *entries(request, "transition").last().unwrap();
        assert_eq!(
            (last["from"].as_str(), last["to"].as_str()),
            (Some("escalated"), Some("escalated"))
        );
        let reason = last["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("access not removed ({attempts} failed)")),
            "{reason}"
        );
        assert!(reason.contains("warden tries again at"), "{reason}");
        // Tried again, by the expiry sleeper, when the request's end now says.
        let retry_at = humantime::parse_rfc3339(request["expires_at"].as_str().unwrap()).unwrap();
        assert!(retry_at > std::time::SystemTime::now(), "{request:#}");
        assert!(
            reason.ends_with(request["expires_at"].as_str().unwrap()),
            "{reason}"
        );
        failed
    };

    // Its time runs out: the removal fails, and the access is not recorded removed.
    let r = h
        .send(
            "POST",
            "/v1/flows/stuck/requests",
            ALICE,
            Some(json!({ "fields": { "duration": "1s" } })),
        )
        .await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let timed = r.body["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let request = loop {
        let request = h.get(&timed).await;
        if !entries(&request, "transition")
            .iter()
            .any(|e| e["from"] == "escalated")
        {
            assert!(Instant::now() < deadline, "never tried: {request:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break request;
    };
    assert_eq!(not_removed(&request, "1 attempt"), 1);

    // Revoked: answered as not removed, and each failure moves the next try later.
    let own = h.submit("stuck", None, "escalated").await;
    let r = h.act(&own, "revoke", CAROL, "incident over").await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.text.contains("was not removed"), "{}", r.text);
    let first = h.get(&own).await;
    assert_eq!(not_removed(&first, "1 attempt"), 1);
    // Who revoked, and why, are kept.
    let asked = *entries(&first, "transition").last().unwrap();
    assert_eq!(asked["actor"], "carol@example.com");
    let reason = asked["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("revoked by carol@example.com: incident over; access not removed"),
        "{reason}"
    );
    let r = h.act(&own, "revoke", CAROL, "again").await;
    assert_eq!(r.status, 502, "{}", r.text);
    let second = h.get(&own).await;
    assert_eq!(not_removed(&second, "2 attempts"), 2);
    let end = |request: &Value| {
        humantime::parse_rfc3339(request["expires_at"].as_str().unwrap()).unwrap()
    };
    assert!(end(&second) > end(&first));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_decision_without_a_reason_shows_none_not_the_one_before() {
    // The request's reason before was "awaiting a human" (or a failed plugin's text), and a
    // decision that gave none kept it: shown beside the approver as theirs.
    let h = Harness::start().await;
    let id = h.submit("open", None, "pending").await;
    assert!(h.get(&id).await["reason"].is_string());
    let r = h
        .send(
            "POST",
            &format!("/v1/requests/{id}/approve"),
            BOB,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let request = h.get(&id).await;
    assert_eq!(request["state"], "escalated", "{request:#}");
    assert_eq!(request["reason"], Value::Null, "{request:#}");
    let approved = *entries(&request, "transition")
        .iter()
        .find(|e| e["to"] == "approved")
        .unwrap();
    assert_eq!(approved["actor"], "bob@example.com");
    assert!(
        approved.get("reason").is_none_or(Value::is_null),
        "{approved}"
    );
}
