//! API keys on the running system, as an operator sets them
//! (`API_KEYS="ops:write:…,dash:read:…"`): every route each service documents in its
//! `/openapi.json` refuses a request without a key or with an unknown one (401, problem+json,
//! `WWW-Authenticate: Bearer`), the read key reads and gets 403 on a write, the write key writes,
//! and the probes, `/metrics` and the documents stay open. The access log names the key, never
//! shows it. Then the notification dashboard in headless Chromium asks for the read key once,
//! and the seed's flow, posted over the API, appears in its live feed within 2 s of its last
//! e-mail, without a console error; the screenshot is kept in `<target>/screenshots/`.

use std::time::Duration;

use platform::testing::poll_until;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::{json, Value};
use system_tests::browser::Browser;
use system_tests::{seed_flow, Stack};

const WRITE_KEY: &str = "k-ops-4d1f9a";
const READ_KEY: &str = "k-dash-77c2e0";
/// Whether the dashboard shows its key form (as rendered, not just its `hidden` attribute).
const KEY_FORM_SHOWN: &str =
    "return getComputedStyle(document.getElementById('key-form')).display !== 'none'";

/// The documented operations of `base`'s OpenAPI document: (method, path with `{…}` filled).
async fn documented(client: &reqwest::Client, base: &str) -> Vec<(Method, String)> {
    let doc: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("openapi JSON");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let filled: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x-1"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().expect("path item") {
            // The document says what the server does: a key may be needed, and 401 answers.
            assert_eq!(
                operation["security"],
                json!([{}, {"api_key": []}]),
                "{base}: {method} {path} declares the api_key scheme"
            );
            assert!(
                operation["responses"]["401"].is_object(),
                "{base}: {method} {path} documents 401"
            );
            let method =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            operations.push((method, filled.clone()));
        }
    }
    operations
}

/// The status of `method url` with `key` (if any); JSON body `{}` on writes.
async fn status_of(
    client: &reqwest::Client,
    method: &Method,
    url: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = client.request(method.clone(), url);
    if *method != Method::GET {
        request = request.json(&json!({}));
    }
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    request.send().await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_needs_a_key_of_the_right_scope() {
    let _turn = crate::exclusive().await;
    let keys = format!("ops:write:{WRITE_KEY},dash:read:{READ_KEY}");
    let stack = Stack::start(&[("API_KEYS", keys.as_str()), ("LOG_FORMAT", "json")]).await;
    let console = stack
        .start_console(&[("API_KEYS", keys.as_str()), ("CONSOLE_API_KEY", READ_KEY)])
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut bases: Vec<String> = [
        "customer-service",
        "transaction-service",
        "notification-service",
    ]
    .iter()
    .map(|name| stack.url(name))
    .collect();
    bases.push(console.url());

    let (read, write) = (format!("Bearer {READ_KEY}"), format!("Bearer {WRITE_KEY}"));
    let mut checked = 0;
    for base in &bases {
        let operations = documented(&client, base).await;
        assert!(!operations.is_empty(), "{base} documents its routes");
        for (method, path) in operations {
            let url = format!("{base}{path}");
            let what = format!("{method} {url}");
            for authorization in [None, Some("Bearer not-a-key")] {
                let response = status_of(&client, &method, &url, authorization).await;
                assert_eq!(
                    response.status().as_u16(),
                    401,
                    "{what} with {authorization:?}"
                );
                assert!(
                    response.headers()[WWW_AUTHENTICATE]
                        .to_str()
                        .expect("ascii")
                        .starts_with("Bearer"),
                    "{what}"
                );
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json",
                    "{what}"
                );
            }
            let as_reader = status_of(&client, &method, &url, Some(&read))
                .await
                .status();
            let as_writer = status_of(&client, &method, &url, Some(&write))
                .await
                .status();
            if method == Method::GET {
                assert!(
                    ![401, 403].contains(&as_reader.as_u16()),
                    "{what}: {as_reader}"
                );
            } else {
                assert_eq!(as_reader.as_u16(), 403, "{what}: a read key cannot write");
            }
            assert!(
                ![401, 403].contains(&as_writer.as_u16()),
                "{what}: {as_writer}"
            );
            checked += 1;
        }
        for open in ["/healthz", "/metrics", "/openapi.json"] {
            let status = status_of(&client, &Method::GET, &format!("{base}{open}"), None)
                .await
                .status();
            assert_eq!(status.as_u16(), 200, "{base}{open} stays open");
        }
    }
    assert!(checked >= 9, "{checked} operations checked");

    // The live feed of every customer needs a key like everything else.
    let feed = format!("{}/notifications/stream", stack.url("notification-service"));
    let anonymous = status_of(&client, &Method::GET, &feed, None).await;
    assert_eq!(anonymous.status().as_u16(), 401);
    let keyed = status_of(&client, &Method::GET, &feed, Some(&read)).await;
    assert_eq!(keyed.status().as_u16(), 200);
    assert!(keyed.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    drop(keyed);

    // The dashboard asks for the read key once; the flow then shows up in its live feed.
    system_tests::browser::assert_page_protections(&stack.url("notification-service")).await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&stack.url("notification-service")).await;
    let asked = poll_until(Duration::from_secs(10), || {
        let visible = browser.run(KEY_FORM_SHOWN, json!([]));
        async move { (visible.await == json!(true)).then_some(()) }
    })
    .await;
    assert!(asked.is_some(), "the dashboard asks for a key");
    browser
        .type_into("#key", &format!("{READ_KEY}\u{E007}"))
        .await;
    let connected = poll_until(Duration::from_secs(10), || {
        let state = browser.run(
            "return document.getElementById('live-state').textContent",
            json!([]),
        );
        async move { (state.await == json!("(connected)")).then_some(()) }
    })
    .await;
    assert!(connected.is_some(), "the live feed connects with the key");
    assert_eq!(
        browser.run(KEY_FORM_SHOWN, json!([])).await,
        json!(false),
        "the key form is gone once a key is given"
    );

    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&write).expect("header"),
    );
    let writer = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    // The flow ends once every e-mail is delivered; the live feed shows them within 2 s.
    seed_flow(&writer, &stack).await;
    let shown = poll_until(Duration::from_secs(2), || {
        let rows = browser.run(
            "return [...document.querySelectorAll('#live tr')]\
               .filter(tr => tr.cells[5].textContent === 'sent').map(tr => tr.cells[1].textContent)",
            json!([]),
        );
        async move {
            let rows = rows.await;
            let customers: Vec<&str> = rows.as_array()?.iter().filter_map(Value::as_str).collect();
            (customers.contains(&"cust-001") && customers.contains(&"cust-002"))
                .then_some(customers.len())
        }
    })
    .await;
    assert!(
        shown.is_some(),
        "the seed's deliveries appear in the live feed"
    );
    browser.keep_screenshot("notifications.png").await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;

    // The access log names the key, and no log shows a key.
    let mut names = 0;
    for process in stack_logs(&stack, &console) {
        assert!(
            !process.contains(WRITE_KEY) && !process.contains(READ_KEY),
            "a key was logged"
        );
        names += process.matches("\"api_key\":\"ops\"").count();
    }
    assert!(names > 0, "the access log names the write key");
}

/// The log text of every process of the run.
fn stack_logs(stack: &Stack, console: &system_tests::ServiceProcess) -> Vec<String> {
    let mut logs: Vec<String> = stack.services.values().map(|s| s.log()).collect();
    logs.push(console.log());
    logs
}
