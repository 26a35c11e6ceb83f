//! The run's size and shape, from `BENCH_*` variables (and `TEST_DATABASE_URL` for the
//! database, `BENCH_CHART` for where the chart goes), with their defaults and checks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};

/// The run's size, from `BENCH_*` variables.
pub(crate) struct Settings {
    pub(crate) transfers: usize,
    pub(crate) concurrency: usize,
    pub(crate) accounts: usize,
    pub(crate) partitions: i32,
    pub(crate) rate: f64,
    pub(crate) paced_secs: f64,
    pub(crate) unknown: usize,
    pub(crate) ceiling_records: u64,
    pub(crate) timeout: Duration,
    pub(crate) replicas: usize,
    /// `sqlite` or `postgres` (from `TEST_DATABASE_URL`).
    pub(crate) database: &'static str,
    pub(crate) chart: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl Settings {
    pub(crate) fn from_env() -> Result<Self> {
        let replicas: usize = env_or("BENCH_REPLICAS", 1)?;
        let database = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => "postgres",
            _ => "sqlite",
        };
        let chart = match std::env::var_os("BENCH_CHART").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None if replicas > 1 => PathBuf::from(format!(
                "target/bench/latency-{database}-replicas{replicas}.svg"
            )),
            None => PathBuf::from(format!("target/bench/latency-{database}.svg")),
        };
        let settings = Self {
            transfers: env_or("BENCH_TRANSFERS", 10_000)?,
            concurrency: env_or("BENCH_CONCURRENCY", 64)?,
            accounts: env_or("BENCH_ACCOUNTS", 100)?,
            partitions: env_or("BENCH_PARTITIONS", if replicas > 1 { 6 } else { 3 })?,
            rate: env_or("BENCH_RATE", 200.0)?,
            paced_secs: env_or("BENCH_PACED_SECS", 10.0)?,
            unknown: env_or("BENCH_UNKNOWN", 5)?,
            ceiling_records: env_or("BENCH_CEILING_RECORDS", 300_000)?,
            timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 300)?),
            replicas,
            database,
            chart,
        };
        ensure!(replicas >= 1, "BENCH_REPLICAS must be positive");
        ensure!(
            replicas == 1 || database == "postgres",
            "BENCH_REPLICAS={replicas} needs PostgreSQL (TEST_DATABASE_URL): SQLite is one file per service"
        );
        ensure!(settings.accounts >= 2, "BENCH_ACCOUNTS must be at least 2");
        ensure!(
            settings.concurrency >= 1,
            "BENCH_CONCURRENCY must be positive"
        );
        ensure!(
            settings.partitions >= 1,
            "BENCH_PARTITIONS must be positive"
        );
        ensure!(settings.rate > 0.0, "BENCH_RATE must be positive");
        ensure!(
            settings.paced_secs > 0.0,
            "BENCH_PACED_SECS must be positive"
        );
        Ok(settings)
    }

    pub(crate) fn paced_transfers(&self) -> usize {
        (self.rate * self.paced_secs).round().max(1.0) as usize
    }
}
