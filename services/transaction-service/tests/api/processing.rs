//! Processing of `transaction.requested` against the real broker and database: balances, failure
//! reasons, late accounts, other producers, dead letters, redelivery and money conservation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::helpers::{Ledger, Random};
use contracts::envelope::{headers, EventType};
use contracts::{samples, topics, CustomerCreated, EventMetadata};
use platform::inbox::Inboxed;
use platform::kafka::{Handler, Record};
use platform::parking::ParkingLot;
use platform::testing::{eventually, fresh_database_url, RecordExt, DEADLINE};
use platform::{Database, Outbox};
use serde_json::{json, Value};
use sqlx::Row;
use transaction_service::handlers::{ApplyTransactions, OpenAccounts, ACCOUNTS_GROUP};
use transaction_service::{storage, LedgerSettings};

fn settings_with_grace(grace: Duration) -> LedgerSettings {
    LedgerSettings {
        unknown_account_grace: grace,
        ..LedgerSettings::default()
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_then_a_transfer_leave_exact_balances() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice", "bob"]).await;

    let deposit = ledger.deposit("dep-1", "alice", "100.50").await;
    assert_eq!(deposit["kind"], "credit");
    assert_eq!(deposit["amount"], "100.50");
    assert_eq!(deposit["balances"], json!({"alice": "100.50"}));
    assert!(deposit["processedAt"].is_string());
    a_transfer_carries_the_callers_trace(&ledger).await;

    assert_eq!(ledger.balance("alice").await, "60.25");
    assert_eq!(ledger.balance("bob").await, "40.25");
    let (_, account) = ledger.get("/accounts/bob").await;
    assert_eq!(account["id"], "bob");
    assert_eq!(account["currency"], "USD");
    assert!(account["openedAt"].is_string());

    let (status, txn) = ledger.get("/transactions/tr-1").await;
    assert_eq!(status, 200);
    assert_eq!(txn["status"], "processed");
    assert_eq!(txn["amount"], "40.25");
    assert_eq!(txn["balances"], json!({"alice": "60.25", "bob": "40.25"}));
    assert!(txn.get("reason").is_none());
    assert!(time(&txn["completedAt"]) >= time(&txn["requestedAt"]));

    // A withdrawal.
    let (status, _) = ledger
        .post_transaction(json!({"from": "bob", "amount": 0.25, "transactionId": "wd-1"}))
        .await;
    assert_eq!(status, 202);
    let withdrawal = ledger.processed("wd-1").await;
    assert_eq!(withdrawal["kind"], "debit");
    assert_eq!(withdrawal["balances"], json!({"bob": "40.00"}));
    the_journal_of_alice_pages_in_order(&ledger).await;
    ledger.stop().await;
}

/// Transfer tr-1 (40.25 from alice to bob): the caller's trace context travels with the
/// request and its outcome.
async fn a_transfer_carries_the_callers_trace(ledger: &Ledger) {
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = ledger
        .http
        .post(ledger.url("/transactions"))
        .header("traceparent", traceparent)
        .json(&json!({"from": "alice", "to": "bob", "amount": "40.25", "transactionId": "tr-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["location"], "/transactions/tr-1");
    let transfer = ledger.processed("tr-1").await;
    assert_eq!(transfer["kind"], "transfer");
    assert_eq!(
        transfer["balances"],
        json!({"alice": "60.25", "bob": "40.25"})
    );
    let record = ledger
        .events
        .on(topics::TRANSACTION_PROCESSED)
        .into_iter()
        .find(|r| r.key.as_deref() == Some("alice") && r.payload.windows(4).any(|w| w == b"tr-1"))
        .expect("processed record of tr-1");
    assert_eq!(
        record.header(headers::TRACEPARENT).as_deref(),
        Some(traceparent)
    );
}

/// The journal of alice: opening, credit, debit, in order, in pages.
async fn the_journal_of_alice_pages_in_order(ledger: &Ledger) {
    let (status, page) = ledger.get("/accounts/alice/entries").await;
    assert_eq!(status, 200);
    let entries: Vec<(String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["delta"].as_str().unwrap().to_string(),
                e["balanceAfter"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("opening", "0.00", "0.00"),
        ("credit", "100.50", "100.50"),
        ("debit", "-40.25", "60.25"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(entries, expected);
    assert_eq!(page["entries"][2]["transactionId"], "tr-1");
    let (_, page) = ledger.get("/accounts/alice/entries?after=1&limit=1").await;
    assert_eq!(page["entries"][0]["seq"], 2);
    assert_eq!(page["nextAfter"], 2);
    let (status, problem) = ledger.get("/accounts/alice/entries?limit=0").await;
    assert_eq!(
        (status.as_u16(), problem["field"].clone()),
        (422, json!("limit"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdraft_fails_and_changes_nothing() {
    let settings = LedgerSettings {
        opening_balance: 1_000,
        ..LedgerSettings::default()
    };
    let ledger = Ledger::start(settings).await;
    ledger.open_accounts(&["alice", "bob"]).await;
    assert_eq!(ledger.balance("alice").await, "10.00");

    let (status, _) = ledger
        .post_transaction(
            json!({"from": "alice", "to": "bob", "amount": "10.01", "transactionId": "over-1"}),
        )
        .await;
    assert_eq!(status, 202);
    let failed = ledger.failed("over-1").await;
    assert_eq!(failed["reason"], "insufficient_funds");
    assert!(
        failed["message"].as_str().unwrap().contains("10.00 USD"),
        "{failed}"
    );
    assert_eq!(ledger.balance("alice").await, "10.00");
    assert_eq!(ledger.balance("bob").await, "10.00");
    let (_, page) = ledger.get("/accounts/bob/entries").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");

    let (status, _) = ledger
        .post_transaction(json!({"from": "alice", "amount": "10.01", "transactionId": "over-2"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        ledger.failed("over-2").await["reason"],
        "insufficient_funds"
    );

    // Exactly the whole balance is fine, and leaves zero.
    let (status, _) = ledger
        .post_transaction(
            json!({"from": "alice", "to": "bob", "amount": 10, "transactionId": "all-1"}),
        )
        .await;
    assert_eq!(status, 202);
    let processed = ledger.processed("all-1").await;
    assert_eq!(
        processed["balances"],
        json!({"alice": "0.00", "bob": "20.00"})
    );
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_account_fails_after_the_grace_period() {
    let ledger = Ledger::start(settings_with_grace(Duration::from_secs(2))).await;
    ledger.open_accounts(&["alice"]).await;

    let (status, _) = ledger
        .post_transaction(
            json!({"from": "alice", "to": "ghost", "amount": 1, "transactionId": "ghost-1"}),
        )
        .await;
    assert_eq!(status, 202);
    let failed = ledger.failed("ghost-1").await;
    assert_eq!(failed["reason"], "unknown_account");
    assert!(
        failed["message"].as_str().unwrap().contains("ghost"),
        "{failed}"
    );
    let waited = time(&failed["failedAt"]) - time(&failed["requestedAt"]);
    assert!(
        waited >= chrono::Duration::seconds(2),
        "failed after {waited} only"
    );
    let (_, txn) = ledger.get("/transactions/ghost-1").await;
    assert_eq!(txn["status"], "failed");
    assert_eq!(txn["reason"], "unknown_account");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_an_account_whose_customer_event_lags() {
    let ledger = Ledger::start(settings_with_grace(Duration::from_secs(25))).await;

    let (status, _) = ledger
        .post_transaction(json!({"to": "late", "amount": 7, "transactionId": "late-1"}))
        .await;
    assert_eq!(status, 202);
    // The consumer parks the request while its account is unknown (its own signal).
    ledger.wait_parked(1).await;
    let (_, txn) = ledger.get("/transactions/late-1").await;
    assert_eq!(txn["status"], "requested");
    assert!(ledger.outcomes_for("late-1").is_empty());

    ledger.customer_created("late").await;
    let processed = ledger.processed("late-1").await;
    assert_eq!(processed["balances"], json!({"late": "7.00"}));
    assert_eq!(ledger.balance("late").await, "7.00");
    ledger.wait_parked(0).await;
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_missing_account_do_not_hold_back_the_others() {
    let ledger = Ledger::start(settings_with_grace(Duration::from_secs(60))).await;
    ledger.open_accounts(&["alice", "bob", "carol"]).await;
    ledger.deposit("fund-alice", "alice", "10").await;
    ledger.deposit("fund-bob", "bob", "10").await;

    // Twenty transfers from alice to accounts that never open, then valid transfers: one
    // between other accounts, one from alice herself (only the missing accounts are awaited).
    for n in 0..20 {
        let (status, body) = ledger
            .post_transaction(
                json!({"from": "alice", "to": format!("ghost-{n}"), "amount": 1,
                         "transactionId": format!("ghost-{n}")}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    for (id, from, to) in [("valid-1", "bob", "carol"), ("valid-2", "alice", "carol")] {
        let (status, _) = ledger
            .post_transaction(json!({"from": from, "to": to, "amount": 4, "transactionId": id}))
            .await;
        assert_eq!(status, 202);
    }
    ledger.processed("valid-1").await;
    ledger.processed("valid-2").await;
    // The valid transfers' outcomes came while the twenty are still parked, undecided.
    assert_eq!(ledger.parked().await, 20);
    for n in 0..20 {
        assert!(ledger.outcomes_for(&format!("ghost-{n}")).is_empty());
    }
    assert_eq!(ledger.balance("carol").await, "8.00");
    assert_eq!(ledger.balance("alice").await, "6.00");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_touching_a_waiting_account_is_applied_after_it_in_order() {
    let ledger = Ledger::start(settings_with_grace(Duration::from_secs(60))).await;
    ledger.open_accounts(&["bob"]).await;
    ledger.deposit("fund-bob", "bob", "5").await;

    // `late` is unknown: the first credit waits; the transfer from `late` touches it, so it
    // waits behind (applied alone it would fail for insufficient funds).
    let (status, _) = ledger
        .post_transaction(json!({"to": "late", "amount": 10, "transactionId": "first"}))
        .await;
    assert_eq!(status, 202);
    ledger.wait_parked(1).await;
    let (status, _) = ledger
        .post_transaction(
            json!({"from": "late", "to": "bob", "amount": 8, "transactionId": "second"}),
        )
        .await;
    assert_eq!(status, 202);
    ledger.wait_parked(2).await;

    ledger.customer_created("late").await;
    assert_eq!(
        ledger.processed("first").await["balances"],
        json!({"late": "10.00"})
    );
    assert_eq!(
        ledger.processed("second").await["balances"],
        json!({"late": "2.00", "bob": "13.00"})
    );
    ledger.wait_parked(0).await;
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_invalid_utf8_records_are_dead_lettered_and_the_partition_moves_on() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice"]).await;

    let huge = vec![b'x'; 1_000_100];
    let invalid_utf8: Vec<u8> = (0..400_000).map(|n| 0x80 | (n % 64) as u8).collect();
    ledger.send_request("alice", &huge, None).await;
    ledger.send_request("alice", &invalid_utf8, None).await;
    ledger.send_credit("after-poison", "alice", "2").await;
    ledger.processed("after-poison").await;

    let dead = ledger
        .dead_letters_of(topics::TRANSACTION_REQUESTED, 2)
        .await;
    let big = dead
        .iter()
        .find(|r| r.header(headers::DLT_ORIGINAL_SIZE).as_deref() == Some("1000100"))
        .expect("the oversized record's dead letter");
    assert_eq!(big.header(headers::DLT_TRUNCATED).as_deref(), Some("true"));
    assert_eq!(
        big.header(headers::DLT_PAYLOAD_SHA256).map(|h| h.len()),
        Some(64)
    );
    assert!(big.payload.len() < huge.len() && big.payload.iter().all(|b| *b == b'x'));
    let bytes = dead
        .iter()
        .find(|r| r.header(headers::DLT_ORIGINAL_SIZE).as_deref() == Some("400000"))
        .expect("the invalid UTF-8 record's dead letter");
    assert_eq!(bytes.payload, invalid_utf8, "copied byte for byte");
    assert_eq!(bytes.header(headers::DLT_TRUNCATED), None);
    assert_eq!(ledger.balance("alice").await, "2.00");
    ledger.stop().await;
}

/// Requests straight into Kafka (as another producer would): deposits, transfers that may
/// overdraw, unknown accounts, invalid amounts and repeated ids.
fn random_requests(random: &mut Random, accounts: &[&str], n: usize) -> Vec<Value> {
    let mut requests = Vec::new();
    for account in accounts {
        requests.push(
            json!({"transactionId": format!("dep-{account}"), "kind": "credit",
            "to": account, "amount": "50.00", "requestedAt": Utc::now()}),
        );
    }
    for i in 0..n {
        let from = accounts[random.below(accounts.len() as u64) as usize];
        let to = match random.below(10) {
            0 => "nobody",
            _ => accounts[random.below(accounts.len() as u64) as usize],
        };
        let amount = match random.below(12) {
            0 => "-1".to_string(),
            1 => "0.001".to_string(),
            _ => format!("{}.{:02}", random.below(30), random.below(100)),
        };
        let id = match random.below(15) {
            0 if i > 0 => format!("r{}", i - 1),
            _ => format!("r{i}"),
        };
        requests.push(
            json!({"transactionId": id, "kind": "transfer", "from": from, "to": to,
            "amount": amount, "requestedAt": Utc::now()}),
        );
    }
    requests
}

/// Applies `requests` (preceded by the accounts' `Customer.created`) through the service's
/// handlers in batches of `batch` records, and returns the ledger as it ends: every
/// transaction's status, reason, message and balances, then every account's balance.
async fn ledger_after(requests: &[Value], accounts: &[&str], batch: usize) -> Vec<String> {
    let db = Database::connect(&fresh_database_url().await)
        .await
        .expect("database");
    db.migrate(&transaction_service::MIGRATIONS)
        .await
        .expect("migrations");
    let settings = settings_with_grace(Duration::ZERO);
    let requests_lot = ApplyTransactions::parking_lot(&settings);
    let max_amount_minor = settings.max_amount_minor;
    let open = Inboxed::new(
        db.clone(),
        Arc::new(OpenAccounts::new(settings, requests_lot.clone())),
        ParkingLot::new(ACCOUNTS_GROUP, Duration::ZERO),
    );
    let apply = Inboxed::new(
        db.clone(),
        Arc::new(ApplyTransactions::new(
            Outbox::new("transaction-service"),
            max_amount_minor,
        )),
        requests_lot,
    );
    let record = |topic: &str, offset: usize, payload: String| Record {
        topic: topic.to_string(),
        partition: 0,
        offset: offset as i64,
        key: None,
        payload: payload.into_bytes(),
        headers: Vec::new(),
    };
    let customers: Vec<Record> = accounts
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let customer = serde_json::to_string(&samples::customer(id, "N")).expect("json");
            record(topics::CUSTOMER_CREATED, n, customer)
        })
        .collect();
    assert!(open.handle(&customers).await.expect("accounts").is_empty());
    let records: Vec<Record> = requests
        .iter()
        .enumerate()
        .map(|(n, r)| record(topics::TRANSACTION_REQUESTED, n, r.to_string()))
        .collect();
    for chunk in records.chunks(batch) {
        let rejected = apply.handle(chunk).await.expect("batch applies");
        assert!(rejected.is_empty(), "{rejected:?}");
    }
    let mut state = Vec::new();
    for row in sqlx::query(
        "SELECT transaction_id, status, reason, message, balances FROM transactions \
         ORDER BY transaction_id",
    )
    .fetch_all(db.pool())
    .await
    .expect("transactions")
    {
        let column = |name: &str| row.try_get::<Option<String>, _>(name).expect(name);
        state.push(format!(
            "{:?} {:?} {:?} {:?} {:?}",
            column("transaction_id"),
            column("status"),
            column("reason"),
            column("message"),
            column("balances")
        ));
    }
    for account in accounts {
        let stored = storage::find_account(db.pool(), account)
            .await
            .expect("account")
            .expect("open");
        state.push(format!("{account} {}", stored.balance));
    }
    state
}

#[tokio::test]
async fn batches_decide_exactly_what_one_by_one_processing_decides() {
    let accounts = ["a1", "a2", "a3", "a4"];
    let mut random = Random::new();
    for _ in 0..3 {
        let requests = random_requests(&mut random, &accounts, 300);
        let one_by_one = ledger_after(&requests, &accounts, 1).await;
        let batched = ledger_after(&requests, &accounts, 500).await;
        let uneven = ledger_after(&requests, &accounts, 7).await;
        assert_eq!(one_by_one.len(), batched.len());
        assert!(one_by_one.iter().any(|row| row.contains("\"processed\"")));
        assert!(one_by_one
            .iter()
            .any(|row| row.contains("insufficient_funds")));
        assert!(one_by_one.iter().any(|row| row.contains("unknown_account")));
        assert_eq!(one_by_one, batched, "a batch of 500 decides as one by one");
        assert_eq!(one_by_one, uneven, "batches of 7 decide as one by one");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_other_producers_are_processed() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice", "bob"]).await;

    // A plain producer: no CloudEvents headers, the amount as a JSON number, no currency.
    let payload = json!({
        "transactionId": "ext-1", "kind": "credit", "to": "alice", "amount": 25,
        "requestedAt": Utc::now()
    });
    ledger
        .send_request("alice", payload.to_string().as_bytes(), None)
        .await;
    let processed = ledger.processed("ext-1").await;
    assert_eq!(processed["amount"], "25.00");
    assert_eq!(processed["currency"], "USD");
    assert_eq!(processed["balances"], json!({"alice": "25.00"}));
    let (status, txn) = ledger.get("/transactions/ext-1").await;
    assert_eq!(status, 200);
    assert_eq!(txn["status"], "processed");

    // The same id through the API afterwards: the same request is answered, another conflicts.
    let (status, _) = ledger
        .post_transaction(json!({"to": "alice", "amount": "25.00", "transactionId": "ext-1"}))
        .await;
    assert_eq!(status, 202);
    let (status, _) = ledger
        .post_transaction(json!({"to": "alice", "amount": 26, "transactionId": "ext-1"}))
        .await;
    assert_eq!(status, 409);

    // With CloudEvents headers, a transfer.
    let payload = json!({
        "transactionId": "ext-2", "kind": "transfer", "from": "alice", "to": "bob",
        "amount": "5.5", "currency": "USD", "requestedAt": Utc::now()
    });
    let metadata = EventMetadata::new("ext-event-2", EventType::TransactionRequested, "/partner");
    ledger
        .send_request("alice", payload.to_string().as_bytes(), Some(&metadata))
        .await;
    let processed = ledger.processed("ext-2").await;
    assert_eq!(processed["amount"], "5.50");
    assert_eq!(
        processed["balances"],
        json!({"alice": "19.50", "bob": "5.50"})
    );
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_from_kafka_fail_with_a_reason() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice", "bob"]).await;
    let now = Utc::now();
    let cases = [
        (
            json!({"transactionId": "bad-amount", "kind": "credit", "to": "alice",
                   "amount": "1.234", "requestedAt": now}),
            "invalid",
        ),
        (
            json!({"transactionId": "bad-zero", "kind": "debit", "from": "alice",
                   "amount": 0, "requestedAt": now}),
            "invalid",
        ),
        (
            json!({"transactionId": "bad-kind", "kind": "transfer", "to": "alice",
                   "amount": 1, "requestedAt": now}),
            "invalid",
        ),
        (
            json!({"transactionId": "bad-same", "kind": "transfer", "from": "bob", "to": "bob",
                   "amount": 1, "requestedAt": now}),
            "invalid",
        ),
        (
            json!({"transactionId": "bad-currency", "kind": "credit", "to": "alice",
                   "amount": 1, "currency": "EUR", "requestedAt": now}),
            "currency_mismatch",
        ),
        (
            json!({"transactionId": "bad-code", "kind": "credit", "to": "alice",
                   "amount": 1, "currency": "EURO", "requestedAt": now}),
            "invalid",
        ),
    ];
    for (payload, _) in &cases {
        ledger
            .send_request("alice", payload.to_string().as_bytes(), None)
            .await;
    }
    for (payload, reason) in &cases {
        let id = payload["transactionId"].as_str().unwrap();
        let failed = ledger.failed(id).await;
        assert_eq!(failed["reason"], *reason, "{failed}");
        assert!(!failed["message"].as_str().unwrap().is_empty());
        let (_, txn) = ledger.get(&format!("/transactions/{id}")).await;
        assert_eq!(txn["status"], "failed", "{txn}");
    }
    // The invalid amount is reported as requested.
    let (_, txn) = ledger.get("/transactions/bad-amount").await;
    assert_eq!(txn["amount"], "1.234");
    assert_eq!(ledger.balance("alice").await, "0.00");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_an_oversized_event_id_is_dead_lettered_and_kafka_amounts_are_limited() {
    let settings = LedgerSettings {
        max_amount_minor: 100_000,
        ..LedgerSettings::default()
    };
    let ledger = Ledger::start(settings).await;
    ledger.open_accounts(&["alice"]).await;

    // An event id of 20,000 bytes: part of the inbox key, so it must never reach the database.
    let hostile = EventMetadata::new(
        "x".repeat(20_000),
        EventType::TransactionRequested,
        "/hostile",
    );
    let request = json!({"transactionId": "long-id", "kind": "credit", "to": "alice",
                         "amount": "1.00", "requestedAt": chrono::Utc::now()});
    ledger
        .send_request("alice", request.to_string().as_bytes(), Some(&hostile))
        .await;
    // Straight through Kafka, above MAX_AMOUNT_MINOR (1,000.00 here): failed as invalid, as the
    // HTTP API would refuse it.
    ledger.send_credit("too-much", "alice", "1000.01").await;
    ledger.send_credit("within", "alice", "1000.00").await;

    let failed = ledger.failed("too-much").await;
    assert_eq!(failed["reason"], "invalid", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("MAX_AMOUNT_MINOR")),
        "{failed}"
    );
    ledger.processed("within").await;
    let dead = ledger
        .dead_letters_of(topics::TRANSACTION_REQUESTED, 1)
        .await;
    let error = dead[0].header(headers::DLT_ERROR).unwrap_or_default();
    assert!(error.contains("20000 bytes"), "{error}");
    assert!(ledger.outcomes_for("long-id").is_empty());
    assert_eq!(ledger.balance("alice").await, "1000.00");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_is_dead_lettered_and_the_next_one_is_processed() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice"]).await;

    ledger
        .send_request("alice", b"this is not json", None)
        .await;
    // Valid JSON of an unknown schema version is dead-lettered too.
    let mut v2 = EventMetadata::new("v2-event", EventType::TransactionRequested, "/future");
    v2.event_type = "transaction.requested.v2".into();
    ledger
        .send_request(
            "alice",
            json!({"transactionId": "v2-1", "to": "alice"})
                .to_string()
                .as_bytes(),
            Some(&v2),
        )
        .await;
    ledger.send_credit("after-bad", "alice", "3").await;

    ledger.processed("after-bad").await;
    let dead = ledger
        .dead_letters_of(topics::TRANSACTION_REQUESTED, 2)
        .await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].payload, b"this is not json");
    assert!(dead[0]
        .header(headers::DLT_ERROR)
        .unwrap()
        .contains("not a valid"));
    assert_eq!(
        dead[0].header(headers::DLT_ORIGINAL_TOPIC).as_deref(),
        Some(topics::TRANSACTION_REQUESTED)
    );
    assert!(dead[1].header(headers::DLT_ERROR).unwrap().contains("v2"));
    assert!(ledger.outcomes_for("v2-1").is_empty());
    assert_eq!(ledger.balance("alice").await, "3.00");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_event_breaking_the_contract_is_dead_lettered_and_opens_no_account() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    let valid = |id: &str| samples::customer(id, "Forged Customer");
    let forged = [
        CustomerCreated {
            email: "x..y@example.com".into(),
            ..valid("bad-email")
        },
        CustomerCreated {
            name: "Eve\r\nBcc: all@example.com".into(),
            ..valid("bad-name")
        },
        valid(&"x".repeat(65)),
        valid("bad/id"),
    ];
    for customer in &forged {
        ledger.publish_customer(customer).await;
    }
    ledger.open_accounts(&["good"]).await;

    let dead = ledger
        .dead_letters_of(topics::CUSTOMER_CREATED, forged.len())
        .await;
    let mut ids: Vec<String> = dead
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()["id"].to_string())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = forged.iter().map(|c| json!(c.id).to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    for record in &dead {
        assert!(record
            .header(headers::DLT_ERROR)
            .unwrap()
            .contains("invalid Customer.created"));
    }
    for customer in &forged {
        let (status, _) = ledger
            .get(&format!("/accounts/{}", customer.id.replace('/', "%2F")))
            .await;
        assert_eq!(status, 404, "no account for {:?}", customer.id);
    }
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_duplicated_request_has_one_outcome() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice"]).await;

    let payload = json!({"transactionId": "dup-1", "kind": "credit", "to": "alice",
                         "amount": "10", "requestedAt": Utc::now()})
    .to_string();
    let metadata = EventMetadata::new("event-dup-1", EventType::TransactionRequested, "/partner");
    // The same event twice (a redelivery), then the same request under another event id (a
    // producer retrying without idempotence).
    for _ in 0..2 {
        ledger
            .send_request("alice", payload.as_bytes(), Some(&metadata))
            .await;
    }
    let other = EventMetadata::new("event-dup-1b", EventType::TransactionRequested, "/partner");
    ledger
        .send_request("alice", payload.as_bytes(), Some(&other))
        .await;
    // A conflicting request under the same transaction id is ignored, not applied.
    let conflicting = json!({"transactionId": "dup-1", "kind": "credit", "to": "alice",
                             "amount": "99", "requestedAt": Utc::now()});
    ledger
        .send_request("alice", conflicting.to_string().as_bytes(), None)
        .await;

    ledger.processed("dup-1").await;
    ledger.deposit("marker", "alice", "1").await;
    assert_eq!(ledger.outcomes_for("dup-1").len(), 1);
    assert_eq!(ledger.balance("alice").await, "11.00");
    ledger.stop().await;
}

const BURST_ACCOUNTS: [&str; 6] = ["acc-a", "acc-b", "acc-c", "acc-d", "acc-e", "acc-f"];
const BURST_OPENING: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_is_conserved_over_a_burst_of_random_requests() {
    const REQUESTS: usize = 200;
    let settings = LedgerSettings {
        opening_balance: BURST_OPENING,
        ..LedgerSettings::default()
    };
    let ledger = Ledger::start(settings).await;
    ledger.open_accounts(&BURST_ACCOUNTS).await;
    post_by_8_clients(&ledger, random_api_requests(REQUESTS)).await;

    let outcomes = eventually("an outcome for every request", DEADLINE, || async {
        let outcomes: Vec<(String, Value)> = (0..REQUESTS)
            .flat_map(|i| ledger.outcomes_for(&format!("burst-{i}")))
            .collect();
        (outcomes.len() >= REQUESTS).then_some(outcomes)
    })
    .await;
    let mut per_request: HashMap<String, usize> = HashMap::new();
    for (_, payload) in &outcomes {
        *per_request
            .entry(payload["transactionId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_request.len(), REQUESTS);
    assert!(per_request.values().all(|n| *n == 1), "duplicate outcomes");

    let (expected, credits, debits) = expected_balances(&outcomes);
    let mut total = 0;
    for account in BURST_ACCOUNTS {
        let balance = ledger.balance(account).await;
        assert!(
            !balance.starts_with('-'),
            "{account} is negative: {balance}"
        );
        assert_eq!(minor(&json!(balance)), expected[account], "{account}");
        total += expected[account];
    }
    let opening = BURST_OPENING * BURST_ACCOUNTS.len() as i64;
    assert_eq!(total, opening + credits - debits);
    the_journal_agrees(&ledger, total).await;
    ledger.stop().await;
}

/// `count` random deposits, withdrawals and transfers between the burst's accounts.
fn random_api_requests(count: usize) -> Vec<Value> {
    let mut random = Random::new();
    let pick = |r: &mut Random| BURST_ACCOUNTS[r.below(BURST_ACCOUNTS.len() as u64) as usize];
    (0..count)
        .map(|i| {
            let amount = format!("{}.{:02}", random.below(80), 1 + random.below(99));
            let id = format!("burst-{i}");
            match random.below(3) {
                0 => json!({"transactionId": id, "to": pick(&mut random), "amount": amount}),
                1 => json!({"transactionId": id, "from": pick(&mut random), "amount": amount}),
                _ => {
                    let from = pick(&mut random);
                    let mut to = pick(&mut random);
                    while to == from {
                        to = pick(&mut random);
                    }
                    json!({"transactionId": id, "from": from, "to": to, "amount": amount})
                }
            }
        })
        .collect()
}

/// Posts `bodies` from 8 concurrent clients; each is accepted.
async fn post_by_8_clients(ledger: &Ledger, bodies: Vec<Value>) {
    let chunk_size = bodies.len().div_ceil(8);
    let mut clients = Vec::new();
    for chunk in bodies.chunks(chunk_size).map(<[Value]>::to_vec) {
        let (http, url) = (ledger.http.clone(), ledger.url("/transactions"));
        clients.push(tokio::spawn(async move {
            for body in chunk {
                let response = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 202);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

/// An amount as the API writes it ("12.34"), in minor units.
fn minor(value: &Value) -> i64 {
    let text = value.as_str().unwrap();
    let (whole, cents) = text.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
}

/// Expected balances from the processed events, with the credits' and debits' totals;
/// failures only for lack of funds.
fn expected_balances(outcomes: &[(String, Value)]) -> (BTreeMap<&'static str, i64>, i64, i64) {
    let mut expected: BTreeMap<&str, i64> =
        BURST_ACCOUNTS.iter().map(|a| (*a, BURST_OPENING)).collect();
    let (mut credits, mut debits) = (0i64, 0i64);
    for (topic, payload) in outcomes {
        if topic == topics::TRANSACTION_FAILED {
            assert_eq!(payload["reason"], "insufficient_funds", "{payload}");
            continue;
        }
        let amount = minor(&payload["amount"]);
        if let Some(from) = payload["from"].as_str() {
            *expected.get_mut(from).unwrap() -= amount;
        }
        if let Some(to) = payload["to"].as_str() {
            *expected.get_mut(to).unwrap() += amount;
        }
        match payload["kind"].as_str().unwrap() {
            "credit" => credits += amount,
            "debit" => debits += amount,
            _ => {}
        }
    }
    (expected, credits, debits)
}

/// The journal agrees: balances = sum of entries = `total`; every transfer nets to zero.
async fn the_journal_agrees(ledger: &Ledger, total: i64) {
    let totals = storage::totals(ledger.db.pool()).await.unwrap();
    assert_eq!(totals.balances, total);
    assert_eq!(totals.entries, total);
    let unbalanced: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e.transaction_id, CAST(SUM(e.delta) AS BIGINT) FROM entries e \
         JOIN transactions t ON t.transaction_id = e.transaction_id \
         WHERE t.kind = 'transfer' GROUP BY e.transaction_id HAVING SUM(e.delta) <> 0",
    )
    .fetch_all(ledger.db.pool())
    .await
    .unwrap();
    assert!(unbalanced.is_empty(), "{unbalanced:?}");
}
