//! The chaos run of `cargo xtask chaos` (see `system_tests::chaos`): prints each fault, then
//! `chaos: seed=S faults=F requests=N accepted=A outcomes=A lost=0 duplicated_outcomes=0
//! money_conserved=yes alerts_duplicated=0 duplicate_publishes=D max_recovery_s=T broker_faults=B
//! max_stall_s=S`, and exits 1
//! when an invariant broke.
//!
//! Environment: `TEST_DATABASE_URL` (a PostgreSQL server, required), `CHAOS_SEED` (default: from
//! the clock, printed), `CHAOS_SECS` (how long faults are injected, default 120),
//! `EMS_CHAOS_BROKER_STOP`, `EMS_CHAOS_BROKER_START`, `EMS_CHAOS_PG_RESTART` (JSON arrays: the
//! commands of the broker and database faults; without them those faults are not drawn),
//! `EMS_CHAOS_BROKER_PIDS` (a JSON array of a three-node cluster's pid files, node id order: every
//! other fault is then a broker fault, and each is measured: `broker fault: ...` lines).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use system_tests::chaos::{self, ChaosSettings, Controls};
use system_tests::chaos_brokers::BrokerControls;

fn command(name: &str) -> Result<Option<chaos::Command>> {
    match std::env::var(name) {
        Ok(json) if !json.trim().is_empty() => serde_json::from_str(&json)
            .with_context(|| format!("{name} is not a JSON array of strings"))
            .map(Some),
        _ => Ok(None),
    }
}

fn number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

/// The three-node cluster's controls: `EMS_CHAOS_BROKER_PIDS` (a JSON array of the nodes' pid
/// files) with `EMS_CHAOS_BROKER_START`.
fn cluster() -> Result<Option<BrokerControls>> {
    let Some(pid_files) = command("EMS_CHAOS_BROKER_PIDS")? else {
        return Ok(None);
    };
    let Some(start) = command("EMS_CHAOS_BROKER_START")? else {
        bail!("EMS_CHAOS_BROKER_PIDS needs EMS_CHAOS_BROKER_START");
    };
    Ok(Some(BrokerControls {
        pid_files: pid_files.into_iter().map(Into::into).collect(),
        start,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    if !std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")) {
        bail!("the chaos run needs PostgreSQL: set TEST_DATABASE_URL (cargo xtask chaos does)");
    }
    let clock_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000)
        .unwrap_or(1);
    let settings = ChaosSettings {
        seed: number("CHAOS_SEED", clock_seed)?,
        duration: Duration::from_secs(number("CHAOS_SECS", 120)?),
        controls: Controls {
            broker_stop: command("EMS_CHAOS_BROKER_STOP")?,
            broker_start: command("EMS_CHAOS_BROKER_START")?,
            postgres_restart: command("EMS_CHAOS_PG_RESTART")?,
            database_server: None,
            each_fault: false,
            brokers: cluster()?,
        },
    };
    println!(
        "chaos: seed {} for {} s (rerun with --seed {})",
        settings.seed,
        settings.duration.as_secs(),
        settings.seed
    );
    let begun = std::time::Instant::now();
    let report = chaos::run(&settings).await;
    println!("chaos: took {} s", begun.elapsed().as_secs());
    println!("{}", report.line());
    if !report.holds() {
        eprintln!("chaos: an invariant broke (seed {})", settings.seed);
        std::process::exit(1);
    }
    Ok(())
}
