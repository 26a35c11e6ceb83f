//! `cargo xtask bench [--postgres]`: the benchmark (figures for BENCHMARKS.md). Installs what is
//! missing, builds the three services and the benchmark client in release mode, makes sure the
//! broker runs, and runs `tests/system/src/bin/throughput/`, which starts its own stack on fresh
//! databases and prints the `bench: ...` line.
//!
//! The database is SQLite unless `--postgres` (the private cluster of `cargo xtask test`, started
//! and stopped here), `TEST_DATABASE_URL` or a `postgres://` `DATABASE_URL` names a PostgreSQL
//! server (the benchmark creates its databases there). `BENCH_*` variables size the run (see the
//! benchmark's doc comment).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::postgres::{self, Postgres};
use crate::{apt, kafka, paths, process, stack};

/// Runs the benchmark.
pub fn run(use_postgres: bool) -> Result<()> {
    let mut packages = vec!["python3-aiosmtpd"];
    if use_postgres {
        packages.push("postgresql");
    }
    apt::ensure_with_kafka(&packages)?;

    println!("building the services and the benchmark in release mode…");
    stack::build_with_system_tests(&["--release"])?;

    let broker = kafka::Kafka::from_env()?;
    let started = broker.start()?;
    let cluster = if use_postgres {
        let pg = Postgres::locate()?;
        let ours = pg.start()?;
        Some((pg, ours))
    } else {
        None
    };
    let database = match (&cluster, std::env::var("TEST_DATABASE_URL")) {
        (Some(_), _) => Some(postgres::url()),
        (None, Ok(url)) if !url.is_empty() => Some(url),
        _ => std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| url.starts_with("postgres")),
    };

    let bin_dir = stack::target_dir()?.join("release");
    let mut bench = Command::new(bin_dir.join("throughput"));
    bench
        .env("EMS_BIN_DIR", &bin_dir)
        .env("EMS_KAFKA_ENV", paths::absolute(started.env_file.clone()))
        .env("EMS_JAVA", broker.java()?.get_program())
        .env("EMS_KAFKA_CLASSPATH", broker.classpath())
        .env("EMS_KAFKA_TOOLS_LOG4J", broker.tools_log4j())
        .env_remove("TEST_DATABASE_URL")
        .current_dir(paths::repo_root());
    if let Some(url) = &database {
        bench.env("TEST_DATABASE_URL", url);
    }
    // Not `run_visible`: its error message would show the environment, database URL included.
    let status = bench.status().context("starting the benchmark");

    if let Some((pg, true)) = &cluster {
        process::warn(pg.stop());
    }
    if !started.already_running {
        broker.stop()?;
    }
    let status = status?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}
