//! Retention in the running service, with its windows shortened to a second and the pruner
//! running every second: bodies dropped, old alerts deleted, inbox keys pruned, the mail folder
//! bounded; and none of it lets a redelivered or replayed event send a second e-mail.

use std::time::Duration;

use notification_service::mailer::MailTarget;
use notification_service::retention::DeliveryRetention;
use notification_service::{NotificationService, Settings};
use platform::config::Secret;
use platform::testing::DEADLINE;
use platform::Database;

use crate::helpers::*;

const SECOND: Duration = Duration::from_secs(1);

/// Starts the service with `settings`, the pruner running every second, and inbox keys of
/// topics deleted by age kept for `inbox` when given.
async fn start_pruning(settings: Settings, inbox: Option<Duration>) -> TestApp {
    TestApp::of::<NotificationService>()
        .configure(move |config| {
            config.retention.every = SECOND;
            config.retention.inbox_override = inbox;
        })
        .run(settings)
        .await
}

async fn count(db: &Database, sql: &str, customer: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(customer)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_is_dropped_after_its_window_and_the_row_still_stops_a_resend() {
    let smtp = SmtpServer::start().await;
    let mut settings = settings(MailTarget::Smtp(Secret::new(smtp.url())));
    settings.retention = DeliveryRetention {
        body: SECOND,
        rows: Duration::from_secs(3600),
    };
    let app = start_pruning(settings, None).await;
    app.publish_in_order(&customer("cust-body", "Bea Body"))
        .await;
    let deposit = deposited("txn-body", "cust-body", "5", "5.00");
    let first = app.publish_in_order(&deposit).await;
    app.wait_sent("cust-body", 2).await;

    eventually("both bodies dropped", DEADLINE, || async {
        let held = count(
            &app.db,
            "SELECT COUNT(*) FROM deliveries WHERE customer_id = $1 AND body <> ''",
            "cust-body",
        )
        .await;
        (held == 0).then_some(())
    })
    .await;
    // The key, status and timestamps stay: the log still shows both, sent.
    let log = app.wait_sent("cust-body", 2).await;
    assert!(log.iter().all(|d| d["sentAt"].is_string()), "{log:?}");

    // The same event again (its inbox key is still there), and its meaning under a new id.
    app.replay(&first, &deposit).await;
    app.publish_in_order(&deposit).await;
    app.publish_in_order(&customer("cust-body-s", "Sam Sentinel"))
        .await;
    app.wait_sent("cust-body-s", 1).await;
    assert_eq!(app.wait_sent("cust-body", 2).await.len(), 2);
    assert_eq!(smtp.messages_to("cust-body@example.com").len(), 2);
    assert!(
        app.metric(&["retention_pruned_rows_total", "deliveries:body"])
            .await
            >= 2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_inbox_keys_go_after_their_windows_welcomes_and_compacted_keys_stay() {
    let smtp = SmtpServer::start().await;
    let mut settings = settings(MailTarget::Smtp(Secret::new(smtp.url())));
    settings.retention = DeliveryRetention {
        body: SECOND,
        rows: 2 * SECOND,
    };
    let app = start_pruning(settings, Some(SECOND)).await;
    let welcome = app
        .publish_in_order(&customer("cust-old", "Otto Old"))
        .await;
    let deposit = deposited("txn-old", "cust-old", "5", "5.00");
    let alert = app.publish_in_order(&deposit).await;
    smtp.wait_for("cust-old@example.com", 2).await;

    let log = app
        .wait_log("cust-old", "the alert deleted, the welcome kept", |log| {
            log.len() == 1 && log[0]["kind"] == "welcome"
        })
        .await;
    assert_eq!(log[0]["status"], "sent");
    let inbox = |event: String| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM inbox WHERE event_id = $1")
                .bind(event)
                .fetch_one(db.pool())
                .await
                .unwrap()
        }
    };
    eventually("the alert's inbox key pruned", DEADLINE, || async {
        (inbox(alert.clone()).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        inbox(welcome.clone()).await,
        1,
        "Customer.created is compacted: its keys are kept"
    );

    // A redelivered Customer.created is still recognised; nobody is welcomed twice.
    app.replay(&welcome, &customer("cust-old", "Otto Old"))
        .await;
    app.publish_in_order(&customer("cust-old-s", "Sam Sentinel"))
        .await;
    app.wait_sent("cust-old-s", 1).await;
    assert_eq!(app.log("cust-old").await.len(), 1);
    assert_eq!(smtp.messages_to("cust-old@example.com").len(), 2);
    assert!(
        app.metric(&["retention_pruned_rows_total", "inbox:"]).await >= 1.0
            && app
                .metric(&["retention_pruned_rows_total", "deliveries:row"])
                .await
                >= 1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mail_folder_keeps_the_configured_number_of_messages() {
    let folder = tempfile::tempdir().unwrap();
    let mut settings = settings(MailTarget::Folder(folder.path().to_path_buf()));
    settings.mail_keep = 3;
    let app = start_pruning(settings, None).await;
    let ids: Vec<String> = (0..6).map(|n| format!("cust-mbox-{n}")).collect();
    let customers: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "Mia Mail")).collect();
    app.welcome(&customers).await;
    let files = || {
        std::fs::read_dir(folder.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
    };
    eventually("the folder pruned to 3 messages", DEADLINE, || async {
        (files() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(files(), 3, "the newest three are kept");
    app.stop().await;
}
