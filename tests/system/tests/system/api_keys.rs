//! API keys on the running system, as an operator sets them
//! (`API_KEYS="ops:<every scope>:…,dash:<every read>:…,registrar:customers:write:…,…"`): every
//! route each service documents in its `/openapi.json` refuses a request without a key or with an
//! unknown one (401, problem+json, `WWW-Authenticate: Bearer`), answers 403 (problem+json naming
//! the scope) to a key without the route's scope — the registration key on `POST /transactions`,
//! a read key on a write, a key of another service — and serves a key with it; the probes,
//! `/metrics` and the documents stay open, and with keys the services listen beyond loopback. The
//! access log names the key, never shows it. Then the notification dashboard in headless
//! Chromium asks for the read key once, and the seed's flow, posted over the API, appears in its
//! live feed within 2 s of its last e-mail, without a console error; the screenshot is kept in
//! `<target>/screenshots/`.
//!
//! Without keys a service listens on loopback only; asked to listen elsewhere it refuses to start
//! with one line, unless `ALLOW_ANONYMOUS=true`.

use std::time::Duration;

use platform::auth::{Action, Area, Scope, ALL_SCOPES};
use platform::testing::poll_until;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::{json, Value};
use system_tests::browser::Browser;
use system_tests::{key_entry, run_to_exit, seed_flow, Stack, SERVICES};

/// Every scope (the operator's key).
const WRITE_KEY: &str = "k-ops-4d1f9a-0123456789abcdef";
/// Every read scope (the dashboards, and the console's key for the services).
const READ_KEY: &str = "k-dash-77c2e0-0123456789abcdef";
/// `customers:write` only: registration.
const REGISTRAR_KEY: &str = "k-registrar-5be1-0123456789ab";
/// `transactions:read` and `transactions:write`: a teller.
const TELLER_KEY: &str = "k-teller-90ac-0123456789abcdef";
/// Whether the dashboard shows its key form (as rendered, not just its `hidden` attribute).
const KEY_FORM_SHOWN: &str =
    "return getComputedStyle(document.getElementById('key-form')).display !== 'none'";

/// The documented operations of `base`'s OpenAPI document: (method, path with `{…}` filled, the
/// description of its 403 answer).
async fn documented(client: &reqwest::Client, base: &str) -> Vec<(Method, String, String)> {
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
            let forbidden = operation["responses"]["403"]["description"]
                .as_str()
                .unwrap_or_else(|| panic!("{base}: {method} {path} documents 403"))
                .to_string();
            let method =
                Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            operations.push((method, filled.clone(), forbidden));
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

/// The keys of the run: name, secret, scopes.
fn test_keys() -> Vec<(&'static str, &'static str, Vec<Scope>)> {
    let reads = ALL_SCOPES
        .into_iter()
        .filter(|s| s.action == Action::Read)
        .collect();
    let write = |area| Scope::new(area, Action::Write);
    let read = |area| Scope::new(area, Action::Read);
    vec![
        ("ops", WRITE_KEY, ALL_SCOPES.to_vec()),
        ("dash", READ_KEY, reads),
        ("registrar", REGISTRAR_KEY, vec![write(Area::Customers)]),
        (
            "teller",
            TELLER_KEY,
            vec![read(Area::Transactions), write(Area::Transactions)],
        ),
    ]
}

/// The area of the routes of the service at `base` (the console last).
fn area_of(index: usize) -> Area {
    [
        Area::Customers,
        Area::Transactions,
        Area::Notifications,
        Area::Console,
    ][index]
}

/// An address of this machine other than loopback (the one it would reach the network from),
/// if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route and the source address.
    socket.connect("10.255.255.255:9").ok()?;
    let address = socket.local_addr().ok()?.ip();
    (!address.is_loopback() && !address.is_unspecified()).then_some(address)
}

