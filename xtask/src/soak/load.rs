//! The soak's load: customers with money, then transfers between them at a steady rate (a few
//! threads, each pacing its share), counted as accepted (202) or not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::demo::{Endpoints, Http};

/// Customers the transfers go between.
const CUSTOMERS: usize = 40;
/// Threads sending transfers.
const THREADS: u32 = 4;

/// What the load did so far.
#[derive(Debug, Default)]
pub struct Counts {
    /// Transfers accepted (202).
    pub accepted: AtomicU64,
    /// Requests refused or failed.
    pub refused: AtomicU64,
}

/// Registers the customers (ids start with `prefix`), waits for their accounts and deposits
/// into each; returns their ids.
pub fn customers(at: &Endpoints, prefix: &str) -> Result<Vec<String>> {
    let http = Http::new();
    let ids: Vec<String> = (0..CUSTOMERS).map(|n| format!("{prefix}-{n}")).collect();
    for id in &ids {
        let body =
            json!({ "id": id, "name": "Soak Customer", "email": format!("{id}@example.com") });
        let (status, answer) = http.post(&format!("{}/app/customers", at.customers), &body)?;
        if status != 201 && status != 200 {
            bail!("POST /app/customers answered {status}: {answer}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        while http.get(&format!("{}/accounts/{id}", at.transactions))?.0 != 200 {
            if Instant::now() > deadline {
                bail!("the account of {id} was not opened within 120 s");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let (status, answer) = http.post(
            &format!("{}/transactions", at.transactions),
            &json!({ "to": id, "amount": 1_000_000 }),
        )?;
        if status != 202 {
            bail!("a deposit answered {status}: {answer}");
        }
    }
    Ok(ids)
}

/// Sends `rate` transfers per second between `ids` until `stop`, counting into `counts`.
pub fn transfers(
    at: &Endpoints,
    ids: Arc<Vec<String>>,
    rate: u32,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    let every = Duration::from_secs_f64(f64::from(THREADS) / f64::from(rate.max(1)));
    (0..THREADS)
        .map(|t| {
            let (url, ids, counts, stop) = (
                format!("{}/transactions", at.transactions),
                Arc::clone(&ids),
                Arc::clone(&counts),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                let http = Http::new();
                let mut next = Instant::now();
                let mut n = t as usize;
                while !stop.load(Ordering::Relaxed) {
                    let (from, to) = (&ids[n % ids.len()], &ids[(n * 7 + 1) % ids.len()]);
                    n += THREADS as usize;
                    let body = json!({ "from": from, "to": to, "amount": "1.00" });
                    match http.post(&url, &body) {
                        Ok((202, _)) => counts.accepted.fetch_add(1, Ordering::Relaxed),
                        _ => counts.refused.fetch_add(1, Ordering::Relaxed),
                    };
                    next += every;
                    // Behind schedule (a slow answer): carry on at once, without a burst.
                    let now = Instant::now();
                    match next.checked_duration_since(now) {
                        Some(wait) => thread::sleep(wait),
                        None => next = now,
                    }
                }
            })
        })
        .collect()
}
