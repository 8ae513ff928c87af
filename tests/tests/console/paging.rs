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
