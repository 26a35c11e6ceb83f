//! The paced phases (an open loop at `BENCH_RATE` for `BENCH_PACED_SECS`): valid transfers
//! only, then with `BENCH_UNKNOWN` transfers to accounts that do not exist among them.

use anyhow::{ensure, Result};
use serde_json::json;
use system_tests::Lcg;

use crate::bench::{ids, transfers, Bench};
use crate::load::{self, Latency, Transfer};

/// The figures of the paced phase with transfers to unknown accounts.
pub(crate) struct WithUnknown {
    /// Transfers to unknown accounts among them.
    pub(crate) ghosts: usize,
    /// Request → outcome latency of the valid transfers.
    pub(crate) latency: Latency,
}

impl Bench<'_> {
    /// Phase 4: Paced, valid transfers only: their request → outcome latency.
    pub(crate) async fn paced(&mut self, random: &mut Lcg) -> Result<Latency> {
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
    pub(crate) async fn paced_with_unknown(&mut self, random: &mut Lcg) -> Result<WithUnknown> {
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
