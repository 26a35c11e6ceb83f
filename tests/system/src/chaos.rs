//! The chaos run behind `cargo xtask chaos` (and its short fixed-seed version in the test suite):
//! three replicas of transaction-service and notification-service and two of customer-service on
//! six partitions, on PostgreSQL, under a steady load of transfers among funded accounts plus new
//! customers, while a fault schedule drawn from a seed kills (-9), pauses (SIGSTOP longer than the
//! consumer session, then SIGCONT) and cleanly restarts replicas, and stops and starts the broker
//! and restarts PostgreSQL when the caller says how ([`Controls`]). Then it drains and judges:
//! [`ChaosReport::line`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::chaos_brokers::{self, BrokerControls, Injected};
use crate::{
    count_rows, deliveries_settled, read_outcomes, register_accounts, try_post, Lcg, MailReport,
    OutcomeClock, Stack, Verdict,
};

/// A command to run for a fault (program and arguments).
pub type Command = Vec<String>;

/// How to reach what the services depend on, for the faults outside them.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Stops the broker (it must be one nobody else uses).
    pub broker_stop: Option<Command>,
    /// Starts it again.
    pub broker_start: Option<Command>,
    /// Restarts PostgreSQL (a cluster nobody else uses).
    pub postgres_restart: Option<Command>,
    /// The PostgreSQL server (a superuser's URL) whose fresh databases the services use; none:
    /// `TEST_DATABASE_URL`'s. The one `postgres_restart` restarts, when that is not the test
    /// cluster.
    pub database_server: Option<String>,
    /// Each fault these controls allow (broker, database) is injected at least once: one the
    /// schedule did not draw comes after the fault window (the suite's short run).
    pub each_fault: bool,
    /// A three-node cluster's nodes: every other fault is a broker fault
    /// ([`chaos_brokers::FAULTS`] in turn).
    pub brokers: Option<BrokerControls>,
}

/// What the run is.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    /// Seed of the fault schedule and the load.
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Broker and database faults.
    pub controls: Controls,
}

/// The judgement of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Faults injected.
    pub faults: usize,
    /// Transaction requests sent.
    pub requests: usize,
    /// Requests some replica accepted.
    pub accepted: usize,
    /// Accepted requests with an outcome.
    pub outcomes: usize,
    /// Accepted requests without an outcome.
    pub lost: usize,
    /// Requests with more than one distinct outcome id.
    pub duplicated_outcomes: usize,
    /// The sum of all balances equals processed deposits minus withdrawals.
    pub money_conserved: bool,
    /// Alerts e-mailed more than once (by Message-ID).
    pub alerts_duplicated: usize,
    /// Extra copies of outcome records sharing a `ce_id` (allowed).
    pub duplicate_publishes: usize,
    /// Longest time from the end of a fault until a request sent then had its outcome.
    pub max_recovery_s: f64,
    /// Broker faults injected (of `faults`).
    pub broker_faults: usize,
    /// The longest time without a processed transaction while the load ran.
    pub max_stall_s: f64,
    /// What each fault was, with its recovery time.
    pub log: Vec<String>,
}

impl ChaosReport {
    /// `chaos: seed=S faults=F requests=N accepted=A outcomes=A lost=0 ...`
    pub fn line(&self) -> String {
        format!(
            "chaos: seed={} faults={} requests={} accepted={} outcomes={} lost={} \
             duplicated_outcomes={} money_conserved={} alerts_duplicated={} \
             duplicate_publishes={} max_recovery_s={:.1} broker_faults={} max_stall_s={:.1}",
            self.seed,
            self.faults,
            self.requests,
            self.accepted,
            self.outcomes,
            self.lost,
            self.duplicated_outcomes,
            if self.money_conserved { "yes" } else { "no" },
            self.alerts_duplicated,
            self.duplicate_publishes,
            self.max_recovery_s,
            self.broker_faults,
            self.max_stall_s
        )
    }

    /// True when every invariant holds.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.duplicated_outcomes == 0
            && self.money_conserved
            && self.alerts_duplicated == 0
    }
}

const ACCOUNTS: usize = 10;
const DEPOSIT: &str = "1000.00";
const CLIENTS: usize = 4;
/// Pause between a client's requests: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(250);
/// Longer than the consumers' session timeout (10 s): the group rebalances around the paused one.
const PAUSE: Duration = Duration::from_secs(12);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const DRAIN: Duration = Duration::from_secs(150);
const REPLICAS: [(&str, usize); 3] = [
    ("transaction-service", 3),
    ("notification-service", 3),
    ("customer-service", 2),
];

