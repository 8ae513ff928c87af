//! Every request `GET /v1/requests` lists, page after page (a page holds 200 at most), for
//! the tests that check all of them after a load.

use serde_json::Value;

pub(crate) async fn all_requests(http: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut url = format!("{base}/v1/requests?limit=200");
    loop {
        let response = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        let page: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        all.extend(page["requests"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => url = format!("{base}/v1/requests?limit=200&before={next}"),
            None => return all,
        }
    }
}
