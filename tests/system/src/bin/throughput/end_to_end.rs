//! Phase 2, end to end at `BENCH_CONCURRENCY` clients (a closed loop): the transfers, their
//! outcomes read from Kafka, then notification-service's alerts; throughput and latency.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Result};
use system_tests::Lcg;

use crate::bench::{ids, transfers, Bench};
use crate::load::{self, Latency};

/// The figures of the end-to-end phase.
pub(crate) struct EndToEnd {
    /// Transfers per second, from the first request to the last outcome.
    pub(crate) rate: f64,
    /// Requests accepted per second.
    pub(crate) http_rate: f64,
    /// Request → outcome latency.
    pub(crate) latency: Latency,
}

impl Bench<'_> {
    /// Phase 2: End to end at N clients: the transfers, their outcomes, then their alerts.
    pub(crate) async fn end_to_end(&mut self, random: &mut Lcg) -> Result<EndToEnd> {
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
}

fn seconds_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