/// The faults a schedule draws from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(&'static str, usize),
    Pause(&'static str, usize),
    Restart(&'static str, usize),
    Broker,
    Postgres,
}

/// Requests and what became of them, shared by the load's clients.
#[derive(Default)]
struct Ledger {
    sent: Vec<String>,
    accepted: Vec<String>,
    /// When each request was first sent.
    sent_at: BTreeMap<String, SystemTime>,
}

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

/// Where the load goes and what became of it: the HTTP client, every replica's URL of
/// transaction-service and customer-service, the shared [`Ledger`].
struct Targets {
    client: reqwest::Client,
    transactions: Vec<String>,
    customers: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
}

/// The stack for replicas, with [`REPLICAS`] processes of each service.
async fn start_stack(database_server: Option<&str>) -> Stack {
    let mut stack = Stack::start_for_replicas_on(database_server).await;
    for (name, count) in REPLICAS {
        stack.scale_to(name, count).await;
    }
    stack
}

/// Registers `accounts` and deposits [`DEPOSIT`] into each.
async fn fund(targets: &Targets, stack: &Stack, accounts: &[String]) {
    register_accounts(&targets.client, stack, accounts).await;
    for account in accounts {
        let body = json!({"transactionId": format!("dep-{account}"), "to": account,
                          "amount": DEPOSIT});
        assert!(
            send(
                &targets.client,
                &targets.transactions,
                "/transactions",
                &body,
                &targets.ledger
            )
            .await,
            "deposit accepted"
        );
    }
}

/// The load: [`CLIENTS`] clients sending transfers among the funded accounts, and now and then
/// a new customer, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients; client `n` draws from a sequence derived from `seed` and `n`.
    fn start(targets: &Targets, accounts: &[String], seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for n in 0..CLIENTS {
            let (client, ledger, stop) = (
                targets.client.clone(),
                Arc::clone(&targets.ledger),
                Arc::clone(&stop),
            );
            let (transaction_urls, customer_urls) =
                (targets.transactions.clone(), targets.customers.clone());
            let accounts = accounts.to_vec();
            let mut random = Lcg::new(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9));
            clients.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if i.is_multiple_of(10) {
                        let id = format!("chaos-new-{n}-{i}");
                        let body = json!({"id": id, "name": format!("Customer {id}"),
                                          "email": crate::email(&id)});
                        let _ = crate::http::post_to_any(
                            &client,
                            &customer_urls,
                            "/app/customers",
                            &body,
                        )
                        .await;
                    }
                    let from = random.below(ACCOUNTS as u64) as usize;
                    let to = (from + 1 + random.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    let cents = 1 + random.below(5_000);
                    let body = json!({"transactionId": format!("c{n}-{i:05}"),
                        "from": accounts[from], "to": accounts[to],
                        "amount": format!("{}.{:02}", cents / 100, cents % 100)});
                    send(&client, &transaction_urls, "/transactions", &body, &ledger).await;
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Self { stop, clients }
    }

    /// Stops the clients and waits until they have.
    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("load client");
        }
    }
}

/// The faults: one drawn from the schedule every 3 to 7 s for `settings.duration` (on a
/// cluster, every other one is the next broker fault), each followed by a probe request whose
/// time to its outcome is the recovery time. Returns the broker faults of a cluster.
async fn inject_faults(
    stack: &mut Stack,
    settings: &ChaosSettings,
    targets: &Targets,
    accounts: &[String],
    report: &mut ChaosReport,
) -> Vec<Injected> {
    let mut injected = Vec::new();
    let mut clock = OutcomeClock::start(&stack.kafka);
    let mut schedule = Lcg::new(settings.seed);
    let started = Instant::now();
    let mut probe = 0usize;
    let mut owed = owed_faults(&settings.controls);
    loop {
        let in_window = started.elapsed() < settings.duration;
        if in_window {
            tokio::time::sleep(Duration::from_secs(3 + schedule.below(5))).await;
        }
        let what = match &settings.controls.brokers {
            Some(brokers) if in_window && report.faults % 2 == 1 => {
                let fault = chaos_brokers::FAULTS[report.broker_faults % 4];
                let done = chaos_brokers::inject(fault, &stack.kafka, brokers).await;
                report.broker_faults += 1;
                injected.push(done.clone());
                done.what
            }
            _ => {
                let fault = if in_window {
                    draw(&mut schedule, &settings.controls)
                } else if let Some(fault) = owed.pop() {
                    fault
                } else {
                    break;
                };
                owed.retain(|o| std::mem::discriminant(o) != std::mem::discriminant(&fault));
                report.broker_faults += usize::from(matches!(fault, Fault::Broker));
                inject(stack, fault, &settings.controls).await
            }
        };
        report.faults += 1;
        // Recovery: a request sent now, until its outcome is read.
        probe += 1;
        let id = format!("probe-{probe}");
        let body = json!({"transactionId": id, "from": accounts[probe % ACCOUNTS],
                          "to": accounts[(probe + 1) % ACCOUNTS], "amount": "0.01"});
        let recovering = Instant::now();
        let recovery = if send(
            &targets.client,
            &targets.transactions,
            "/transactions",
            &body,
            &targets.ledger,
        )
        .await
        {
            let seen = clock.wait_for(std::slice::from_ref(&id), DRAIN).await;
            seen.get(&id)
                .map(|arrival| arrival.at.duration_since(recovering).as_secs_f64())
        } else {
            None
        };
        let recovery = recovery.unwrap_or(f64::INFINITY);
        report.max_recovery_s = report.max_recovery_s.max(recovery);
        let line = format!(
            "fault {}: {what}; recovered in {recovery:.1} s",
            report.faults
        );
        println!("{line}");
        report.log.push(line);
    }
    injected
}

