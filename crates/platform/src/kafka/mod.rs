//! Kafka: the connection configuration, the producer, the consumer loop (manual offset storage,
//! retries, dead letters) and idempotent topic creation. Every service goes through this module.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod producer;

pub use admin::ensure_topics;
pub use config::{KafkaConfig, SaslCredentials, SaslMechanism, SecurityProtocol};
pub use consumer::{run_consumer, ConsumerOptions, HandleError, Handler, Record, Rejected};
pub use producer::{OutgoingRecord, Producer};

use std::time::Duration;

/// Errors of Kafka clients, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client could not be created (bad configuration).
    #[error("cannot create Kafka {client}: {source}")]
    Client {
        /// Which client: producer, consumer, admin.
        client: &'static str,
        /// The librdkafka error.
        source: rdkafka::error::KafkaError,
    },
    /// The broker could not be reached or refused the request.
    #[error("Kafka {operation} failed: {source}")]
    Operation {
        /// What was attempted.
        operation: String,
        /// The librdkafka error.
        source: rdkafka::error::KafkaError,
    },
    /// The broker did not answer in time.
    #[error("Kafka {0} timed out")]
    Timeout(String),
    /// The broker rejected the SASL credentials.
    #[error("Kafka authentication failed (check EVENT_STREAMS_USER / EVENT_STREAMS_PASSWORD and KAFKA_SASL_MECHANISM): {0}")]
    Authentication(String),
    /// The TLS handshake failed (untrusted certificate: check KAFKA_SSL_CA_LOCATION).
    #[error("Kafka TLS handshake failed (check KAFKA_SSL_CA_LOCATION): {0}")]
    Tls(String),
}

/// Asks the brokers for cluster metadata: the readiness probe and the start-up check. A wrong
/// password or an untrusted certificate is reported as soon as the broker rejects it, not after
/// the timeout.
pub async fn check_connection(
    config: &KafkaConfig,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer<ErrorCapture> = config
        .client_config("connection-check")
        .create_with_context(ErrorCapture::default())
        .map_err(|source| KafkaError::Client {
            client: "metadata client",
            source,
        })?;
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let attempt = consumer.fetch_metadata(None, Duration::from_millis(500));
            match attempt {
                Ok(metadata) => return Ok(metadata.brokers().len()),
                Err(source) => {
                    // Serves queued client events, which runs the error callback below.
                    let _ = consumer.poll(Duration::ZERO);
                    if let Some(fatal) = consumer.context().take_fatal() {
                        return Err(fatal);
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(KafkaError::Operation {
                            operation: "metadata request".to_string(),
                            source,
                        });
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| KafkaError::Timeout("metadata request".to_string()))?
}

/// Keeps the errors librdkafka reports that retrying cannot fix.
#[derive(Default)]
struct ErrorCapture(std::sync::Mutex<Option<KafkaError>>);

impl ErrorCapture {
    fn keep(&self, fatal: Option<KafkaError>) {
        if let (Some(fatal), Ok(mut slot)) = (fatal, self.0.lock()) {
            slot.get_or_insert(fatal);
        }
    }

    fn take_fatal(&self) -> Option<KafkaError> {
        self.0.lock().ok().and_then(|mut e| e.take())
    }
}

impl rdkafka::ClientContext for ErrorCapture {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Handshake failures are logged at once; the error event may come later or not at all.
        let fatal = if log_message.contains("SSL handshake failed") {
            Some(KafkaError::Tls(log_message.to_string()))
        } else if log_message.contains("SASL authentication error") {
            Some(KafkaError::Authentication(log_message.to_string()))
        } else {
            None
        };
        tracing::debug!(?level, fac, log_message, "librdkafka");
        self.keep(fatal);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode;
        let fatal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => {
                Some(KafkaError::Authentication(reason.to_string()))
            }
            Some(RDKafkaErrorCode::SSL) => Some(KafkaError::Tls(reason.to_string())),
            _ if reason.contains("SSL handshake failed") => {
                Some(KafkaError::Tls(reason.to_string()))
            }
            _ => None,
        };
        match (fatal, self.0.lock()) {
            (Some(fatal), Ok(mut slot)) => *slot = Some(fatal),
            _ => tracing::debug!(%error, reason, "librdkafka"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorCapture {}
