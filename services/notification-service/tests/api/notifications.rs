//! notification-service against the real local broker, a real database (SQLite, or PostgreSQL
//! when `TEST_DATABASE_URL` is set) and a real SMTP server (aiosmtpd). Each test has its own
//! topic prefix, consumer groups, database and mail server.

use std::time::Duration;

use crate::helpers::*;
use contracts::{FailureReason, TransactionKind};
use notification_service::mailer::MailTarget;
use platform::testing::DEADLINE;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn welcome_email_is_delivered_over_smtp_and_logged() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    let event = app.publish(&customer("cust-w", "Wendy Welcome")).await;

    let log = app.wait_sent("cust-w", 1).await;
    let delivery = &log[0];
    assert_eq!(delivery["kind"], "welcome");
    assert_eq!(delivery["eventId"], event.as_str());
    assert_eq!(delivery["recipient"], "cust-w@example.com");
    assert_eq!(delivery["subject"], "Welcome, Wendy Welcome");
    assert_eq!(delivery["attempts"], 1);
    assert!(delivery["lastError"].is_null());
    for field in ["createdAt", "updatedAt", "sentAt"] {
        let time = delivery[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}"));
        chrono::DateTime::parse_from_rfc3339(time).unwrap();
    }

    let mails = smtp.wait_for("cust-w@example.com", 1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.subject, "Welcome, Wendy Welcome");
    assert!(
        mail.from.contains("notifications@localhost"),
        "{}",
        mail.from
    );
    assert_says(
        &mail.body,
        &["Hello Wendy Welcome,", "Your customer id is cust-w."],
    );
    let delivery_id = delivery["id"].as_str().unwrap();
    assert!(mail.message_id.contains(delivery_id), "{}", mail.message_id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_needs_a_customer_id() {
    let app = with_mail_folder().await;
    for query in ["", "?customerId=", "?customerId=%20%20"] {
        let url = app.url(&format!("/notifications{query}"));
        let reply = app.send(app.http.get(url)).await;
        assert_eq!(reply.status, 422, "{query}");
        assert_eq!(reply.content_type, "application/problem+json");
        let problem = reply.body;
        assert_eq!(problem["field"], "customerId");
        assert!(problem["detail"].as_str().unwrap().contains("customerId"));
    }
    assert!(app.log("nobody").await.is_empty());
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("dashboard.js"));
    let script = app.http.get(app.url("/dashboard.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script
        .text()
        .await
        .unwrap()
        .contains("notifications/stream"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_latest_deliveries_of_every_customer_are_listed_newest_first() {
    let app = with_mail_folder().await;
    let get = async |query: &str| app.get(&format!("/notifications/recent{query}")).await;
    let (status, empty) = get("").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty, serde_json::json!({"items": []}));
    app.publish(&customer("cust-r1", "Rita One")).await;
    app.wait_sent("cust-r1", 1).await;
    app.publish(&customer("cust-r2", "Rob Two")).await;
    app.wait_sent("cust-r2", 1).await;

    let (status, recent) = get("").await;
    assert_eq!(status, 200, "{recent}");
    let customers: Vec<&str> = recent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["customerId"].as_str().unwrap())
        .collect();
    assert_eq!(
        customers,
        ["cust-r2", "cust-r1"],
        "every customer, newest first"
    );
    let (_, one) = get("?limit=1").await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    assert_eq!(one["items"][0]["customerId"], "cust-r2");
    for query in ["?limit=0", "?limit=501", "?limit="] {
        let (status, problem) = get(query).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(problem["field"], "limit");
        assert!(
            problem["detail"].as_str().unwrap().contains("500"),
            "{problem}"
        );
    }
    let long_id = "c".repeat(129);
    for path in [
        format!("/notifications?customerId={long_id}"),
        format!("/notifications/stream?customerId={long_id}"),
    ] {
        let (status, problem) = app.get(&path).await;
        assert_eq!(status, 422, "{path}");
        assert_eq!(
            (problem["field"].as_str(), problem["limit"].as_u64()),
            (Some("customerId"), Some(128))
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processed_transfer_alerts_both_customers() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    app.welcome(&[("cust-a", "Ann Lee"), ("cust-b", "Bob Roe")])
        .await;

    let transfer = processed(
        request(
            "txn-transfer-1",
            TransactionKind::Transfer,
            Some("cust-a"),
            Some("cust-b"),
            "100.00",
        ),
        &[("cust-a", "400.00"), ("cust-b", "100.00")],
    );
    app.publish(&transfer).await;

    let a_log = app.wait_sent("cust-a", 2).await;
    assert_eq!(a_log[0]["kind"], "debit_alert", "newest first: {a_log:?}");
    assert_eq!(a_log[0]["transactionId"], "txn-transfer-1");
    let b_log = app.wait_sent("cust-b", 2).await;
    assert_eq!(b_log[0]["kind"], "credit_alert");

    let to_a = smtp.wait_for("cust-a@example.com", 2).await;
    let debit = to_a
        .iter()
        .find(|m| m.subject.starts_with("You sent"))
        .expect("debit alert");
    assert_eq!(debit.subject, "You sent 100.00 USD to Bob Roe");
    assert_says(
        &debit.body,
        &[
            "You sent 100.00 USD to Bob Roe (cust-b).",
            "Your new balance is 400.00 USD.",
            "Transaction: txn-transfer-1",
        ],
    );

    let to_b = smtp.wait_for("cust-b@example.com", 2).await;
    let credit = to_b
        .iter()
        .find(|m| m.subject.starts_with("You received"))
        .expect("credit alert");
    assert_eq!(credit.subject, "You received 100.00 USD from Ann Lee");
    assert_says(
        &credit.body,
        &[
            "from Ann Lee (cust-a).",
            "Your new balance is 100.00 USD.",
            "Transaction: txn-transfer-1",
        ],
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_transfer_alerts_only_the_requester_with_the_reason() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    app.welcome(&[("cust-p", "Pat Poor"), ("cust-q", "Quinn Rich")])
        .await;

    let declined = failed(
        request(
            "txn-declined-1",
            TransactionKind::Transfer,
            Some("cust-p"),
            Some("cust-q"),
            "250",
        ),
        FailureReason::InsufficientFunds,
        "balance 0.00 USD is below 250.00 USD",
    );
    app.publish(&declined).await;

    let log = app.wait_sent("cust-p", 2).await;
    assert_eq!(log[0]["kind"], "failure_alert");
    let mails = smtp.wait_for("cust-p@example.com", 2).await;
    let alert = mails
        .iter()
        .find(|m| m.subject.starts_with("Transaction declined"))
        .expect("failure alert");
    assert_eq!(
        alert.subject,
        "Transaction declined: transfer of 250.00 USD to Quinn Rich"
    );
    assert_says(
        &alert.body,
        &[
            "Reason: insufficient funds (balance 0.00 USD is below 250.00 USD).",
            "Transaction: txn-declined-1",
        ],
    );
    // Both recipients of an event are recorded in one transaction: the other party got nothing.
    assert_eq!(app.log("cust-q").await.len(), 1);
    assert_eq!(smtp.messages_to("cust-q@example.com").len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_event_is_emailed_once() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    // Everything on partition 0: once the last record is handled, so are the duplicates.
    let dora = customer("cust-d", "Dora Dup");
    let welcome = app.publish_in_order(&dora).await;
    app.replay(&welcome, &dora).await;
    app.publish_in_order(&customer("cust-s", "Sam Sentinel"))
        .await;
    app.wait_sent("cust-s", 1).await;
    let log = app.wait_sent("cust-d", 1).await;
    assert_eq!(log.len(), 1);

    let deposit = deposited("txn-dup", "cust-d", "5", "5.00");
    let deposit_event = app.publish_in_order(&deposit).await;
    app.replay(&deposit_event, &deposit).await;
    let sentinel = deposited("txn-sentinel", "cust-s", "1", "1.00");
    app.publish_in_order(&sentinel).await;
    app.wait_sent("cust-s", 2).await;

    let log = app.wait_sent("cust-d", 2).await;
    assert_eq!(
        log.iter()
            .filter(|d| d["transactionId"] == "txn-dup")
            .count(),
        1
    );
    let mails = smtp.wait_for("cust-d@example.com", 2).await;
    assert_eq!(mails.len(), 2, "one welcome, one deposit alert: {mails:?}");
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.subject == "Welcome, Dora Dup")
            .count(),
        1
    );
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.subject == "Deposit of 5.00 USD received")
            .count(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_before_its_customer_is_delivered_once_the_customer_arrives() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    let deposit = deposited("txn-early", "cust-late", "42.5", "42.50");
    app.publish(&deposit).await;

    // The handler has seen the event and parked it (not dropped it, not blocking) ...
    eventually("the early transaction to be parked", DEADLINE, || async {
        let parked = app
            .metric(&["events_parked_total", "notification-service.transactions"])
            .await;
        (parked >= 1.0).then_some(())
    })
    .await;
    assert!(app.log("cust-late").await.is_empty());

    // ... and delivers it once the customer is known.
    app.publish(&customer("cust-late", "Lou Late")).await;
    let log = app.wait_sent("cust-late", 2).await;
    let alert = log
        .iter()
        .find(|d| d["kind"] == "credit_alert")
        .expect("credit alert");
    assert_eq!(alert["transactionId"], "txn-early");
    let mails = smtp.wait_for("cust-late@example.com", 2).await;
    let deposit_mail = mails
        .iter()
        .find(|m| m.subject == "Deposit of 42.50 USD received")
        .expect("deposit alert");
    assert!(deposit_mail.body.contains("Your new balance is 42.50 USD."));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_for_an_account_the_event_reports_unknown_is_recorded_as_failed() {
    let app = with_mail_folder().await;
    let declined = failed(
        request(
            "txn-ghost",
            TransactionKind::Debit,
            Some("cust-ghost"),
            None,
            "10",
        ),
        FailureReason::UnknownAccount,
        "account cust-ghost does not exist",
    );
    app.publish(&declined).await;
    let log = app
        .wait_log("cust-ghost", "a failed delivery", |log| {
            log.len() == 1 && log[0]["status"] == "failed"
        })
        .await;
    assert_eq!(log[0]["kind"], "failure_alert");
    assert!(log[0]["lastError"]
        .as_str()
        .unwrap()
        .contains("customer cust-ghost is unknown"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_down_at_first_ends_sent_after_retries() {
    let port = free_port();
    let app = start(settings(MailTarget::Smtp(platform::config::Secret::new(
        format!("smtp://127.0.0.1:{port}"),
    ))))
    .await;
    app.publish(&customer("cust-r", "Rae Retry")).await;
    let log = app
        .wait_log("cust-r", "a retrying delivery", |log| {
            log.len() == 1 && log[0]["status"] == "retrying"
        })
        .await;
    assert!(log[0]["attempts"].as_i64().unwrap() >= 1);
    assert!(!log[0]["lastError"].as_str().unwrap().is_empty());

    let smtp = SmtpServer::start_on(port).await;
    let log = app.wait_sent("cust-r", 1).await;
    assert!(log[0]["attempts"].as_i64().unwrap() >= 2, "{log:?}");
    assert!(log[0]["lastError"].is_null());
    let mails = smtp.wait_for("cust-r@example.com", 1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject, "Welcome, Rae Retry");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_smtp_mail_is_written_as_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(settings(MailTarget::Folder(dir.path().to_path_buf()))).await;
    app.publish(&customer("cust-f", "Fay File")).await;
    app.wait_sent("cust-f", 1).await;
    let mails = read_mails(dir.path(), Some("eml"));
    assert_eq!(mails.len(), 1);
    assert!(mails[0].to.contains("cust-f@example.com"));
    assert_eq!(mails[0].subject, "Welcome, Fay File");
    assert!(mails[0].body.contains("Hello Fay File,"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_yields_delivery_events() {
    let app = with_mail_folder().await;
    let mut stream = app
        .http
        .get(app.url("/notifications/stream?customerId=cust-live"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let mut read_until = async |needle: &str, text: &mut String| {
        tokio::time::timeout(DEADLINE, async {
            while !text.contains(needle) {
                let chunk = stream.chunk().await.unwrap().expect("stream open");
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the stream: {text}"));
    };
    read_until("event: ready", &mut text).await;

    app.publish(&customer("cust-other", "Not Me")).await;
    app.publish(&customer("cust-live", "Liv Live")).await;
    read_until("\"status\":\"sent\"", &mut text).await;
    let deliveries: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|d| d.get("id").is_some())
        .collect();
    assert!(
        deliveries.iter().all(|d| d["customerId"] == "cust-live"),
        "{deliveries:?}"
    );
    assert_eq!(deliveries[0]["status"], "pending");
    assert_eq!(deliveries.last().unwrap()["status"], "sent");
    assert_eq!(deliveries[0]["subject"], "Welcome, Liv Live");
    drop(stream);
    // An open stream does not hold up shutdown (checked by `stop`).
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stops promptly");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_does_not_block_shutdown() {
    let app = with_mail_folder().await;
    let mut stream = app
        .http
        .get(app.url("/notifications/stream"))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: ready"));
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stops promptly with a stream open");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_events_are_dead_lettered_and_nothing_is_sent() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    app.welcome(&[("cust-v", "Vera Victim")]).await;
    publish_forged_events_then_a_deposit(&app).await;

    let dead = app
        .dead_letters(contracts::topics::TRANSACTION_PROCESSED, 3)
        .await;
    let ids: Vec<&Value> = dead.iter().map(|(p, _)| &p["transactionId"]).collect();
    assert_eq!(ids, ["txn-negative", "txn-self", "txn-refund"], "{dead:?}");
    assert!(dead[0].1.contains("amount"), "{}", dead[0].1);
    assert!(dead[1].1.contains("same account"), "{}", dead[1].1);
    assert!(dead[2].1.contains("refund"), "{}", dead[2].1);
    let dead = app
        .dead_letters(contracts::topics::TRANSACTION_FAILED, 1)
        .await;
    assert_eq!(dead[0].0["transactionId"], "txn-zero");
    let dead = app
        .dead_letters(contracts::topics::CUSTOMER_CREATED, 1)
        .await;
    assert_eq!(dead[0].0["id"], "cust-x");
    assert!(dead[0].1.contains("email"), "{}", dead[0].1);

    // Dead letters are never applied: the log holds the welcome and the real deposit only.
    let log = app.wait_sent("cust-v", 2).await;
    assert_eq!(log[0]["transactionId"], "txn-real", "{log:?}");
    let mails = smtp.wait_for("cust-v@example.com", 2).await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"Deposit of 7.00 USD received"),
        "{subjects:?}"
    );
    assert_eq!(mails.len(), 2, "{subjects:?}");
    assert!(app.log("cust-x").await.is_empty());
    assert!(smtp.messages_to("x..y@example.com").is_empty());
    app.stop().await;
}

/// Forged events on partition 0 of each topic (a negative deposit, a transfer to the same
/// account, an unknown kind, a declined zero debit, a customer with an unsendable address),
/// then a valid deposit of 7.00 to `cust-v`.
async fn publish_forged_events_then_a_deposit(app: &TestApp) {
    let negative = deposited("txn-negative", "cust-v", "-100.00", "0.00");
    app.publish_in_order(&negative).await;
    let to_self = processed(
        request(
            "txn-self",
            TransactionKind::Transfer,
            Some("cust-v"),
            Some("cust-v"),
            "5",
        ),
        &[("cust-v", "5.00")],
    );
    app.publish_in_order(&to_self).await;
    let mut unknown_kind =
        serde_json::to_value(deposited("txn-refund", "cust-v", "5", "5.00")).unwrap();
    unknown_kind["kind"] = "refund".into();
    let unknown_kind = unknown_kind.to_string();
    app.producer
        .send(
            contracts::topics::TRANSACTION_PROCESSED,
            "cust-v",
            unknown_kind.as_bytes(),
            &[],
            Some(0),
        )
        .await;
    let zero_declined = failed(
        request(
            "txn-zero",
            TransactionKind::Debit,
            Some("cust-v"),
            None,
            "0",
        ),
        FailureReason::InsufficientFunds,
        "account `cust-v` has 0.00 USD",
    );
    app.publish_in_order(&zero_declined).await;
    let mut unsendable = customer("cust-x", "Xavier Unsendable");
    unsendable.email = "x..y@example.com".into();
    app.publish_in_order(&unsendable).await;
    let deposit = deposited("txn-real", "cust-v", "7", "7.00");
    app.publish_in_order(&deposit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outcome_replayed_under_a_new_event_id_is_emailed_once() {
    let smtp = SmtpServer::start().await;
    let app = with_smtp(&smtp).await;
    // Everything on partition 0: once the sentinel is handled, so are the replays.
    let rita = customer("cust-rp", "Rita Replay");
    let first_welcome = app.publish_in_order(&rita).await;
    app.publish_in_order(&rita).await;
    app.publish_in_order(&customer("cust-st", "Sam Sentinel"))
        .await;
    app.wait_sent("cust-st", 1).await;

    let deposit = deposited("txn-replayed", "cust-rp", "12", "12.00");
    let first = app.publish_in_order(&deposit).await;
    app.publish_in_order(&deposit).await;
    let declined = failed(
        request(
            "txn-replayed-2",
            TransactionKind::Debit,
            Some("cust-rp"),
            None,
            "99",
        ),
        FailureReason::InsufficientFunds,
        "account `cust-rp` has 12.00 USD, less than the 99.00 USD requested",
    );
    let first_declined = app.publish_in_order(&declined).await;
    app.publish_in_order(&declined).await;
    let sentinel = deposited("txn-st", "cust-st", "1", "1.00");
    app.publish_in_order(&sentinel).await;
    app.wait_sent("cust-st", 2).await;

    let log = app.wait_sent("cust-rp", 3).await;
    let event_of = |kind: &str| {
        let rows: Vec<&Value> = log.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(rows.len(), 1, "one {kind}: {log:?}");
        rows[0]["eventId"].as_str().unwrap().to_string()
    };
    assert_eq!(event_of("welcome"), first_welcome, "the first event wins");
    assert_eq!(event_of("credit_alert"), first);
    assert_eq!(event_of("failure_alert"), first_declined);
    let mails = smtp.wait_for("cust-rp@example.com", 3).await;
    assert_eq!(mails.len(), 3, "{mails:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_once_per_transaction_migration_keeps_the_rows_already_logged() {
    use notification_service::domain::{Draft, Kind};
    use notification_service::{storage, MIGRATIONS};
    use sqlx::migrate::Migrator;
    use sqlx::Row;

    let db = fresh_database().await;
    let before = Migrator {
        migrations: MIGRATIONS
            .migrations
            .iter()
            .filter(|m| m.version < 102)
            .cloned()
            .collect(),
        ..Migrator::DEFAULT
    };
    db.migrate(&before).await.unwrap();
    insert_what_the_old_uniqueness_let_through(&db).await;
    db.migrate(&MIGRATIONS).await.unwrap();

    let kept: Vec<String> = sqlx::query("SELECT id FROM deliveries ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("id"))
        .collect();
    assert_eq!(kept, ["d-1", "d-2", "d-3", "d-4"]);
    let mut conn = db.pool().acquire().await.unwrap();
    let mut record = async |event: &str, kind: Kind, transaction: Option<&str>| {
        let draft = Draft {
            transaction_id: transaction.map(Into::into),
            ..draft("cust-m", kind)
        };
        storage::batch::record(&mut conn, event, &draft, None)
            .await
            .unwrap()
            .map(|d| d.id)
    };
    assert_eq!(record("e-5", Kind::Welcome, None).await, None);
    assert_eq!(
        record("e-6", Kind::CreditAlert, Some("txn-old")).await,
        None
    );
    assert!(record("e-7", Kind::CreditAlert, Some("txn-new"))
        .await
        .is_some());
    assert_eq!(
        record("e-8", Kind::CreditAlert, Some("txn-new")).await,
        None,
        "a replay under a new event id is a no-op"
    );
    assert!(record("e-8", Kind::DebitAlert, Some("txn-new"))
        .await
        .is_some());
}

/// A database of its own (SQLite file, or a fresh PostgreSQL database).
async fn fresh_database() -> platform::Database {
    platform::Database::connect(&platform::testing::fresh_database_url().await)
        .await
        .unwrap()
}

/// A fresh database with notification-service's migrations.
async fn migrated_database() -> platform::Database {
    let db = fresh_database().await;
    db.migrate(&notification_service::MIGRATIONS).await.unwrap();
    db
}

/// A draft of `kind` to `customer` (`<customer>@example.com`), about no transaction.
fn draft(
    customer: &str,
    kind: notification_service::domain::Kind,
) -> notification_service::domain::Draft {
    notification_service::domain::Draft {
        customer_id: customer.into(),
        kind,
        transaction_id: None,
        recipient: format!("{customer}@example.com"),
        subject: "s".into(),
        body: "b".into(),
    }
}

/// What the old uniqueness let through: one transaction's alert under two event ids, and a
/// second welcome.
async fn insert_what_the_old_uniqueness_let_through(db: &platform::Database) {
    let rows = [
        ("d-1", "e-1", "welcome", None),
        ("d-2", "e-2", "welcome", None),
        ("d-3", "e-3", "credit_alert", Some("txn-old")),
        ("d-4", "e-4", "credit_alert", Some("txn-old")),
    ];
    for (id, event, kind, transaction) in rows {
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, customer_id, kind, transaction_id, recipient, \
             subject, body, status, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, 'cust-m', $3, $4, 'm@example.com', 's', 'b', 'sent', 1, \
             '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .bind(id)
        .bind(event)
        .bind(kind)
        .bind(transaction)
        .execute(db.pool())
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_written_with_one_statement_each_and_the_first_of_a_meaning_wins() {
    use notification_service::domain::Kind;
    use notification_service::storage::batch::{self, NewDelivery};

    let db = migrated_database().await;
    let mut conn = db.pool().acquire().await.unwrap();
    an_id_twice_in_a_batch_is_stored_with_the_last(&mut conn).await;

    let new =
        |event: &str, kind: Kind, transaction: Option<&str>, failure: Option<&str>| NewDelivery {
            event_id: event.into(),
            draft: notification_service::domain::Draft {
                transaction_id: transaction.map(Into::into),
                ..draft("c-1", kind)
            },
            failure: failure.map(Into::into),
        };
    let recorded = batch::record_all(
        &mut conn,
        &[
            new("e-1", Kind::Welcome, None, None),
            new("e-2", Kind::Welcome, None, None),
            new("e-3", Kind::CreditAlert, Some("t-1"), None),
            new("e-4", Kind::CreditAlert, Some("t-1"), None),
            new("e-4", Kind::DebitAlert, Some("t-1"), Some("unknown")),
        ],
    )
    .await
    .unwrap();
    let got: Vec<(&str, &str, &str)> = recorded
        .iter()
        .map(|d| (d.event_id.as_str(), d.kind.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("e-1", "welcome", "pending"),
            ("e-3", "credit_alert", "pending"),
            ("e-4", "debit_alert", "failed"),
        ],
        "in order, the first of each meaning"
    );
    assert_eq!(recorded[2].last_error.as_deref(), Some("unknown"));
    let again = batch::record_all(
        &mut conn,
        &[
            new("e-5", Kind::Welcome, None, None),
            new("e-3", Kind::CreditAlert, Some("t-1"), None),
            new("e-6", Kind::CreditAlert, Some("t-2"), None),
        ],
    )
    .await
    .unwrap();
    let got: Vec<&str> = again.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(got, ["e-6"], "what was recorded before is left as it is");
    assert!(batch::record_all(&mut conn, &[]).await.unwrap().is_empty());
}

/// An id twice in one batch of customers: the last wins, as if stored one after the other.
async fn an_id_twice_in_a_batch_is_stored_with_the_last(conn: &mut platform::db::Conn) {
    use notification_service::domain::Contact;
    use notification_service::storage::batch;
    let contact = |id: &str, name: &str| Contact {
        id: id.into(),
        name: name.into(),
        email: format!("{id}@example.com"),
    };
    batch::upsert_customers(
        conn,
        &[
            contact("c-1", "Old"),
            contact("c-2", "Two"),
            contact("c-1", "New"),
        ],
    )
    .await
    .unwrap();
    let known = batch::find_customers(conn, &["c-1", "c-2", "c-3"])
        .await
        .unwrap();
    assert_eq!(known.len(), 2, "{known:?}");
    assert_eq!(known["c-1"].name, "New");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_statement_records_finished_attempts_and_leases_the_next_delivery() {
    use chrono::{Duration as Span, Utc};
    use notification_service::domain::{Kind, Status};
    use notification_service::storage::{self, Attempted, Lease};

    let db = migrated_database().await;
    let mut conn = db.pool().acquire().await.unwrap();
    for (event, customer) in [("e-1", "c-1"), ("e-2", "c-2")] {
        storage::batch::record(&mut conn, event, &draft(customer, Kind::Welcome), None)
            .await
            .unwrap()
            .unwrap();
    }
    let due = storage::due(&mut *conn, Utc::now(), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let until = Utc::now() + Span::seconds(60);
    let lease = |n: usize| {
        Some(Lease {
            delivery: &due[n],
            until,
        })
    };
    let (updated, leased) = storage::settle(&mut conn, &[], lease(0)).await.unwrap();
    assert!(leased && updated.is_empty());
    // Taken: neither leased again (by a sender that found it due before) nor due.
    let (_, again) = storage::settle(&mut conn, &[], lease(0)).await.unwrap();
    assert!(!again, "a leased delivery is not leased twice");
    let sent = Attempted {
        id: &due[0].id,
        status: Status::Sent,
        error: None,
        next_attempt_at: Utc::now(),
    };
    let (updated, leased) = storage::settle(&mut conn, &[sent], lease(1)).await.unwrap();
    assert!(leased);
    assert_eq!(
        updated.len(),
        1,
        "the finished row, not the lease: {updated:?}"
    );
    assert_eq!((updated[0].status, updated[0].attempts), (Status::Sent, 1));
    assert!(updated[0].sent_at.is_some());
    a_send_cut_short_is_recorded_failed(&mut conn, until + Span::seconds(1)).await;
}

/// A send cut short: still `sending` when its lease ends (`later`), found due, never leased
/// again, recorded as failed.
async fn a_send_cut_short_is_recorded_failed(
    conn: &mut platform::db::Conn,
    later: chrono::DateTime<chrono::Utc>,
) {
    use notification_service::domain::Status;
    use notification_service::storage::{self, Attempted, Lease};

    let due = storage::due(&mut *conn, later, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].status, due[0].attempts), (Status::Sending, 0));
    let (_, leased) = storage::settle(
        conn,
        &[],
        Some(Lease {
            delivery: &due[0],
            until: later,
        }),
    )
    .await
    .unwrap();
    assert!(!leased, "an interrupted send is never leased again");
    let failed = Attempted {
        id: &due[0].id,
        status: Status::Failed,
        error: Some("interrupted"),
        next_attempt_at: later,
    };
    let (updated, _) = storage::settle(conn, &[failed], None).await.unwrap();
    assert_eq!(
        (
            updated[0].status,
            updated[0].last_error.as_deref(),
            updated[0].attempts
        ),
        (Status::Failed, Some("interrupted"), 1)
    );
    assert!(updated[0].sent_at.is_none());
    assert!(storage::due(&mut *conn, later, 10)
        .await
        .unwrap()
        .is_empty());
}
