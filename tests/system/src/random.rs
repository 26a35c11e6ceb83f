//! A deterministic pseudo-random sequence for loads and fault schedules, and the random
//! transfers of the loads.

use serde_json::{json, Value};

/// A small deterministic pseudo-random sequence (xorshift), so failures can be replayed.
pub struct Lcg(u64);

impl Lcg {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// A transfer between two different accounts of `accounts`, without its `transactionId`: drawn
/// from `random` in this order, the sender, the receiver, then the amount (0.01 to
/// `max_cents` / 100).
pub fn random_transfer(random: &mut Lcg, accounts: &[String], max_cents: u64) -> Value {
    let from = random.below(accounts.len() as u64) as usize;
    let to = (from + 1 + random.below(accounts.len() as u64 - 1) as usize) % accounts.len();
    let cents = 1 + random.below(max_cents);
    json!({"from": accounts[from], "to": accounts[to], "amount": amount(cents)})
}

/// A deposit of 500.00 to each of `accounts` (`dep-<account>`), then `transfers` random
/// transfers between them (`t0000`, …; up to 300.00, so some overdraw) drawn from `seed`.
pub fn deposits_and_transfers(accounts: &[String], seed: u64, transfers: usize) -> Vec<Value> {
    let mut bodies: Vec<Value> = accounts
        .iter()
        .map(|id| json!({"transactionId": format!("dep-{id}"), "to": id, "amount": "500.00"}))
        .collect();
    let mut random = Lcg::new(seed);
    for n in 0..transfers {
        let mut body = random_transfer(&mut random, accounts, 30_000);
        body["transactionId"] = json!(format!("t{n:04}"));
        bodies.push(body);
    }
    bodies
}

/// `cents` as an amount: `"12.34"`.
pub fn amount(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}
