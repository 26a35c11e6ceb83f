//! The console in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`)
//! opens it on a running stack with API keys, is asked for a key once, then the seed's flow is
//! posted over the API and the page must show, within 2 s of the flow's end, the customers, the
//! transfer's whole timeline (with its trace id) and the new balances, without a console error.
//! Screenshots (laptop and phone) are kept in `<target>/screenshots/`.

use std::time::Duration;

use platform::testing::poll_until;
use serde_json::{json, Value};
use system_tests::browser::Browser;
use system_tests::{full_access_entry, seed_flow, Stack};

const KEY: &str = "console-test-key-0123456789ab";
/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"
const text = (node) => node ? node.textContent.trim() : null;
const accounts = {};
for (const tr of document.querySelectorAll('#accounts tbody tr')) {
  accounts[tr.dataset.account] = { name: text(tr.cells[1]), balance: text(tr.querySelector('.balance')) };
}
const timeline = document.getElementById('timeline');
return {
  state: text(document.getElementById('state')),
  accounts,
  customerEvents: [...document.querySelectorAll('#events tbody tr[data-topic="Customer.created"]')].length,
  transaction: timeline.dataset.transaction || null,
  complete: timeline.dataset.complete === 'true',
  hops: [...timeline.querySelectorAll('li')].map((li) => li.dataset.hop),
  trace: document.getElementById('trace').dataset.trace || null,
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_seed_flow_live_in_a_browser() {
    let _turn = crate::exclusive().await;
    let keys = full_access_entry("ops", KEY);
    let stack = Stack::start(&[("API_KEYS", keys.as_str())]).await;
    let console = stack
        .start_console(&[("API_KEYS", keys.as_str()), ("CONSOLE_API_KEY", KEY)])
        .await;
    let browser = Browser::start(1440, 1200).await;
    system_tests::browser::assert_page_protections(&console.url()).await;
    browser.open(&console.url()).await;
    the_page_asks_for_a_key_once(&browser).await;

    seed_flow(&system_tests::keyed_client(KEY), &stack).await;

    // The flow is over (outcomes and e-mails delivered): within 2 s the page shows it.
    browser.type_into("#f-txn", "txn-124").await;
    let page = match wait_page(&browser, Duration::from_secs(2), shows_the_transfer).await {
        Some(page) => page,
        None => panic!(
            "the console did not show the flow within 2 s: {}\nconsole log:\n{}",
            read_page(&browser).await,
            console.log_tail()
        ),
    };
    assert_eq!(page["accounts"]["cust-001"]["name"], "John Doe");
    assert_eq!(page["accounts"]["cust-002"]["name"], "Jane Roe");
    assert_eq!(page["customerEvents"], 0, "filtered to the transfer");
    let trace = page["trace"].as_str().expect("a trace id");
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace}"
    );
    the_hops_are_in_time_order(&browser).await;
    every_group_is_caught_up(&browser).await;

    browser.keep_screenshot("console.png").await;
    browser.resize(390, 844).await;
    browser.keep_screenshot("console-phone.png").await;

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}

/// With API_KEYS the page asks for a read key once, goes live with it and keeps it for the tab.
async fn the_page_asks_for_a_key_once(browser: &Browser) {
    let asked = wait_page(browser, Duration::from_secs(10), |page| {
        page["state"] == "key needed"
    })
    .await;
    assert!(asked.is_some(), "the page asks for a key");
    browser.type_into("#key", &format!("{KEY}\u{E007}")).await;
    let live = wait_page(browser, Duration::from_secs(10), |page| {
        page["state"] == "live"
    })
    .await;
    assert!(live.is_some(), "the page is live with the key");
    let stored = browser
        .run(
            "return sessionStorage.getItem('console-read-key')",
            json!([]),
        )
        .await;
    assert_eq!(stored, KEY, "the key is kept for the tab");
}

/// Whether `page` shows the seed's transfer whole: its balances and every hop of its timeline.
fn shows_the_transfer(page: &Value) -> bool {
    const EXPECTED_HOPS: [&str; 7] = [
        "accepted",
        "requested",
        "outcome",
        "alert-recorded",
        "alert-recorded",
        "alert-sent",
        "alert-sent",
    ];
    let mut hops: Vec<&str> = page["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    hops.sort_by_key(|h| EXPECTED_HOPS.iter().position(|e| e == h));
    page["accounts"]["cust-001"]["balance"] == "150.00 USD"
        && page["accounts"]["cust-002"]["balance"] == "100.00 USD"
        && page["transaction"] == "txn-124"
        && page["complete"] == true
        && hops == EXPECTED_HOPS
}

/// The timeline's hops are in time order.
async fn the_hops_are_in_time_order(browser: &Browser) {
    let times = browser
        .run(
            "return [...document.querySelectorAll('#timeline .hop-time')].map(n => n.textContent)",
            json!([]),
        )
        .await;
    let times: Vec<&str> = times
        .as_array()
        .expect("times")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// The pipeline panel: the services' consumer groups, every partition caught up.
async fn every_group_is_caught_up(browser: &Browser) {
    let lag = poll_until(Duration::from_secs(20), || {
        let reading = browser.run(
            "return [...document.querySelectorAll('#lag tbody tr')]\
               .map(tr => [tr.cells[0].textContent, Number(tr.cells[5].textContent)])",
            json!([]),
        );
        async move {
            let rows = reading.await;
            let rows = rows.as_array()?.clone();
            let groups: std::collections::BTreeSet<&str> =
                rows.iter().filter_map(|r| r[0].as_str()).collect();
            let caught_up = rows.iter().all(|r| r[1] == 0);
            (groups.len() >= 3 && caught_up).then_some(groups.len())
        }
    })
    .await;
    assert!(
        lag.is_some(),
        "lag per partition of the services' groups, all 0"
    );
}

async fn read_page(browser: &Browser) -> Value {
    browser.run(READ_PAGE, json!([])).await
}

/// Reads the page until `shown` holds or `timeout` passes; the last reading when it held.
async fn wait_page(
    browser: &Browser,
    timeout: Duration,
    shown: impl Fn(&Value) -> bool,
) -> Option<Value> {
    poll_until(timeout, || {
        let reading = read_page(browser);
        let shown = &shown;
        async move {
            let page = reading.await;
            shown(&page).then_some(page)
        }
    })
    .await
}
