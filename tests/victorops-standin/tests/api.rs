//! Drives a running stand-in over HTTP, as the host's tests will; its binary's tests are in
//! `api/binary.rs`.

#[path = "api/binary.rs"]
mod binary;
#[path = "api/setup.rs"]
mod setup;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use victorops_standin::{Casing, ErrorStyle, Roster, StandIn, StandInConfig};

use setup::*;

#[tokio::test]
async fn missing_credentials_are_401_and_wrong_ones_403() {
    let standin = start().await;
    let url = format!("{}/api-public/v1/oncall/current", standin.url());

    let none = unpack(client().get(&url).send().await.unwrap()).await;
    assert_eq!(none.0, 401);
    let body: Value = serde_json::from_str(&none.2).unwrap();
    assert!(body["message"].as_str().unwrap().contains("X-VO-Api-Key"));

    let id_only = client().get(&url).header("X-VO-Api-Id", ID).send().await;
    assert_eq!(id_only.unwrap().status().as_u16(), 401);
    let key_only = client().get(&url).header("X-VO-Api-Key", KEY).send().await;
    assert_eq!(key_only.unwrap().status().as_u16(), 401);

    for (id, key) in [(ID, "nope"), ("nope", KEY), (KEY, ID)] {
        let wrong = client()
            .get(&url)
            .header("X-VO-Api-Id", id)
            .header("X-VO-Api-Key", key)
            .send()
            .await
            .unwrap();
        let (status, _, body) = unpack(wrong).await;
        assert_eq!(status, 403, "{id}/{key}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["message"].is_string());
    }

    // Header names are case-insensitive on the wire.
    let lower = client()
        .get(&url)
        .header("x-vo-api-id", ID)
        .header("x-vo-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);

    standin.set_credentials("rotated-id", "rotated-key");
    assert_eq!(get(&standin, "/api-public/v1/oncall/current").await.0, 403);
    let rotated = client()
        .get(&url)
        .header("X-VO-Api-Id", "rotated-id")
        .header("X-VO-Api-Key", "rotated-key")
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status().as_u16(), 200);
    standin.shutdown().await;
}

#[tokio::test]
async fn oncall_current_in_working_casing() {
    let standin = start().await;
    let body = get_json(&standin, "/api-public/v1/oncall/current").await;
    assert_eq!(
        body,
        json!({
            "teamsOnCall": [
                {
                    "team": { "name": "Platform", "slug": "platform" },
                    "oncallNow": [{
                        "escalationPolicy": { "name": "Platform Primary", "slug": "platform-primary" },
                        "users": [{ "onCalluser": { "username": "alice" } }]
                    }]
                },
                {
                    "team": { "name": "Data", "slug": "data" },
                    "oncallNow": [{
                        "escalationPolicy": { "name": "Data Primary", "slug": "data-primary" },
                        "users": [{ "onCalluser": { "username": "dave" } }]
                    }]
                }
            ]
        })
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn oncall_current_casing_switches_at_run_time() {
    let standin = StandIn::start(StandInConfig {
        casing: Casing::Spec,
        ..StandInConfig::new(ID, KEY, Roster::sample())
    })
    .await
    .unwrap();
    let spec = get_json(&standin, "/api-public/v1/oncall/current").await;
    let team = &spec["teamsOnCall"][0];
    assert!(team.get("oncallNow").is_none());
    assert_eq!(
        team["onCallNow"][0]["users"][0],
        json!({ "onCallUser": { "username": "alice" } })
    );

    standin.set_casing(Casing::Working);
    assert_eq!(standin.casing(), Casing::Working);
    let working = get_json(&standin, "/api-public/v1/oncall/current").await;
    let team = &working["teamsOnCall"][0];
    assert!(team.get("onCallNow").is_none());
    assert_eq!(
        team["oncallNow"][0]["users"][0],
        json!({ "onCalluser": { "username": "alice" } })
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn roster_changes_while_running() {
    let standin = start().await;
    standin.edit_roster(|r| {
        r.off_call("platform", "platform-primary", "alice").on_call(
            "platform",
            "platform-primary",
            "bob",
        );
    });
    let body = get_json(&standin, "/api-public/v1/oncall/current").await;
    assert_eq!(
        body["teamsOnCall"][0]["oncallNow"][0]["users"],
        json!([{ "onCalluser": { "username": "bob" } }])
    );

    let mut empty = Roster::new();
    empty.add_user("zed", "zed@example.com", "Zed", "Zimmer");
    standin.set_roster(empty.clone());
    assert_eq!(standin.roster(), empty);
    assert_eq!(
        get_json(&standin, "/api-public/v1/oncall/current").await,
        json!({ "teamsOnCall": [] })
    );
    let users = get_json(&standin, "/api-public/v2/user").await;
    assert_eq!(usernames(&users), ["zed"]);
    standin.shutdown().await;
}

#[tokio::test]
async fn user_lookup_by_email() {
    let standin = start().await;

    let raw = get_json(&standin, "/api-public/v2/user?email=alice@example.com").await;
    assert_eq!(
        raw,
        json!({
            "users": [{
                "firstName": "Alice",
                "lastName": "Anders",
                "displayName": "Alice Anders",
                "username": "alice",
                "email": "alice@example.com",
                "createdAt": "2019-04-01T09:30:00Z",
                "passwordLastUpdated": "2019-04-01T09:30:00Z",
                "verified": true,
                "_selfUrl": "/api-public/v1/user/alice"
            }],
            "_selfUrl": "/api-public/v2/user"
        })
    );
    // The @ really went over the wire unencoded.
    let sent = standin.requests().pop().unwrap();
    assert_eq!(sent.query.as_deref(), Some("email=alice@example.com"));

    let encoded = get_json(&standin, "/api-public/v2/user?email=alice%40example.com").await;
    assert_eq!(encoded, raw);
    assert_eq!(
        standin.requests().pop().unwrap().query.as_deref(),
        Some("email=alice%40example.com")
    );

    for email in ["ALICE@Example.COM", "Alice%40EXAMPLE.com"] {
        let found = get_json(&standin, &format!("/api-public/v2/user?email={email}")).await;
        assert_eq!(usernames(&found), ["alice"], "{email}");
    }

    let bob = get_json(
        &standin,
        "/api-public/v2/user?other=1&email=bob@example.com",
    )
    .await;
    assert_eq!(usernames(&bob), ["bob"]);

    let nobody = get_json(&standin, "/api-public/v2/user?email=mallory@example.com").await;
    assert_eq!(
        nobody,
        json!({ "users": [], "_selfUrl": "/api-public/v2/user" })
    );

    // A prefix or a fragment of an address is no match.
    let partial = get_json(&standin, "/api-public/v2/user?email=alice").await;
    assert_eq!(usernames(&partial), Vec::<String>::new());

    let all = get_json(&standin, "/api-public/v2/user").await;
    assert_eq!(usernames(&all), ["alice", "bob", "carol", "dave"]);

    standin.set_strict_email_encoding(true);
    let strict = get_json(&standin, "/api-public/v2/user?email=alice%40example.com").await;
    assert_eq!(usernames(&strict), Vec::<String>::new());
    let strict_raw = get_json(&standin, "/api-public/v2/user?email=alice@example.com").await;
    assert_eq!(usernames(&strict_raw), ["alice"]);
    standin.shutdown().await;
}

#[tokio::test]
async fn plus_in_an_email_is_not_a_space() {
    let standin = start().await;
    standin.edit_roster(|r| {
        r.add_user("erin", "erin+ops@example.com", "Erin", "Eyre");
    });
    let raw = get_json(&standin, "/api-public/v2/user?email=erin+ops@example.com").await;
    assert_eq!(usernames(&raw), ["erin"]);
    let encoded = get_json(
        &standin,
        "/api-public/v2/user?email=erin%2Bops%40example.com",
    )
    .await;
    assert_eq!(usernames(&encoded), ["erin"]);
    standin.shutdown().await;
}

#[tokio::test]
async fn team_list() {
    let standin = start().await;
    let teams = get_json(&standin, "/api-public/v1/team").await;
    assert_eq!(
        teams,
        json!([
            {
                "_selfUrl": "/api-public/v1/team/platform",
                "_membersUrl": "/api-public/v1/team/platform/members",
                "_policiesUrl": "/api-public/v1/team/platform/policies",
                "_adminsUrl": "/api-public/v1/team/platform/admins",
                "name": "Platform",
                "slug": "platform",
                "memberCount": 3,
                "version": 0,
                "isDefaultTeam": false
            },
            {
                "_selfUrl": "/api-public/v1/team/data",
                "_membersUrl": "/api-public/v1/team/data/members",
                "_policiesUrl": "/api-public/v1/team/data/policies",
                "_adminsUrl": "/api-public/v1/team/data/admins",
                "name": "Data",
                "slug": "data",
                "memberCount": 2,
                "version": 0,
                "isDefaultTeam": false
            }
        ])
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn injected_failures_in_each_style() {
    let standin = start().await;
    let path = "/api-public/v1/oncall/current";

    standin.fail_next(path, 500, ErrorStyle::JsonMessage, 1);
    let (status, content_type, body) = get(&standin, path).await;
    assert_eq!(status, 500);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["message"].is_string() && body.get("error").is_none());

    standin.fail_next(path, 400, ErrorStyle::JsonError, 1);
    let (status, content_type, body) = get(&standin, path).await;
    assert_eq!(status, 400);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["error"].is_string() && body.get("message").is_none());

    standin.fail_next(path, 502, ErrorStyle::Html, 1);
    let (status, content_type, body) = get(&standin, path).await;
    assert_eq!(status, 502);
    assert!(content_type.unwrap().starts_with("text/html"));
    assert!(body.contains("<title>502 Bad Gateway</title>"), "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_err());

    standin.fail_next(path, 503, ErrorStyle::Empty, 1);
    let (status, _, body) = get(&standin, path).await;
    assert_eq!(status, 503);
    assert_eq!(body, "");

    // All used up: back to normal.
    assert_eq!(get(&standin, path).await.0, 200);
    standin.shutdown().await;
}

#[tokio::test]
async fn injected_failures_count_match_by_prefix_and_precede_auth() {
    let standin = start().await;
    standin.fail_next("/api-public/v1/oncall", 429, ErrorStyle::JsonMessage, 2);
    standin.fail_next("", 504, ErrorStyle::Empty, 1);

    // The user call does not match the first injection, only the catch-all.
    assert_eq!(get(&standin, "/api-public/v2/user").await.0, 504);
    assert_eq!(get(&standin, "/api-public/v2/user").await.0, 200);

    assert_eq!(get(&standin, "/api-public/v1/oncall/current").await.0, 429);
    // Even without credentials: a gateway answers before the API does.
    let anonymous = client()
        .get(format!("{}/api-public/v1/oncall/current", standin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 429);
    assert_eq!(get(&standin, "/api-public/v1/oncall/current").await.0, 200);

    standin.fail_next("/", 500, ErrorStyle::Html, 5);
    standin.clear_failures();
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    standin.shutdown().await;
}

#[tokio::test]
async fn latency_delays_answers() {
    let standin = start().await;
    let latency = Duration::from_millis(600);
    standin.set_latency(latency);

    let began = Instant::now();
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    assert!(began.elapsed() >= latency, "{:?}", began.elapsed());

    // A client with a shorter timeout gives up first.
    let timed_out = client()
        .get(format!("{}/api-public/v1/team", standin.url()))
        .header("X-VO-Api-Id", ID)
        .header("X-VO-Api-Key", KEY)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(timed_out.unwrap_err().is_timeout());

    // While an answer is pending it is in the log without a status.
    let url = standin.url();
    let pending = tokio::spawn(async move {
        client()
            .get(format!("{url}/api-public/v1/oncall/current"))
            .header("X-VO-Api-Id", ID)
            .header("X-VO-Api-Key", KEY)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while standin.count("/api-public/v1/oncall/current") == 0 {
        assert!(Instant::now() < deadline, "request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let logged = standin.requests().pop().unwrap();
    assert_eq!(logged.status, None);
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(standin.requests().pop().unwrap().status, Some(200));

    standin.set_latency(Duration::ZERO);
    let began = Instant::now();
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    assert!(began.elapsed() < latency, "{:?}", began.elapsed());
    standin.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_403_after_n_calls() {
    let standin = start().await;
    // Calls before the limit was set do not count.
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    standin.rate_limit_after(Some(3));
    for path in [
        "/api-public/v1/team",
        "/api-public/v2/user",
        "/api-public/v1/oncall/current",
    ] {
        assert_eq!(get(&standin, path).await.0, 200, "{path}");
    }
    // Refused credentials are not calls against the quota...
    let anonymous = client()
        .get(format!("{}/api-public/v1/team", standin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    // ...but every call past the third is refused.
    for _ in 0..2 {
        let (status, content_type, body) = get(&standin, "/api-public/v1/oncall/current").await;
        assert_eq!(status, 403);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["message"].as_str().unwrap().contains("rate limit"));
    }
    standin.rate_limit_after(Some(1));
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 403);
    standin.rate_limit_after(None);
    assert_eq!(get(&standin, "/api-public/v1/team").await.0, 200);
    standin.shutdown().await;
}

#[tokio::test]
async fn every_request_is_logged() {
    let standin = start().await;
    let before = std::time::SystemTime::now();
    get(&standin, "/api-public/v2/user?email=bob@example.com").await;
    get(&standin, "/api-public/v1/oncall/current").await;
    get(&standin, "/api-public/v1/oncall/current").await;
    client()
        .get(format!("{}/api-public/v1/team", standin.url()))
        .send()
        .await
        .unwrap();
    let (status, _, _) = get(&standin, "/api-public/v9/nothing").await;
    assert_eq!(status, 404);
    let post = client()
        .post(format!("{}/api-public/v1/team", standin.url()))
        .header("X-VO-Api-Id", ID)
        .header("X-VO-Api-Key", KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);

    let log = standin.requests();
    assert_eq!(log.len(), 6);
    let first = &log[0];
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/api-public/v2/user");
    assert_eq!(first.query.as_deref(), Some("email=bob@example.com"));
    assert_eq!(
        first.query_param("email").as_deref(),
        Some("bob@example.com")
    );
    assert_eq!(first.header("X-VO-Api-Id"), Some(ID));
    assert_eq!(first.header("x-vo-api-key"), Some(KEY));
    assert!(
        first
            .headers
            .iter()
            .any(|(n, v)| n == "x-vo-api-id" && v == ID)
    );
    assert!(first.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert!(first.at >= before);
    assert_eq!(first.status, Some(200));
    assert_eq!(log[1].query, None);
    assert_eq!(log[3].status, Some(401));
    assert_eq!(log[3].header("x-vo-api-id"), None);
    assert_eq!(log[4].status, Some(404));
    assert_eq!((log[5].method.as_str(), log[5].status), ("POST", Some(405)));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));

    assert_eq!(standin.count("/api-public/v1/oncall/current"), 2);
    assert_eq!(standin.count("/api-public/v2/user"), 1);
    assert_eq!(standin.count("/api-public/v1/team"), 2);
    assert_eq!(standin.count("/api-public/v1"), 0);

    standin.clear_requests();
    assert!(standin.requests().is_empty());
    assert_eq!(standin.count("/api-public/v1/oncall/current"), 0);
    get(&standin, "/api-public/v1/oncall/current").await;
    assert_eq!(standin.count("/api-public/v1/oncall/current"), 1);
    standin.shutdown().await;
}

#[tokio::test]
async fn shutdown_frees_the_port_and_a_port_can_be_chosen() {
    let first = start().await;
    let port = first.port();
    assert_eq!(first.url(), format!("http://127.0.0.1:{port}"));
    // A kept-alive connection must not hold shutdown up.
    assert_eq!(get(&first, "/api-public/v1/team").await.0, 200);
    let began = Instant::now();
    first.shutdown().await;
    assert!(began.elapsed() < Duration::from_secs(4));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    let second = StandIn::start(StandInConfig {
        port: Some(port),
        ..StandInConfig::new(ID, KEY, Roster::sample())
    })
    .await
    .unwrap();
    assert_eq!(second.port(), port);
    assert_eq!(get(&second, "/api-public/v1/team").await.0, 200);

    // The port is taken while `second` runs.
    let clash = StandIn::start(StandInConfig {
        port: Some(port),
        ..StandInConfig::new(ID, KEY, Roster::sample())
    })
    .await;
    assert!(clash.is_err());
    second.shutdown().await;
}

#[test]
fn blocking_from_a_plain_test() {
    let standin = StandIn::start_blocking(StandInConfig::new(ID, KEY, Roster::sample())).unwrap();
    let port = standin.port();
    let (status, body) = raw_get(port, "/api-public/v1/oncall/current", true);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["teamsOnCall"][0]["oncallNow"][0]["users"][0]["onCalluser"]["username"],
        "alice"
    );
    assert_eq!(raw_get(port, "/api-public/v1/team", false).0, 401);

    standin.fail_next("/api-public/v2", 500, ErrorStyle::JsonError, 1);
    assert_eq!(raw_get(port, "/api-public/v2/user", true).0, 500);
    assert_eq!(standin.count("/api-public/v2/user"), 1);

    let controls = standin.controls();
    standin.shutdown();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // The log outlives the server.
    assert_eq!(controls.requests().len(), 3);
}

#[tokio::test]
async fn blocking_from_an_async_test() {
    let standin = StandIn::start_blocking(StandInConfig::new(ID, KEY, Roster::sample())).unwrap();
    standin.set_latency(Duration::from_millis(50));
    let response = client()
        .get(format!(
            "{}/api-public/v2/user?email=BOB@example.com",
            standin.url()
        ))
        .header("X-VO-Api-Id", ID)
        .header("X-VO-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(usernames(&body), ["bob"]);
    let port = standin.port();
    drop(standin);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn start_blocking_reports_a_bind_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = StandIn::start_blocking(StandInConfig {
        port: Some(port),
        ..StandInConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn fixture_file_is_the_sample() {
    assert_eq!(Roster::from_file(fixture()).unwrap(), Roster::sample());
}
