//! The sandbox's HTTP grant end to end: `allowed_hosts` checked before any connection and
//! again at every redirect, loopback only when named exactly, and the response cap and
//! timeout. A module of its own to keep sandbox.rs within the house's size limit.

use std::time::Duration;

use warden::capabilities::refusal::RefusalKind;
use warden_tests::web::TestServer;

use crate::setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn http_to_a_host_not_allowed_is_refused_before_any_connection() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let extra = format!("allowed_hosts = [{:?}]", other.origin());
    let (report, _s) = probe(&format!("http:GET {}/echo", server.origin()), &extra).await;
    let reason = denied(&report);
    assert!(reason.starts_with("denied:"), "{reason}");
    assert!(
        reason.contains("is not in the flow's allowed_hosts"),
        "{reason}"
    );
    assert_eq!(server.requests(), 0);
    assert_eq!(refusal_kinds(&report), [RefusalKind::Destination]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_a_host_not_allowed_is_refused() {
    let allowed = TestServer::start().await;
    let forbidden = TestServer::start().await;
    let extra = format!("allowed_hosts = [{:?}]", allowed.origin());
    let url = format!(
        "{}/redirect?to={}/echo",
        allowed.origin(),
        forbidden.origin()
    );
    let (report, _s) = probe(&format!("http:GET {url}"), &extra).await;
    let reason = denied(&report);
    assert!(
        reason.contains(&format!(
            "{} is not in the flow's allowed_hosts",
            forbidden.origin()
        )),
        "{reason}"
    );
    assert_eq!(allowed.requests(), 1);
    assert_eq!(forbidden.requests(), 0);

    // A redirect within the allowed origin is followed.
    let url = format!("{}/redirect?to=/echo", allowed.origin());
    let (report, _s) = probe(&format!("http:GET {url}"), &extra).await;
    assert!(approved(&report).starts_with("status=200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_is_reachable_only_when_named_exactly() {
    let server = TestServer::start().await;
    let port = server.port();
    let extra = format!("allowed_hosts = [\"http://*.localhost:{port}\"]");
    let (report, _s) = probe(
        &format!("http:GET http://app.localhost:{port}/echo"),
        &extra,
    )
    .await;
    assert!(
        denied(&report).contains("allowed_hosts must name it exactly"),
        "{report:?}"
    );
    assert_eq!(server.requests(), 0);

    let extra = format!("allowed_hosts = [{:?}]", server.origin());
    let (report, _s) = probe(&format!("http:GET {}/echo", server.origin()), &extra).await;
    assert!(approved(&report).starts_with("status=200"));
    assert_eq!(report.http_calls.len(), 1);
    assert_eq!(report.http_calls[0].outcome, "200");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_over_the_cap_and_slow_servers_are_typed_errors() {
    let server = TestServer::start().await;
    let extra = format!(
        "allowed_hosts = [{:?}]\nlimits = {{ response_max_bytes = 1000, http_timeout_ms = 300 }}",
        server.origin()
    );
    let (report, _s) = probe(
        &format!("http:GET {}/big?bytes=5000", server.origin()),
        &extra,
    )
    .await;
    assert!(denied(&report).starts_with("too-large:"), "{report:?}");

    let (report, _s) = probe(
        &format!("http:GET {}/slow?ms=3000", server.origin()),
        &extra,
    )
    .await;
    assert!(denied(&report).starts_with("timeout:"), "{report:?}");
    assert!(
        report.elapsed < Duration::from_millis(2000),
        "{:?}",
        report.elapsed
    );
}
