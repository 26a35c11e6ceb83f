//! The command line of `cargo xtask` (clap's derive API): one variant per command, each with its
//! one-line description (`cargo xtask --help`) and its details (`cargo xtask <command> --help`).

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use crate::{dlt, images};

/// The variables every command reads, shown at the end of `--help`.
const ENVIRONMENT: &str = "\
environment:
  EMS_CACHE_DIR            cache root (default $HOME/.cache/event-microservices)
  EMS_KAFKA_PORT, EMS_KAFKA_SASL_PORT, EMS_KAFKA_CONTROLLER_PORT
                           broker ports (default 9092, 9093, 9094)
  EMS_DATA_DIR             data of `up` (default ./data: SQLite files, logs/, stack.state)
  EMS_LOG_MAX_MB, EMS_LOG_KEEP
                           `up`: a service log rotates at this size (default 20 MiB); rotated
                           files kept (default 3)
  EMS_PG_DATA              data directory of the test PostgreSQL cluster (port 25432, fsync off)
  EMS_PG_BENCH_DATA        data directory of the bench PostgreSQL cluster (port 25433, durable)
  EMS_IMAGES_BASE=local    images: use the locally made base images without trying a pull";

/// `cargo xtask`: the developer entry point of the workspace.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = ENVIRONMENT,
    disable_version_flag = true
)]
pub struct Cli {
    /// What to do (none: this help).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A command of `cargo xtask`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and run the whole system (Kafka + the three services); Ctrl-C stops it.
    Up {
        /// Return once everything is healthy, leaving the stack running (`cargo xtask down`
        /// stops it).
        #[arg(short, long)]
        detach: bool,
    },
    /// Stop what `up --detach` started (and the broker it started).
    Down,
    /// Run the demo flow against the running stack (starts one if needed).
    ///
    /// The seed's flow: two customers, a deposit, a transfer that succeeds and one that fails
    /// (insufficient funds); then the event timeline read back from Kafka and the notifications
    /// the notification-service recorded.
    Demo,
    /// Run the test suite on SQLite, then PostgreSQL (installs what is missing).
    ///
    /// Then API fuzzing (schemathesis) and the deploy checks; the last line is the summary
    /// `N passed, M failed`.
    Test {
        /// The SQLite pass only (no PostgreSQL).
        #[arg(long)]
        sqlite_only: bool,
    },
    /// The test suite's schemathesis step alone, against the binaries `cargo test` built.
    ApiFuzz,
    /// The local Apache Kafka broker alone.
    Kafka {
        /// What to do with the broker.
        #[command(subcommand)]
        action: KafkaAction,
        /// 3: a KRaft cluster of three nodes (replication 3, min.insync.replicas 2) on ports
        /// 29092-29094, 29102-29104, 29112-29114, under `<cache>/kafka-cluster`.
        #[arg(long, global = true, value_name = "N", default_value_t = 1,
              value_parser = clap::builder::PossibleValuesParser::new(["1", "3"])
                  .map(|s| s.parse::<u16>().unwrap_or(1)))]
        brokers: u16,
    },
    /// The benchmark (release build; BENCHMARKS.md): Kafka's ceiling, throughput, latency vs load.
    ///
    /// Kafka's own ceiling, end to end at 64 clients, then open-loop latency at 10/50/90 % of the
    /// rate measured (a table and an SVG chart, BENCH_CHART) and at 200/s. On SQLite
    /// (synchronous=FULL), or PostgreSQL: --postgres starts a durable cluster of its own on port
    /// 25433 (fsync, synchronous_commit, full_page_writes on); TEST_DATABASE_URL names another
    /// server, whose settings are read. The `bench:` line says database=, durable=, replicas=.
    /// BENCH_* variables size it.
    Bench {
        /// On PostgreSQL: the durable bench cluster (127.0.0.1:25433), started and stopped here.
        #[arg(long)]
        postgres: bool,
        /// Processes of transaction-service and notification-service (customer-service: one),
        /// on 6 partitions; the load goes round robin over transaction-service's. PostgreSQL only.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=16))]
        replicas: u32,
    },
    /// Dead letters: list, inspect, replay.
    ///
    /// Kafka: KAFKA_BROKERS / EVENT_STREAMS_* as the services read them, else the local broker.
    Dlt {
        /// What to do with the dead letters.
        #[command(subcommand)]
        command: dlt::Args,
    },
    /// Build the four container images and print their sizes (--smoke, --compose-smoke).
    ///
    /// Installs and starts a Docker engine when none answers; uses local base images when the
    /// registry cannot be reached.
    Images(images::Options),
    /// A bounded fault run (<= 5 minutes) on PostgreSQL; fails when a request was lost.
    ///
    /// Three replicas under load while replicas are killed, paused and restarted, the broker is
    /// stopped and started and PostgreSQL restarted; prints `chaos: ...` and fails when a request
    /// was lost, duplicated or money not conserved.
    Chaos {
        /// The seed of the fault schedule (default: from the clock).
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// How long the run lasts, in seconds.
        #[arg(long, value_name = "N")]
        secs: Option<u64>,
        /// 3: on a three-node cluster of its own, with broker faults (kill -9 of a busy
        /// partition's leader, SIGSTOP of a broker past its session timeout, a restart, a
        /// rolling restart); the line gains `broker_faults=` and `max_stall_s=`.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::builder::PossibleValuesParser::new(["1", "3"])
                  .map(|s| s.parse::<u16>().unwrap_or(1)))]
        brokers: u16,
    },
    /// The chaos run's own broker (`chaos` stops and starts it as a fault).
    ChaosBroker {
        /// Start or stop it.
        #[command(subcommand)]
        action: ChaosBrokerAction,
        /// 3: the chaos run's three-node cluster (start brings back every node that is down).
        #[arg(long, global = true, value_name = "N", default_value_t = 1,
              value_parser = clap::builder::PossibleValuesParser::new(["1", "3"])
                  .map(|s| s.parse::<u16>().unwrap_or(1)))]
        brokers: u16,
    },
    /// Steady load on the dev stack with short retention windows; prints what levels off.
    ///
    /// Starts `up --detach` on a data folder of its own (`data/soak`; ports 3001-3004 must be
    /// free) with the retention windows shortened to minutes, sends `--rate` transfers per
    /// second for `--minutes`, samples every service every 30 s and prints per service the
    /// slope per hour of resident memory, open file descriptors, database connections and
    /// database size outside the ledger, the ledger's bytes per 1,000 transfers, the disk used
    /// by mail and logs, and the consumer lag at the end (`soak:` lines). A measurement, not a
    /// test: it fails only when the stack does not run.
    Soak {
        /// How long the load lasts.
        #[arg(long, value_name = "N", default_value_t = 15)]
        minutes: u64,
        /// Transfers per second.
        #[arg(long, value_name = "N", default_value_t = 20)]
        rate: u32,
    },
    /// Copies standard input to a rotating log file (what a detached `up` runs per service).
    #[command(hide = true)]
    LogWriter {
        /// Rotate once the file would grow past this many bytes.
        #[arg(long, value_name = "N")]
        max_bytes: u64,
        /// Rotated files kept.
        #[arg(long, value_name = "N")]
        keep: usize,
        /// The log file.
        file: std::path::PathBuf,
    },
    /// The PostgreSQL test cluster as a chaos fault (`chaos` restarts it).
    ChaosPostgres {
        /// Restart it.
        #[command(subcommand)]
        action: ChaosPostgresAction,
    },
}

