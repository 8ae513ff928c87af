//! What a plugin's HTTP requests can and cannot do beyond reaching an allowed host: choose
//! headers that route or frame the request (refused before any connection), get a sealed
//! secret back from a server that kept it or changed its case (redacted from every response
//! of the flow), and add metric label values of its choosing (labels come from the config).
//! Each runs the probe in the real host against a local server or a stand-in transport.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use warden::capabilities::http::{HopRequest, HopResponse, Transport, TransportError};
use warden::capabilities::refusal::RefusalKind;
use warden::secrets::AwsSecret;
use warden::secrets::{SecretFetcher, SecretStore};
use warden::serve::metrics::Metrics;
use warden::store::Store;
use warden::{Config, Decision, EventInput, HookName, HookReport, StartOptions, Warden};
use warden_tests::web::TestServer;
use warden_tests::{Scratch, artifacts, toml_path};

/// Mixed case on purpose: servers below return it upper- and lowercased.
const VO_SECRET: &str = "vo-SECRET-value-0123";

const ENVIRONMENT: &str = r#"
[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = { victorops = "victorops" }
"#;

/// A TOML basic string holding `s` exactly, control characters included.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Flows running the probe in `main` with `reveal_secrets = false`: `(name, action)`.
fn flows(flows: &[(String, String)], allowed: &str) -> String {
    flows
        .iter()
        .map(|(name, action)| {
            format!(
                "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nreveal_secrets = false\n\
                 allowed_hosts = [{allowed:?}]\nvars = {{ action = {} }}\n",
                toml_path(artifacts::PROBE),
                toml_string(action)
            )
        })
        .collect()
}

/// `vo_key` (`VO_SECRET`) read from a file.
async fn start(
    scratch: &Scratch,
    flow_text: &str,
    transport: Option<Arc<dyn Transport>>,
) -> Warden {
    start_with_secret(scratch, VO_SECRET, flow_text, transport).await
}

async fn start_with_secret(
    scratch: &Scratch,
    secret: &str,
    flow_text: &str,
    transport: Option<Arc<dyn Transport>>,
) -> Warden {
    scratch.write("vo.key", secret);
    let text = format!(
        "[store]\npath = \"warden.db\"\n\n[secrets.vo_key]\nsource = \"file\"\npath = \"vo.key\"\n{ENVIRONMENT}{flow_text}"
    );
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(Store::open(&config.store_path).unwrap());
    let secrets = Arc::new(SecretStore::new(&config.secrets));
    let options = StartOptions {
        engine: None,
        transport,
    };
    Warden::start_with(config, store, secrets, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `vo_key` kept in AWS Secrets Manager, answered by `aws` (at load too) and read again after
/// `cache_seconds`, the secrets' clock made from when it was loaded; with `flow_text`.
async fn start_on_aws(
    scratch: &Scratch,
    cache_seconds: u32,
    flow_text: &str,
    aws: Arc<dyn SecretFetcher>,
    clock: impl FnOnce(std::time::Instant) -> warden::secrets::Clock,
) -> Warden {
    let text = format!(
        "[store]\npath = \"warden.db\"\n\n[secrets.vo_key]\nsource = \"aws-secrets-manager\"\n\
         path = \"main/vo\"\ncache_seconds = {cache_seconds}\n{ENVIRONMENT}{flow_text}"
    );
    let path = scratch.config(&text);
    let at_load = aws.clone();
    let config = Config::parse_with(&text, &path, &|_| None, &|secret| {
        futures_util::FutureExt::now_or_never(at_load.fetch(secret)).unwrap()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let clock = clock(config.secrets["vo_key"].loaded_at);
    let secrets = Arc::new(SecretStore::with(&config.secrets, aws, clock));
    let store = Arc::new(Store::open(&config.store_path).unwrap());
    Warden::start_with(config, store, secrets, StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run(warden: &Warden, flow: &str) -> HookReport {
    let event =
        EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap();
    warden
        .run_hook(flow, HookName::OnRequest, &event)
        .await
        .unwrap()
}

fn approved(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Approve { reason: Some(r) }) => r.clone(),
        other => panic!("expected an approval, got {other:?}"),
    }
}

fn denied(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Deny { reason: Some(r) }) => r.clone(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// What the plugin was given, from the probe's hex-encoded `http-hex` answer.
fn seen_by_plugin(report: &HookReport) -> String {
    String::from_utf8(warden_tests::unhex(&approved(report)).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_set_headers_that_route_or_frame_a_request() {
    let server = TestServer::start().await;
    let url = format!("{}/headers", server.origin());
    let long_name = format!("X-Forwarded-{}\n", "n".repeat(5000));
    let refused: Vec<(&str, &str)> = vec![
        ("Host", "internal.example"),
        ("host", "internal.example"),
        ("Content-Length", "0"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Upgrade", "websocket"),
        ("TE", "trailers"),
        ("Trailer", "X-Note"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("Proxy-Connection", "keep-alive"),
        ("Forwarded", "for=10.0.0.1;host=internal.example"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("x-forwarded-host", "internal.example"),
        ("Accept-Encoding", "gzip"),
        ("range", "bytes=0-3"),
        ("If-Range", "\"etag\""),
        ("X-Note", "a\r\nHost: internal.example"),
        ("X-Note", "a\nX-Injected: 1"),
        ("X-Note", "nul\0byte"),
        ("X-Note", "tab\tand del\x7f"),
        ("X-Note\r\nHost", "internal.example"),
        ("X Note", "a space in the name"),
        ("", "no name"),
        (&long_name, "long"),
    ];
    let mut cases: Vec<(String, String)> = refused
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            (
                format!("text{i}"),
                format!("http-header:{url}|{name}|{value}"),
            )
        })
        .collect();
    for (i, name) in ["Host", "X-Forwarded-For", "X-Key\r\nX-Injected"]
        .iter()
        .enumerate()
    {
        cases.push((
            format!("sealed{i}"),
            format!("http-sealed-as:victorops|{url}|{name}"),
        ));
    }
    cases.push((
        "fine".into(),
        format!("http-header:{url}|X-Note|fine, thanks"),
    ));
    let scratch = Scratch::new();
    let warden = start(&scratch, &flows(&cases, &server.origin()), None).await;

    for (flow, action) in &cases[..cases.len() - 1] {
        let report = run(&warden, flow).await;
        assert!(
            matches!(report.outcome, Ok(Decision::Deny { .. })),
            "{action:?}: {:?}",
            report.outcome
        );
        let reason = denied(&report);
        assert!(
            reason.starts_with("denied: header "),
            "{action:?}: {reason}"
        );
        assert_eq!(
            report.refusals.len(),
            1,
            "{action:?}: {:?}",
            report.refusals
        );
        let refusal = &report.refusals[0];
        assert_eq!(refusal.kind, RefusalKind::Header, "{action:?}");
        // The plugin chose the name: it is quoted escaped and cut short.
        assert!(refusal.detail.len() < 400, "{action:?}: {}", refusal.detail);
        assert!(
            !refusal.detail.contains(['\r', '\n', '\0']),
            "{:?}",
            refusal.detail
        );
        assert!(!reason.contains(VO_SECRET), "{reason}");
        assert_eq!(report.http_calls.len(), 1, "{action:?}");
        assert_eq!(report.http_calls[0].outcome, "denied", "{action:?}");
    }
    assert_eq!(
        server.requests(),
        0,
        "no refused request reached the server"
    );

    assert_eq!(approved(&run(&warden, "fine").await), "status=200");
    let received = server.received_headers();
    assert_eq!(received.len(), 1);
    let header = |name: &str| {
        received[0]
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("host"), [format!("127.0.0.1:{}", server.port())]);
    assert_eq!(header("x-note"), ["fine, thanks"]);
    assert_eq!(header("accept-encoding"), ["identity"]);
    for (name, _) in &received[0] {
        assert!(
            !(name.starts_with("x-forwarded") || name.starts_with("proxy-") || name == "forwarded"),
            "{received:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_value_a_server_kept_or_changed_in_case_is_redacted_from_every_later_response() {
    let server = TestServer::start().await;
    let origin = server.origin();
    let cases: Vec<(String, String)> = [
        ("keep", format!("http-sealed:victorops {origin}/keep")),
        // Later requests send nothing sealed; the server answers with what it kept.
        ("recall", format!("http-hex:{origin}/recall")),
        (
            "upper",
            format!("http-hex:{origin}/recall?case=upper&chunk=3"),
        ),
        (
            "lower",
            format!("http-hex:{origin}/recall?case=lower&chunk=1"),
        ),
        // A header that is not UTF-8 (Latin-1 `é`), with the kept value in it.
        (
            "latin1",
            format!("http-hex:{origin}/recall?case=upper&latin1=1"),
        ),
        // A redirect to a host named after the kept value: the refusal quotes it back.
        ("redirect", format!("http-hex:{origin}/recall?redirect=1")),
        // The request's headers, sealed value and all, as a body of known length.
        ("echo", format!("http-sealed:victorops {origin}/echo")),
    ]
    .into_iter()
    .map(|(name, action)| (name.to_string(), action))
    .collect();
    let scratch = Scratch::new();
    let warden = start(&scratch, &flows(&cases, &origin), None).await;

    run(&warden, "keep").await;
    assert_eq!(server.kept(), [VO_SECRET], "the server got the real value");
    for flow in ["recall", "upper", "lower", "latin1"] {
        let seen = seen_by_plugin(&run(&warden, flow).await);
        assert!(
            !seen
                .to_ascii_lowercase()
                .contains(&VO_SECRET.to_ascii_lowercase()),
            "{flow}: {seen}"
        );
        assert!(
            seen.contains("x-recalled-0: [REDACTED]\n"),
            "{flow}: {seen}"
        );
        assert!(seen.ends_with("\n\nrecalled [REDACTED]"), "{flow}: {seen}");
    }
    // The length the server sent would tell the value's: the plugin is told the length of
    // the body it is given.
    let echoed = approved(&run(&warden, "echo").await);
    let (_, rest) = echoed.split_once(" body=").unwrap();
    let (body, headers) = rest.rsplit_once(" headers=").unwrap();
    assert!(body.contains("[REDACTED]"), "{echoed}");
    assert!(
        headers.contains(&format!("content-length={};", body.len())),
        "{echoed}"
    );
    let seen = seen_by_plugin(&run(&warden, "latin1").await);
    assert!(
        seen.contains("x-latin1: caf\u{fffd} [REDACTED]\n"),
        "a byte that is not UTF-8 is shown as U+FFFD, the value still redacted: {seen}"
    );
    let seen = seen_by_plugin(&run(&warden, "redirect").await);
    assert!(seen.starts_with("error denied: "), "{seen}");
    assert!(seen.contains("http://[REDACTED].exfil.example"), "{seen}");
    assert!(
        !seen
            .to_ascii_lowercase()
            .contains(&VO_SECRET.to_ascii_lowercase())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_start_of_a_long_sealed_value_an_error_quotes_cut_short_is_redacted() {
    let server = TestServer::start().await;
    let origin = server.origin();
    // Longer than an error quotes a URL: the quote is cut inside the value.
    let secret = "0123456789abcdef".repeat(20);
    let cases: Vec<(String, String)> = [
        ("keep", format!("http-sealed:victorops {origin}/keep")),
        ("redirect", format!("http-hex:{origin}/recall?redirect=1")),
    ]
    .into_iter()
    .map(|(name, action)| (name.to_string(), action))
    .collect();
    let scratch = Scratch::new();
    let warden = start_with_secret(&scratch, &secret, &flows(&cases, &origin), None).await;
    run(&warden, "keep").await;
    assert_eq!(server.kept(), std::slice::from_ref(&secret));
    let seen = seen_by_plugin(&run(&warden, "redirect").await);
    assert!(seen.starts_with("error "), "{seen}");
    assert!(seen.contains("more bytes)"), "the quote was cut: {seen}");
    assert!(!seen.contains("0123456789"), "{seen}");
}

/// A server on loopback answering every request with `head` (status line and headers,
/// each line ended by CRLF) and then `body` as it is; its origin.
async fn raw_server(head: &'static str, body: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request).await;
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(b"\r\n").await;
                let _ = conn.write_all(body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    origin
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_in_a_transfer_coding_other_than_chunked_is_refused() {
    // hyper takes the chunks apart and leaves the gzip inside as it came: bytes redaction
    // cannot see into, which the plugin could decompress.
    let gzip_chunked = raw_server(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n",
        b"5\r\n\x1f\x8b\x08\x00\x00\r\n0\r\n\r\n",
    )
    .await;
    let gzip_to_close = raw_server(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n",
        b"\x1f\x8b\x08\x00\x00",
    )
    .await;
    let chunked = raw_server(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n",
        b"5\r\nplain\r\n0\r\n\r\n",
    )
    .await;
    let scratch = Scratch::new();
    let flows: String = [
        ("gzip_chunked", &gzip_chunked),
        ("gzip_to_close", &gzip_to_close),
        ("chunked", &chunked),
    ]
    .iter()
    .map(|(name, origin)| {
        flows(
            &[(name.to_string(), format!("http-hex:{origin}/x"))],
            origin,
        )
    })
    .collect();
    let warden = start(&scratch, &flows, None).await;
    for flow in ["gzip_chunked", "gzip_to_close"] {
        let seen = seen_by_plugin(&run(&warden, flow).await);
        assert!(seen.starts_with("error invalid: "), "{flow}: {seen}");
        assert!(seen.contains("Transfer-Encoding"), "{flow}: {seen}");
    }
    let seen = seen_by_plugin(&run(&warden, "chunked").await);
    assert!(seen.ends_with("\n\nplain"), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_compressed_regardless_is_refused_not_shown_unredacted() {
    let server = TestServer::start().await;
    let origin = server.origin();
    let cases: Vec<(String, String)> = [
        ("keep", format!("http-sealed:victorops {origin}/keep")),
        ("gzip", format!("http-hex:{origin}/recall?encoding=gzip")),
        ("br", format!("http-hex:{origin}/recall?encoding=BR")),
        (
            "identity",
            format!("http-hex:{origin}/recall?encoding=identity"),
        ),
    ]
    .into_iter()
    .map(|(name, action)| (name.to_string(), action))
    .collect();
    let scratch = Scratch::new();
    let warden = start(&scratch, &flows(&cases, &origin), None).await;
    run(&warden, "keep").await;
    assert_eq!(server.kept(), [VO_SECRET]);
    // The server says its echo is compressed: redaction could not have seen into it.
    for flow in ["gzip", "br"] {
        let seen = seen_by_plugin(&run(&warden, flow).await);
        assert!(seen.starts_with("error "), "{flow}: {seen}");
        assert!(
            seen.contains("is compressed (Content-Encoding)"),
            "{flow}: {seen}"
        );
        assert!(!seen.contains(VO_SECRET), "{flow}: {seen}");
    }
    let seen = seen_by_plugin(&run(&warden, "identity").await);
    assert!(seen.ends_with("\n\nrecalled [REDACTED]"), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_test_guesses_of_a_sealed_value_against_the_hosts_redaction() {
    // Each guess goes where the host refuses it before anything is sent (a header name, the
    // host of a URL with a scheme warden does not speak), and as a name under a wildcard
    // entry that does not resolve: each error quotes it. Were the error redacted, the right
    // guess would come back as `[REDACTED]` and the wrong ones as written: a test of
    // guesses with no server involved, as many as the deadline allows.
    let cases: Vec<(String, String)> = [
        ("right", VO_SECRET.to_string()),
        ("right_lowercased", VO_SECRET.to_ascii_lowercase()),
        ("wrong", "vo-SECRET-value-9999".to_string()),
    ]
    .into_iter()
    .map(|(name, guess)| {
        (
            name.to_string(),
            format!("guess:http://GUESS.example.com/|{guess}"),
        )
    })
    .collect();
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &flows(&cases, "http://*.example.com"),
        Some(Arc::new(ResolvesNothing)),
    )
    .await;
    for (flow, _) in &cases {
        let report = run(&warden, flow).await;
        // The reason is the plugin's own verdict, the same for every guess.
        assert_eq!(
            approved(&report),
            "header:as-sent url:as-sent host:as-sent",
            "{flow}: {report:?}"
        );
        // What is recorded of the refusals is redacted all the same.
        for refusal in &report.refusals {
            assert!(
                !refusal
                    .detail
                    .to_ascii_lowercase()
                    .contains(&VO_SECRET.to_ascii_lowercase()),
                "{flow}: {}",
                refusal.detail
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_redaction_makes_longer_than_the_cap_is_too_large() {
    // A value shorter than `[REDACTED]`: the server's 12 bytes become 19.
    let server = TestServer::start().await;
    let origin = server.origin();
    let cases: Vec<(String, String)> = vec![
        (
            "keep".into(),
            format!("http-sealed:victorops {origin}/keep"),
        ),
        ("recall".into(), format!("http-hex:{origin}/recall")),
    ];
    let text = flows(&cases, &origin).replace(
        "reveal_secrets = false",
        "reveal_secrets = false\nlimits = { response_max_bytes = 15 }",
    );
    let scratch = Scratch::new();
    let warden = start_with_secret(&scratch, "k3y", &text, None).await;
    run(&warden, "keep").await;
    assert_eq!(server.kept(), ["k3y"]);
    let seen = seen_by_plugin(&run(&warden, "recall").await);
    assert_eq!(
        seen,
        format!(
            "error too-large: the response from {origin} is over the flow's response_max_bytes (15) once secret values in it are replaced by [REDACTED]"
        )
    );
}

/// Answers every fetch with the value the test last set.
struct Rotating(Mutex<String>);

#[async_trait]
impl SecretFetcher for Rotating {
    async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_value_a_rotated_secret_had_is_redacted_from_responses() {
    let server = TestServer::start().await;
    let origin = server.origin();
    let cases = vec![
        (
            "keep".to_string(),
            format!("http-sealed:victorops {origin}/keep"),
        ),
        (
            "recall".to_string(),
            format!("http-hex:{origin}/recall?case=upper"),
        ),
    ];
    let aws = Arc::new(Rotating(Mutex::new("rotated-value-one".into())));
    let now = Arc::new(Mutex::new(std::time::Instant::now()));
    let clock = now.clone();
    let scratch = Scratch::new();
    let warden = start_on_aws(
        &scratch,
        60,
        &flows(&cases, &origin),
        aws.clone(),
        |loaded_at| {
            *now.lock().unwrap() = loaded_at;
            Arc::new(move || *clock.lock().unwrap())
        },
    )
    .await;

    // Two rotations, each picked up by a sealed request the server keeps: the first kept
    // value is neither the one read at load nor the current one.
    for value in ["rotated-value-two", "rotated-value-three"] {
        *aws.0.lock().unwrap() = value.into();
        *now.lock().unwrap() += Duration::from_secs(31);
        run(&warden, "keep").await;
    }
    assert_eq!(server.kept(), ["rotated-value-two", "rotated-value-three"]);
    let seen = seen_by_plugin(&run(&warden, "recall").await);
    assert!(!seen.contains("ROTATED-VALUE"), "{seen}");
    assert!(seen.ends_with("recalled [REDACTED] [REDACTED]"), "{seen}");
}

/// Answers every fetch with one value, counting them.
struct Counting(std::sync::atomic::AtomicUsize);

#[async_trait]
impl SecretFetcher for Counting {
    async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok("counted-value".into())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_headers_are_bounded_and_past_the_request_limit_no_secret_is_read() {
    let server = TestServer::start().await;
    let origin = server.origin();
    let url = format!("{origin}/headers");
    let cases = vec![
        (
            "eight".to_string(),
            format!("http-sealed-many:victorops|{url}|8|1"),
        ),
        (
            "nine".to_string(),
            format!("http-sealed-many:victorops|{url}|9|1"),
        ),
        (
            "loop".to_string(),
            format!("http-sealed-many:victorops|{url}|1|20"),
        ),
    ];
    // Read from AWS at every use (`cache_seconds = 0`).
    let flows = flows(&cases, &origin).replace(
        "reveal_secrets = false",
        "reveal_secrets = false\nlimits = { http_requests = 2 }",
    );
    let aws = Arc::new(Counting(Default::default()));
    let scratch = Scratch::new();
    let warden = start_on_aws(&scratch, 0, &flows, aws.clone(), |_| {
        Arc::new(std::time::Instant::now)
    })
    .await;

    // One handle repeated under many names: each is the secret's whole value in the
    // request, so their number is bounded, before any is read or anything sent.
    assert_eq!(approved(&run(&warden, "eight").await), "status=200");
    let received = server.received_headers();
    let keys = received[0].iter().filter(|(k, _)| k.starts_with("x-key-"));
    assert!(keys.clone().all(|(_, v)| v == "counted-value"));
    assert_eq!(keys.count(), 8);
    let fetched = aws.0.load(std::sync::atomic::Ordering::SeqCst);
    let nine = approved(&run(&warden, "nine").await);
    assert!(nine.starts_with("error="), "{nine}");
    assert!(nine.contains("at most 8 are sent"), "{nine}");
    assert_eq!(server.requests(), 1, "nothing more sent");
    assert_eq!(
        aws.0.load(std::sync::atomic::Ordering::SeqCst),
        fetched,
        "nothing read"
    );

    // Past the flow's two requests, a loop of sealed requests reads no secret: each turn
    // is refused before its headers are filled in.
    let fetched = aws.0.load(std::sync::atomic::Ordering::SeqCst);
    let seen = approved(&run(&warden, "loop").await);
    let answers: Vec<&str> = seen.split(" ;; ").collect();
    assert_eq!(answers.len(), 20, "{seen}");
    assert!(answers[..2].iter().all(|a| *a == "status=200"), "{seen}");
    assert!(
        answers[2..]
            .iter()
            .all(|a| a.starts_with("error=") && !a.contains("status=")),
        "{seen}"
    );
    assert!(seen.contains("more than 2 HTTP requests"), "{seen}");
    assert_eq!(
        aws.0.load(std::sync::atomic::Ordering::SeqCst) - fetched,
        2,
        "one read per request sent"
    );
}

/// Resolves no name, and says so as the network's transport does: quoting the origin and
/// the name.
struct ResolvesNothing;

#[async_trait]
impl Transport for ResolvesNothing {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        Err(TransportError::Connect(format!(
            "{}: cannot resolve `{}`: no such name (for {})",
            warden::config::origin(hop.url),
            hop.url.host_str().unwrap_or_default(),
            hop.url
        )))
    }
}

/// Answers 200 to any hop, without a network.
struct AnswersAll;

#[async_trait]
impl Transport for AnswersAll {
    async fn send(&self, _hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        Ok(HopResponse {
            status: 200,
            headers: Vec::new(),
            body: b"ok".to_vec(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_is_labelled_by_the_allowed_hosts_entry_never_by_the_host_asked_for() {
    let urls = "https://a1.example.com/x https://a2.example.com/y https://A3.EXAMPLE.COM/ \
                https://evil.test/ https://also-evil.test/";
    let cases = vec![("wild".to_string(), format!("http-each:{urls}"))];
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &flows(&cases, "https://*.Example.com"),
        Some(Arc::new(AnswersAll)),
    )
    .await;
    let report = run(&warden, "wild").await;
    assert_eq!(approved(&report), "200 200 200 denied denied");
    let metrics = Metrics::default();
    metrics.observe_hook(&report);
    let rendered = metrics.render(&[], 0, Default::default(), &[]);
    // A metric family keeps its series in no set order.
    let mut egress: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("warden_http_egress_total{"))
        .collect();
    egress.sort();
    assert_eq!(
        egress,
        [
            r#"warden_http_egress_total{flow="wild",host="(not allowed)",status="denied"} 2"#,
            r#"warden_http_egress_total{flow="wild",host="https://*.Example.com",status="200"} 3"#,
        ],
        "{rendered}"
    );
}

/// Answers every hop `200` and counts them.
#[derive(Default)]
struct Counts(std::sync::atomic::AtomicUsize);

#[async_trait]
impl Transport for Counts {
    async fn send(&self, _hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(HopResponse {
            status: 200,
            headers: Vec::new(),
            body: b"ok".to_vec(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_whose_replica_lost_its_claim_sends_nothing() {
    use warden::runtime::lease::Lease;
    let cases = vec![(
        "grant".to_string(),
        "http-hex:https://a1.example.com/grant".to_string(),
    )];
    let scratch = Scratch::new();
    let sent = Arc::new(Counts::default());
    let warden = start(
        &scratch,
        &flows(&cases, "https://*.example.com"),
        Some(sent.clone()),
    )
    .await;
    let event =
        EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap();
    let now = warden::store::requests::now_ms();
    let run = |lease: Lease| {
        let (warden, event) = (&warden, &event);
        async move {
            warden
                .run_hook_leased("grant", HookName::OnRequest, event, Some(&lease))
                .await
                .unwrap()
        }
    };
    // Within its lease: sent.
    let sent_once = seen_by_plugin(&run(Lease::until(now + 60_000)).await);
    assert!(sent_once.starts_with("200\n"), "{sent_once}");
    assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A lease run out by the clock (a replica that was paused), or ended when the claim was
    // found taken over: refused before anything is sent.
    let ran_out = Lease::until(now - 1);
    let taken_over = Lease::until(now + 60_000);
    taken_over.end();
    for lease in [ran_out, taken_over] {
        let report = run(lease).await;
        let seen = seen_by_plugin(&report);
        assert!(
            seen.contains("claim on the request ran out") && seen.contains("nothing is sent"),
            "{seen}"
        );
        assert_eq!(report.http_calls[0].outcome, "denied");
        // Recorded, for the history and the refusals' metric, as what it is.
        let kinds: Vec<_> = report.refusals.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [RefusalKind::Lease], "{:?}", report.refusals);
    }
    assert_eq!(sent.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_whose_replica_lost_its_claim_stores_no_identity() {
    use warden::runtime::lease::Lease;
    // The replica that took the request over may have stored another id meanwhile: a late
    // write from the paused one would overwrite it.
    let cases = vec![("keep".to_string(), "persist:custom vo-ext u1".to_string())];
    let scratch = Scratch::new();
    let warden = start(&scratch, &flows(&cases, "https://*.example.com"), None).await;
    let event =
        EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap();
    let now = warden::store::requests::now_ms();
    let stored = || async {
        warden
            .identity_store()
            .lookup_identity("alice@example.com", "custom", "vo-ext")
            .await
            .unwrap()
    };
    let report = warden
        .run_hook_leased(
            "keep",
            HookName::OnRequest,
            &event,
            Some(&Lease::until(now - 1)),
        )
        .await
        .unwrap();
    let seen = denied(&report);
    assert!(
        seen.contains("claim on the request ran out") && seen.contains("nothing is stored"),
        "{seen}"
    );
    let kinds: Vec<_> = report.refusals.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RefusalKind::Lease], "{:?}", report.refusals);
    assert!(stored().await.is_none());
    // Within its lease: stored.
    let report = warden
        .run_hook_leased(
            "keep",
            HookName::OnRequest,
            &event,
            Some(&Lease::until(now + 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(approved(&report), "persisted u1");
    assert_eq!(stored().await.unwrap().user_id, "u1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_acts_on_nothing_while_it_loads() {
    // `implemented` is plugin code run at every load (`warden check`, a start, a reload) in
    // a store with the flow's grants, for no request: what it sent or stored would be
    // recorded nowhere.
    let server = TestServer::start().await;
    let origin = server.origin();
    let scratch = Scratch::new();
    scratch.write("vo.key", VO_SECRET);
    let text = format!(
        "[store]\npath = \"warden.db\"\n\n[secrets.vo_key]\nsource = \"file\"\npath = \"vo.key\"\n\
         [integrations.act]\ntype = \"custom\"\nexternal_id = \"act-ext\"\nsecrets = [\"vo_key\"]\n\
         settings = {{ url = \"{origin}/at-load\" }}\n\
         [environments.main]\nintegrations = {{ act-in-implemented = \"act\" }}\n\
         [flows.loads]\nenvironment = \"main\"\nplugin = {}\nallowed_hosts = [{origin:?}]\n",
        toml_path(artifacts::BAD_LOAD)
    );
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(Store::open(&config.store_path).unwrap());
    let secrets = Arc::new(SecretStore::new(&config.secrets));
    let warden = Warden::start_with(config, store, secrets, StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // It loaded (the refusals were its answers, not failures) and runs its hook.
    assert_eq!(approved(&run(&warden, "loads").await), "loaded");
    assert_eq!(server.requests(), 0, "a request was sent while loading");
    let identity = warden
        .identity_store()
        .lookup_identity("loader@example.com", "custom", "act-ext")
        .await
        .unwrap();
    assert!(identity.is_none(), "an identity was stored while loading");
}

/// Answers the read at load, then fails every read.
struct DownAfterLoad(std::sync::atomic::AtomicUsize);

#[async_trait]
impl SecretFetcher for DownAfterLoad {
    async fn fetch(&self, _secret: &AwsSecret) -> Result<String, String> {
        match self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Ok("loaded-value-1234".into()),
            _ => Err("AWS is down".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_failing_on_a_capability_the_host_failed_is_the_hosts_failure() {
    // The WIT says an unavailable secret (or the identity store failing) is not the
    // plugin's fault; a plugin passing the error on was blamed for it all the same.
    let cases = vec![
        (
            "reveals".to_string(),
            "cut-secret:victorops 1 1".to_string(),
        ),
        (
            "seals".to_string(),
            "http-sealed:victorops https://a1.example.com/grant".to_string(),
        ),
    ];
    // The sealed header's plugin fails on the error it is told (`connect`, with the cause).
    let flows = flows(&cases, "https://*.example.com")
        .replace("reveal_secrets = false", "reveal_secrets = true")
        .replace(
            "vars = { action = \"http-sealed",
            "vars = { errors = \"fail\", action = \"http-sealed",
        );
    let now = Arc::new(Mutex::new(std::time::Instant::now()));
    let clock = now.clone();
    let scratch = Scratch::new();
    let aws = Arc::new(DownAfterLoad(Default::default()));
    let warden = start_on_aws(&scratch, 60, &flows, aws, |loaded_at| {
        *now.lock().unwrap() = loaded_at;
        Arc::new(move || *clock.lock().unwrap())
    })
    .await;
    // Past the value's TTL: nothing good in hand, and AWS failing.
    *now.lock().unwrap() += Duration::from_secs(61);
    for (flow, logged) in [("reveals", "secrets: "), ("seals", "http: header ")] {
        let report = run(&warden, flow).await;
        let failure = report.outcome.as_ref().unwrap_err();
        assert_eq!(failure.blame(), warden::Blame::Host, "{flow}: {failure}");
        let said = failure.to_string();
        assert!(
            said.contains("AWS is down") && said.contains("the plugin then failed"),
            "{flow}: {said}"
        );
        assert!(
            report
                .logs
                .iter()
                .any(|l| l.source == warden::capabilities::log::LogSource::Host
                    && l.message.starts_with(logged)),
            "{flow}: {:?}",
            report.logs
        );
    }
}
