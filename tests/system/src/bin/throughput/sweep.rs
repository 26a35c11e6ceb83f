//! Latency versus load: the open-loop (paced) phase at [`LOADS`] of the rate the saturated
//! end-to-end phase measured, each for `BENCH_PACED_SECS`; a table, `bench_sweep:` lines and the
//! chart ([`crate::chart`]). Bounded: each point sends for its seconds, then waits at most
//! [`DRAIN`] more (and never longer than `BENCH_TIMEOUT_SECS`) for its outcomes; a point whose
//! outcomes did not all arrive is reported with how many did, not retried.

use std::time::Duration;

use anyhow::Result;
use system_tests::Lcg;

use crate::bench::{ids, transfers, Bench, Outcomes};
use crate::load::{Latency, Sent};

/// The loads, as fractions of the measured maximum.
pub const LOADS: [f64; 3] = [0.10, 0.50, 0.90];

/// How long a point waits for its last outcomes once its requests are sent.
const DRAIN: Duration = Duration::from_secs(30);

/// One point of the sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// The load, as a fraction of the measured maximum.
    pub load: f64,
    /// Transfers per second offered (the open loop's rate).
    pub offered: f64,
    /// Outcomes per second: outcomes ÷ (last outcome − first request).
    pub achieved: f64,
    /// Requests sent.
    pub sent: usize,
    /// Of them, with an outcome within the bound.
    pub outcomes: usize,
    /// Request → outcome latency of those.
    pub latency: Latency,
}

impl Point {
    /// `bench_sweep: load_pct=.. offered_per_s=.. achieved_per_s=.. p50_ms=.. p99_ms=.. max_ms=.. outcomes=n/m`.
    pub fn line(&self) -> String {
        format!(
            "bench_sweep: load_pct={:.0} offered_per_s={:.0} achieved_per_s={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} outcomes={}/{}",
            self.load * 100.0,
            self.offered,
            self.achieved,
            self.latency.p50,
            self.latency.p99,
            self.latency.max,
            self.outcomes,
            self.sent
        )
    }
}

/// The sweep as a table: offered, achieved, p50, p99, max.
pub fn table(points: &[Point]) -> String {
    let mut text = format!(
        "  {:>5}  {:>10}  {:>11}  {:>9}  {:>9}  {:>9}  {:>13}\n",
        "load", "offered/s", "achieved/s", "p50 ms", "p99 ms", "max ms", "outcomes"
    );
    for p in points {
        text.push_str(&format!(
            "  {:>4.0}%  {:>10.0}  {:>11.0}  {:>9.1}  {:>9.1}  {:>9.1}  {:>13}\n",
            p.load * 100.0,
            p.offered,
            p.achieved,
            p.latency.p50,
            p.latency.p99,
            p.latency.max,
            format!("{}/{}", p.outcomes, p.sent)
        ));
    }
    text
}

impl Bench<'_> {
    /// Runs the paced phase at each of [`LOADS`] × `max_rate`.
    pub async fn sweep(&mut self, max_rate: f64, random: &mut Lcg) -> Result<Vec<Point>> {
        let settings = self.settings;
        println!(
            "latency vs load: open loop at {} of {max_rate:.0} transfers/s, {} s each",
            LOADS.map(|l| format!("{:.0} %", l * 100.0)).join(", "),
            settings.paced_secs
        );
        let bound = (Duration::from_secs_f64(settings.paced_secs) + DRAIN).min(settings.timeout);
        let mut points = Vec::new();
        for (n, load) in LOADS.into_iter().enumerate() {
            let offered = (max_rate * load).max(1.0);
            let count = (offered * settings.paced_secs).round().max(1.0) as usize;
            let batch = transfers(&format!("sw{n}-"), count, settings.accounts, random);
            let wanted = ids(&batch);
            let (sent, outcomes) = self.pace(batch, offered, &wanted, bound).await;
            let point = Point {
                load,
                offered,
                achieved: achieved(&sent, &outcomes),
                sent: sent.len(),
                outcomes: outcomes.len(),
                latency: Latency::of(&sent, &outcomes),
            };
            println!("  {:.0} %: {}", load * 100.0, point.latency);
            points.push(point);
        }
        Ok(points)
    }
}

/// Outcomes per second, from the first request to the last outcome.
fn achieved(sent: &[Sent], outcomes: &Outcomes) -> f64 {
    let first = sent.iter().map(|s| s.at).min();
    let last = outcomes.values().map(|a| a.at).max();
    match (first, last) {
        (Some(first), Some(last)) if last > first => {
            outcomes.len() as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    }
}