/// `cargo xtask kafka start|stop|status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum KafkaAction {
    /// Start the broker unless it runs; wait until it answers (idempotent).
    Start,
    /// Stop the broker (controlled shutdown; killed after a grace period).
    Stop,
    /// Print whether the broker runs, and where.
    Status,
    /// Compare every topic's configs (retention, cleanup policy) with the table of
    /// crates/contracts/src/topics.rs; print each difference, fail when there is one.
    ///
    /// Kafka: KAFKA_BROKERS / EVENT_STREAMS_* as the services read them, else the local broker.
    CheckTopics,
    /// Like check-topics, then set the table's configs on each topic that differs (the topic's
    /// other overrides stay). Needs a credential that may alter topic configs.
    FixTopics,
}

/// `cargo xtask chaos-broker start|stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ChaosBrokerAction {
    /// Start the chaos broker.
    Start,
    /// Stop the chaos broker.
    Stop,
}

/// `cargo xtask chaos-postgres restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ChaosPostgresAction {
    /// Stop and start the PostgreSQL test cluster.
    Restart,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_documented_invocations_parse() {
        for args in [
            &[][..],
            &["up"],
            &["up", "--detach"],
            &["up", "-d"],
            &["down"],
            &["demo"],
            &["test"],
            &["test", "--sqlite-only"],
            &["api-fuzz"],
            &["kafka", "start"],
            &["kafka", "stop"],
            &["kafka", "status"],
            &["kafka", "check-topics"],
            &["kafka", "fix-topics"],
            &["kafka", "start", "--brokers", "3"],
            &["kafka", "stop", "--brokers", "3"],
            &["kafka", "status", "--brokers", "3"],
            &["bench"],
            &["bench", "--postgres"],
            &["bench", "--postgres", "--replicas", "3"],
            &["dlt", "list"],
            &["images", "--smoke", "--compose-smoke"],
            &["chaos"],
            &["chaos", "--seed", "7", "--secs", "60"],
            &["chaos-broker", "start"],
            &["chaos-broker", "stop"],
            &["chaos", "--brokers", "3", "--seed", "7", "--secs", "240"],
            &["chaos-broker", "start", "--brokers", "3"],
            &["chaos-postgres", "restart"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn options_keep_their_meaning() {
        let cli = parse(&["chaos", "--seed", "7", "--secs", "60"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Chaos {
                seed: Some(7),
                secs: Some(60),
                brokers: 1
            })
        ));
        let cli = parse(&["kafka", "start", "--brokers", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Kafka {
                action: KafkaAction::Start,
                brokers: 3
            })
        ));
        let cli = parse(&["kafka", "start"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Kafka { brokers: 1, .. })
        ));
        let cli = parse(&["bench", "--postgres", "--replicas", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Bench {
                postgres: true,
                replicas: 3
            })
        ));
        let cli = parse(&["bench"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Bench {
                postgres: false,
                replicas: 1
            })
        ));
        let cli = parse(&["up", "-d"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Up { detach: true })));
        let cli = parse(&["images", "--compose-smoke"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Images(images::Options {
                smoke: false,
                compose_smoke: true
            }))
        ));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["nope"][..],
            &["up", "--detached"],
            &["test", "--postgres-only"],
            &["kafka"],
            &["kafka", "restart"],
            &["kafka", "start", "--brokers", "2"],
            &["chaos", "--brokers", "5"],
            &["chaos", "--seed"],
            &["chaos", "--seed", "x"],
            &["down", "now"],
            &["bench", "--replicas", "0"],
            &["bench", "--replicas"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