/// The faults a run owes when `controls.each_fault` says each allowed one must come.
fn owed_faults(controls: &Controls) -> Vec<Fault> {
    let mut owed = Vec::new();
    if controls.each_fault {
        if controls.broker_stop.is_some() && controls.broker_start.is_some() {
            owed.push(Fault::Broker);
        }
        if controls.postgres_restart.is_some() {
            owed.push(Fault::Postgres);
        }
    }
    owed
}

/// Brings the brokers of a cluster back, resumes every paused replica and starts every stopped
/// one.
async fn revive_all(stack: &mut Stack, controls: &Controls) {
    if let Some(brokers) = &controls.brokers {
        chaos_brokers::revive(brokers).await;
    }
    for (name, count) in REPLICAS {
        for n in 0..count {
            let replica = stack.replica(name, n);
            replica.pause(false);
            replica.start().await;
        }
    }
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

/// Every replica's base URL (running or not: a request to a dead one goes to the next).
fn all_urls(stack: &mut Stack, name: &str) -> Vec<String> {
    let count = REPLICAS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(1, |(_, c)| *c);
    (0..count).map(|n| stack.replica(name, n).url()).collect()
}

/// Posts `body` to replica after replica until one accepts it (a load balancer's retry); notes
/// it sent, and accepted when it was. False when none did.
async fn send(
    client: &reqwest::Client,
    urls: &[String],
    path: &str,
    body: &Value,
    ledger: &Mutex<Ledger>,
) -> bool {
    let id = body["transactionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    {
        let mut ledger = ledger.lock().expect("ledger");
        ledger.sent.push(id.clone());
        ledger
            .sent_at
            .entry(id.clone())
            .or_insert_with(SystemTime::now);
    }
    let start = id.len() % urls.len();
    for attempt in 0..urls.len() * 4 {
        let url = format!("{}{path}", urls[(start + attempt) % urls.len()]);
        if let Ok((status, _)) = try_post(client, &url, body).await {
            if matches!(status, 200 | 202) {
                ledger.lock().expect("ledger").accepted.push(id);
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn draw(random: &mut Lcg, controls: &Controls) -> Fault {
    loop {
        let (name, count) = REPLICAS[random.below(REPLICAS.len() as u64) as usize];
        let replica = random.below(count as u64) as usize;
        match random.below(5) {
            0 => return Fault::Kill(name, replica),
            1 => return Fault::Pause(name, replica),
            2 => return Fault::Restart(name, replica),
            3 if controls.broker_stop.is_some() && controls.broker_start.is_some() => {
                return Fault::Broker
            }
            4 if controls.postgres_restart.is_some() => return Fault::Postgres,
            _ => continue,
        }
    }
}

async fn inject(stack: &mut Stack, fault: Fault, controls: &Controls) -> String {
    match fault {
        Fault::Kill(name, n) => {
            stack.replica(name, n).kill().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.replica(name, n).start().await;
            format!("kill -9 {name}#{n}, started again 2 s later")
        }
        Fault::Pause(name, n) => {
            stack.replica(name, n).pause(true);
            tokio::time::sleep(PAUSE).await;
            stack.replica(name, n).pause(false);
            format!("SIGSTOP {name}#{n} for {} s, then SIGCONT", PAUSE.as_secs())
        }
        Fault::Restart(name, n) => {
            stack.replica(name, n).terminate().await;
            stack.replica(name, n).start().await;
            format!("clean restart of {name}#{n}")
        }
        Fault::Broker => {
            run_control(controls.broker_stop.as_ref()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            run_control(controls.broker_start.as_ref()).await;
            "broker stopped for 5 s and started".to_string()
        }
        Fault::Postgres => {
            run_control(controls.postgres_restart.as_ref()).await;
            "PostgreSQL restarted".to_string()
        }
    }
}

async fn run_control(command: Option<&Command>) {
    if let Some(command) = command {
        chaos_brokers::run(command).await;
    }
}

/// Waits until notification-service has no delivery left to send, then judges the mailbox.
async fn settled_mail(stack: &Stack) -> MailReport {
    let settled = deliveries_settled(stack, None, DRAIN).await;
    assert!(settled, "notification-service never settled");
    MailReport::of(&stack.smtp)
}
