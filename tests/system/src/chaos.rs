//! The chaos run behind `cargo xtask chaos` (and its short fixed-seed version in the test suite):
//! three replicas of transaction-service and notification-service and two of customer-service on
//! six partitions, on PostgreSQL, under a steady load of transfers among funded accounts plus new
//! customers, while a fault schedule drawn from a seed kills (-9), pauses (SIGSTOP longer than the
//! consumer session, then SIGCONT) and cleanly restarts replicas, and stops and starts the broker
//! and restarts PostgreSQL when the caller says how ([`Controls`]). Then it drains and judges:
//! [`ChaosReport::line`].

mod faults;
mod load;
mod settings;

pub use settings::{ChaosReport, ChaosSettings, Command, Controls};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::chaos_brokers;
use crate::{count_rows, deliveries_settled, read_outcomes, MailReport, Stack, Verdict};

use faults::{inject_faults, revive_all};
use load::{all_urls, fund, start_stack, Ledger, Load, Targets, ACCOUNTS, DRAIN};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the chaos: the stack, the load, the faults, the drain and the judgement.
pub async fn run(settings: &ChaosSettings) -> ChaosReport {
    let mut stack = start_stack(settings.controls.database_server.as_deref()).await;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("HTTP client");
    let accounts: Vec<String> = (0..ACCOUNTS).map(|n| format!("chaos-{n:02}")).collect();
    let targets = Targets {
        client,
        transactions: all_urls(&mut stack, "transaction-service"),
        customers: all_urls(&mut stack, "customer-service"),
        ledger: Arc::new(Mutex::new(Ledger::default())),
    };
    fund(&targets, &stack, &accounts).await;
    let load = Load::start(&targets, &accounts, settings.seed);
    let mut report = ChaosReport {
        seed: settings.seed,
        ..ChaosReport::default()
    };
    let load_began = SystemTime::now();
    let injected = inject_faults(&mut stack, settings, &targets, &accounts, &mut report).await;
    load.stop().await;
    let load_ended = SystemTime::now();
    revive_all(&mut stack, &settings.controls).await;
    let processed = judge(&stack, &targets.ledger, &mut report).await;
    report.max_stall_s = chaos_brokers::max_stall(&processed, load_began, load_ended);
    let sent_at = targets.ledger.lock().expect("ledger").sent_at.clone();
    for line in chaos_brokers::measured(&injected, &sent_at, &processed) {
        println!("{line}");
        report.log.push(line);
    }
    report
}

/// Drains and judges: the outcomes of the accepted requests, the money, the e-mails. Returns
/// when each transaction was processed.
async fn judge(
    stack: &Stack,
    ledger: &Mutex<Ledger>,
    report: &mut ChaosReport,
) -> BTreeMap<String, SystemTime> {
    let (sent, accepted) = {
        let ledger = ledger.lock().expect("ledger");
        (ledger.sent.len(), ledger.accepted.clone())
    };
    report.requests = sent;
    report.accepted = accepted.len();
    let outcomes = read_outcomes(&stack.kafka, accepted.len(), DRAIN, Duration::from_secs(3)).await;
    let verdict = Verdict::judge(&accepted, &outcomes);
    report.lost = verdict.missing.len();
    report.outcomes = report.accepted - report.lost;
    report.duplicated_outcomes = verdict.conflicting.len();
    report.duplicate_publishes = outcomes.values().map(|events| events.len() - 1).sum();
    let ledger_db = stack.services["transaction-service"]
        .database_url()
        .to_string();
    let total = count_rows(
        &ledger_db,
        "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) AS n FROM accounts",
    )
    .await;
    // Requests no replica answered may still have been recorded and applied: they count too.
    let everything = Verdict::judge(outcomes.keys(), &outcomes);
    report.money_conserved = total == everything.net_deposits;
    report.alerts_duplicated = settled_mail(stack).await.double_sent.len();
    chaos_brokers::processed_at(&outcomes)
}

/// Waits until notification-service has no delivery left to send, then judges the mailbox.
async fn settled_mail(stack: &Stack) -> MailReport {
    let settled = deliveries_settled(stack, None, DRAIN).await;
    assert!(settled, "notification-service never settled");
    MailReport::of(&stack.smtp)
}
