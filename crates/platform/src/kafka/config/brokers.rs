//! Where the brokers are: the variables that name them in order of precedence, the local default
//! (never on Code Engine), and the parsing of a broker list.

use crate::foundation::env::{ConfigError, Env};

/// The local broker used when nothing else is configured (never on Code Engine: see
/// [`KafkaConfig::from_env`](crate::kafka::KafkaConfig::from_env)).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The variables that name the brokers, in order of precedence: Event Streams' SASL broker list
/// (a JSON array or a comma list), its bootstrap endpoints (a comma list), a plain broker list.
pub const BROKER_VARIABLES: [&str; 3] = [
    "EVENT_STREAMS_KAFKA_BROKERS_SASL",
    "EVENT_STREAMS_BOOTSTRAP_ENDPOINTS",
    "KAFKA_BROKERS",
];

/// Set by Code Engine in every application instance (its name).
const CODE_ENGINE_APP: &str = "CE_APP";

/// The broker list and the variable it came from (the local default off Code Engine).
pub(super) fn broker_list(env: &impl Env) -> Result<(&'static str, String), ConfigError> {
    if let Some((variable, list)) = BROKER_VARIABLES
        .iter()
        .find_map(|variable| env.var(variable).map(|list| (*variable, list)))
    {
        return Ok((variable, list));
    }
    match env.var(CODE_ENGINE_APP) {
        Some(app) => Err(ConfigError::new(
            "KAFKA_BROKERS",
            format!(
                "no broker configured, and application `{}` runs on Code Engine (CE_APP is set), \
                 where no broker listens on {DEFAULT_BROKERS}: set EVENT_STREAMS_KAFKA_BROKERS_SASL \
                 or EVENT_STREAMS_BOOTSTRAP_ENDPOINTS (with EVENT_STREAMS_USER and \
                 EVENT_STREAMS_PASSWORD), or KAFKA_BROKERS",
                app.trim()
            ),
        )),
        None => Ok(("KAFKA_BROKERS", DEFAULT_BROKERS.to_string())),
    }
}

/// Parses a broker list given as a JSON array (`["b1:9093","b2:9093"]`) or a comma list
/// (`b1:9093, b2:9093`); spaces, quotes, brackets and empty items are tolerated.
pub fn parse_broker_list(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    let items: Vec<String> = if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(trimmed) {
            Ok(items) => items,
            Err(_) => split_loose(trimmed.trim_start_matches('[').trim_end_matches(']')),
        }
    } else {
        split_loose(trimmed)
    };
    let brokers: Vec<String> = items
        .iter()
        .map(|b| {
            b.trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .trim()
                .to_string()
        })
        .filter(|b| !b.is_empty())
        .collect();
    if brokers.is_empty() {
        return Err("no broker address given".to_string());
    }
    for broker in &brokers {
        let valid = broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(format!("`{broker}` is not a host:port address"));
        }
    }
    Ok(brokers)
}

fn split_loose(text: &str) -> Vec<String> {
    text.split([',', '\n']).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_list_as_json_array() {
        let list = r#"["broker-0.es.cloud:9093", "broker-1.es.cloud:9093"]"#;
        assert_eq!(
            parse_broker_list(list).unwrap(),
            vec!["broker-0.es.cloud:9093", "broker-1.es.cloud:9093"]
        );
    }

    #[test]
    fn broker_list_as_comma_list_with_quotes_spaces_and_empty_items() {
        let list = r#" "b0:9093" , 'b1:9093',, b2:9093 "#;
        assert_eq!(
            parse_broker_list(list).unwrap(),
            vec!["b0:9093", "b1:9093", "b2:9093"]
        );
        // A JSON-looking list that is not valid JSON is still read loosely.
        assert_eq!(
            parse_broker_list("[b0:9093, b1:9093]").unwrap(),
            vec!["b0:9093", "b1:9093"]
        );
    }

    #[test]
    fn broker_list_errors() {
        assert!(parse_broker_list("").is_err());
        assert!(parse_broker_list("[]").is_err());
        assert!(parse_broker_list(" , ,").is_err());
        assert!(parse_broker_list("no-port")
            .unwrap_err()
            .contains("no-port"));
        assert!(parse_broker_list("host:notaport").is_err());
        assert!(parse_broker_list(":9092").is_err());
    }
}
