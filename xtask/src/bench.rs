//! `cargo xtask bench [--postgres] [--replicas N]`: the benchmark (figures for BENCHMARKS.md).
//! Installs what is missing, builds the three services and the benchmark client in release mode,
//! makes sure the broker runs, and runs `tests/system/src/bin/throughput/`, which starts its own
//! stack on fresh databases and prints the `bench: ...` lines and the latency-versus-load chart.
//!
//! The database is SQLite (synchronous=FULL: durable) unless `--postgres` (the durable bench
//! cluster of [`postgres::BENCH`], port 25433, started and stopped here; never the fsync-off test
//! cluster; a URL in the environment is then not used), else `TEST_DATABASE_URL` or a
//! `postgres://` `DATABASE_URL` naming a PostgreSQL server (the benchmark creates its databases
//! there and reads its durability settings from it).
//! `--replicas N` runs N replicas of transaction-service and notification-service on one
//! PostgreSQL; SQLite is refused (a file per service). `BENCH_*` variables size the run (see the
//! benchmark's doc comment).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::postgres::{self, Postgres};
use crate::{apt, kafka, paths, process, stack};

/// Where the benchmark's databases live.
enum Database {
    /// SQLite files.
    Sqlite,
    /// The bench cluster, started here when it does not run.
    BenchCluster,
    /// A PostgreSQL server named by `TEST_DATABASE_URL` or `DATABASE_URL`.
    Server(String),
}

impl Database {
    /// `--postgres`: the bench cluster; else a PostgreSQL URL from the environment; else SQLite.
    fn choose(use_postgres: bool) -> Self {
        let from_env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|url| url.starts_with("postgres"))
        };
        let url = from_env("TEST_DATABASE_URL").or_else(|| from_env("DATABASE_URL"));
        match (use_postgres, url) {
            (true, url) => {
                if url.is_some() {
                    println!(
                        "note: --postgres runs on the bench cluster; the PostgreSQL URL in the \
                         environment is not used (run without --postgres to use it)"
                    );
                }
                Self::BenchCluster
            }
            (false, Some(url)) => Self::Server(url),
            (false, None) => Self::Sqlite,
        }
    }
}

/// Runs the benchmark with `replicas` processes of transaction-service and notification-service.
pub fn run(use_postgres: bool, replicas: u32) -> Result<()> {
    let database = Database::choose(use_postgres);
    if replicas > 1 && matches!(database, Database::Sqlite) {
        bail!(
            "--replicas {replicas} needs PostgreSQL (--postgres): SQLite is one file per service"
        );
    }
    let mut packages = vec!["python3-aiosmtpd"];
    if matches!(database, Database::BenchCluster) {
        packages.push("postgresql");
    }
    apt::ensure_with_kafka(&packages)?;

    println!("building the services and the benchmark in release mode…");
    stack::build_with_system_tests(&["--release"])?;

    let broker = kafka::Kafka::from_env()?;
    let started = broker.start()?;
    let cluster = match database {
        Database::BenchCluster => {
            let pg = Postgres::locate_cluster(postgres::BENCH)?;
            let ours = pg.start()?;
            Some((pg, ours))
        }
        _ => None,
    };
    let url = match (&database, &cluster) {
        (Database::Server(url), _) => Some(url.clone()),
        (_, Some((pg, _))) => Some(pg.cluster().url()),
        _ => None,
    };

    let status = throughput(&broker, &started, url.as_deref(), replicas)
        .and_then(|mut bench| bench.status().context("starting the benchmark"));

    // A cluster that was already running may serve another run: only ours is cleaned and stopped.
    if let Some((pg, true)) = &cluster {
        match pg.drop_test_databases() {
            Ok(n) if n > 0 => println!("dropped the benchmark's {n} databases"),
            Ok(_) => {}
            Err(e) => eprintln!("warning: the benchmark's databases not dropped: {e:#}"),
        }
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

/// The benchmark client's command: the release binaries, the broker, the database `url`
/// (`TEST_DATABASE_URL`; none: SQLite) and `BENCH_REPLICAS`.
fn throughput(
    broker: &kafka::Kafka,
    started: &kafka::Started,
    url: Option<&str>,
    replicas: u32,
) -> Result<Command> {
    let bin_dir = stack::target_dir()?.join("release");
    let mut bench = Command::new(bin_dir.join("throughput"));
    bench
        .env("EMS_BIN_DIR", &bin_dir)
        .env("EMS_KAFKA_ENV", paths::absolute(started.env_file.clone()))
        .env("EMS_JAVA", broker.java()?.get_program())
        .env("EMS_KAFKA_CLASSPATH", broker.classpath())
        .env("EMS_KAFKA_TOOLS_LOG4J", broker.tools_log4j())
        .env("BENCH_REPLICAS", replicas.to_string())
        .env_remove("TEST_DATABASE_URL")
        .current_dir(paths::repo_root());
    if let Some(url) = url {
        bench.env("TEST_DATABASE_URL", url);
    }
    // Not `run_visible`: its error message would show the environment, database URL included.
    Ok(bench)
}
