//! `cargo xtask kafka check-topics|fix-topics`: every topic's configs (retention, cleanup policy)
//! against the table of `contracts::topics`, through `platform::kafka::check_topic_configs` (what
//! the services run at start-up, and what the integration tests exercise on the real broker).
//!
//! The broker: the services' variables (`KAFKA_BROKERS`, `EVENT_STREAMS_*`, `KAFKA_TOPIC_PREFIX`,
//! ...); without a broker list, the local broker of `cargo xtask kafka`.

use std::time::Duration;

use anyhow::{Context, Result};

/// Prints each topic config that differs from the table (with `fix`, sets it to the table's
/// value first); returns the exit code: 1 when `check` found a difference, else 0.
pub fn run(fix: bool) -> Result<i32> {
    let config = crate::dlt::kafka_config()?;
    let topics = contracts::topics::all_with_dead_letters();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let drifts = runtime.block_on(async {
        platform::kafka::check_connection(&config, Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot reach Kafka at {}", config.brokers.join(",")))?;
        platform::kafka::check_topic_configs(&config, &topics, fix)
            .await
            .context("checking the topics' configs")
    })?;
    for drift in &drifts {
        let done = if fix { "fixed" } else { "differs" };
        println!("{drift}: {done}");
    }
    match (drifts.is_empty(), fix) {
        (true, _) => {
            println!(
                "{} topics checked: configs as in crates/contracts/src/topics.rs",
                topics.len()
            );
            Ok(0)
        }
        (false, true) => {
            println!("{} config(s) fixed", drifts.len());
            Ok(0)
        }
        (false, false) => {
            println!(
                "{} config(s) differ: `cargo xtask kafka fix-topics` sets them",
                drifts.len()
            );
            Ok(1)
        }
    }
}
