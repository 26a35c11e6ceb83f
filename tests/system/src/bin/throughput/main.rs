//! The benchmark behind `cargo xtask bench` (figures for BENCHMARKS.md), in one run on one machine:
//!
//! 1. the raw ceiling: Kafka's own producer and consumer perf tools on a throw-away topic, records
//!    the size of a real `transaction.requested` record (payload, key and headers), acks=all;
//! 2. end to end at `BENCH_CONCURRENCY` (64) clients: `BENCH_TRANSFERS` (10000) transfers among
//!    funded accounts, timed from the first request to the last outcome event read from Kafka,
//!    then until notification-service has recorded every alert;
//! 3. paced: `BENCH_RATE` (200) transfers/s for `BENCH_PACED_SECS` s, one task per request,
//!    request → outcome latency;
//! 4. the same paced run with `BENCH_UNKNOWN` (5) transfers to accounts that do not exist among
//!    them (they wait out transaction-service's grace period): the latency of the others;
//! 5. latency vs load: the paced phase (an open loop) at 10, 50 and 90 % of the rate phase 2
//!    measured, `BENCH_PACED_SECS` (10) s each, bounded ([`sweep`]); a table, and an SVG chart at
//!    `BENCH_CHART` (default `target/bench/latency-<database>[-replicasN].svg`, [`chart`]). It
//!    comes last: its 90 % point leaves a backlog (alerts) that would weigh on a later phase.
//!
//! The three services run as processes (binaries from `EMS_BIN_DIR`) on fresh databases (SQLite,
//! or PostgreSQL when `TEST_DATABASE_URL` names a server), a fresh topic prefix with
//! `BENCH_PARTITIONS` partitions per topic (3; 6 with replicas), and an SMTP server;
//! `BENCH_REPLICAS` (1) processes of transaction-service and notification-service (PostgreSQL
//! only), the load going round robin over transaction-service's. Whether commits are durable is
//! read from the database ([`durability`]). Outcomes are read by one consumer assigned every
//! partition. Ends with each service's peak memory and CPU time and the lines
//! `bench: database=.. durable=yes|no replicas=N e2e_transfers_per_s=.. http_req_per_s=..
//! p50_ms=.. p99_ms=.. paced_p99_ms=.. kafka_ceiling_records_per_s=.. ratio=..`,
//! `bench_unknown_accounts: ..`, `bench_database: ..`, `bench_service: ..` (one per service),
//! `bench_sweep: ..` (one per load) and `bench_chart: <path>`.

mod alerts;
mod bench;
mod ceiling;
mod chart;
mod durability;
mod end_to_end;
mod load;
mod paced;
mod report;
mod resources;
mod settings;
mod stack;
mod sweep;

use anyhow::Result;
use system_tests::{Lcg, Stack};

use bench::Bench;
use ceiling::{raw_ceiling, record_size};
use durability::Durability;
use report::{report, Figures};
use resources::Usage;
use settings::Settings;
use stack::{delete_topics, start_stack};

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    println!(
        "starting the stack (binaries from {}, {} partitions per topic, database: {}, {} replica{} of transaction-service and notification-service)",
        system_tests::bin_dir().display(),
        settings.partitions,
        settings.database,
        settings.replicas,
        if settings.replicas == 1 { "" } else { "s" }
    );
    let mut stack = start_stack(&settings).await;
    let result = run(&settings, &mut stack).await;
    for name in system_tests::SERVICES {
        stack.service(name).kill().await;
    }
    for replica in &mut stack.replicas {
        replica.kill().await;
    }
    delete_topics(&stack.kafka).await;
    result
}

async fn run(settings: &Settings, stack: &mut Stack) -> Result<()> {
    let mut bench = Bench::open(settings, stack).await?;
    let durability = Durability::read(bench.alerts.database()).await?;
    println!(
        "database: {} ({}): durable={}",
        durability.database,
        durability.settings,
        durability.yes_no()
    );
    bench.set_up(stack).await?;
    let record_size = record_size(stack).await?;
    let ceiling = raw_ceiling(settings, stack, record_size).await?;
    bench.wait_set_up_alerts().await?;
    let mut random = Lcg::new(7);
    let before = resources::cpu_by_service(stack);
    let e2e = bench.end_to_end(&mut random).await?;
    let after = resources::cpu_by_service(stack);
    // The 200/s phases first, while the system is as quiet as the end-to-end phase left it
    // (its alerts recorded); the sweep's 90 % point leaves a backlog behind it.
    let paced = bench.paced(&mut random).await?;
    let unknown = bench.paced_with_unknown(&mut random).await?;
    let sweep = bench.sweep(e2e.rate, &mut random).await?;
    let usage = Usage::of_stack(stack, &before, &after, settings.transfers);
    report(
        settings,
        &Figures {
            durability,
            ceiling,
            e2e,
            sweep,
            paced,
            unknown,
            usage,
        },
    );
    Ok(())
}
