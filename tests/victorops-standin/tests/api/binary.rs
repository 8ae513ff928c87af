//! The stand-in's own binary, as `scripts/example` and `scripts/bench-serve` run it: its first
//! line names the URL it serves, and a bad roster or flag stops it before it listens.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::setup::{Child, ID, KEY, fixture, raw_get, usernames};

#[test]
fn binary_prints_its_url_and_serves_the_roster() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_victorops-standin"))
            .arg("--roster")
            .arg(fixture())
            .args(["--api-id", ID, "--api-key", KEY, "--casing", "spec"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();

    let (status, body) = raw_get(port, "/api-public/v1/oncall/current", true);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["teamsOnCall"][0]["onCallNow"][0]["users"][0]["onCallUser"]["username"],
        "alice"
    );
    let (status, body) = raw_get(port, "/api-public/v2/user?email=bob%40example.com", true);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(usernames(&body), ["bob"]);
    assert_eq!(raw_get(port, "/api-public/v1/team", false).0, 401);

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("GET /api-public/v1/oncall/current -> 200"),
        "{stderr}"
    );
    assert!(
        stderr.contains("GET /api-public/v1/team -> 401"),
        "{stderr}"
    );
}

#[test]
fn binary_rejects_a_bad_roster() {
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("bad.toml");
    std::fs::write(
        &roster,
        "[[teams]]\nslug = 'x'\nname = 'X'\nmembers = ['ghost']\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_victorops-standin"))
        .arg("--roster")
        .arg(&roster)
        .args(["--api-id", ID, "--api-key", KEY])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ghost"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_victorops-standin"))
        .arg("--roster")
        .arg(fixture())
        .args(["--api-id", ID, "--api-key", KEY, "--casing", "camel"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("camel"));
}
