//! Whether the run's commits are durable, read from the database rather than assumed: SQLite's
//! `PRAGMA synchronous` (FULL or EXTRA: a commit is on disk before it returns; the services open
//! every file with FULL), PostgreSQL's `SHOW fsync`, `SHOW synchronous_commit` and
//! `SHOW full_page_writes` (a session's view, database and role settings included).

use anyhow::{Context, Result};
use platform::db::Backend;
use platform::Database;

/// The database of the run and its durability settings.
#[derive(Debug, Clone)]
pub struct Durability {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// Whether an acknowledged commit survives a crash of the machine.
    pub durable: bool,
    /// The settings read: `synchronous=FULL`, or `fsync=on synchronous_commit=on ...`.
    pub settings: String,
}

impl Durability {
    /// Reads the settings through `db` (a connection as the services open it).
    pub async fn read(db: &Database) -> Result<Self> {
        match db.backend() {
            Backend::Sqlite => {
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(db.pool())
                    .await
                    .context("PRAGMA synchronous")?;
                let name = ["OFF", "NORMAL", "FULL", "EXTRA"]
                    .get(usize::try_from(level).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or("?");
                Ok(Self {
                    database: "sqlite",
                    durable: level >= 2,
                    settings: format!("synchronous={name}"),
                })
            }
            Backend::Postgres => {
                let mut values = Vec::new();
                for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
                    let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
                        .fetch_one(db.pool())
                        .await
                        .with_context(|| format!("SHOW {setting}"))?;
                    values.push((setting, value));
                }
                Ok(Self {
                    database: "postgres",
                    durable: postgres_durable(&values),
                    settings: values
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                })
            }
        }
    }

    /// `yes` or `no`.
    pub fn yes_no(&self) -> &'static str {
        if self.durable {
            "yes"
        } else {
            "no"
        }
    }
}

/// Durable when fsync and full_page_writes are on and a commit waits for its WAL flush
/// (synchronous_commit anything but `off`: on, local, remote_write, remote_apply all flush the
/// local WAL first).
fn postgres_durable(values: &[(&str, String)]) -> bool {
    let value = |name: &str| {
        values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    value("fsync") == Some("on")
        && value("full_page_writes") == Some("on")
        && value("synchronous_commit").is_some_and(|v| v != "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fsync: &str, commit: &str, pages: &str) -> Vec<(&'static str, String)> {
        vec![
            ("fsync", fsync.to_string()),
            ("synchronous_commit", commit.to_string()),
            ("full_page_writes", pages.to_string()),
        ]
    }

    #[test]
    fn postgres_is_durable_only_with_all_three() {
        assert!(postgres_durable(&settings("on", "on", "on")));
        assert!(postgres_durable(&settings("on", "local", "on")));
        assert!(!postgres_durable(&settings("off", "on", "on")));
        assert!(!postgres_durable(&settings("on", "off", "on")));
        assert!(!postgres_durable(&settings("on", "on", "off")));
        assert!(!postgres_durable(&[]));
    }
}
