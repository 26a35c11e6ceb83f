//! What every Kafka client of the platform shares: [`KafkaError`], the client contexts that send
//! librdkafka's log lines and errors through `tracing`, and the connection check. Imports
//! nothing of the crate: the producer, the consumer, the admin client and the dead letters build
//! on it.

use std::time::Duration;

use super::config::KafkaConfig;

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

impl KafkaError {
    /// The broker rejected the credentials or the certificate: retrying cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Authentication(_) | Self::Tls(_))
    }
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
        // A connection check fails while the broker is down: its caller reports that, so the
        // client's own lines stay at debug.
        tracing::debug!(target: "librdkafka", facility = fac, severity = ?level, "{log_message}");
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
            _ => tracing::debug!(target: "librdkafka", %error, "{reason}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorCapture {}

/// The client context of the platform's producers and admin clients (and any other client):
/// librdkafka's log lines and client errors go through `tracing` (target `librdkafka`), in the
/// service's log format, instead of the `log` crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingContext;

impl rdkafka::ClientContext for TracingContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        error_to_tracing(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for TracingContext {}

/// Emits a librdkafka log line as a `tracing` event of target `librdkafka` at the matching
/// level (emergency to error: ERROR, warning: WARN, notice and info: INFO, debug: DEBUG). A
/// failed connection (facility `FAIL`: a broker restarting, moving or away) is a WARN: the client
/// reconnects by itself, and librdkafka writes one line per condition (it counts the identical
/// ones it suppresses).
pub(crate) fn log_to_tracing(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Error if fac == "FAIL" => {
            tracing::warn!(target: "librdkafka", facility = fac, "{message}")
        }
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(target: "librdkafka", facility = fac, "{message}")
        }
        L::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", facility = fac, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
    }
}

/// Emits a client error as a `tracing` event of target `librdkafka`: a broker transport failure
/// repeats the log line librdkafka wrote just before, so it is debug; the others warn (the
/// client retries by itself).
pub(crate) fn error_to_tracing(error: &rdkafka::error::KafkaError, reason: &str) {
    use rdkafka::types::RDKafkaErrorCode;
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure) => {
            tracing::debug!(target: "librdkafka", %error, "{reason}")
        }
        _ => tracing::warn!(target: "librdkafka", %error, "{reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::ClientContext;

    #[test]
    fn librdkafka_lines_are_tracing_events_at_their_level() {
        let logs = crate::foundation::test_logs::Logs::default();
        let guard = logs.capture();
        let context = TracingContext;
        context.log(RDKafkaLogLevel::Error, "FAIL", "Connect to broker failed");
        context.log(
            RDKafkaLogLevel::Error,
            "TOPICERR",
            "Topic authorization failed",
        );
        context.log(RDKafkaLogLevel::Warning, "GETPID", "Failed to acquire PID");
        context.log(RDKafkaLogLevel::Notice, "CLUSTERID", "cluster id changed");
        context.log(RDKafkaLogLevel::Debug, "BROKER", "added broker");
        context.error(
            rdkafka::error::KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        drop(guard);
        let text = logs.text();
        for expected in [
            "WARN librdkafka: Connect to broker failed facility=\"FAIL\"",
            "ERROR librdkafka: Topic authorization failed facility=\"TOPICERR\"",
            "WARN librdkafka: Failed to acquire PID facility=\"GETPID\"",
            "INFO librdkafka: cluster id changed facility=\"CLUSTERID\"",
            "DEBUG librdkafka: added broker facility=\"BROKER\"",
            "WARN librdkafka: 1/1 brokers are down",
        ] {
            assert!(text.contains(expected), "{expected}\n{text}");
        }
    }
}
