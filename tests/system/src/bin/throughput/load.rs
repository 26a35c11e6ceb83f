//! Load shapes: a closed loop of N concurrent clients, and an open loop at a fixed rate with one
//! task per request; both note when each request was sent, for request → outcome latency. A
//! request refused with 503 (transaction-service's backpressure, `MAX_APPLY_BACKLOG`) is sent
//! again after its `Retry-After`, as a well-behaved client would; its latency counts from the
//! first attempt.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde_json::Value;
use system_tests::Arrival;

/// Most attempts of one request refused with 503 before its last answer is kept.
const MAX_ATTEMPTS: u32 = 120;

/// One transfer to post.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Its `transactionId`.
    pub id: String,
    /// The request body.
    pub body: Value,
}

/// A request sent and answered.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The `transactionId`.
    pub id: String,
    /// When the request was sent.
    pub at: Instant,
    /// The same instant on the wall clock (for [`stage_split`]).
    pub wall: SystemTime,
    /// When its answer arrived.
    pub answered: Instant,
    /// The HTTP status of the last attempt.
    pub status: u16,
    /// How many attempts were refused with 503 before it.
    pub refused: u32,
}

/// POSTs `body` until the answer is not a 503, waiting each 503's `Retry-After` (1 s when absent)
/// in between; the same `transactionId` each time, so a request stored meanwhile is answered,
/// not duplicated. Returns the last status and how many 503s came before it.
async fn post_retrying(client: &reqwest::Client, url: &str, body: &Value) -> (u16, u32) {
    let mut refused = 0;
    loop {
        let response = client
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status().as_u16();
        if status != 503 || refused + 1 >= MAX_ATTEMPTS {
            return (status, refused);
        }
        refused += 1;
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Posts every transfer, `concurrency` at a time (each client sends its next request when its
/// previous one is answered); request `n` goes to `urls[n % urls.len()]` (round robin).
pub async fn closed_loop(
    client: &reqwest::Client,
    urls: &[String],
    transfers: Vec<Transfer>,
    concurrency: usize,
) -> Vec<Sent> {
    futures::stream::iter(transfers.into_iter().enumerate())
        .map(|(n, t)| send(client.clone(), round_robin(urls, n).to_string(), t))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Posts the transfers at `rate` per second, each from its own task at its scheduled instant,
/// whatever the answers' latency (an open loop, as independent clients would); request `n` goes
/// to `urls[n % urls.len()]` (round robin).
pub async fn paced(
    client: &reqwest::Client,
    urls: &[String],
    transfers: Vec<Transfer>,
    rate: f64,
) -> Vec<Sent> {
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::with_capacity(transfers.len());
    for (n, t) in transfers.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
        let url = round_robin(urls, n).to_string();
        tasks.push(tokio::spawn(send(client.clone(), url, t)));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for task in tasks {
        sent.push(task.await.expect("request task"));
    }
    sent
}

/// The URL of request `n`: `urls[n % urls.len()]`.
fn round_robin(urls: &[String], n: usize) -> &str {
    urls.get(n % urls.len().max(1)).map_or("", String::as_str)
}

/// Posts one transfer to `url`, noting when it was sent and answered.
async fn send(client: reqwest::Client, url: String, t: Transfer) -> Sent {
    let at = Instant::now();
    let wall = SystemTime::now();
    let (status, refused) = post_retrying(&client, &url, &t.body).await;
    Sent {
        id: t.id,
        at,
        wall,
        answered: Instant::now(),
        status,
        refused,
    }
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// How many.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Request → outcome latency of `sent` requests whose outcome is in `outcomes`.
    pub fn of(sent: &[Sent], outcomes: &HashMap<String, Arrival>) -> Self {
        let mut ms: Vec<f64> = sent
            .iter()
            .filter_map(|s| {
                let arrival = outcomes.get(&s.id)?;
                Some(arrival.at.saturating_duration_since(s.at).as_secs_f64() * 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        Self {
            count: ms.len(),
            p50: percentile(&ms, 0.50),
            p99: percentile(&ms, 0.99),
            max: ms.last().copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} transfers)",
            self.p50, self.p99, self.max, self.count
        )
    }
}

/// Where the request → outcome time of `sent` went, by stage (p50 / p99 in ms of each, on the
/// wall clock; record timestamps have millisecond resolution): the request until its answer
/// (HTTP and the commit), until the relay handed `transaction.requested` to the producer,
/// until the consumer drafted the outcome (broker, fetch, apply), until the relay handed the
/// outcome to the producer (the commit and the relay), until the reader had it (broker, fetch).
pub fn stage_split(sent: &[Sent], outcomes: &HashMap<String, Arrival>) -> String {
    const NAMES: [&str; 5] = ["http", "relay", "fetch_apply", "commit_relay", "deliver"];
    let mut stages: [Vec<f64>; 5] = Default::default();
    for s in sent {
        let Some(arrival) = outcomes.get(&s.id) else {
            continue;
        };
        let st = arrival.stages;
        let points = [
            Some(s.wall),
            Some(s.wall + s.answered.saturating_duration_since(s.at)),
            st.requested_produced,
            st.outcome_drafted,
            st.outcome_produced,
            st.outcome_read,
        ];
        let [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] = points else {
            continue;
        };
        for (i, (from, to)) in [(a, b), (b, c), (c, d), (d, e), (e, f)]
            .into_iter()
            .enumerate()
        {
            let ms = to.duration_since(from).unwrap_or_default().as_secs_f64() * 1000.0;
            stages[i].push(ms);
        }
    }
    NAMES
        .iter()
        .zip(stages.iter_mut())
        .map(|(name, ms)| {
            ms.sort_by(f64::total_cmp);
            format!(
                "{name}={:.1}/{:.1}",
                percentile(ms, 0.50),
                percentile(ms, 0.99)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Nearest-rank percentile `q` (0..=1) of sorted values (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_round_robin() {
        let urls: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let picked: Vec<&str> = (0..5).map(|n| round_robin(&urls, n)).collect();
        assert_eq!(picked, ["a", "b", "c", "a", "b"]);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
