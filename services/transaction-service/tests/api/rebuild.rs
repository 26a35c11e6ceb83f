//! A transaction-service on a new database reads the compacted `Customer.created` from its
//! start before it takes work: every existing customer's account is open again (with the opening
//! balance: the balances lived in the old database), and a transfer between two of them is applied.

use crate::helpers::*;
use platform::testing::{eventually, TestApp, DEADLINE};
use serde_json::json;
use transaction_service::{LedgerSettings, TransactionService};

#[tokio::test(flavor = "multi_thread")]
async fn a_new_database_opens_every_existing_customers_account() {
    let first = Ledger::start(LedgerSettings::default()).await;
    first.open_accounts(&["cust-1", "cust-2", "cust-3"]).await;
    let kafka = first.kafka.clone();
    first.stop().await;

    // A new database; the same topics and consumer groups, whose offsets are past every
    // Customer.created.
    let fresh = Ledger::collecting(
        TestApp::of::<TransactionService>()
            .kafka(kafka)
            .run(LedgerSettings::default())
            .await,
    );
    for id in ["cust-1", "cust-2", "cust-3"] {
        let path = format!("/accounts/{id}");
        eventually(&format!("account {id} open again"), DEADLINE, || async {
            (fresh.get(&path).await.0 == 200).then_some(())
        })
        .await;
    }
    fresh.deposit("dep-after-rebuild", "cust-1", "5.00").await;
    let (status, body) = fresh
        .post_transaction(json!({
            "from": "cust-1", "to": "cust-2", "amount": "1.00", "transactionId": "after-rebuild"
        }))
        .await;
    assert_eq!(status, 202, "{body}");
    let processed = fresh.processed("after-rebuild").await;
    assert_eq!(processed["kind"], "transfer", "{processed}");
    assert_eq!(fresh.balance("cust-1").await, "4.00");
    assert_eq!(fresh.balance("cust-2").await, "1.00");
    fresh.stop().await;
}
