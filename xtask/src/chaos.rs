//! `cargo xtask chaos [--seed N] [--secs N]`: a bounded, self-stopping fault run on this machine
//! (see `tests/system/src/chaos.rs`). Installs what is missing, builds the services and the chaos
//! client, starts a broker of its own (`<cache>/kafka-chaos`, ports 19092-19094: it is stopped and
//! started during the run, so it must not be the one other work uses) and the PostgreSQL test
//! cluster, runs `tests/system/src/bin/chaos/` and passes on its verdict. PostgreSQL is restarted
//! during the run only when this command started the cluster (a cluster that was already running
//! may serve others). The services' logs are kept in `<cache>/chaos/<seed>/`.
//!
//! With `--brokers 3` the run's Kafka is a three-node cluster of its own
//! (`<cache>/kafka-chaos-cluster`, ports 31092-31094, 31102-31104, 31112-31114; replication 3,
//! `min.insync.replicas` 2) and the client adds broker faults (`EMS_CHAOS_BROKER_PIDS`: the nodes'
//! pid files, node id order; `EMS_CHAOS_BROKER_START` brings back every node that is down).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::kafka::{Cluster, Kafka, Ports};
use crate::postgres::{self, Postgres};
use crate::{apt, paths, process, stack};

/// The chaos run's own broker.
fn broker() -> Kafka {
    Kafka::at(
        paths::cache_root().join("kafka-chaos"),
        Ports {
            plaintext: 19092,
            sasl: 19093,
            controller: 19094,
        },
    )
}

/// The chaos run's own three-node cluster, on ports below Linux's ephemeral range (32768 and
/// up): a client that keeps reconnecting to a stopped node on a port in that range can be
/// given that very port as its own and connect to itself, and the node cannot start again
/// until that connection is gone.
fn cluster() -> Cluster {
    Cluster::at(
        paths::cache_root().join("kafka-chaos-cluster"),
        Ports {
            plaintext: 31092,
            sasl: 31093,
            controller: 31094,
        },
        3,
    )
}

/// `cargo xtask chaos-broker start|stop [--brokers 3]` (the run's broker faults).
pub fn broker_control(start: bool, brokers: u16) -> Result<()> {
    match (brokers, start) {
        (3, true) => cluster().start().map(|_| ()),
        (3, false) => cluster().stop(),
        (_, true) => broker().start().map(|_| ()),
        (_, false) => broker().stop(),
    }
}

/// The run's Kafka: a broker, or a cluster of three.
enum RunKafka {
    Single(Kafka),
    Cluster(Cluster),
}

impl RunKafka {
    fn start(&self) -> Result<crate::kafka::Started> {
        match self {
            Self::Single(kafka) => kafka.start(),
            Self::Cluster(cluster) => cluster.start(),
        }
    }

    fn stop(&self) -> Result<()> {
        match self {
            Self::Single(kafka) => kafka.stop(),
            Self::Cluster(cluster) => cluster.stop(),
        }
    }
}

/// `cargo xtask chaos-postgres restart` (the run's database fault): stops the private cluster
/// when it runs, then starts it (creating it the first time).
pub fn postgres_restart() -> Result<()> {
    let pg = Postgres::locate()?;
    if crate::postgres::accepting(crate::postgres::PORT) {
        pg.stop()?;
    }
    pg.start().map(|_| ())
}

/// Runs the chaos (on `brokers` brokers: 1 or 3); returns the exit code (non-zero when an
/// invariant broke).
pub fn run(seed: Option<u64>, secs: Option<u64>, brokers: u16) -> Result<i32> {
    apt::ensure_with_kafka(&["python3-aiosmtpd", "postgresql"])?;

    println!("building the services and the chaos client…");
    // With the platform features `cargo test` builds the services with: the binaries in the
    // target folder stay the ones the system tests expect (crash points compiled in).
    stack::build_with_system_tests(&["--features", "platform/testing,platform/failpoints"])?;

    let kafka = if brokers == 3 {
        RunKafka::Cluster(cluster())
    } else {
        RunKafka::Single(broker())
    };
    let started = kafka.start()?;
    let pg = Postgres::locate()?;
    let ours = pg.start()?;

    let seed = seed.unwrap_or_else(seed_from_clock);
    let logs = paths::cache_root().join("chaos").join(seed.to_string());
    let mut chaos = chaos_command(seed, secs, &started.env_file, &logs)?;
    if let RunKafka::Cluster(cluster) = &kafka {
        let pid_files: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| n.pid_file().to_string_lossy().into_owned())
            .collect();
        // No whole-cluster stop: the cluster's faults are the client's broker faults.
        chaos
            .env_remove("EMS_CHAOS_BROKER_STOP")
            .env("EMS_CHAOS_BROKER_PIDS", serde_json::to_string(&pid_files)?)
            .env(
                "EMS_CHAOS_BROKER_START",
                control_command(&["chaos-broker", "start", "--brokers", "3"])?,
            );
    }
    if ours {
        chaos.env(
            "EMS_CHAOS_PG_RESTART",
            control_command(&["chaos-postgres", "restart"])?,
        );
    } else {
        println!(
            "note: PostgreSQL was already running (it may serve others): it is not restarted \
             during this run"
        );
    }
    let status = chaos.status().context("starting the chaos run");
    println!("the services' logs: {}", logs.display());

    if ours {
        process::warn(pg.stop());
    }
    process::warn(kafka.stop());
    let status = status?;
    Ok(status.code().unwrap_or(1))
}

/// A seed when none is given: the clock's nanoseconds, below a million.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000)
        .unwrap_or(1)
}

/// The chaos client (`tests/system/src/bin/chaos/`), with the run's settings and the commands
/// it runs for the broker faults.
fn chaos_command(seed: u64, secs: Option<u64>, kafka_env: &Path, logs: &Path) -> Result<Command> {
    let bin_dir = stack::target_dir()?.join("debug");
    let mut chaos = Command::new(bin_dir.join("chaos"));
    chaos
        .env("EMS_BIN_DIR", &bin_dir)
        .env("EMS_KAFKA_ENV", paths::absolute(kafka_env.to_path_buf()))
        .env("TEST_DATABASE_URL", postgres::url())
        .env("CHAOS_SEED", seed.to_string())
        .env("EMS_LOG_DIR", logs)
        .env(
            "EMS_CHAOS_BROKER_STOP",
            control_command(&["chaos-broker", "stop"])?,
        )
        .env(
            "EMS_CHAOS_BROKER_START",
            control_command(&["chaos-broker", "start"])?,
        )
        .current_dir(paths::repo_root());
    if let Some(secs) = secs {
        chaos.env("CHAOS_SECS", secs.to_string());
    }
    Ok(chaos)
}

/// This xtask with `args`, as the JSON array of strings the chaos client runs.
fn control_command(args: &[&str]) -> Result<String> {
    let xtask = std::env::current_exe().context("locating xtask")?;
    let mut command = vec![xtask.to_string_lossy().into_owned()];
    command.extend(args.iter().map(|a| a.to_string()));
    Ok(serde_json::to_string(&command).unwrap_or_default())
}
