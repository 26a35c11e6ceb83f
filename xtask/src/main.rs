//! `cargo xtask`: the developer entry point of the workspace.
//!
//! ```text
//! cargo xtask up [--detach]            build, start Kafka and the three services
//! cargo xtask down                     stop a detached stack (and the broker it started)
//! cargo xtask demo                     run the seed's flow against the stack
//! cargo xtask test [--sqlite-only]     the whole test suite, on SQLite and PostgreSQL
//! cargo xtask api-fuzz                 its schemathesis step alone
//! cargo xtask kafka start|stop|status  the local broker alone
//! cargo xtask bench [--postgres]       the benchmark: Kafka's ceiling, throughput, latency
//! cargo xtask dlt list|show|replay     dead letters: list, inspect, replay
//! cargo xtask images [--smoke] [--compose-smoke]   the container images, run and checked
//! ```

mod api_fuzz;
mod apt;
mod bench;
mod chaos;
mod demo;
mod dlt;
mod images;
mod kafka;
mod paths;
mod postgres;
mod process;
mod stack;
mod test;
mod tls;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  up [--detach]            build and run the whole system (Kafka + the three services);
                           Ctrl-C stops it, --detach returns once everything is healthy
  down                     stop what `up --detach` started
  demo                     run the demo flow against the running stack (starts one if needed)
  test [--sqlite-only]     run the test suite on SQLite, then PostgreSQL (installs what is missing)
  api-fuzz                 the test suite's schemathesis step alone, against the binaries
                           `cargo test` built (target/debug)
  kafka start|stop|status  the local Apache Kafka broker alone
  bench [--postgres]       the benchmark (release build; BENCHMARKS.md): Kafka's own ceiling,
                           end to end at 64 clients, paced latency; SQLite, or PostgreSQL
                           (--postgres: the test cluster; or TEST_DATABASE_URL); BENCH_* size it
  dlt list [--topic <topic>]
                           the dead letters of each <topic>.DLT: position, time, key, event,
                           error, where from and which consumer group gave up on it
  dlt show <topic>.DLT <partition> <offset>
                           one dead letter: its headers and payload (pretty JSON)
  dlt replay <topic>.DLT <partition> <offset>...  |  dlt replay <topic>.DLT [<partition>] --all
                           publish dead letters again to their original topic, byte for byte
                           (not the dlt_* headers; dlt_replayed_from/_at/_by added); truncated
                           ones are refused. Kafka: KAFKA_BROKERS / EVENT_STREAMS_* as the
                           services read them, else the local broker
  images [--smoke] [--compose-smoke]
                           build the four images (installs and starts a Docker engine when none
                           answers; local base images when the registry cannot be reached) and
                           print their sizes; --smoke runs them against the local broker and
                           PostgreSQL (health, non-root, seed flow, SIGTERM, volume kept);
                           --compose-smoke brings docker-compose.yml up with local stand-ins
                           for the images it pulls and runs the seed flow
  chaos [--seed N] [--secs N]
                           a bounded fault run (<= 5 minutes) on PostgreSQL: three replicas under
                           load while replicas are killed, paused and restarted, the broker is
                           stopped and started and PostgreSQL restarted; prints `chaos: ...` and
                           fails when a request was lost, duplicated or money not conserved

environment:
  EMS_CACHE_DIR            cache root (default $HOME/.cache/event-microservices)
  EMS_KAFKA_PORT, EMS_KAFKA_SASL_PORT, EMS_KAFKA_CONTROLLER_PORT
                           broker ports (default 9092, 9093, 9094)
  EMS_DATA_DIR             data of `up` (default ./data: SQLite files, logs/, stack.state)
  EMS_PG_DATA              data directory of the test PostgreSQL cluster (port 25432)
  EMS_IMAGES_BASE=local    images: use the locally made base images without trying a pull
";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["kafka", "start"] => kafka::Kafka::from_env()?.start().map(|_| ()),
        ["kafka", "stop"] => kafka::Kafka::from_env()?.stop(),
        ["kafka", "status"] => kafka::Kafka::from_env()?.status(),
        ["test", rest @ ..] => {
            let sqlite_only = flags(rest, &["--sqlite-only"])?.contains(&"--sqlite-only");
            let code = test::run(sqlite_only)?;
            std::process::exit(code);
        }
        ["up", rest @ ..] => {
            let detach = flags(rest, &["--detach", "-d"])?
                .iter()
                .any(|f| *f == "--detach" || *f == "-d");
            stack::up(detach)
        }
        ["down"] => stack::down(),
        ["api-fuzz"] => {
            let kafka = kafka::Kafka::from_env()?;
            kafka.start()?;
            let counts = api_fuzz::run(&kafka.ports().brokers())?;
            println!("{} passed, {} failed", counts.passed, counts.failed);
            std::process::exit(i32::from(counts.failed > 0));
        }
        ["bench", rest @ ..] => bench::run(flags(rest, &["--postgres"])?.contains(&"--postgres")),
        ["demo"] => stack::demo(),
        ["images", rest @ ..] => {
            let given = flags(rest, &["--smoke", "--compose-smoke"])?;
            images::run(&images::Options {
                smoke: given.contains(&"--smoke"),
                compose_smoke: given.contains(&"--compose-smoke"),
            })
        }
        ["dlt", rest @ ..] => dlt::run(dlt::parse(rest)?),
        ["chaos", rest @ ..] => {
            let (seed, secs) = chaos_options(rest)?;
            let code = chaos::run(seed, secs)?;
            std::process::exit(code);
        }
        ["chaos-broker", "start"] => chaos::broker_control(true),
        ["chaos-broker", "stop"] => chaos::broker_control(false),
        ["chaos-postgres", "restart"] => chaos::postgres_restart(),
        [] | ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            bail!("unknown command: {}", args.join(" "))
        }
    }
}

/// `--seed N` and `--secs N` of `chaos`.
fn chaos_options(args: &[&str]) -> Result<(Option<u64>, Option<u64>)> {
    let (mut seed, mut secs) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match *flag {
            "--seed" => &mut seed,
            "--secs" => &mut secs,
            other => bail!("unknown option {other:?} (expected --seed N or --secs N)"),
        };
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a number"))?;
        *slot = Some(
            value
                .parse()
                .with_context(|| format!("{flag} {value:?} is not a number"))?,
        );
    }
    Ok((seed, secs))
}

/// Checks that every argument is one of `known`, and returns them.
fn flags<'a>(args: &[&'a str], known: &[&str]) -> Result<Vec<&'a str>> {
    for a in args {
        if !known.contains(a) {
            bail!(
                "unknown option {a:?} (expected one of {})",
                known.join(", ")
            );
        }
    }
    Ok(args.to_vec())
}
