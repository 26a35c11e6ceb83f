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
mod ceiling;
mod chart;
mod durability;
mod load;
mod resources;
mod sweep;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use platform::testing::{poll_until, read_topic, LocalKafka, SmtpServer};
use serde_json::json;
use system_tests::{get, post, Arrival, Lcg, OutcomeClock, Stack};

use durability::Durability;
use load::{Latency, Sent, Transfer};
use resources::Usage;

/// Outcomes read, by transaction id.
type Outcomes = HashMap<String, Arrival>;

/// The run's size, from `BENCH_*` variables.
struct Settings {
    transfers: usize,
    concurrency: usize,
    accounts: usize,
    partitions: i32,
    rate: f64,
    paced_secs: f64,
    unknown: usize,
    ceiling_records: u64,
    timeout: Duration,
    replicas: usize,
    /// `sqlite` or `postgres` (from `TEST_DATABASE_URL`).
    database: &'static str,
    chart: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        let replicas: usize = env_or("BENCH_REPLICAS", 1)?;
        let database = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") => "postgres",
            _ => "sqlite",
        };
        let chart = match std::env::var_os("BENCH_CHART").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None if replicas > 1 => PathBuf::from(format!(
                "target/bench/latency-{database}-replicas{replicas}.svg"
            )),
            None => PathBuf::from(format!("target/bench/latency-{database}.svg")),
        };
        let settings = Self {
            transfers: env_or("BENCH_TRANSFERS", 10_000)?,
            concurrency: env_or("BENCH_CONCURRENCY", 64)?,
            accounts: env_or("BENCH_ACCOUNTS", 100)?,
            partitions: env_or("BENCH_PARTITIONS", if replicas > 1 { 6 } else { 3 })?,
            rate: env_or("BENCH_RATE", 200.0)?,
            paced_secs: env_or("BENCH_PACED_SECS", 10.0)?,
            unknown: env_or("BENCH_UNKNOWN", 5)?,
            ceiling_records: env_or("BENCH_CEILING_RECORDS", 300_000)?,
            timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 300)?),
            replicas,
            database,
            chart,
        };
        ensure!(replicas >= 1, "BENCH_REPLICAS must be positive");
        ensure!(
            replicas == 1 || database == "postgres",
            "BENCH_REPLICAS={replicas} needs PostgreSQL (TEST_DATABASE_URL): SQLite is one file per service"
        );
        ensure!(settings.accounts >= 2, "BENCH_ACCOUNTS must be at least 2");
        ensure!(
            settings.concurrency >= 1,
            "BENCH_CONCURRENCY must be positive"
        );
        ensure!(
            settings.partitions >= 1,
            "BENCH_PARTITIONS must be positive"
        );
        ensure!(settings.rate > 0.0, "BENCH_RATE must be positive");
        ensure!(
            settings.paced_secs > 0.0,
            "BENCH_PACED_SECS must be positive"
        );
        Ok(settings)
    }

    fn paced_transfers(&self) -> usize {
        (self.rate * self.paced_secs).round().max(1.0) as usize
    }
}

/// Transfers of 1.00 between distinct random funded accounts, ids `<prefix><n>`.
fn transfers(prefix: &str, count: usize, accounts: usize, random: &mut Lcg) -> Vec<Transfer> {
    (0..count)
        .map(|n| {
            let from = random.below(accounts as u64);
            let to = (from + 1 + random.below(accounts as u64 - 1)) % accounts as u64;
            let id = format!("{prefix}{n}");
            Transfer {
                body: json!({"from": format!("bench-{from}"), "to": format!("bench-{to}"),
                    "amount": "1.00", "transactionId": id}),
                id,
            }
        })
        .collect()
}

fn ids(transfers: &[Transfer]) -> Vec<String> {
    transfers.iter().map(|t| t.id.clone()).collect()
}

fn seconds_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

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

