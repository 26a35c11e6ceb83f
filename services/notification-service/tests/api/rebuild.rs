//! A notification-service on an empty database (a new one, or a projection dropped to be
//! rebuilt) reads the compacted `Customer.created` from its start before it takes work: it
//! knows every customer again, alerts them correctly, and welcomes nobody twice.

use crate::helpers::*;
use notification_service::mailer::MailTarget;
use notification_service::NotificationService;
use platform::config::Secret;

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_service_on_an_empty_database_rebuilds_its_customers_then_notifies() {
    let smtp = SmtpServer::start().await;
    let first = with_smtp(&smtp).await;
    first
        .welcome(&[("cust-a", "Ann Early"), ("cust-b", "Bob Early")])
        .await;
    let kafka = first.kafka.clone();
    first.stop().await;
    // Registered while no notification-service ran: the group has not consumed it yet, so the
    // rebuild leaves it to the consumer, which welcomes the customer as usual.
    platform::testing::TestProducer::new(&kafka)
        .publish("/test", &customer("cust-d", "Dee Between"))
        .await;

    // A new database; the same topics and consumer groups, whose offsets are past every
    // Customer.created: only a read from the topic's start can know these customers.
    let fresh = TestApp::of::<NotificationService>()
        .kafka(kafka)
        .run(settings(MailTarget::Smtp(Secret::new(smtp.url()))))
        .await;
    fresh
        .publish(&deposited("dep-rebuilt", "cust-a", "10.00", "110.00"))
        .await;
    let log = fresh.wait_sent("cust-a", 1).await;
    assert_eq!(log[0]["kind"], "credit_alert", "{log:?}");
    assert_eq!(log[0]["recipient"], "cust-a@example.com", "{log:?}");
    let mails = smtp.wait_for("cust-a@example.com", 2).await;
    assert_eq!(
        mails
            .iter()
            .filter(|m| m.subject.starts_with("Welcome"))
            .count(),
        1,
        "the rebuild welcomes nobody again"
    );
    assert!(fresh.log("cust-b").await.is_empty(), "no second welcome");
    let between = fresh.wait_sent("cust-d", 1).await;
    assert_eq!(between[0]["kind"], "welcome", "{between:?}");
    // A customer created now is welcomed as usual.
    fresh.welcome(&[("cust-c", "Cid Later")]).await;
    fresh.stop().await;
}
