//! A `warden serve` some of whose flows did not load: a request filed in each flow, the
//! state each lands in checked, then the server stopped, and what it logged.

use std::io::Read;
use std::process::Command;

use warden_tests::ServeProcess;

/// Files an empty request in each flow of `expected` as `token`'s holder and checks the
/// state it lands in; then stops `served` with SIGTERM (it must exit cleanly) and returns
/// its log (its stderr, which must be piped).
pub(crate) async fn file_each_then_stop(
    mut served: ServeProcess,
    token: &str,
    expected: &[(&str, &str)],
) -> String {
    let mut log = served.child.stderr.take().expect("stderr piped");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        log.read_to_string(&mut text).ok();
        text
    });
    let http = reqwest::Client::new();
    for (flow, state) in expected {
        let response = http
            .post(format!("{}/v1/flows/{flow}/requests", served.url))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "{flow}");
        let text = response.text().await.unwrap();
        let request: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{flow}: {e}: {text}"));
        assert_eq!(request["state"], *state, "{flow}: {request:#}");
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(served.child.wait().unwrap().success());
    log.join().unwrap()
}
