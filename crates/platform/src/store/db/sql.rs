//! Portable SQL helpers: the engine behind a connection, set-based statements over a JSON array
//! parameter, stored timestamps, and unique-violation detection.

use chrono::{DateTime, SecondsFormat, Utc};

use super::tx::Conn;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The engine behind `conn`.
    pub fn of(conn: &Conn) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// A `FROM` item named `alias` whose rows are the objects of the JSON array bound as
    /// parameter `$param`, one column per entry of `columns` (named as the objects' fields).
    ///
    /// Set-based statements use it: one statement and one fixed text (prepared once) whatever the
    /// number of rows, where a `VALUES` list would grow its text with the batch.
    pub fn json_rows(self, param: usize, alias: &str, columns: &[(&str, SqlType)]) -> String {
        match self {
            Backend::Postgres => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(name, kind)| format!("{name} {}", kind.postgres()))
                    .collect();
                format!(
                    "json_to_recordset(${param}::json) AS {alias}({})",
                    columns.join(", ")
                )
            }
            Backend::Sqlite => {
                let columns: Vec<String> = columns
                    .iter()
                    .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                    .collect();
                format!(
                    "(SELECT {} FROM json_each(${param})) AS {alias}",
                    columns.join(", ")
                )
            }
        }
    }

    /// A query selecting, as column `value`, the strings of the JSON array bound as parameter
    /// `$param` (for `IN (...)` or a `FROM` item): one fixed text whatever their number.
    pub fn json_list(self, param: usize) -> String {
        match self {
            Backend::Postgres => {
                format!("SELECT value FROM json_array_elements_text(${param}::json) AS value")
            }
            Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
        }
    }
}

/// The SQL type of a column read from JSON by [`Backend::json_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `TEXT` (a JSON string or null).
    Text,
    /// `BIGINT` (a JSON integer or null).
    BigInt,
}

impl SqlType {
    fn postgres(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            SqlType::BigInt => "bigint",
        }
    }
}

/// A JSON array of `items`, the parameter of a set-based statement ([`Backend::json_rows`],
/// [`Backend::json_list`]).
pub fn json_param<T: serde::Serialize + ?Sized>(items: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(items).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// A timestamp as stored: RFC 3339, UTC, milliseconds (sorts as text).
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a stored timestamp.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// True when `error` is a unique-constraint violation (a concurrent duplicate insert).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a: DateTime<Utc> = "2026-01-02T03:04:05.123Z".parse().unwrap();
        let b: DateTime<Utc> = "2026-01-02T03:04:05.124Z".parse().unwrap();
        assert_eq!(timestamp(a), "2026-01-02T03:04:05.123Z");
        assert!(timestamp(a) < timestamp(b));
        assert_eq!(parse_timestamp(&timestamp(a)).unwrap(), a);
    }
}
