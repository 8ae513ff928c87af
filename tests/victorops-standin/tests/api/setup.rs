//! What the stand-in's API tests share: the credentials, clients that call a running stand-in
//! (reqwest, or bare HTTP/1.1 for tests with no runtime), the roster fixture, and a guard that
//! kills the stand-in's binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use victorops_standin::{Roster, StandIn, StandInConfig};

pub(crate) const ID: &str = "test-id";
pub(crate) const KEY: &str = "test-key";

pub(crate) async fn start() -> StandIn {
    StandIn::start(StandInConfig::new(ID, KEY, Roster::sample()))
        .await
        .expect("start stand-in")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// GET with the right credentials; returns status, content-type and body.
pub(crate) async fn get(standin: &StandIn, path_and_query: &str) -> (u16, Option<String>, String) {
    let response = client()
        .get(format!("{}{}", standin.url(), path_and_query))
        .header("X-VO-Api-Id", ID)
        .header("X-VO-Api-Key", KEY)
        .header("Accept", "application/json")
        .send()
        .await
        .expect("request");
    unpack(response).await
}

pub(crate) async fn unpack(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (status, content_type, response.text().await.unwrap())
}

pub(crate) async fn get_json(standin: &StandIn, path_and_query: &str) -> Value {
    let (status, content_type, body) = get(standin, path_and_query).await;
    assert_eq!(status, 200, "{path_and_query}: {body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    serde_json::from_str(&body).expect("JSON body")
}

pub(crate) fn usernames(users: &Value) -> Vec<String> {
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

/// A bare HTTP/1.1 GET, so the blocking test needs no runtime at all.
pub(crate) fn raw_get(port: u16, path: &str, credentials: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = if credentials {
        format!("X-VO-Api-Id: {ID}\r\nX-VO-Api-Key: {KEY}\r\n")
    } else {
        String::new()
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub(crate) fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/victorops-roster.toml")
}

/// Kills the child on drop so a failed assertion leaves no server behind.
pub(crate) struct Child(pub(crate) std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
