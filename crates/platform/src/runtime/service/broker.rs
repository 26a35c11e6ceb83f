//! Reaching the broker at start: the topics created (or expected), retried with backoff until
//! the broker answers; credentials or certificates it refuses stop the service.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::foundation::health::Health;
use crate::kafka;

/// The longest wait between two attempts to reach the broker.
const MAX_BROKER_BACKOFF: Duration = Duration::from_secs(30);

/// What start-up does with the topics.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopicSetup {
    /// Create the missing ones (`KAFKA_CREATE_TOPICS`).
    pub(super) create: bool,
    /// Alter existing ones whose configs drifted (`KAFKA_FIX_TOPIC_CONFIGS`).
    pub(super) fix: bool,
    /// Report those (a service that only reads leaves them to the services that write).
    pub(super) report: bool,
}

/// Reaches the broker and creates the topics, retrying with backoff (one warning per attempt)
/// until it works or shutdown; then tells `health` the broker is up. Credentials or certificates
/// the broker rejects are kept in `fatal` and stop the service.
pub(super) async fn bring_up_broker(
    kafka: kafka::KafkaConfig,
    setup: TopicSetup,
    health: Health,
    fatal: Arc<std::sync::Mutex<Option<kafka::KafkaError>>>,
    shutdown: CancellationToken,
) {
    use backon::Retryable;
    let topics = contracts::topics::all_with_dead_letters();
    let created = setup.create.then_some(&topics[..]);
    let mut attempt = 1u32;
    // A service that only reads (no database) waits for the broker, not for topics.
    let (retrying, ready) = if setup.report {
        ("retrying topic creation", "Kafka reachable; topics ready")
    } else {
        ("retrying", "Kafka reachable")
    };
    let attempts = (|| connect_and_create_topics(&kafka, created))
        .retry(crate::foundation::retry::exponential(
            Duration::from_secs(1),
            MAX_BROKER_BACKOFF,
        ))
        .when(|error| !error.is_refusal())
        .notify(|error, backoff| {
            tracing::warn!(%error, attempt, brokers = %kafka.brokers.join(","),
                retry_in_s = backoff.as_secs(),
                "Kafka not ready; {retrying} (is the broker running? `cargo xtask kafka start`)");
            health.broker_waiting(&error.to_string());
            attempt += 1;
        });
    // Shutdown interrupts an attempt or the wait before the next one.
    let result = tokio::select! {
        _ = shutdown.cancelled() => return,
        result = attempts => result,
    };
    match result {
        Ok(()) => {
            if attempt > 1 {
                tracing::info!(attempt, "{ready}");
            }
            health.broker_up();
            // Existing topics whose retention or cleanup policy differ are reported (fixed on
            // request), whether or not this service creates topics.
            if setup.report {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    () = kafka::report_topic_configs(&kafka, &topics, setup.fix) => {}
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "Kafka refused the connection; stopping");
            *fatal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            shutdown.cancel();
        }
    }
}

/// How long a service without a database waits for the broker's first answer at start.
const CREDENTIALS_BUDGET: Duration = Duration::from_secs(10);

/// Credentials or certificates the broker refuses, within [`CREDENTIALS_BUDGET`]: a service
/// without a database stops before it serves (retrying cannot fix them). A broker that is only
/// away is waited for in the background.
pub(super) async fn check_credentials(kafka: &kafka::KafkaConfig) -> Result<(), kafka::KafkaError> {
    match kafka::check_connection(kafka, CREDENTIALS_BUDGET).await {
        Err(error) if error.is_refusal() => Err(error),
        _ => Ok(()),
    }
}

/// One attempt: a metadata round trip (which reports rejected credentials at once), then the
/// creation of `topics` (none with `KAFKA_CREATE_TOPICS=false`: they are expected to exist).
async fn connect_and_create_topics(
    kafka: &kafka::KafkaConfig,
    topics: Option<&[String]>,
) -> Result<(), kafka::KafkaError> {
    kafka::check_connection(kafka, Duration::from_secs(5)).await?;
    match topics {
        Some(topics) => kafka::ensure_topics(kafka, topics).await,
        None => Ok(()),
    }
}
