//! The registry as its parts report into it: the broker, consumers, dead letters, the relay.

use std::time::Duration;

use super::{Check, Health};

fn check(checks: &[(String, Check)], name: &str) -> Check {
    checks
        .iter()
        .find(|(n, _)| n == name)
        .expect(name)
        .1
        .clone()
}

#[tokio::test]
async fn the_broker_signal_releases_waiters() {
    let health = Health::default();
    assert!(health.broker_check().is_some());
    health.broker_waiting("connection refused");
    let detail = health.broker_check().unwrap().detail.unwrap();
    assert!(detail.contains("connection refused"), "{detail}");
    let waiter = tokio::spawn({
        let health = health.clone();
        async move { health.broker_ready().await }
    });
    health.broker_up();
    waiter.await.unwrap();
    assert!(health.broker_check().is_none());
}

#[test]
fn a_consumer_is_ready_while_it_joins_and_when_assigned_and_not_when_stopped() {
    let health = Health::default();
    let consumer = health.consumer("g");
    assert_eq!(
        check(&health.checks(), "consumer:g").detail.as_deref(),
        Some("waiting for the broker")
    );
    consumer.started();
    assert!(check(&health.checks(), "consumer:g").ok);
    consumer.assignment(&[("t".into(), 0)]);
    assert!(check(&health.checks(), "consumer:g").ok);
    consumer.stopped();
    let stopped = check(&health.checks(), "consumer:g");
    assert!(!stopped.ok);
    assert_eq!(stopped.detail.as_deref(), Some("stopped"));
}

#[test]
fn a_partition_whose_committed_offset_does_not_move_while_records_wait_is_wedged() {
    let health = Health::new(Duration::from_millis(50));
    let consumer = health.consumer("g");
    consumer.started();
    consumer.assignment(&[("t".into(), 1)]);
    consumer.statistics(true, &[(("t".into(), 1), 10, 3)]);
    std::thread::sleep(Duration::from_millis(80));
    consumer.statistics(true, &[(("t".into(), 1), 10, 3)]);
    let wedged = check(&health.checks(), "consumer:g");
    assert!(!wedged.ok);
    assert!(
        wedged
            .detail
            .as_deref()
            .unwrap()
            .starts_with("t/1: 3 records waiting"),
        "{wedged:?}"
    );
    consumer.statistics(true, &[(("t".into(), 1), 11, 2)]);
    assert!(
        check(&health.checks(), "consumer:g").ok,
        "progress clears it"
    );
}

#[test]
fn a_dead_letter_that_is_not_published_for_the_stall_time_is_named() {
    let health = Health::new(Duration::from_millis(50));
    let consumer = health.consumer("g");
    consumer.started();
    consumer.assignment(&[("t".into(), 2)]);
    consumer.dead_letter_started("t", 2);
    assert!(check(&health.checks(), "consumer:g").ok, "not yet");
    consumer.dead_letter_failed("t", 2, "Broker: Unknown topic or partition");
    std::thread::sleep(Duration::from_millis(80));
    consumer.statistics(true, &[]);
    let blocked = check(&health.checks(), "consumer:g");
    assert!(!blocked.ok);
    let detail = blocked.detail.unwrap_or_default();
    assert!(
        detail.starts_with("t/2: a record's dead letter has not been published")
            && detail.ends_with("(Broker: Unknown topic or partition)"),
        "{detail}"
    );
    consumer.dead_letter_published("t", 2);
    assert!(
        check(&health.checks(), "consumer:g").ok,
        "published clears it"
    );
    // A partition given up (revoked) takes its attempt with it.
    consumer.dead_letter_started("t", 2);
    std::thread::sleep(Duration::from_millis(80));
    consumer.statistics(true, &[]);
    consumer.assignment(&[]);
    let after = check(&health.checks(), "consumer:g");
    assert!(!after.detail.unwrap_or_default().contains("dead letter"));
}

#[test]
fn the_relay_must_publish_when_it_holds_the_lease_and_rows_wait() {
    let health = Health::new(Duration::from_millis(50));
    health.register_relay();
    assert!(!check(&health.checks(), "relay").ok);
    health.relay_started();
    health.relay_backlog(5);
    std::thread::sleep(Duration::from_millis(80));
    assert!(
        check(&health.checks(), "relay").ok,
        "a standby relay is ready"
    );
    health.relay_lease(true);
    std::thread::sleep(Duration::from_millis(80));
    health.relay_backlog(5);
    let stalled = check(&health.checks(), "relay");
    assert!(!stalled.ok, "{stalled:?}");
    health.relay_published();
    assert!(check(&health.checks(), "relay").ok);
}
