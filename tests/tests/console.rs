//! The approvers' console end to end: a real `warden serve` with the VictorOps plugin and
//! its stand-in, driven by headless Chromium through chromedriver (and, for what a browser
//! would not send, by plain HTTP).
//!
//! The browser tests skip only when Chromium or chromedriver is missing and
//! `WARDEN_REQUIRE_BROWSER` is unset; `scripts/test` sets it, so CI fails instead. When one
//! fails, a screenshot of the page is written under the target folder (the message says where).

#[path = "console/browser.rs"]
mod browser;
#[path = "console/paging.rs"]
mod paging;
#[path = "console/setup.rs"]
mod setup;
#[path = "console/signing_in.rs"]
mod signing_in;
#[path = "console/webdriver.rs"]
mod webdriver;

use serde_json::json;
use warden::serve::Server;

use browser::{screenshot_dir, sign_in, sign_out, with_browser};
use setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_requester_files_through_the_form_and_an_approver_approves_with_a_reason() {
    with_browser("approve", |c, b| async move {
        // bob, off call, files through the form built from the flow's fields.
        sign_in(&c, &b, BOB).await;
        assert_eq!(b.text("#signed-in").await, "bob@example.com · requester");
        b.goto(&c.url("/new/oncall")).await;
        assert_eq!(
            b.find("[name='f.reason']")
                .await
                .attribute("required")
                .await
                .as_deref(),
            Some("true")
        );
        assert!(b.find_now("[name='f.duration']").await.is_some());
        assert!(b.find_now("textarea[name='f.tickets']").await.is_some());
        b.find("[name='f.reason']")
            .await
            .type_text("rotate the keys")
            .await;
        b.find("[name='f.duration']").await.type_text("2h").await;
        b.find("#submit").await.click().await;
        assert_eq!(b.text("#info").await, "Filed: it waits for an approver.");
        assert_eq!(b.text(".summary .state").await, "pending");
        let url = b.url().await;
        let id = url
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches("?filed")
            .to_string();
        assert_eq!(c.get(&id).await["fields"]["duration"]["seconds"], 7200);
        sign_out(&b).await;

        // carol sees it first in the list, opens it and approves it with a reason.
        c.file(ALICE, "fix prod").await; // fast-tracked: listed after the pending one
        sign_in(&c, &b, CAROL).await;
        assert_eq!(b.text("#signed-in").await, "carol@example.com · approver");
        let first = b.find("#requests tbody tr").await;
        assert_eq!(
            first.attribute("data-id").await.as_deref(),
            Some(id.as_str())
        );
        assert!(b.text("#requests").await.contains("rotate the keys"));
        b.find(&format!("tr[data-id='{id}'] a")).await.click().await;
        b.find("#decision-reason")
            .await
            .type_text("looks right")
            .await;
        b.find("#approve").await.click().await;
        b.find(".summary .state.escalated").await;
        assert_eq!(b.text("#decided-by").await, "carol@example.com");
        assert_eq!(b.text("#reason").await, "looks right");
        let history = b.text("#history").await;
        for step in [
            "pending → approved",
            "approved → escalated",
            "by carol@example.com",
        ] {
            assert!(history.contains(step), "{step:?} in {history}");
        }
        assert!(history.contains("hook on_request: continue"), "{history}");
        let stored = c.get(&id).await;
        assert_eq!(stored["state"], "escalated");
        assert_eq!(stored["reason"], "looks right");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_on_call_requester_is_fast_tracked_at_once() {
    with_browser("fast_track", |c, b| async move {
        sign_in(&c, &b, ALICE).await;
        b.goto(&c.url("/new")).await;
        b.find("#flows a[href='/new/oncall']").await.click().await;
        b.find("[name='f.reason']")
            .await
            .type_text("fix prod")
            .await;
        b.find("#submit").await.click().await;
        assert_eq!(
            b.text("#info").await,
            "Filed and fast-tracked: the flow's plugin approved it at once."
        );
        assert_eq!(b.text(".summary .state").await, "escalated");
        assert_eq!(b.text("#reason").await, ON_CALL_REASON);
        assert_eq!(
            b.text("#decided-by").await,
            "flow `oncall` plugin (fast-tracked)"
        );
        // A flow without declared fields asks for a reason only.
        b.goto(&c.url("/new/open")).await;
        b.find("textarea[name='f.reason']").await;
        assert_eq!(b.count("#new-request input:not([type=hidden])").await, 0);
        // A required field left blank: the form again, with the lifecycle's message.
        b.goto(&c.url("/new/oncall")).await;
        b.script(
            "document.querySelector(\"[name='f.reason']\").removeAttribute('required')",
            json!([]),
        )
        .await;
        b.find("[name='f.duration']").await.type_text("90m").await;
        b.find("#submit").await.click().await;
        assert_eq!(b.text("#error").await, "field `reason`: is required");
        // What was typed comes back with the error.
        let duration = b.find("[name='f.duration']").await;
        assert_eq!(duration.attribute("value").await.as_deref(), Some("90m"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_buttons_are_missing_with_the_reason_and_forged_posts_change_nothing() {
    with_browser("refusals", |c, b| async move {
        let bobs = c.file(BOB, "need logs").await;
        let carols = c.file(CAROL, "my own").await;

        sign_in(&c, &b, BOB).await;
        // A requester's list holds their own requests only.
        assert_eq!(b.count("#requests tbody tr").await, 1);
        b.find(&format!("tr[data-id='{bobs}']")).await;
        b.goto(&c.url(&format!("/requests/{bobs}"))).await;
        assert!(b.text("#no-actions").await.contains("You are a requester"));
        assert!(b.find_now("#approve").await.is_none());
        // Someone else's request is not shown to a requester.
        b.goto(&c.url(&format!("/requests/{carols}"))).await;
        assert!(
            b.text("#error")
                .await
                .contains("may see only their own requests")
        );
        b.goto(&c.url("/requests/req-nope")).await;
        assert_eq!(b.text("#error").await, "no request `req-nope`");
        sign_out(&b).await;

        sign_in(&c, &b, CAROL).await;
        b.goto(&c.url(&format!("/requests/{carols}"))).await;
        assert!(
            b.text("#no-actions")
                .await
                .contains("does not allow self-approval"),
            "{}",
            b.source().await
        );
        assert!(b.find_now("#approve").await.is_none());
        sign_out(&b).await;

        // Admin dave files for bob: he is not to approve what he filed either.
        let filed = c.file_for(DAVE, "bob@example.com", "for bob").await;
        sign_in(&c, &b, DAVE).await;
        b.goto(&c.url(&format!("/requests/{filed}"))).await;
        assert_eq!(b.text("#requester").await, "bob@example.com");
        assert_eq!(b.text("#filed-by").await, "dave@example.com");
        assert!(
            b.text("#no-actions").await.contains("You filed this"),
            "{}",
            b.source().await
        );
        assert!(b.find_now("#approve").await.is_none());
        b.goto(&c.url(&format!("/requests/{bobs}"))).await;
        assert!(b.find_now("#filed-by").await.is_none());
        sign_out(&b).await;
        sign_in(&c, &b, CAROL).await;

        // A form made up in the page, without the CSRF token or with another session's.
        let forge = "const f = document.createElement('form'); f.method = 'post'; \
                     f.action = arguments[0]; \
                     for (const [k, v] of Object.entries(arguments[1])) { \
                       const i = document.createElement('input'); i.type = 'hidden'; \
                       i.name = k; i.value = v; f.appendChild(i); } \
                     document.body.appendChild(f); f.submit();";
        let action = format!("/requests/{bobs}/decide");
        let erins = c.csrf_of(&c.session(ERIN).await).await;
        for fields in [
            json!({ "verdict": "approve", "reason": "forged" }),
            json!({ "verdict": "approve", "reason": "forged", "csrf": erins }),
        ] {
            b.goto(&c.url(&format!("/requests/{bobs}"))).await;
            b.script(forge, json!([action, fields])).await;
            let error = b.text("#error").await;
            assert!(
                error.contains("CSRF token is missing or is not this session's"),
                "{error}"
            );
            assert_eq!(c.get(&bobs).await["state"], "pending");
        }
        // A decided request: the same page with the lifecycle's 409 message.
        b.goto(&c.url(&format!("/requests/{bobs}"))).await;
        let stale = b.find("#approve").await;
        c.http
            .post(c.url(&format!("/v1/requests/{bobs}/deny")))
            .bearer_auth(ERIN)
            .send()
            .await
            .unwrap();
        stale.click().await;
        assert!(
            b.text("#error")
                .await
                .contains("is denied; only pending requests")
        );
        assert_eq!(c.get(&bobs).await["state"], "denied");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_link_lands_on_the_request_after_sign_in_and_nowhere_else() {
    with_browser("deep_link", |c, b| async move {
        let id = c.file(BOB, "deep link").await;
        b.goto(&c.url(&format!("/requests/{id}"))).await;
        assert!(b.url().await.contains("/signin?next=%2Frequests%2F"));
        b.find("#token").await.type_text(CAROL).await;
        b.find("#signin").await.click().await;
        b.find("#approve").await;
        assert_eq!(b.url().await, c.url(&format!("/requests/{id}")));
        sign_out(&b).await;

        // A return path to another site lands on the console's own list.
        b.goto(&c.url("/signin?next=%2F%2Fevil.example%2Fx")).await;
        b.find("#token").await.type_text(CAROL).await;
        b.find("#signin").await.click().await;
        b.find("#signed-in").await;
        assert_eq!(b.url().await, c.url("/"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn html_in_a_reason_a_field_or_a_plugins_error_is_shown_as_text() {
    with_browser("xss", |c, b| async move {
        let attack =
            "<script>window.__xss = 1</script><img id=injected src=x onerror=\"window.__xss = 2\">";
        let id = c.file(BOB, attack).await;
        sign_in(&c, &b, CAROL).await;
        assert!(b.text("#requests").await.contains(attack));
        b.goto(&c.url(&format!("/requests/{id}"))).await;
        b.find("#decision-reason")
            .await
            .type_text(&format!("no {attack}"))
            .await;
        b.find("#deny").await.click().await;
        b.find(".summary .state.denied").await;
        assert_eq!(b.text("#reason").await, format!("no {attack}"));
        assert!(b.text("#fields").await.contains(attack));
        assert_eq!(b.count("#injected").await, 0, "no element is injected");
        assert_eq!(b.count("main script").await, 0);
        assert_eq!(
            b.script("return typeof window.__xss", json!([])).await,
            "undefined",
            "no script ran"
        );
        // A plugin's reason is text too.
        let denied = c.file_in("markup", BOB).await;
        b.goto(&c.url(&format!("/requests/{denied}"))).await;
        assert_eq!(b.text("#reason").await, PLUGIN_MARKUP);
        assert!(b.text("#history").await.contains(PLUGIN_MARKUP));
        assert_eq!(b.count("#plugin-injected").await, 0);
        assert_eq!(
            b.script("return typeof window.__xss", json!([])).await,
            "undefined"
        );
        // And a plugin's error, shown in the reason and the history's hook row.
        let failed = c.file_in("markup-error", BOB).await;
        b.goto(&c.url(&format!("/requests/{failed}"))).await;
        assert!(b.text("#reason").await.contains(PLUGIN_MARKUP));
        assert!(b.text("#history").await.contains(PLUGIN_MARKUP));
        assert_eq!(b.count("#plugin-injected").await, 0);
        assert_eq!(
            b.script("return typeof window.__xss", json!([])).await,
            "undefined"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_out_ends_the_session_and_the_old_cookie_no_longer_works() {
    with_browser("sign_out", |c, b| async move {
        sign_in(&c, &b, DAVE).await;
        let cookies = b.cookies().await;
        let cookie = cookies
            .iter()
            .find(|k| k["name"] == "warden_session")
            .unwrap_or_else(|| panic!("{cookies:?}"))
            .clone();
        assert_eq!(cookie["httpOnly"], true);
        assert_eq!(cookie["sameSite"], "Strict");
        // The admin's audit page: newest first.
        c.file(BOB, "for the audit").await;
        b.goto(&c.url("/audit")).await;
        let rows = b
            .script(
                "return [...document.querySelectorAll('#audit tbody tr')]\
                 .map(r => [Number(r.cells[0].textContent), r.cells[3].textContent])",
                json!([]),
            )
            .await;
        let rows: Vec<(i64, String)> = serde_json::from_value(rows).unwrap();
        assert!(
            rows.windows(2).all(|w| w[0].0 > w[1].0),
            "newest first: {rows:?}"
        );
        assert_eq!(rows.last().unwrap().1, "console-sign-in", "{rows:?}");
        assert_eq!(rows[0].1, "request", "{rows:?}");
        sign_out(&b).await;

        b.add_cookie(json!({ "name": "warden_session", "value": cookie["value"], "path": "/" }))
            .await;
        b.goto(&c.url("/")).await;
        b.find("#token").await;
        assert!(b.url().await.contains("/signin"));
        let old = format!("warden_session={}", cookie["value"].as_str().unwrap());
        let reply = c
            .http
            .get(c.url("/"))
            .header("cookie", old)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 303);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_fits_a_phone() {
    with_browser("phone", |c, b| async move {
        c.file(BOB, &"a long reason that goes on and on ".repeat(8))
            .await;
        c.file(ALICE, "fix prod").await;
        b.resize(375, 800).await;
        sign_in(&c, &b, CAROL).await;
        b.find("#requests").await;
        let fits = "return [document.documentElement.scrollWidth, window.innerWidth]";
        let widths = b.script(fits, json!([])).await;
        assert!(widths[0].as_u64() <= widths[1].as_u64(), "{widths}");
        // Filters by state and by flow, also chosen through the filter form.
        b.goto(&c.url("/?state=escalated")).await;
        assert_eq!(b.count("#requests tbody tr").await, 1);
        assert!(b.text("#requests").await.contains("alice@example.com"));
        b.goto(&c.url("/?flow=open")).await;
        assert_eq!(b.text("#empty").await, "No requests.");
        b.goto(&c.url("/")).await;
        b.script(
            "document.querySelector('select[name=state]').value = 'pending'",
            json!([]),
        )
        .await;
        b.find(".filters button").await.click().await;
        b.wait_for_url("state=pending").await;
        b.find("#requests").await;
        assert_eq!(b.count("#requests tbody tr").await, 1);
        assert_eq!(b.text("#requests .state").await, "pending");
        let id = c.file(BOB, "phone").await;
        b.goto(&c.url(&format!("/requests/{id}"))).await;
        b.find("#approve").await;
        let widths = b.script(fits, json!([])).await;
        assert!(widths[0].as_u64() <= widths[1].as_u64(), "{widths}");
        // The README's picture of the console.
        std::fs::create_dir_all(screenshot_dir()).unwrap();
        b.resize(1000, 800).await;
        b.goto(&c.url("/")).await;
        b.find("#requests").await;
        std::fs::write(screenshot_dir().join("requests.png"), b.screenshot().await).unwrap();
        b.goto(&c.url(&format!("/requests/{id}"))).await;
        b.find("#approve").await;
        std::fs::write(screenshot_dir().join("request.png"), b.screenshot().await).unwrap();
    })
    .await;
}

// Without a browser: what a browser would not send, and the headers it is sent.

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_a_strict_policy_and_cookies_their_flags() {
    let c = Console::start().await;
    let page = c.http.get(c.url("/signin")).send().await.unwrap();
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(!page.text().await.unwrap().contains("<script"));

    let cookie = c.session(CAROL).await;
    assert!(cookie.starts_with("warden_session="));
    let reply = c
        .http
        .post(c.url("/signin"))
        .header("x-forwarded-proto", "https")
        .body(format!("token={CAROL}"))
        .send()
        .await
        .unwrap();
    let set = reply.headers()["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("__Host-warden_session="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    // Over TLS the session counts only under its `__Host-` name: the same id under the
    // plain name (which a sibling domain or plain HTTP could have set) signs no one in.
    let id = set
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, id)| id.to_string())
        .unwrap();
    let home = |cookie: String| {
        c.http
            .get(c.url("/"))
            .header("x-forwarded-proto", "https")
            .header("cookie", cookie)
            .send()
    };
    let signed_in = home(format!("__Host-warden_session={id}")).await.unwrap();
    assert_eq!(signed_in.status(), 200);
    let planted = home(format!("warden_session={id}")).await.unwrap();
    assert!(planted.status().is_redirection(), "{}", planted.status());
    assert!(
        planted.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/signin")
    );
    // The API is unchanged: JSON and bearer tokens.
    let api = c
        .http
        .get(c.url("/v1/requests"))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_says_one_thing_for_a_wrong_token_and_is_rate_limited() {
    let c = Console::start().await;
    let attempt = |token: String| {
        c.http
            .post(c.url("/signin"))
            .body(format!("token={token}"))
            .send()
    };
    let wrong = attempt("carol-token-3334".into()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let text = wrong.text().await.unwrap();
    assert!(text.contains("That token is not valid."));
    assert!(!text.contains("carol-token"), "the token is not echoed");
    for _ in 1..10 {
        attempt("x".into()).await.unwrap();
    }
    let limited = attempt(CAROL.into()).await.unwrap();
    assert_eq!(limited.status(), 429, "the right token too, once limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_cookies_naming_no_session_are_limited_per_address_as_unknown_tokens_are() {
    let c = Console::start().await;
    let carol = c.session(CAROL).await;
    let home = |from: &'static str, cookie: String| {
        c.http
            .get(c.url("/"))
            .header("x-forwarded-for", from)
            .header("cookie", cookie)
            .send()
    };
    // Each costs a read of the store: 20 a minute from one address (the default of
    // `serve.unknown_tokens_per_minute`), as unknown API tokens are.
    for n in 0..20 {
        let forged = format!("warden_session={n:064x}");
        assert_eq!(home("10.9.9.9", forged).await.unwrap().status(), 303, "{n}");
    }
    let limited = home("10.9.9.9", format!("warden_session={:064x}", 99))
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "60");
    // Past it, no cookie from there is looked up, a live session's neither, and its API
    // tokens are not compared: one count, whichever door. Other addresses go on.
    assert_eq!(home("10.9.9.9", carol.clone()).await.unwrap().status(), 429);
    let api = c
        .http
        .get(c.url("/v1/requests"))
        .header("x-forwarded-for", "10.9.9.9")
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 429);
    assert_eq!(home("10.8.8.8", carol).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_with_a_right_token_are_limited_per_user_from_whatever_address() {
    let c = Console::start().await;
    let sign_in = |from: String, token: &str| {
        c.http
            .post(c.url("/signin"))
            .header("x-forwarded-for", from)
            .body(format!("token={token}"))
            .send()
    };
    // Ten addresses, one sign-in each: under every address's limit.
    for n in 0..10 {
        let signed_in = sign_in(format!("10.0.0.{n}"), CAROL).await.unwrap();
        assert_eq!(signed_in.status(), 303);
    }
    let eleventh = sign_in("10.0.1.1".into(), CAROL).await.unwrap();
    assert_eq!(eleventh.status(), 429);
    assert!(eleventh.headers().get("set-cookie").is_none());
    let text = eleventh.text().await.unwrap();
    assert!(text.contains("Too many sign-ins for this user"), "{text}");
    // Another user from that address is not held up.
    let erin = sign_in("10.0.1.1".into(), ERIN).await.unwrap();
    assert_eq!(erin.status(), 303);
    // Carol's refused sign-in wrote nothing: ten audit rows, not eleven.
    let audit = c.admin_get("/v1/admin/audit?limit=100").await;
    let carols = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .filter(|e| e["actor"] == "carol@example.com" && e["action"] == "console-sign-in")
        .count();
    assert_eq!(carols, 10, "{audit}");
}

/// Asks for `path` with `cookie` as client `from` (through the trusted proxy) on a
/// connection that reads only the status line of its answer, and keeps the connection.
async fn ask_reading_little(
    c: &Console,
    path: &str,
    cookie: &str,
    from: &str,
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = c.server.as_ref().unwrap().local_addr();
    let mut conn = warden_tests::raw_client::connect_reading_little(addr).await;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: warden\r\nCookie: {cookie}\r\nX-Forwarded-For: {from}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    conn.read_exact(&mut status).await.unwrap();
    (String::from_utf8_lossy(&status).into_owned(), conn)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_unread_pages_count_as_theirs_from_whatever_address_and_no_one_elses() {
    let c = Console::start().await;
    // Escaped, each `&` is five bytes: a page of about 300 KB.
    let heavy = "&".repeat(60_000);
    let alices = c.file(ALICE, &heavy).await;
    let bobs = c.file(BOB, &heavy).await;
    let (alice, bob) = (c.session(ALICE).await, c.session(BOB).await);
    let page = |id: &str| format!("/requests/{id}");
    let mut unread = Vec::new();
    let refused = loop {
        let from = format!("10.0.0.{}", unread.len() + 1);
        let (status, conn) = ask_reading_little(&c, &page(&alices), &alice, &from).await;
        if status != "HTTP/1.1 200" {
            let mut conn = conn;
            let idle = std::time::Duration::from_millis(500);
            let rest = warden_tests::raw_client::read_until_idle(&mut conn, idle).await;
            break format!("{status}{rest}");
        }
        unread.push(conn);
        assert!(
            unread.len() < 30,
            "no refusal from {} addresses",
            unread.len()
        );
    };
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("text/html")
            && refused.contains("your earlier answers are still being sent"),
        "a page for a browser: {refused}"
    );
    // About 4 MiB of 300 KB pages, whatever address each came from.
    assert!((10..=15).contains(&unread.len()), "{}", unread.len());
    // Bob, from an address alice used, is sent his own page.
    let (status, _bobs_conn) = ask_reading_little(&c, &page(&bobs), &bob, "10.0.0.1").await;
    assert_eq!(status, "HTTP/1.1 200");
    drop(unread);
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_from_another_site_and_oversized_forms_are_refused() {
    let c = Console::start().await;
    let cookie = c.session(CAROL).await;
    let csrf = c.csrf_of(&cookie).await;
    let id = c.file(BOB, "cross site").await;
    let post = |origin: &'static str, body: String| {
        c.http
            .post(c.url(&format!("/requests/{id}/decide")))
            .header("cookie", &cookie)
            .header("origin", origin)
            .body(body)
            .send()
    };
    let cross = post(
        "http://evil.example",
        format!("csrf={csrf}&verdict=approve"),
    )
    .await
    .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(
        cross
            .text()
            .await
            .unwrap()
            .contains("sent from another site")
    );
    let big = post(
        "null",
        format!(
            "csrf={csrf}&verdict=approve&reason={}",
            "x".repeat(40 << 10)
        ),
    )
    .await
    .unwrap();
    assert_eq!(big.status(), 403, "an opaque origin is another site");
    assert_eq!(c.get(&id).await["state"], "pending");
    // From no Origin at all (not a browser), the CSRF token alone decides.
    let plain = c
        .http
        .post(c.url(&format!("/requests/{id}/decide")))
        .header("cookie", &cookie)
        .body(format!(
            "csrf={csrf}&verdict=approve&reason={}",
            "x".repeat(40 << 10)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 413);
    assert_eq!(c.get(&id).await["state"], "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_rotating_a_token_ends_its_sessions_a_restart_does_not_and_a_forged_cookie_is_refused()
 {
    let c = Console::start().await;
    let carol = c.session(CAROL).await;
    let bob = c.session(BOB).await;
    let status = |cookie: String| {
        let request = c.http.get(c.url("/")).header("cookie", cookie).send();
        async move { request.await.unwrap().status() }
    };
    assert_eq!(status(carol.clone()).await, 200);
    c.scratch.write("tokens/carol", "carol-rotated-9999\n");
    c.server.as_ref().unwrap().reload("test").await.unwrap();
    assert_eq!(
        status(carol).await,
        303,
        "the rotated token's session ended"
    );
    assert_eq!(
        status(bob.clone()).await,
        200,
        "other tokens' sessions go on"
    );
    assert_eq!(
        status(format!("warden_session={}", "a".repeat(64))).await,
        303
    );
    assert_eq!(status("warden_session=<script>".into()).await, 303);

    // Sessions live in the store: a restart signs no one out.
    let mut c = c;
    c.server.take().unwrap().shutdown().await.unwrap();
    let config = c.scratch.path().join("warden.toml");
    let again = Server::start(&config, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    c.server = Some(again);
    let reply = c.http.get(c.url("/")).header("cookie", bob).send().await;
    assert_eq!(
        reply.unwrap().status(),
        200,
        "still signed in after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_flows_approvers_see_and_decide_and_access_is_revoked_from_the_page() {
    with_browser("policy", |c, b| async move {
        let id = c.file_in("gated", BOB).await;
        // carol approves, but not this flow: its pending request is neither listed nor shown.
        sign_in(&c, &b, CAROL).await;
        assert!(b.find_now(&format!("tr[data-id='{id}']")).await.is_none());
        b.goto(&c.url(&format!("/requests/{id}"))).await;
        let error = b.text("#error").await;
        assert!(
            error.contains("shown only to those who may decide it")
                && error.contains("only its approvers may (erin@example.com)"),
            "{error}"
        );
        sign_out(&b).await;

        sign_in(&c, &b, ERIN).await;
        b.find(&format!("tr[data-id='{id}'] a")).await.click().await;
        b.find("#approve").await.click().await;
        b.find(".summary .state.escalated").await;
        b.find("#revoke-reason").await.type_text("done early").await;
        b.find("#revoke").await.click().await;
        b.find(".summary .state.deescalated").await;
        let history = b.text("#history").await;
        for step in [
            "escalated → deescalated",
            "by erin@example.com · revoked by erin@example.com: done early",
            "hook on_deescalate",
        ] {
            assert!(history.contains(step), "{step:?} in {history}");
        }
        assert!(b.find_now("#revoke").await.is_none(), "nothing left to revoke");
        sign_out(&b).await;

        // An admin sees a pending request of any flow, and is told why the buttons are
        // missing when the flow's approvers do not name them.
        let other = c.file_in("gated", BOB).await;
        sign_in(&c, &b, DAVE).await;
        b.goto(&c.url(&format!("/requests/{other}"))).await;
        assert_eq!(
            b.text("#no-actions").await,
            "dave@example.com may not decide requests of flow `gated`: only its approvers may (erin@example.com). Ask one of them to decide."
        );
        assert!(b.find_now("#approve").await.is_none());
        sign_out(&b).await;

        // Once escalated, carol sees it, but may not revoke it: no button.
        sign_in(&c, &b, CAROL).await;
        c.http
            .post(c.url(&format!("/v1/requests/{other}/approve")))
            .bearer_auth(ERIN)
            .send()
            .await
            .unwrap();
        b.goto(&c.url(&format!("/requests/{other}"))).await;
        b.find(".summary .state.escalated").await;
        assert!(b.find_now("#revoke").await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_form_without_the_sessions_csrf_token_changes_nothing() {
    let c = Console::start().await;
    let id = c.file_in("gated", BOB).await;
    let approved = c
        .http
        .post(c.url(&format!("/v1/requests/{id}/approve")))
        .bearer_auth(ERIN)
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let cookie = c.session(ERIN).await;
    let csrf = c.csrf_of(&cookie).await;
    let revoke = |body: String| {
        c.http
            .post(c.url(&format!("/requests/{id}/revoke")))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let forged = revoke("reason=forged".into()).await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(c.get(&id).await["state"], "escalated");
    // carol's session, with her own token, may not revoke in a flow she does not decide.
    let carols = c.session(CAROL).await;
    let carols_csrf = c.csrf_of(&carols).await;
    let refused = c
        .http
        .post(c.url(&format!("/requests/{id}/revoke")))
        .header("cookie", &carols)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={carols_csrf}&reason=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(c.get(&id).await["state"], "escalated");
    // A reason the API would refuse is refused here too, bytes counted as the API counts
    // them (2,000 characters of three bytes each are 6,000).
    let long = revoke(format!("csrf={csrf}&reason={}", "%E2%82%AC".repeat(2000)))
        .await
        .unwrap();
    assert_eq!(long.status(), 422);
    assert!(
        long.text()
            .await
            .unwrap()
            .contains("longer than 2000 bytes"),
        "the page says why"
    );
    assert_eq!(c.get(&id).await["state"], "escalated");
    let done = revoke(format!("csrf={csrf}&reason=over")).await.unwrap();
    assert_eq!(done.status(), 303);
    let request = c.get(&id).await;
    assert_eq!(request["state"], "deescalated");
    assert_eq!(
        request["history"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["kind"] == "transition")
            .unwrap()["reason"],
        "revoked by erin@example.com: over"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_an_admin_gave_naming_someone_is_shown_as_the_admins_and_leaves_them_to_decide()
{
    let c = Console::start().await;
    let id = c.file_in("pair", BOB).await;
    let named = c
        .http
        .post(c.url(&format!("/v1/requests/{id}/approve")))
        .bearer_auth(DAVE)
        .body(json!({ "approver": { "email": "carol@example.com" }, "reason": "ok" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    let page = |token| {
        let c = &c;
        let id = id.clone();
        async move {
            let cookie = c.session(token).await;
            c.http
                .get(c.url(&format!("/requests/{id}")))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let carols = page(CAROL).await;
    let shown = "carol@example.com (named by admin dave@example.com)";
    assert!(
        carols.contains(&format!("Approved by</dt><dd id=\"approvals\">{shown}")),
        "{carols}"
    );
    assert!(carols.contains(&format!("by {shown}")), "{carols}");
    // Carol never approved: she may still.
    assert!(!carols.contains("You approved this already"), "{carols}");
    assert!(carols.contains("id=\"approve\""), "{carols}");
}
