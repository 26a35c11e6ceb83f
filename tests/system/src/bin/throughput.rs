//! End-to-end throughput of the demo-sized stack: the three services as processes on the local
//! broker and SQLite (or PostgreSQL with TEST_DATABASE_URL), N transfers posted over HTTP, timed
//! until every outcome event is on Kafka. Prints the figures recorded in BENCHMARKS.md.
//!
//! `cargo xtask bench` builds the services in release mode and runs this with
//! `EMS_BIN_DIR=<target>/release`; `BENCH_TRANSFERS` and `BENCH_CONCURRENCY` size the run. It also
//! prints each service's peak resident memory.

use std::time::{Duration, Instant};

use futures::StreamExt;
use platform::testing::eventually;
use serde_json::json;
use system_tests::{get, post, read_outcomes, Lcg, Stack};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let transfers = env_usize("BENCH_TRANSFERS", 2000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let customers = 10;
    println!(
        "starting the stack (binaries from {})",
        system_tests::bin_dir().display()
    );
    let stack = Stack::start(&[("RUST_LOG", "warn")]).await;
    let client = reqwest::Client::new();
    let tx_url = format!("{}/transactions", stack.url("transaction-service"));

    for n in 0..customers {
        let body = json!({"id": format!("bench-{n}"), "name": format!("Bench {n}"), "email": format!("bench{n}@example.com")});
        let (status, answer) = post(
            &client,
            &format!("{}/app/customers", stack.url("customer-service")),
            body,
        )
        .await;
        anyhow::ensure!(status == 201, "create customer: {status} {answer}");
    }
    for n in 0..customers {
        let url = format!("{}/accounts/bench-{n}", stack.url("transaction-service"));
        eventually(Duration::from_secs(60), || {
            let request = get(&client, &url);
            async move { (request.await.0 == 200).then_some(()) }
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("account bench-{n} not opened"))?;
        let (status, _) = post(&client, &tx_url, json!({"to": format!("bench-{n}"), "amount": "1000000.00", "transactionId": format!("dep-{n}")})).await;
        anyhow::ensure!(status == 202, "deposit: {status}");
    }
    read_outcomes(
        &stack.kafka,
        customers,
        Duration::from_secs(60),
        Duration::from_millis(10),
    )
    .await;

    let mut random = Lcg::new(7);
    let bodies: Vec<serde_json::Value> = (0..transfers)
        .map(|n| {
            let from = random.below(customers as u64);
            let to = (from + 1 + random.below(customers as u64 - 1)) % customers as u64;
            json!({"from": format!("bench-{from}"), "to": format!("bench-{to}"), "amount": "1.00", "transactionId": format!("bench-t{n}")})
        })
        .collect();

    println!("posting {transfers} transfers with {concurrency} concurrent clients");
    let started = Instant::now();
    let accepted = futures::stream::iter(bodies)
        .map(|body| {
            let client = client.clone();
            let url = tx_url.clone();
            async move { post(&client, &url, body).await.0 == 202 }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let accept_time = started.elapsed();
    anyhow::ensure!(
        accepted == transfers,
        "only {accepted} of {transfers} accepted"
    );
    let outcomes = read_outcomes(
        &stack.kafka,
        customers + transfers,
        Duration::from_secs(600),
        Duration::from_millis(10),
    )
    .await;
    let total_time = started.elapsed();
    anyhow::ensure!(
        outcomes.len() == customers + transfers,
        "only {} outcomes",
        outcomes.len()
    );
    let processed = outcomes
        .values()
        .filter(|o| o[0].topic == "transaction.processed")
        .count()
        - customers;

    println!("transfers:            {transfers} ({processed} processed)");
    println!(
        "HTTP accept rate:     {:.0} requests/s ({:.2} s)",
        transfers as f64 / accept_time.as_secs_f64(),
        accept_time.as_secs_f64()
    );
    println!(
        "end-to-end rate:      {:.0} transfers/s ({:.2} s from first request to last outcome)",
        transfers as f64 / total_time.as_secs_f64(),
        total_time.as_secs_f64()
    );
    for (name, service) in &stack.services {
        if let Some(kib) = service.peak_memory_kib() {
            println!("peak memory {name:<21} {:.1} MiB", kib as f64 / 1024.0);
        }
    }
    Ok(())
}
