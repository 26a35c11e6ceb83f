//! The seed's flow across the three services as real processes: customers, the seed's transfer,
//! a deposit, a transfer that succeeds and one that fails; outcomes, balances, notifications and
//! emails; then a graceful SIGTERM shutdown of every service.

use std::time::Duration;

use platform::testing::poll_until;
use system_tests::{get, seed_flow, Stack, SEED_CUSTOMERS, SEED_EMAILS, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_end_to_end() {
    let _turn = crate::shared().await;
    let mut stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    seed_flow(&client, &stack).await;
    // The service's own record: every delivery is final (sent), so nothing is left to resend.
    let notifications = stack.url("notification-service");
    let recorded = poll_until(Duration::from_secs(30), || {
        let client = &client;
        let notifications = &notifications;
        async move {
            let mut items = Vec::new();
            for (id, _, _) in SEED_CUSTOMERS {
                let url = format!("{notifications}/notifications?customerId={id}");
                let (status, log) = get(client, &url).await;
                items.extend(log["items"].as_array().cloned().filter(|_| status == 200)?);
            }
            items
                .iter()
                .all(|d| d["status"] == "sent")
                .then_some(items.len())
        }
    })
    .await;
    assert_eq!(
        recorded,
        Some(SEED_EMAILS),
        "every delivery recorded as sent"
    );
    let mails = stack.smtp.messages();
    assert_eq!(
        mails.len(),
        SEED_EMAILS,
        "and no more e-mails than deliveries"
    );
    let ids: std::collections::BTreeSet<&str> =
        mails.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), SEED_EMAILS, "each with its own Message-ID");
    let log_url = format!(
        "{}/notifications?customerId=cust-001",
        stack.url("notification-service")
    );
    let (status, log) = get(&client, &log_url).await;
    assert_eq!(status, 200, "{log}");
    let kinds: Vec<&str> = log["items"]
        .as_array()
        .expect("delivery log items")
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "sent", "{d}");
            d["kind"].as_str().expect("kind")
        })
        .collect();
    // cust-001, newest first: debit of txn-124, txn-123 failure and the deposit, welcome.
    assert_eq!(kinds.len(), 4, "{log}");
    assert_eq!(kinds[0], "debit_alert");
    assert_eq!(kinds[3], "welcome");

    // SIGTERM: every service stops cleanly.
    for name in SERVICES {
        assert_eq!(
            stack.service(name).terminate().await,
            Some(0),
            "{name} exits 0 on SIGTERM"
        );
    }
}
