//! The raw ceiling: Kafka's own performance tools (`org.apache.kafka.tools.ProducerPerformance`
//! and `ConsumerPerformance`, from the broker's jars) on a throw-away topic, with records the size
//! of ours, acks=all, on the same broker and machine as the end-to-end run. Also the benchmark's
//! phase 1: the size of a real record ([`record_size`]) and the tools' figures ([`raw_ceiling`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use platform::testing::read_topic;
use platform::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use system_tests::Stack;

use crate::settings::Settings;

/// What the two tools measured.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// ProducerPerformance: records/s with acks=all.
    pub produced_per_s: f64,
    /// ProducerPerformance: the producer's own 99th percentile send latency, ms.
    pub produce_p99_ms: f64,
    /// ConsumerPerformance: records/s while fetching (`fetch.nMsg.sec`).
    pub consumed_per_s: f64,
}

impl Ceiling {
    /// The slower of producing and consuming: what a pipeline through this broker can reach.
    pub fn records_per_s(&self) -> f64 {
        self.produced_per_s.min(self.consumed_per_s)
    }
}

/// `java -cp <kafka jars>` with the tools' quiet log configuration: `EMS_JAVA`,
/// `EMS_KAFKA_CLASSPATH` and `EMS_KAFKA_TOOLS_LOG4J` (set by `cargo xtask bench`), else `java` and
/// the jars under the cache root.
fn java(class: &str) -> tokio::process::Command {
    let java = std::env::var_os("EMS_JAVA").unwrap_or_else(|| "java".into());
    let classpath = std::env::var_os("EMS_KAFKA_CLASSPATH").unwrap_or_else(|| {
        let kafka_home = platform::testing::kafka_env_path()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        kafka_home.join("lib").join("*").into_os_string()
    });
    let mut command = tokio::process::Command::new(java);
    command.arg("-Xmx512m");
    if let Some(log4j) = std::env::var_os("EMS_KAFKA_TOOLS_LOG4J") {
        let mut flag = std::ffi::OsString::from("-Dlog4j2.configurationFile=");
        flag.push(log4j);
        command.arg(flag);
    }
    command
        .arg("-cp")
        .arg(classpath)
        .arg(class)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(mut command: tokio::process::Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .await
        .with_context(|| format!("starting {what} (is Java installed?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Produces `records` records of `record_size` bytes to a new topic of `partitions` partitions,
/// consumes them back, and deletes the topic.
pub async fn measure(
    kafka: &KafkaConfig,
    record_size: usize,
    records: u64,
    partitions: i32,
) -> Result<Ceiling> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config("bench-admin")
        .create()
        .context("admin client")?;
    let topic = format!("{}.ceiling", platform::testing::unique("bench"));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await?
    {
        result.map_err(|(t, code)| anyhow::anyhow!("creating {t}: {code}"))?;
    }
    let measured = produce_and_consume(kafka, &topic, record_size, records).await;
    let deleted = admin.delete_topics(&[&topic], &options).await;
    if let Err(e) = deleted {
        eprintln!("warning: topic {topic} not deleted: {e}");
    }
    measured
}

async fn produce_and_consume(
    kafka: &KafkaConfig,
    topic: &str,
    record_size: usize,
    records: u64,
) -> Result<Ceiling> {
    let brokers = kafka.brokers.join(",");
    let mut producer = java("org.apache.kafka.tools.ProducerPerformance");
    producer
        .args(["--bootstrap-server", &brokers, "--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_size.to_string()])
        .args(["--throughput", "-1", "--command-property", "acks=all"]);
    let out = run(producer, "ProducerPerformance").await?;
    let (produced_per_s, produce_p99_ms) = parse_producer(&out)
        .with_context(|| format!("unexpected ProducerPerformance output:\n{out}"))?;

    let mut consumer = java("org.apache.kafka.tools.ConsumerPerformance");
    consumer
        .args(["--bootstrap-server", &brokers, "--topic", topic])
        .args(["--num-records", &records.to_string(), "--timeout", "30000"])
        .args(["--group", &platform::testing::unique("bench-perf")]);
    let out = run(consumer, "ConsumerPerformance").await?;
    let (consumed, consumed_per_s) = parse_consumer(&out)
        .with_context(|| format!("unexpected ConsumerPerformance output:\n{out}"))?;
    if consumed < records {
        bail!("ConsumerPerformance read {consumed} of {records} records");
    }
    Ok(Ceiling {
        produced_per_s,
        produce_p99_ms,
        consumed_per_s,
    })
}

/// The final summary line: `N records sent, R records/sec (..), .. ms 99th, ..`.
fn parse_producer(out: &str) -> Option<(f64, f64)> {
    let line = out.lines().rev().find(|l| l.contains("records sent,"))?;
    let number_before = |suffix: &str| -> Option<f64> {
        let head = &line[..line.find(suffix)?];
        head.rsplit([' ', ','])
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    };
    Some((number_before(" records/sec")?, number_before(" ms 99th")?))
}

/// The header line `start.time, end.time, ..., fetch.nMsg.sec` and the line of figures after it:
/// records consumed and `fetch.nMsg.sec`.
fn parse_consumer(out: &str) -> Option<(u64, f64)> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("start.time"));
    let header: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
    let values: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
    let field = |name: &str| values.get(header.iter().position(|h| *h == name)?).copied();
    Some((
        field("data.consumed.in.nMsg")?.parse().ok()?,
        field("fetch.nMsg.sec")?.parse().ok()?,
    ))
}

/// The size of a real `transaction.requested` record (the warm-up transfer's): key + payload +
/// headers.
pub(crate) async fn record_size(stack: &Stack) -> Result<usize> {
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
pub(crate) async fn raw_ceiling(
    settings: &Settings,
    stack: &Stack,
    record_size: usize,
) -> Result<Ceiling> {
    println!(
        "Kafka's own perf tools: {} records of {record_size} bytes, acks=all, {} partitions",
        settings.ceiling_records, settings.partitions
    );
    let ceiling = measure(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_producer_summary() {
        let out = "100 records sent, 20.0 records/sec (0.01 MB/sec), 3.0 ms avg latency, 9.0 ms max latency.\n\
                   300000 records sent, 151209.3 records/sec (64.61 MB/sec), 95.21 ms avg latency, 420.00 ms max latency, 80 ms 50th, 250 ms 95th, 310 ms 99th, 400 ms 99.9th.\n";
        assert_eq!(parse_producer(out), Some((151209.3, 310.0)));
        assert_eq!(parse_producer("nothing"), None);
    }

    #[test]
    fn parses_the_consumer_figures() {
        let out = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                   2026-11-25 10:00:00:000, 2026-11-25 10:00:04:000, 128.2, 32.0, 300000, 75000.0, 3012, 988, 129.7, 303643.7\n";
        assert_eq!(parse_consumer(out), Some((300000, 303643.7)));
        assert_eq!(parse_consumer("start.time, x\n"), None);
    }
}
