//! Every page of the console sends a visitor who is not signed in to the sign-in page, with
//! the way back to that page (its query kept) in `next`.

use super::setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn each_page_sends_a_visitor_not_signed_in_to_sign_in_and_back() {
    let c = Console::start().await;
    let id = c.file_in("open", BOB).await;
    for (page, next) in [
        ("/".to_string(), "%2F".to_string()),
        ("/?flow=open".into(), "%2F%3Fflow%3Dopen".into()),
        ("/new".into(), "%2Fnew".into()),
        ("/new/open".into(), "%2Fnew%2Fopen".into()),
        // A segment that would end the path or start a query goes back escaped, as it came.
        ("/new/a%3Fb%2Fc".into(), "%2Fnew%2Fa%253Fb%252Fc".into()),
        (format!("/requests/{id}"), format!("%2Frequests%2F{id}")),
        ("/audit?actor=bob".into(), "%2Faudit%3Factor%3Dbob".into()),
    ] {
        let reply = c.http.get(c.url(&page)).send().await.unwrap();
        assert_eq!(reply.status(), 303, "{page}");
        let location = reply.headers()["location"].to_str().unwrap();
        assert_eq!(location, format!("/signin?next={next}"), "{page}");
    }
    // Signed in, the page answers itself.
    let cookie = c.session(CAROL).await;
    let reply = c
        .http
        .get(c.url(&format!("/requests/{id}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
}