/// Whether a TCP connection to `address:port` is accepted.
async fn reachable(address: std::net::IpAddr, port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect((address, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(5), connect).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_needs_a_key_of_the_right_scope() {
    let _turn = crate::exclusive().await;
    let keys = test_keys()
        .iter()
        .map(|(name, secret, scopes)| key_entry(name, scopes, secret))
        .collect::<Vec<_>>()
        .join(",");
    let stack = Stack::start(&[("API_KEYS", keys.as_str()), ("LOG_FORMAT", "json")]).await;
    let console = stack
        .start_console(&[("API_KEYS", keys.as_str()), ("CONSOLE_API_KEY", READ_KEY)])
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut bases: Vec<String> = SERVICES.iter().map(|name| stack.url(name)).collect();
    bases.push(console.url());

    let mut checked = 0;
    for (index, base) in bases.iter().enumerate() {
        checked += every_route_of(&client, base, area_of(index)).await;
    }
    assert!(checked >= 9, "{checked} operations checked");

    // The case, spelt out: the registration key registers and cannot move money.
    let transactions = format!("{}/transactions", stack.url("transaction-service"));
    let registrar = format!("Bearer {REGISTRAR_KEY}");
    let moved = status_of(&client, &Method::POST, &transactions, Some(&registrar)).await;
    assert_eq!(
        moved.status().as_u16(),
        403,
        "a registration key moves no money"
    );
    every_interface_listens(&stack, &console).await;
    the_feed_needs_a_key(&client, &stack).await;
    the_dashboard_asks_for_the_key_and_shows_the_flow(&stack).await;

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

/// Checks every operation `base` documents: 401 without a key or with an unknown one, 403
/// naming the scope with a key that lacks it, neither with one that has it; the probes and the
/// document stay open. Returns the number of operations checked.
async fn every_route_of(client: &reqwest::Client, base: &str, area: Area) -> usize {
    let operations = documented(client, base).await;
    assert!(!operations.is_empty(), "{base} documents its routes");
    let checked = operations.len();
    for (method, path, forbidden) in operations {
        let url = format!("{base}{path}");
        let what = format!("{method} {url}");
        let needed = Scope::needed(area, &method);
        assert!(
            forbidden.contains(&format!("`{needed}`")),
            "{what}: the document's 403 names {needed}: {forbidden}"
        );
        for authorization in [None, Some("Bearer not-a-key-0123456789abcdef")] {
            let response = status_of(client, &method, &url, authorization).await;
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
            assert_problem(&response, &what);
        }
        for (name, secret, scopes) in test_keys() {
            let bearer = format!("Bearer {secret}");
            let response = status_of(client, &method, &url, Some(&bearer)).await;
            let status = response.status().as_u16();
            if scopes.contains(&needed) {
                assert!(
                    ![401, 403].contains(&status),
                    "{what}: {name} has {needed}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{what}: {name} lacks {needed}");
                assert_problem(&response, &what);
                let problem: Value = response.json().await.expect("problem JSON");
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains(&needed.to_string())),
                    "{what}: the 403 names {needed}: {problem}"
                );
            }
        }
    }
    for open in ["/healthz", "/metrics", "/openapi.json"] {
        let status = status_of(client, &Method::GET, &format!("{base}{open}"), None)
            .await
            .status();
        assert_eq!(status.as_u16(), 200, "{base}{open} stays open");
    }
    checked
}

/// Asserts that `response` is a problem+json document.
fn assert_problem(response: &reqwest::Response, what: &str) {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
}

/// With keys the services listen on every interface, not only loopback.
async fn every_interface_listens(stack: &Stack, console: &system_tests::ServiceProcess) {
    let Some(address) = non_loopback_address() else {
        println!("api_keys: no non-loopback address here; interfaces not checked");
        return;
    };
    for name in SERVICES {
        let port = stack.services[name].port;
        assert!(reachable(address, port).await, "{name} on {address}:{port}");
    }
    assert!(
        reachable(address, console.port).await,
        "console on {address}"
    );
}

/// The live feed of every customer needs a key like everything else.
async fn the_feed_needs_a_key(client: &reqwest::Client, stack: &Stack) {
    let read = format!("Bearer {READ_KEY}");
    let feed = format!("{}/notifications/stream", stack.url("notification-service"));
    let anonymous = status_of(client, &Method::GET, &feed, None).await;
    assert_eq!(anonymous.status().as_u16(), 401);
    let keyed = status_of(client, &Method::GET, &feed, Some(&read)).await;
    assert_eq!(keyed.status().as_u16(), 200);
    assert!(keyed.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
}

/// The dashboard asks for the read key once; the seed's flow then shows up in its live feed
/// within 2 s of the last e-mail.
async fn the_dashboard_asks_for_the_key_and_shows_the_flow(stack: &Stack) {
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
    seed_flow(&system_tests::keyed_client(WRITE_KEY), stack).await;
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
}

/// The log text of every process of the run.
fn stack_logs(stack: &Stack, console: &system_tests::ServiceProcess) -> Vec<String> {
    let mut logs: Vec<String> = stack.services.values().map(|s| s.log()).collect();
    logs.push(console.log());
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_services_listen_on_loopback_only_unless_anonymous_access_is_intended() {
    let _turn = crate::shared().await;
    // Asked for another address without keys, every binary refuses to start with one line.
    for name in SERVICES.into_iter().chain(["console"]) {
        let env = [
            ("BIND_ADDRESS", "0.0.0.0"),
            ("KAFKA_BROKERS", "127.0.0.1:9"),
            ("DATABASE_URL", "sqlite::memory:"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let exit = run_to_exit(name, &env, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{name} started on 0.0.0.0 without keys"));
        assert_eq!(exit.code, Some(1), "{name}: {}", exit.stderr);
        let line = exit.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{name}: one line: {line}");
        for named in [
            "BIND_ADDRESS",
            "0.0.0.0",
            "API_KEYS",
            "ALLOW_ANONYMOUS=true",
        ] {
            assert!(line.contains(named), "{name} names {named}: {line}");
        }
    }

    // Without keys (the laptop default) they serve on loopback and nowhere else...
    let stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    let customers = format!("{}/app/customers", stack.url("customer-service"));
    let listed = client.get(&customers).send().await.expect("GET");
    assert_eq!(listed.status().as_u16(), 200, "no key needed on loopback");
    let anonymous = stack.start_console(&[("ALLOW_ANONYMOUS", "true")]).await;
    let Some(address) = non_loopback_address() else {
        println!("api_keys: no non-loopback address here; interfaces not checked");
        return;
    };
    for name in SERVICES {
        let port = stack.services[name].port;
        assert!(
            !reachable(address, port).await,
            "{name} answered on {address}:{port}"
        );
    }
    // ...unless anonymous access is asked for.
    assert!(
        reachable(address, anonymous.port).await,
        "ALLOW_ANONYMOUS=true: the console listens on {address}"
    );
}
