//! `CUSTOMER_WAIT_SECS` expiring: a transaction alert for a customer whose `Customer.created`
//! never arrives is parked for the wait, then recorded `failed` (nothing is mailed), and stays
//! failed when the customer does turn up later (only the welcome goes out then).

use std::time::Duration;

use crate::helpers::*;
use notification_service::mailer::MailTarget;
use platform::config::Secret;

/// The wait in this test: short, so the alert is given up on within the test's deadline.
const WAIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_whose_customer_never_arrives_is_recorded_failed_after_the_wait() {
    // Arm: a service waiting WAIT for customers, mailing a real SMTP server.
    let smtp = SmtpServer::start().await;
    let mut settings = settings(MailTarget::Smtp(Secret::new(smtp.url())));
    settings.customer_wait = WAIT;
    let app = start(settings).await;

    // Load: a deposit for a customer nobody registers.
    let published = chrono::Utc::now();
    app.publish(&deposited("txn-orphan", "cust-never", "12", "12.00"))
        .await;

    // Judge: one alert, failed, saying why; recorded no sooner than the wait allows.
    let log = app
        .wait_log("cust-never", "the alert recorded as failed", |log| {
            log.len() == 1 && log[0]["status"] == "failed"
        })
        .await;
    let alert = &log[0];
    assert_eq!(alert["kind"], "credit_alert", "{alert}");
    assert_eq!(alert["transactionId"], "txn-orphan", "{alert}");
    assert!(alert["sentAt"].is_null(), "{alert}");
    let error = alert["lastError"].as_str().unwrap();
    assert!(
        error.contains("customer cust-never is unknown")
            && error.contains("no Customer.created arrived in time"),
        "{error}"
    );
    let recorded = chrono::DateTime::parse_from_rfc3339(alert["createdAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    // Timestamps are stored to the millisecond: a millisecond of slack.
    let waited = (recorded - published).to_std().unwrap_or_default();
    assert!(
        waited + Duration::from_millis(1) >= WAIT,
        "recorded failed after {waited:?}, before the wait of {WAIT:?} ended"
    );
    // The customer turns up late: the welcome is sent, the alert is not sent after all.
    app.publish(&customer("cust-never", "Nev Late")).await;
    let log = app
        .wait_log("cust-never", "the welcome sent", |log| {
            log.len() == 2 && log.iter().any(|d| d["status"] == "sent")
        })
        .await;
    let welcome = log.iter().find(|d| d["kind"] == "welcome").unwrap();
    assert_eq!(welcome["status"], "sent", "{log:?}");
    let alert = log.iter().find(|d| d["kind"] == "credit_alert").unwrap();
    assert_eq!(alert["status"], "failed", "{log:?}");
    assert_eq!(alert["attempts"], 0, "never attempted: {alert}");
    let mails = smtp.wait_for("cust-never@example.com", 1).await;
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["Welcome, Nev Late"], "no alert mailed");
    app.stop().await;
}
