//! A small WebDriver client: headless Chromium driven through `chromedriver` over HTTP,
//! just the commands the console's tests use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key WebDriver names an element by in its answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const WAIT: Duration = Duration::from_secs(15);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, if both are installed.
pub fn find() -> Result<(PathBuf, PathBuf), String> {
    // Debian's /usr/bin/chromium is a shell wrapper; the binary itself starts the same.
    let debian = Path::new("/usr/lib/chromium/chromium");
    let browser = on_path(&["chromium", "chromium-browser", "google-chrome"]).map(|wrapper| {
        if debian.is_file() {
            debian.to_path_buf()
        } else {
            wrapper
        }
    });
    let driver = on_path(&["chromedriver"]);
    match (browser, driver) {
        (Some(b), Some(d)) => Ok((b, d)),
        (b, d) => Err(format!(
            "missing from PATH: {}{}(Debian: apt-get install chromium chromium-driver)",
            if b.is_none() { "chromium " } else { "" },
            if d.is_none() { "chromedriver " } else { "" },
        )),
    }
}

/// A running chromedriver with one headless browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    pub async fn start(browser: &Path, driver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let profile = tempfile::tempdir().unwrap();
        let mut browser_session = Self {
            driver: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: profile,
        };
        let status = format!("{}/status", browser_session.base);
        let ready = async || {
            let answer = browser_session.http.get(&status).send().await;
            answer.is_ok_and(|r| r.status().is_success()).then_some(())
        };
        wait(ready, async || "chromedriver did not start".to_string()).await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.to_str().unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1200,900", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", browser_session._profile.path().display()),
                ],
            },
        }}});
        let answer = browser_session.call("POST", "/session", Some(caps)).await;
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_string();
        browser_session.base = format!("{}/session/{id}", browser_session.base);
        browser_session
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with its message.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.parse().unwrap(), &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        if path == "/session" {
            return answer["value"].clone();
        }
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    async fn try_call(&self, method: &str, path: &str, body: Value) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        let request = self
            .http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body(body.to_string());
        let text = request.send().await.ok()?.text().await.ok()?;
        let answer: Value = serde_json::from_str(&text).ok()?;
        (!answer["value"]["error"].is_string()).then(|| answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.call("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Waits until the page's address contains `part`: after a click that loads a page with the
    /// same elements as the one it left, `find` would answer from the old page.
    pub async fn wait_for_url(&self, part: &str) {
        let at = async || self.url().await.contains(part).then_some(());
        let failed = async || format!("the page stayed at {}, not `{part}`", self.url().await);
        wait(at, failed).await
    }

    /// The first element `css` finds, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let failed = async || {
            let (url, page) = (self.url().await, self.source().await);
            format!("no element `{css}` at {url}; the page:\n{page}")
        };
        wait(async || self.find_now(css).await, failed).await
    }

    /// The element `css` finds now, if any.
    pub async fn find_now(&self, css: &str) -> Option<Element<'_>> {
        let value = self
            .try_call(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Some(Element {
            browser: self,
            id: value[ELEMENT_KEY].as_str()?.to_string(),
        })
    }

    pub async fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn add_cookie(&self, cookie: Value) {
        self.call("POST", "/cookie", Some(json!({ "cookie": cookie })))
            .await;
    }

    /// The page as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let encoded = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Browser {
    /// Ends the browser session (and the browser), then chromedriver.
    pub async fn quit(&self) {
        let _ = self
            .http
            .delete(&self.base)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending chromedriver ends the browser it started.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Element<'_> {
    pub async fn click(&self) {
        self.browser
            .call(
                "POST",
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser
            .call(
                "POST",
                &format!("/element/{}/value", self.id),
                Some(json!({ "text": text })),
            )
            .await;
    }

    pub async fn text(&self) -> String {
        self.browser
            .call("GET", &format!("/element/{}/text", self.id), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .call(
                "GET",
                &format!("/element/{}/attribute/{name}", self.id),
                None,
            )
            .await
            .as_str()
            .map(str::to_string)
    }
}

/// `check`'s first answer, asked for every 50 ms; past [`WAIT`], a panic saying what
/// `failed` says.
async fn wait<T>(
    mut check: impl AsyncFnMut() -> Option<T>,
    failed: impl AsyncFnOnce() -> String,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(answer) = check().await {
            return answer;
        }
        if Instant::now() > deadline {
            panic!("{}", failed().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
