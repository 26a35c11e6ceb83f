//! A headless Chromium driven over WebDriver (Debian's `chromium` + `chromium-driver`): a small
//! client of the W3C WebDriver protocol on top of reqwest, enough for the console test (open a
//! page, type, read the DOM, screenshots, the browser's console log).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use platform::testing::free_port;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The chromedriver binary (`CHROMEDRIVER`, default `/usr/bin/chromedriver`).
pub fn chromedriver() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// The browser binary (`CHROMIUM`, default `/usr/bin/chromium`).
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The launch flags of a headless browser in a container or CI machine.
pub const CHROMIUM_FLAGS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
];

/// A chromedriver process and one browser session.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`; panics with a hint when
    /// they are missing (`cargo xtask test` installs them).
    pub async fn start(width: u32, height: u32) -> Self {
        let (driver, browser) = (chromedriver(), chromium());
        for binary in [&driver, &browser] {
            assert!(
                binary.is_file(),
                "{} is missing: install Debian's chromium and chromium-driver \
                 (`cargo xtask test` does)",
                binary.display()
            );
        }
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let status = format!("{base}/status");
        let up = crate::wait_ok(&http, &status, Duration::from_secs(20)).await;
        assert!(up, "chromedriver did not start on port {port}");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser.display().to_string(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new WebDriver session")
            .json()
            .await
            .expect("session JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            _driver: child,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("WebDriver JSON");
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    /// Opens `url` (returns once the page has loaded).
    pub async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Resizes the window (e.g. to a phone's).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot base64"))
            .expect("screenshot PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, bytes).expect("write screenshot");
    }

    /// The browser's console entries since the last call (level and message).
    pub async fn console_log(&self) -> Vec<(String, String)> {
        let entries = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Saves a screenshot as `<target>/screenshots/<name>` (kept as a test artifact).
    pub async fn keep_screenshot(&self, name: &str) {
        let folder = crate::bin_dir()
            .parent()
            .expect("target folder")
            .join("screenshots");
        self.screenshot(&folder.join(name)).await;
    }

    /// The console entries of level SEVERE (errors) since the last read of the log.
    pub async fn console_errors(&self) -> Vec<(String, String)> {
        self.console_log()
            .await
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .collect()
    }

    /// Ends the session (the browser exits; chromedriver is killed on drop).
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Asserts that the page at `url` and every script and stylesheet it loads come with the browser
/// protections: a content security policy that allows no inline code and no framing,
/// `X-Frame-Options: DENY` and `X-Content-Type-Options: nosniff`. (The browser tests then
/// assert no console errors: a page that broke its policy would log the refusals.)
pub async fn assert_page_protections(url: &str) {
    let client = reqwest::Client::new();
    let page = client.get(url).send().await.expect("GET the page");
    let base = page.url().clone();
    let html = {
        assert_protected(url, page.headers());
        page.text().await.expect("the page")
    };
    let assets: Vec<String> = html
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .map(str::to_string)
        .collect();
    assert!(!assets.is_empty(), "{url} loads no script or stylesheet");
    for asset in assets {
        let asset_url = base.join(&asset).expect("an asset URL");
        let response = client.get(asset_url.clone()).send().await.expect("GET");
        assert_eq!(response.status(), 200, "{asset_url}");
        assert_protected(asset_url.as_str(), response.headers());
    }
}

fn assert_protected(url: &str, headers: &reqwest::header::HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let policy = header("content-security-policy");
    assert!(
        policy.contains("default-src 'self'")
            && policy.contains("frame-ancestors 'none'")
            && !policy.contains("unsafe-inline")
            && !policy.contains("unsafe-eval"),
        "{url}: content-security-policy {policy:?}"
    );
    assert_eq!(header("x-frame-options"), "DENY", "{url}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{url}");
}
