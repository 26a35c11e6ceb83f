//! `cargo xtask`: the developer entry point of the workspace.
//!
//! ```text
//! cargo xtask up [--detach]            build, start Kafka and the three services
//! cargo xtask down                     stop a detached stack (and the broker it started)
//! cargo xtask demo                     run the seed's flow against the stack
//! cargo xtask test [--sqlite-only]     the whole test suite, on SQLite and PostgreSQL
//! cargo xtask api-fuzz                 its schemathesis step alone
//! cargo xtask kafka start|stop|status  the local broker alone
//! cargo xtask kafka start --brokers 3  a three-node KRaft cluster (replication 3, min ISR 2)
//! cargo xtask kafka check-topics|fix-topics  topic configs against contracts' table
//! cargo xtask bench [--postgres] [--replicas N]   the benchmark: ceiling, throughput, latency
//! cargo xtask dlt list|show|replay     dead letters: list, inspect, replay
//! cargo xtask images [--smoke] [--compose-smoke]   the container images, run and checked
//! cargo xtask chaos [--seed N] [--secs N]           a bounded fault run on PostgreSQL
//! cargo xtask soak [--minutes N]       steady load with short retention windows: what levels off
//! ```
//!
//! `cargo xtask --help` lists every command ([`cli`]); `cargo xtask <command> --help` its options.

mod api_fuzz;
mod apt;
mod bench;
mod chaos;
mod cli;
mod counts;
mod demo;
mod dlt;
mod images;
mod kafka;
mod logs;
mod paths;
mod pg_tls;
mod postgres;
mod process;
mod soak;
mod stack;
mod test;
mod topic_configs;

use anyhow::Result;
use clap::{CommandFactory, Parser};

use cli::{ChaosBrokerAction, ChaosPostgresAction, Cli, Command, KafkaAction};

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // Help goes to stdout (exit 0); a bad argument to stderr (exit 1, as before clap).
        let _ = e.print();
        std::process::exit(i32::from(e.use_stderr()));
    });
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs one command; returns the process exit code.
fn run(cli: Cli) -> Result<i32> {
    let Some(command) = cli.command else {
        println!("{}", Cli::command().render_help());
        return Ok(0);
    };
    match command {
        Command::Up { detach } => stack::up(detach)?,
        Command::Down => stack::down()?,
        Command::Demo => demo::demo()?,
        Command::Test { sqlite_only } => return test::run(sqlite_only),
        Command::ApiFuzz => return api_fuzz::run_alone(),
        Command::Kafka {
            action: action @ (KafkaAction::Start | KafkaAction::Stop | KafkaAction::Status),
            brokers: 3,
        } => {
            let cluster = kafka::Cluster::from_env()?;
            match action {
                KafkaAction::Start => cluster.start().map(|_| ())?,
                KafkaAction::Stop => cluster.stop()?,
                _ => cluster.status()?,
            }
        }
        Command::Kafka { action, .. } => {
            let kafka = kafka::Kafka::from_env()?;
            match action {
                KafkaAction::Start => kafka.start().map(|_| ())?,
                KafkaAction::Stop => kafka.stop()?,
                KafkaAction::Status => kafka.status()?,
                KafkaAction::CheckTopics => return topic_configs::run(false),
                KafkaAction::FixTopics => return topic_configs::run(true),
            }
        }
        Command::Bench { postgres, replicas } => bench::run(postgres, replicas)?,
        Command::Dlt { command } => dlt::run(command.into_command())?,
        Command::Images(options) => images::run(&options)?,
        Command::Chaos {
            seed,
            secs,
            brokers,
        } => return chaos::run(seed, secs, brokers),
        Command::ChaosBroker { action, brokers } => {
            chaos::broker_control(action == ChaosBrokerAction::Start, brokers)?;
        }
        Command::ChaosPostgres {
            action: ChaosPostgresAction::Restart,
        } => chaos::postgres_restart()?,
        Command::Soak { minutes, rate } => soak::run(minutes, rate)?,
        Command::LogWriter {
            max_bytes,
            keep,
            file,
        } => logs::writer(&file, logs::Limits { max_bytes, keep })?,
    }
    Ok(0)
}
