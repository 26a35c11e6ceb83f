//! How the sender handles a mail server that fails, against the real broker and a real SMTP
//! server answering every message with a 4xx, a 5xx, or never answering at all.

use std::time::Duration;

use crate::helpers::*;
use notification_service::delivery::RetryPolicy;
use notification_service::mailer::MailTarget;
use notification_service::Settings;
use platform::config::Secret;
use platform::testing::SmtpMode;
use serde_json::Value;

/// Test settings sending to `smtp`, giving up after `max_attempts`.
fn failing_settings(smtp: &SmtpServer, max_attempts: u32) -> Settings {
    let mut settings = settings(MailTarget::Smtp(Secret::new(smtp.url())));
    settings.retry = RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
    };
    settings
}

/// Registers a customer and waits until its welcome delivery has failed.
async fn failed_welcome(app: &TestApp, id: &str) -> Value {
    app.publish(&customer(id, "Fay Fail")).await;
    let log = app
        .wait_log(id, "a failed delivery", |log| {
            log.len() == 1 && log[0]["status"] == "failed"
        })
        .await;
    log[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_refusals_are_retried_until_max_attempts_then_failed() {
    let smtp = SmtpServer::start_with(SmtpMode::Transient).await;
    let app = start(failing_settings(&smtp, 3)).await;

    let delivery = failed_welcome(&app, "cust-busy").await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    let error = delivery["lastError"].as_str().unwrap();
    assert!(error.contains("451"), "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(delivery["sentAt"].is_null());
    assert_eq!(smtp.attempts(), 3, "the server saw each attempt");
    assert!(smtp.messages().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_fails_at_once() {
    let smtp = SmtpServer::start_with(SmtpMode::Permanent).await;
    let app = start(failing_settings(&smtp, 100)).await;

    let delivery = failed_welcome(&app, "cust-refused").await;
    assert_eq!(delivery["attempts"], 1, "no retry: {delivery}");
    let error = delivery["lastError"].as_str().unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(error.contains("refused"), "{error}");
    assert_eq!(smtp.attempts(), 1);
    assert!(smtp.messages().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out_and_is_retried() {
    let smtp = SmtpServer::start_with(SmtpMode::Silent).await;
    let mut settings = failing_settings(&smtp, 2);
    settings.send_timeout = Duration::from_secs(1);
    settings.send_lease = Duration::from_secs(5);
    let app = start(settings).await;

    let delivery = failed_welcome(&app, "cust-silent").await;
    assert_eq!(delivery["attempts"], 2, "{delivery}");
    let error = delivery["lastError"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert!(smtp.attempts() >= 1, "the sender connected");
    assert!(smtp.messages().is_empty());
    app.stop().await;
}
