//! The console's list a page at a time: 50 requests, then **Older requests** going on from
//! the last, keeping the filters.

use super::setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_list_shows_fifty_requests_and_goes_on_from_the_last() {
    let c = Console::start().await;
    let mut filed = Vec::new();
    for _ in 0..51 {
        filed.push(c.file_in("open", BOB).await);
    }
    let cookie = c.session(CAROL).await;
    let page = |path: String| {
        let (http, url, cookie) = (c.http.clone(), c.url(&path), cookie.clone());
        async move {
            let reply = http.get(url).header("cookie", cookie).send().await.unwrap();
            assert_eq!(reply.status(), 200);
            reply.text().await.unwrap()
        }
    };
    let rows = |html: &str| -> Vec<String> {
        html.split("data-id=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect()
    };
    let older = |html: &str| -> Option<String> {
        let at = html.find("id=\"older\"")?;
        let href = &html[at..];
        let start = href.find("href=\"")? + "href=\"".len();
        let end = href[start..].find('"')?;
        Some(href[start..start + end].replace("&amp;", "&"))
    };
    let first = page("/?flow=open".into()).await;
    let mut seen = rows(&first);
    assert_eq!(seen.len(), 50, "{first:.2000}");
    let next = older(&first).expect("a link to older requests");
    assert!(
        next.contains("flow=open") && next.contains("before="),
        "{next}"
    );
    let second = page(next).await;
    seen.extend(rows(&second));
    assert_eq!(older(&second), None, "the last page has no link on");
    seen.sort();
    filed.sort();
    assert_eq!(seen, filed, "every request once");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_request_form_counts_as_the_api_does_against_new_requests_per_minute() {
    let c = Console::start().await;
    let limit = warden::config::DEFAULT_NEW_REQUESTS_PER_MINUTE;
    for _ in 0..limit {
        c.file_in("open", BOB).await;
    }
    let cookie = c.session(BOB).await;
    let csrf = c.csrf_of(&cookie).await;
    let reply = c
        .http
        .post(c.url("/new/open"))
        .header("cookie", &cookie)
        .header("origin", c.url(""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&idem=one-more"))
        .send()
        .await
        .unwrap();
    let text = reply.text().await.unwrap();
    assert!(text.contains("new_requests_per_minute"), "{text:.3000}");
    let listed = c.admin_get("/v1/requests?flow=open&limit=200").await;
    assert_eq!(
        listed["requests"].as_array().unwrap().len(),
        limit as usize,
        "nothing more was filed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_form_keeps_its_key_unless_the_key_was_what_was_refused() {
    let c = Console::start().await;
    let cookie = c.session(BOB).await;
    let csrf = c.csrf_of(&cookie).await;
    let send = |body: String| {
        c.http
            .post(c.url("/new/oncall"))
            .header("cookie", &cookie)
            .header("origin", c.url(""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let key_of = |page: &str| {
        let at = page.find(r#"name="idem" value=""#).expect("the form's key") + 19;
        page[at..].split('"').next().unwrap().to_string()
    };
    // Refused before anything was stored (a required field left empty): sent again as it
    // comes back, the form files under the same key.
    let reply = send(format!("csrf={csrf}&idem=console-fixed&f.reason="))
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let page = reply.text().await.unwrap();
    assert_eq!(key_of(&page), "console-fixed", "{page:.3000}");
    let filed = send(format!("csrf={csrf}&idem=console-fixed&f.reason=one"))
        .await
        .unwrap();
    assert_eq!(filed.status(), 303);
    // The same key with other fields is refused for the key: the form comes back with a
    // new one, and sent again files a second request.
    let reply = send(format!("csrf={csrf}&idem=console-fixed&f.reason=two"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 422);
    let page = reply.text().await.unwrap();
    assert!(
        page.contains("a new request needs a new key"),
        "{page:.3000}"
    );
    let fresh = key_of(&page);
    assert!(
        fresh.starts_with("console-") && fresh != "console-fixed",
        "{fresh}"
    );
    let again = send(format!("csrf={csrf}&idem={fresh}&f.reason=two"))
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    let listed = c.admin_get("/v1/requests?flow=oncall").await;
    assert_eq!(
        listed["requests"].as_array().unwrap().len(),
        2,
        "{listed:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filed_notice_says_the_plugin_decided_only_when_it_did() {
    let c = Console::start().await;
    let id = c.file(BOB, "x").await;
    let denied = c
        .http
        .post(c.url(&format!("/v1/requests/{id}/deny")))
        .bearer_auth(ERIN)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    // A link (or a form sent again) may carry `?filed` to a request a person decided.
    let cookie = c.session(CAROL).await;
    let page = c
        .http
        .get(c.url(&format!("/requests/{id}?filed")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("erin@example.com"), "{page:.3000}");
    assert!(!page.contains("the flow's plugin"), "{page:.3000}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_failing_after_sign_in_answers_503_with_retry_after() {
    let c = Console::start().await;
    let cookie = c.session(CAROL).await;
    // The sessions still answer; the requests no longer do.
    let db = rusqlite::Connection::open(c.scratch.path().join("warden.db")).unwrap();
    db.execute_batch("ALTER TABLE requests RENAME TO requests_away")
        .unwrap();
    let reply = c
        .http
        .get(c.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    assert_eq!(
        reply
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("2")
    );
    let page = reply.text().await.unwrap();
    assert!(
        page.contains("carol@example.com"),
        "a page for her: {page:.2000}"
    );
}