/// The stack on `BENCH_PARTITIONS` partitions, with `BENCH_REPLICAS` processes of
/// transaction-service and notification-service.
async fn start_stack(settings: &Settings) -> Stack {
    let mut kafka = LocalKafka::load().isolated();
    kafka.topic_partitions = settings.partitions;
    let mut stack = Stack::start_with(
        kafka,
        SmtpServer::start().await,
        // One load generator stands in for many clients: no per-client connection cap, and room
        // for the open loop's connections (one per request in flight) near saturation.
        &[
            // The `listening` line (info) tells the harness the process on the port is its own.
            ("RUST_LOG", "warn,platform::runtime::service=info"),
            ("HTTP_MAX_CONNECTIONS", "16384"),
            ("HTTP_MAX_CONNECTIONS_PER_CLIENT", "16384"),
        ],
        |_, _| {},
    )
    .await;
    for name in ["transaction-service", "notification-service"] {
        stack.scale_to(name, settings.replicas).await;
    }
    stack
}

/// Everything measured, for [`report`].
struct Figures {
    durability: Durability,
    ceiling: ceiling::Ceiling,
    e2e: EndToEnd,
    sweep: Vec<sweep::Point>,
    paced: Latency,
    unknown: WithUnknown,
    usage: Vec<Usage>,
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

/// Prints the resources, the sweep's table, draws the chart, then the machine-readable lines.
fn report(settings: &Settings, f: &Figures) {
    println!();
    for usage in &f.usage {
        println!("{}", usage.human());
    }
    println!(
        "\nlatency vs load (open loop, {} s each):",
        settings.paced_secs
    );
    print!("{}", sweep::table(&f.sweep));
    let title = format!(
        "request → outcome latency vs load: {}, durable={}, replicas={}, {} partitions",
        f.durability.database,
        f.durability.yes_no(),
        settings.replicas,
        settings.partitions
    );
    let chart = std::path::absolute(&settings.chart).unwrap_or_else(|_| settings.chart.clone());
    let drawn = chart::draw(&chart, &title, f.e2e.rate, &f.sweep);
    if let Err(e) = &drawn {
        eprintln!("warning: the chart was not drawn: {e:#}");
    }
    let ceiling_rate = f.ceiling.records_per_s();
    println!(
        "bench: database={} durable={} replicas={} e2e_transfers_per_s={:.0} http_req_per_s={:.0} p50_ms={:.1} p99_ms={:.1} paced_p99_ms={:.1} kafka_ceiling_records_per_s={ceiling_rate:.0} ratio={:.4}",
        f.durability.database,
        f.durability.yes_no(),
        settings.replicas,
        f.e2e.rate,
        f.e2e.http_rate,
        f.e2e.latency.p50,
        f.e2e.latency.p99,
        f.paced.p99,
        f.e2e.rate / ceiling_rate
    );
    println!(
        "bench_unknown_accounts: unknown={} paced_p99_ms={:.1} paced_p99_with_unknown_ms={:.1} paced_max_ms={:.1} paced_max_with_unknown_ms={:.1}",
        f.unknown.ghosts,
        f.paced.p99,
        f.unknown.latency.p99,
        f.paced.max,
        f.unknown.latency.max
    );
    println!(
        "bench_database: database={} durable={} {} partitions={}",
        f.durability.database,
        f.durability.yes_no(),
        f.durability.settings,
        settings.partitions
    );
    for usage in &f.usage {
        println!("{}", usage.line());
    }
    for point in &f.sweep {
        println!("{}", point.line());
    }
    if drawn.is_ok() {
        println!("bench_chart: {}", chart.display());
    }
}

/// What every phase uses: the settings, an HTTP client, the `/transactions` of every
/// transaction-service process, the outcome clock and notification-service's alerts.
struct Bench<'a> {
    settings: &'a Settings,
    client: reqwest::Client,
    tx_urls: Vec<String>,
    clock: OutcomeClock,
    alerts: alerts::Alerts,
}

/// The figures of the end-to-end phase.
struct EndToEnd {
    /// Transfers per second, from the first request to the last outcome.
    rate: f64,
    /// Requests accepted per second.
    http_rate: f64,
    /// Request → outcome latency.
    latency: Latency,
}

/// The figures of the paced phase with transfers to unknown accounts.
struct WithUnknown {
    /// Transfers to unknown accounts among them.
    ghosts: usize,
    /// Request → outcome latency of the valid transfers.
    latency: Latency,
}

