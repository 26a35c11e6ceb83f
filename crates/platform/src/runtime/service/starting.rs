//! The service's first log line: what it is, where its brokers are and (when it has one) its
//! database, with the password left out.

use crate::runtime::config::ServiceConfig;

use super::storage::Storage;

/// The first line: the service, its brokers and (when it has one) its database.
pub(super) fn log_starting<S: Storage>(config: &ServiceConfig) {
    // Without a database the field is left out of the line.
    let database = S::DATABASE
        .then(|| tracing::field::display(crate::store::db::redact_url(&config.database_url)));
    tracing::info!(service = config.name, kafka = ?config.kafka.brokers,
        protocol = config.kafka.security_protocol.as_str(), database, "starting");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::service::storage::NoDatabase;
    use crate::store::db::Database;

    /// The line after its timestamp, level and target: the message and the fields.
    fn message(line: &str) -> &str {
        line.split_once(": ").map_or(line, |(_, rest)| rest)
    }

    #[test]
    fn the_starting_line_names_the_database_only_when_there_is_one() {
        let env = [("DATABASE_URL", "postgres://u:secret-pw@h:5432/db")];
        let config = ServiceConfig::from_env("s", 1, &env).unwrap();
        let logs = crate::foundation::test_logs::Logs::default();
        {
            let _guard = logs.capture();
            log_starting::<Database>(&config);
            // The line as it was written before storage was optional.
            tracing::info!(service = config.name, kafka = ?config.kafka.brokers,
                protocol = config.kafka.security_protocol.as_str(),
                database = %crate::store::db::redact_url(&config.database_url), "starting");
            log_starting::<NoDatabase>(&config);
        }
        let text = logs.text();
        let lines: Vec<&str> = text.lines().map(message).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], lines[1]);
        assert!(lines[0].contains("database=postgres://"), "{text}");
        assert!(!text.contains("secret-pw"), "{text}");
        assert!(lines[2].contains("service=\"s\""), "{text}");
        assert!(!lines[2].contains("database"), "{text}");
    }
}
