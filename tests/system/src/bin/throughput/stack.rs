//! The stack under test: the three services as processes on a fresh topic prefix with
//! `BENCH_PARTITIONS` partitions, `BENCH_REPLICAS` processes of transaction-service and
//! notification-service; and the deletion of its topics from the shared broker afterwards.

use std::time::Duration;

use platform::testing::{LocalKafka, SmtpServer};
use system_tests::Stack;

use crate::settings::Settings;

/// The stack on `BENCH_PARTITIONS` partitions, with `BENCH_REPLICAS` processes of
/// transaction-service and notification-service.
pub(crate) async fn start_stack(settings: &Settings) -> Stack {
    let mut kafka = LocalKafka::load().isolated();
    kafka.topic_partitions = settings.partitions;
    let mut stack = Stack::start_with(
        kafka,
        SmtpServer::start().await,
        // One load generator stands in for many clients: no per-client connection cap, and room
        // for the open loop's connections (one per request in flight) near saturation.
        &[
            // The `listening` line (info) tells the harness the process on the port is its own.
            ("RUST_LOG", "warn,platform::runtime::service=info"),
            ("HTTP_MAX_CONNECTIONS", "16384"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "16384"),
        ],
        |_, _| {},
    )
    .await;
    for name in ["transaction-service", "notification-service"] {
        stack.scale_to(name, settings.replicas).await;
    }
    stack
}

/// Deletes the stack's topics (its unique prefix) from the shared broker.
pub(crate) async fn delete_topics(kafka: &platform::KafkaConfig) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Ok(admin) = kafka
        .client_config("bench-admin")
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let metadata =
        tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_secs(10)));
    let Ok(metadata) = metadata else {
        eprintln!("warning: the bench's topics were not deleted");
        return;
    };
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| t.starts_with(&kafka.topic_prefix))
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if let Err(e) = admin.delete_topics(&names, &options).await {
        eprintln!("warning: the bench's topics were not deleted: {e}");
    }
}
