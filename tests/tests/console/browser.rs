//! The browser side of the console tests: one headless Chromium per test, one test at a time,
//! and a failed test's page kept as a screenshot, since a browser's failure is hard to read
//! from an assertion alone.

use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::FutureExt;

use super::setup::Console;
use super::webdriver::{self, Browser};

/// One browser test at a time: two cores are shared by the whole suite.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where a failed test's page is saved, and the pages a test keeps as the README's pictures.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// Runs `test` with a browser, or skips it (with a message) when there is none and the
/// environment does not require one. On failure, the page is saved as a screenshot.
pub async fn with_browser<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Console, Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (chromium, driver) = match webdriver::find() {
        Ok(found) => found,
        Err(missing) if std::env::var_os("WARDEN_REQUIRE_BROWSER").is_none() => {
            // Written past the test harness's capture, so a passing run still shows it.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {name}: {missing}; set WARDEN_REQUIRE_BROWSER=1 to fail instead"
            );
            return;
        }
        Err(missing) => panic!("{name} needs a browser (WARDEN_REQUIRE_BROWSER is set): {missing}"),
    };
    let _one = ONE_BROWSER.lock().await;
    let console = Console::start().await;
    let browser = Arc::new(Browser::start(&chromium, &driver).await);
    let outcome = AssertUnwindSafe(test(console, browser.clone()))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, browser.screenshot().await).unwrap();
        eprintln!("{name} failed; the page is in {}", path.display());
        browser.quit().await;
        std::panic::resume_unwind(panic);
    }
    browser.quit().await;
}

pub async fn sign_in(c: &Console, b: &Browser, token: &str) {
    b.goto(&c.url("/signin")).await;
    b.find("#token").await.type_text(token).await;
    b.find("#signin").await.click().await;
    b.find("#signed-in").await;
}

pub async fn sign_out(b: &Browser) {
    b.find("#logout").await.click().await;
    b.find("#token").await;
}
