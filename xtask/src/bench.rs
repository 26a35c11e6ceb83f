//! `cargo xtask bench`: the end-to-end throughput benchmark (figures for BENCHMARKS.md). Builds
//! the three services and the benchmark client in release mode, makes sure the broker runs, and
//! runs `tests/system/src/bin/throughput.rs`, which starts its own stack on fresh databases.

use std::process::Command;

use anyhow::Result;

use crate::{kafka, paths, process, stack};

/// Runs the benchmark; `BENCH_TRANSFERS` / `BENCH_CONCURRENCY` size it.
pub fn run() -> Result<()> {
    println!("building the services and the benchmark in release mode…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--release"])
        .args(["-p", "customer-service", "-p", "transaction-service"])
        .args(["-p", "notification-service", "-p", "system-tests", "--bins"])
        .current_dir(paths::repo_root());
    process::run_visible(&mut build)?;
    let started = kafka::Kafka::from_env()?.start()?;
    let bin_dir = stack::target_dir()?.join("release");
    let result = process::run_visible(
        Command::new(bin_dir.join("throughput"))
            .env("EMS_BIN_DIR", &bin_dir)
            .env("EMS_KAFKA_ENV", &started.env_file)
            .current_dir(paths::repo_root()),
    );
    if !started.already_running {
        kafka::Kafka::from_env()?.stop()?;
    }
    result
}