impl<'a> Bench<'a> {
    /// Starts the outcome clock and opens notification-service's database.
    async fn open(settings: &'a Settings, stack: &Stack) -> Result<Self> {
        let clock = OutcomeClock::start(&stack.kafka);
        let alerts = alerts::Alerts::open(
            stack.services["notification-service"]
                .env_var("DATABASE_URL")
                .context("notification-service has no DATABASE_URL")?,
        )
        .await?;
        Ok(Self {
            settings,
            client: reqwest::Client::new(),
            tx_urls: stack
                .processes("transaction-service")
                .map(|p| format!("{}/transactions", p.url()))
                .collect(),
            clock,
            alerts,
        })
    }

    /// Set-up: customers, their accounts, a deposit each, one warm-up transfer; waits until all
    /// are processed.
    async fn set_up(&mut self, stack: &Stack) -> Result<()> {
        let (settings, client) = (self.settings, &self.client);
        println!("creating and funding {} accounts", settings.accounts);
        let customers_url = format!("{}/app/customers", stack.url("customer-service"));
        let created: Vec<u16> = futures::stream::iter(0..settings.accounts)
            .map(|n| {
                let body = json!({"id": format!("bench-{n}"), "name": format!("Bench {n}"),
                    "email": format!("bench{n}@example.com")});
                let url = &customers_url;
                async move { post(client, url, body).await.0 }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        ensure!(
            created.iter().all(|s| *s == 201),
            "creating customers: {created:?}"
        );
        for n in 0..settings.accounts {
            let url = format!("{}/accounts/bench-{n}", stack.url("transaction-service"));
            poll_until(Duration::from_secs(60), || {
                let request = get(client, &url);
                async move { (request.await.0 == 200).then_some(()) }
            })
            .await
            .with_context(|| format!("account bench-{n} not opened"))?;
        }
        let mut funding = Vec::new();
        for n in 0..settings.accounts {
            let id = format!("fund-{n}");
            let body =
                json!({"to": format!("bench-{n}"), "amount": "1000000.00", "transactionId": id});
            let (status, answer) = post(client, &self.tx_urls[0], body).await;
            ensure!(status == 202, "deposit: {status} {answer}");
            funding.push(id);
        }
        let warm = json!({"from": "bench-0", "to": "bench-1", "amount": "1.00",
            "transactionId": "warm-0"});
        ensure!(
            post(client, &self.tx_urls[0], warm).await.0 == 202,
            "warm-up transfer"
        );
        funding.push("warm-0".to_string());
        let funded = self.clock.wait_for(&funding, settings.timeout).await;
        ensure!(
            funded.len() == funding.len()
                && funded.values().all(|a| a.topic == "transaction.processed"),
            "set-up: {} of {} deposits processed",
            funded.len(),
            funding.len()
        );
        Ok(())
    }

    /// Waits until notification-service has recorded the set-up deposits' alerts.
    async fn wait_set_up_alerts(&self) -> Result<()> {
        let accounts = self.settings.accounts as i64;
        let setup_alerts = self
            .alerts
            .wait("fund-", accounts, self.settings.timeout)
            .await?;
        ensure!(
            setup_alerts.count == accounts,
            "set-up alerts: {setup_alerts:?}"
        );
        Ok(())
    }

    /// Phase 2: End to end at N clients: the transfers, their outcomes, then their alerts.
    async fn end_to_end(&mut self, random: &mut Lcg) -> Result<EndToEnd> {
        let settings = self.settings;
        let batch = transfers("e2e-", settings.transfers, settings.accounts, random);
        let wanted = ids(&batch);
        println!(
            "end to end: {} transfers, {} concurrent clients",
            settings.transfers, settings.concurrency
        );
        let wall_start = SystemTime::now();
        let start = Instant::now();
        let sent =
            load::closed_loop(&self.client, &self.tx_urls, batch, settings.concurrency).await;
        let accept_time = sent
            .iter()
            .map(|s| s.answered)
            .max()
            .map_or(Duration::ZERO, |t| t - start);
        let rejected = sent.iter().filter(|s| s.status != 202).count();
        ensure!(
            rejected == 0,
            "{rejected} of {} requests not accepted",
            sent.len()
        );
        let refused: u32 = sent.iter().map(|s| s.refused).sum();
        let delayed = sent.iter().filter(|s| s.refused > 0).count();
        println!(
            "  backpressure:   {refused} answers 503 (Retry-After), {delayed} requests accepted on a retry"
        );
        let outcomes = self.clock.wait_for(&wanted, settings.timeout).await;
        ensure!(
            outcomes.len() == wanted.len(),
            "only {} of {} transfers have an outcome after {:?}",
            outcomes.len(),
            wanted.len(),
            settings.timeout
        );
        let failed = outcomes
            .values()
            .filter(|a| a.topic != "transaction.processed")
            .count();
        ensure!(failed == 0, "{failed} transfers failed");
        let total_time = outcomes
            .values()
            .map(|a| a.at)
            .max()
            .map_or(Duration::ZERO, |t| t - start);
        let e2e = EndToEnd {
            rate: settings.transfers as f64 / total_time.as_secs_f64(),
            http_rate: settings.transfers as f64 / accept_time.as_secs_f64(),
            latency: Latency::of(&sent, &outcomes),
        };
        println!(
            "  HTTP accepted:  {:.0} requests/s ({:.2} s)",
            e2e.http_rate,
            accept_time.as_secs_f64()
        );
        println!(
            "  end to end:     {:.0} transfers/s ({:.2} s from the first request to the last outcome)",
            e2e.rate,
            total_time.as_secs_f64()
        );
        println!("  request → outcome: {}", e2e.latency);
        self.end_to_end_alerts(wall_start, total_time).await?;
        Ok(e2e)
    }

    /// Waits for the end-to-end transfers' alerts (two each) and prints when the last came.
    async fn end_to_end_alerts(&self, wall_start: SystemTime, total_time: Duration) -> Result<()> {
        let expected_alerts = 2 * self.settings.transfers as i64;
        let recorded = self
            .alerts
            .wait("e2e-", expected_alerts, self.settings.timeout)
            .await?;
        ensure!(
            recorded.count == expected_alerts,
            "notification-service recorded {} of {expected_alerts} alerts",
            recorded.count
        );
        let last_alert = recorded
            .last
            .map_or(0.0, |t| seconds_between(wall_start, t));
        println!(
            "  alerts:         {} recorded, the last {last_alert:.3} s after the first request ({:+.3} s after the last outcome)",
            recorded.count,
            last_alert - total_time.as_secs_f64()
        );
        Ok(())
    }

    /// Sends `batch` in an open loop at `rate` per second over the transaction-service
    /// processes, then waits up to `timeout` for the outcomes of `wanted`.
    async fn pace(
        &mut self,
        batch: Vec<Transfer>,
        rate: f64,
        wanted: &[String],
        timeout: Duration,
    ) -> (Vec<Sent>, Outcomes) {
        let sent = load::paced(&self.client, &self.tx_urls, batch, rate).await;
        let outcomes = self.clock.wait_for(wanted, timeout).await;
        (sent, outcomes)
    }

    /// Phase 4: Paced, valid transfers only: their request → outcome latency.
    async fn paced(&mut self, random: &mut Lcg) -> Result<Latency> {
        let settings = self.settings;
        println!(
            "paced: {} transfers/s for {} s, one task per request",
            settings.rate, settings.paced_secs
        );
        let batch = transfers("pc-", settings.paced_transfers(), settings.accounts, random);
        let wanted = ids(&batch);
        let (sent, outcomes) = self
            .pace(batch, settings.rate, &wanted, settings.timeout)
            .await;
        ensure!(
            outcomes.len() == wanted.len(),
            "paced: {} of {} outcomes",
            outcomes.len(),
            wanted.len()
        );
        let paced_latency = Latency::of(&sent, &outcomes);
        println!("  request → outcome: {paced_latency}");
        println!(
            "bench_stages: rate={} p50/p99_ms {}",
            settings.rate,
            load::stage_split(&sent, &outcomes)
        );
        Ok(paced_latency)
    }

    /// Phase 5: Paced, with transfers to accounts that do not exist among them: the latency of the
    /// others, and how the unknown ones failed.
    async fn paced_with_unknown(&mut self, random: &mut Lcg) -> Result<WithUnknown> {
        let settings = self.settings;
        let paced_count = settings.paced_transfers();
        println!(
            "paced with {} transfers to unknown accounts among {paced_count}",
            settings.unknown
        );
        let mut batch = transfers("pu-", paced_count, settings.accounts, random);
        let ghosts = plant_ghosts(&mut batch, settings.unknown);
        let valid: Vec<String> = ids(&batch)
            .into_iter()
            .filter(|id| !ghosts.contains(id))
            .collect();
        let (sent, outcomes) = self
            .pace(batch, settings.rate, &valid, settings.timeout)
            .await;
        ensure!(
            outcomes.len() == valid.len(),
            "paced with unknown accounts: {} of {} outcomes",
            outcomes.len(),
            valid.len()
        );
        let valid_sent: Vec<_> = sent
            .iter()
            .filter(|s| !ghosts.contains(&s.id))
            .cloned()
            .collect();
        let with_unknown = Latency::of(&valid_sent, &outcomes);
        println!("  valid transfers, request → outcome: {with_unknown}");
        let ghost_outcomes = self.clock.wait_for(&ghosts, settings.timeout).await;
        let unknown_failed = ghost_outcomes
            .values()
            .filter(|a| a.payload["reason"] == "unknown_account")
            .count();
        println!(
            "  transfers to unknown accounts: {unknown_failed} of {} failed with unknown_account ({})",
            ghosts.len(),
            Latency::of(&sent, &ghost_outcomes)
        );
        Ok(WithUnknown {
            ghosts: ghosts.len(),
            latency: with_unknown,
        })
    }
}

/// Replaces `unknown` transfers of `batch`, spread evenly, by transfers to accounts that do not
/// exist; returns their ids.
fn plant_ghosts(batch: &mut [Transfer], unknown: usize) -> Vec<String> {
    let paced_count = batch.len();
    let mut ghosts = Vec::new();
    for k in 0..unknown.min(paced_count) {
        let slot = (k * paced_count) / unknown.max(1) + paced_count / (2 * unknown.max(1));
        let id = format!("ghost-t{k}");
        batch[slot.min(paced_count - 1)] = Transfer {
            body: json!({"from": "bench-0", "to": format!("ghost-{k}"), "amount": "1.00", "transactionId": id}),
            id: id.clone(),
        };
        ghosts.push(id);
    }
    ghosts
}

/// The size of a real `transaction.requested` record (the warm-up transfer's): key + payload +
/// headers.
async fn record_size(stack: &Stack) -> Result<usize> {
    let is_warm_up = |r: &platform::Record| {
        serde_json::from_slice::<serde_json::Value>(&r.payload)
            .is_ok_and(|v| v["transactionId"] == "warm-0")
    };
    let requested = read_topic(
        &stack.kafka,
        "transaction.requested",
        Duration::from_secs(30),
        |records| records.iter().any(is_warm_up),
    )
    .await;
    let sample = requested
        .iter()
        .find(|r| is_warm_up(r))
        .context("the warm-up transfer's transaction.requested record")?;
    let record_size = sample.key.as_ref().map_or(0, String::len)
        + sample.payload.len()
        + sample
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    println!(
        "a transaction.requested record: {record_size} bytes (payload {}, key and {} headers {})",
        sample.payload.len(),
        sample.headers.len(),
        record_size - sample.payload.len()
    );
    Ok(record_size)
}

/// Phase 1: The raw ceiling: Kafka's own perf tools with records of `record_size` bytes.
async fn raw_ceiling(
    settings: &Settings,
    stack: &Stack,
    record_size: usize,
) -> Result<ceiling::Ceiling> {
    println!(
        "Kafka's own perf tools: {} records of {record_size} bytes, acks=all, {} partitions",
        settings.ceiling_records, settings.partitions
    );
    let ceiling = ceiling::measure(
        &stack.kafka,
        record_size,
        settings.ceiling_records,
        settings.partitions,
    )
    .await?;
    println!(
        "  producer {:.0} records/s (its p99 send latency {:.0} ms), consumer {:.0} records/s",
        ceiling.produced_per_s, ceiling.produce_p99_ms, ceiling.consumed_per_s
    );
    Ok(ceiling)
}

/// Deletes the stack's topics (its unique prefix) from the shared broker.
async fn delete_topics(kafka: &platform::KafkaConfig) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Ok(admin) = kafka
        .client_config("bench-admin")
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let metadata =
        tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, Duration::from_secs(10)));
    let Ok(metadata) = metadata else {
        eprintln!("warning: the bench's topics were not deleted");
        return;
    };
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| t.starts_with(&kafka.topic_prefix))
        .collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    if let Err(e) = admin.delete_topics(&names, &options).await {
        eprintln!("warning: the bench's topics were not deleted: {e}");
    }
}
