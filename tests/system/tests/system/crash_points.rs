//! A crash at every step of the pipeline. For each crash point (`platform::failpoint!`), a stack
//! of the three services runs a workload (new customers, deposits, withdrawals, transfers some of
//! which overdraw, and a poison record produced straight to `transaction.requested`) while the
//! point is armed in one service, so that the service aborts there with work in flight. The test
//! checks that it died by SIGABRT with work pending, starts it again unarmed, sends again the
//! requests that got no answer (as a client would), and then asserts the promises: every accepted
//! request has exactly one distinct outcome (copies of the same event id are counted, not
//! failures), nothing is skipped, money is conserved, every account balance is exact, and no
//! e-mail is received twice (by Message-ID, once the sender's short lease has ended).
//!
//! `EMS_CRASH_POINTS=label,...` runs only the named points (labels as printed: `point@service`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use contracts::topics;
use futures::StreamExt;
use platform::testing::{poll_until, produce_raw, read_topic};
use serde_json::{json, Value};
use system_tests::{
    amount, balances, get, random_transfer, register_customer, settled_mail, transaction_backlog,
    try_post, wait_accounts, Lcg, Stack, Verdict,
};

/// How long an attempt owns a delivery in these runs: a resend after a crash comes this soon.
const LEASE_SECS: &str = "6";
/// Longest SMTP send in these runs (below the lease).
const SEND_TIMEOUT_SECS: &str = "5";
/// Customers known before the crash point is armed.
const OLD_CUSTOMERS: usize = 4;
/// Customers registered while it is armed.
const NEW_CUSTOMERS: usize = 3;
const TRANSFERS: usize = 90;
const WITHDRAWALS: usize = 8;
const DEPOSITS: usize = 6;
/// Requests in flight at a time.
const CONCURRENCY: usize = 4;
/// How long the armed service gets to reach its crash point under load.
const CRASH_WITHIN: Duration = Duration::from_secs(90);

/// A crash point armed in one service, crashing on its `hit`-th pass.
#[derive(Debug, Clone, Copy)]
struct Point {
    name: &'static str,
    service: &'static str,
    hit: u32,
}

impl Point {
    fn label(&self) -> String {
        format!("{}@{}", self.name, self.service)
    }
}

const POINTS: [Point; 8] = [
    Point {
        name: "http.after_commit",
        service: "transaction-service",
        hit: 20,
    },
    // After a write transaction's COMMIT (SQLite: the shared cycle's), before any of its
    // writers is answered or stores an offset.
    Point {
        name: "db.after_commit",
        service: "transaction-service",
        hit: 30,
    },
    Point {
        name: "http.after_commit",
        service: "customer-service",
        hit: 2,
    },
    Point {
        name: "relay.after_publish",
        service: "transaction-service",
        hit: 6,
    },
    Point {
        name: "consumer.after_commit",
        service: "transaction-service",
        hit: 6,
    },
    Point {
        name: "consumer.mid_batch",
        service: "transaction-service",
        hit: 4,
    },
    Point {
        name: "consumer.mid_dead_letter",
        service: "transaction-service",
        hit: 1,
    },
    Point {
        name: "smtp.after_accept",
        service: "notification-service",
        hit: 6,
    },
];

/// What one crash point's run found.
#[derive(Debug, Default)]
struct Report {
    /// Work the crashed service had not finished when it died.
    pending_at_crash: i64,
    /// Requests that got no answer before the crash (sent again after the restart).
    unanswered: usize,
    /// Requests without an outcome, customers without an account, e-mails never received.
    lost: usize,
    /// Requests with more than one distinct outcome.
    duplicated: usize,
    /// E-mails received more than once (by Message-ID).
    double_sent: usize,
    /// Extra copies of outcome events (same event id): allowed, counted.
    copies: usize,
    /// Money not accounted for: sum of balances minus (deposits - withdrawals), and accounts
    /// whose balance differs from its outcomes.
    money_errors: Vec<String>,
    /// Requests and e-mails checked.
    requests: usize,
    mails: usize,
    /// Requests added after the workload before the point fired (customers and deposits).
    topped_up: usize,
}

/// One request of the workload.
enum Step {
    Customer(String),
    Transaction(String, Value),
    Poison,
}

fn workload(seed: u64, old: &[String], new: &[String]) -> Vec<Step> {
    let mut random = Lcg::new(seed);
    let mut transactions = Vec::new();
    for n in 0..TRANSFERS {
        let mut body = random_transfer(&mut random, old, 30_000);
        body["transactionId"] = json!(format!("t{n:03}"));
        transactions.push(body);
    }
    for n in 0..WITHDRAWALS {
        let from = &old[random.below(old.len() as u64) as usize];
        let body = json!({"transactionId": format!("w{n:03}"), "from": from,
            "amount": amount(1 + random.below(20_000))});
        transactions.insert(10 * n + 5, body);
    }
    for n in 0..DEPOSITS {
        let to = &old[random.below(old.len() as u64) as usize];
        let body = json!({"transactionId": format!("d{n:03}"), "to": to,
            "amount": amount(1 + random.below(20_000))});
        transactions.insert(15 * n + 3, body);
    }
    let mut steps: Vec<Step> = transactions
        .into_iter()
        .map(|body| {
            Step::Transaction(
                body["transactionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                body,
            )
        })
        .collect();
    for (n, id) in new.iter().enumerate() {
        steps.insert(4 * n + 2, Step::Customer(id.clone()));
    }
    let third = steps.len() / 3;
    steps.insert(third, Step::Poison);
    steps
}

/// More load after the workload, numbered by `n`: a new customer and a small deposit.
fn top_up(n: usize, old: &[String]) -> [Step; 2] {
    let id = format!("x{n:03}");
    let body = json!({"transactionId": id, "to": old[n % old.len()], "amount": "1.00"});
    [
        Step::Customer(format!("extra-{n}")),
        Step::Transaction(id, body),
    ]
}

/// Sends one step; `false` when no answer came (the service crashed under it). `again`: the
/// step is sent again after a crash left its first sending unanswered.
async fn send(client: &reqwest::Client, stack: &Stack, step: &Step, again: bool) -> bool {
    match step {
        Step::Customer(id) => match register_customer(client, stack, id).await {
            Ok((status, body)) => {
                // A first registration creates the customer: 201. Sent again after a crash, it
                // is 200 when the first sending was committed before the crash (the stored
                // registration is found), 201 when it was not.
                let expected: &[u16] = if again { &[200, 201] } else { &[201] };
                assert!(
                    expected.contains(&status),
                    "customer {id} (sent again: {again}): {status} {body}"
                );
                assert_eq!(body["id"], id.as_str(), "{body}");
                true
            }
            Err(_) => false,
        },
        Step::Transaction(id, body) => {
            let url = format!("{}/transactions", stack.url("transaction-service"));
            match try_post(client, &url, body).await {
                Ok((status, answer)) => {
                    assert!(matches!(status, 200 | 202), "{id}: {status} {answer}");
                    true
                }
                Err(_) => false,
            }
        }
        Step::Poison => {
            produce_raw(
                &stack.kafka,
                topics::TRANSACTION_REQUESTED,
                "poison",
                "{not json",
                &[("ce_id", "poison-1")],
            )
            .await;
            true
        }
    }
}

async fn run_point(point: Point, seed: u64) -> Report {
    let mut run = Run::open(point).await;
    run.arm().await;
    run.load(seed).await;
    let topped_up = run.crash_under_load().await;
    let crashed_at = tokio::time::Instant::now();
    let pending_at_crash = run.pending_at_crash().await;
    assert!(
        pending_at_crash > 0,
        "{}: the crash landed with no work pending",
        point.label()
    );
    let unanswered = run.restart_and_resend().await;
    let mut report = run.judge(crashed_at).await;
    report.pending_at_crash = pending_at_crash;
    report.unanswered = unanswered;
    report.topped_up = topped_up;
    report
}

/// One crash point's run: its stack, the customers, and the requests sent so far.
struct Run {
    point: Point,
    stack: Stack,
    client: reqwest::Client,
    /// Customers known before the point is armed.
    old: Vec<String>,
    /// Customers registered while it is armed.
    new: Vec<String>,
    /// The transactions sent, by id.
    requests: BTreeMap<String, Value>,
    /// The steps sent while the point is armed, and whether each got an answer.
    steps: Vec<Step>,
    answered: Vec<bool>,
}

impl Run {
    /// A stack for `point` whose customers known before the crash point is armed have their
    /// accounts, money, and every e-mail sent.
    async fn open(point: Point) -> Self {
        let stack = Stack::start_for(
            &[],
            &[
                ("notification-service", "NOTIFY_SEND_LEASE_SECS", LEASE_SECS),
                (
                    "notification-service",
                    "NOTIFY_SEND_TIMEOUT_SECS",
                    SEND_TIMEOUT_SECS,
                ),
            ],
        )
        .await;
        let mut run = Self {
            point,
            stack,
            client: reqwest::Client::new(),
            old: (0..OLD_CUSTOMERS).map(|n| format!("old-{n}")).collect(),
            new: (0..NEW_CUSTOMERS).map(|n| format!("new-{n}")).collect(),
            requests: BTreeMap::new(),
            steps: Vec::new(),
            answered: Vec::new(),
        };
        run.open_accounts().await;
        // Every e-mail of the customers so far is out before the point is armed (a welcome and
        // an opening alert each): an armed service counts its passes from the workload, and
        // never reaches its point on the backlog while it starts (a fast apply path left six
        // deliveries for the restarted sender, whose sixth send crashed it before it was ready).
        let before = settled_mail(&run.stack, 2 * OLD_CUSTOMERS, Duration::from_secs(60)).await;
        assert!(before.double_sent.is_empty(), "{before:?}");
        run
    }

    /// Before the point is armed: customers with accounts and money.
    async fn open_accounts(&mut self) {
        let (client, stack) = (&self.client, &self.stack);
        for id in &self.old {
            let (status, body) = register_customer(client, stack, id).await.expect("answer");
            // Exactly 201: nothing is armed, nothing retried. (A 200 here once came from
            // another stack's customer-service, which had bound this one's port first and
            // answered its readiness probe: the four stacks register the same ids. The harness
            // now waits for its own process's `listening` line and restarts on another port
            // when the port is taken.)
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["id"], id.as_str(), "{body}");
        }
        wait_accounts(client, stack, &self.old, Duration::from_secs(60)).await;
        for id in &self.old {
            let body = json!({"transactionId": format!("open-{id}"), "to": id, "amount": "500.00"});
            let (status, answer) = try_post(
                client,
                &format!("{}/transactions", stack.url("transaction-service")),
                &body,
            )
            .await
            .expect("answer");
            assert_eq!(status, 202, "{answer}");
            self.requests.insert(format!("open-{id}"), body);
        }
        for id in self.requests.keys() {
            let url = format!("{}/transactions/{id}", stack.url("transaction-service"));
            let done = poll_until(Duration::from_secs(60), || {
                let request = get(client, &url);
                async move { (request.await.1["status"] == "processed").then_some(()) }
            })
            .await;
            assert!(done.is_some(), "{id} processed");
        }
    }

    /// Arms the point: a clean restart of its service with `EMS_FAILPOINTS`.
    async fn arm(&mut self) {
        let point = self.point;
        let target = self.stack.service(point.service);
        target.set_env("EMS_FAILPOINTS", &format!("{}={}", point.name, point.hit));
        assert_eq!(
            target.terminate().await,
            Some(0),
            "clean stop before arming"
        );
        target.start().await;
    }

    /// The workload, a few requests at a time; some get no answer when the target crashes.
    async fn load(&mut self, seed: u64) {
        self.steps = workload(seed, &self.old, &self.new);
        for step in &self.steps {
            if let Step::Transaction(id, body) = step {
                self.requests.insert(id.clone(), body.clone());
            }
        }
        let (client, stack, steps) = (&self.client, &self.stack, &self.steps);
        self.answered = futures::stream::iter(0..steps.len())
            .map(|n| send(client, stack, &steps[n], false))
            .buffered(CONCURRENCY)
            .collect()
            .await;
    }

    /// Waits for the crash, with work in flight; returns how many requests went in after the
    /// workload. A point armed for its N-th pass may need more load than the workload: a slower
    /// machine (or several stacks on one PostgreSQL) does more per pass, so a little more goes
    /// in, a customer and a deposit at a time, until the point fires.
    async fn crash_under_load(&mut self) -> usize {
        let point = self.point;
        let give_up = tokio::time::Instant::now() + CRASH_WITHIN;
        let mut topped_up = 0;
        for more in 0.. {
            if self
                .stack
                .service(point.service)
                .aborted_within(Duration::from_secs(1))
                .await
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "{} did not crash within {CRASH_WITHIN:?} of steady load: the crash point was \
                 never reached (is it in the code, and the binary built by `cargo test` with \
                 the `failpoints` feature?); its log:\n{}",
                point.label(),
                self.stack.service(point.service).log_tail()
            );
            for step in top_up(more, &self.old) {
                match &step {
                    Step::Customer(id) => self.new.push(id.clone()),
                    Step::Transaction(id, body) => {
                        self.requests.insert(id.clone(), body.clone());
                    }
                    Step::Poison => {}
                }
                self.answered
                    .push(send(&self.client, &self.stack, &step, false).await);
                self.steps.push(step);
                topped_up += 1;
            }
        }
        topped_up
    }

    /// The work the crashed service had not finished: undecided requests or unpublished events
    /// (transaction-service), unsent events (customer-service), unsent e-mails.
    async fn pending_at_crash(&self) -> i64 {
        let target_db = self.stack.services[self.point.service]
            .database_url()
            .to_string();
        match self.point.service {
            "transaction-service" => transaction_backlog(&self.stack).await,
            "customer-service" => {
                system_tests::count_rows(
                    &target_db,
                    "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL",
                )
                .await
            }
            _ => {
                system_tests::count_rows(
                    &target_db,
                    "SELECT COUNT(*) AS n FROM deliveries WHERE status <> 'sent'",
                )
                .await
            }
        }
    }

    /// Starts the service again unarmed and sends what got no answer; returns how many.
    async fn restart_and_resend(&mut self) -> usize {
        let target = self.stack.service(self.point.service);
        target.remove_env("EMS_FAILPOINTS");
        target.start().await;
        let unanswered: Vec<&Step> = self
            .steps
            .iter()
            .zip(&self.answered)
            .filter(|(_, ok)| !**ok)
            .map(|(step, _)| step)
            .collect();
        for step in &unanswered {
            assert!(
                send(&self.client, &self.stack, step, true).await,
                "answered after the restart"
            );
        }
        unanswered.len()
    }

    /// The promises, once the service is back: every request has exactly one distinct outcome,
    /// the poison record was dead-lettered, every customer has an account, money is exact and
    /// conserved, and (once the lease of a send interrupted at `crashed_at` has ended) every
    /// e-mail was sent, none twice.
    async fn judge(&self, crashed_at: tokio::time::Instant) -> Report {
        let verdict = Verdict::read(
            &self.stack.kafka,
            self.requests.keys(),
            Duration::from_secs(120),
        )
        .await;
        assert_outcomes(&verdict);
        assert_dead_lettered(&self.stack).await;

        // Every new customer has its account.
        let mut customers: Vec<String> = self.old.clone();
        customers.extend(self.new.iter().cloned());
        wait_accounts(
            &self.client,
            &self.stack,
            &customers,
            Duration::from_secs(60),
        )
        .await;
        let money_errors = money_errors(&self.client, &self.stack, &customers, &verdict).await;

        // E-mails: all sent, none twice, checked once the lease of an interrupted send has ended.
        let expected_mails = customers.len() + verdict.alerts;
        let lease = Duration::from_secs(LEASE_SECS.parse().expect("seconds"));
        tokio::time::sleep_until(crashed_at + lease).await;
        let mail = settled_mail(&self.stack, expected_mails, Duration::from_secs(90)).await;

        Report {
            lost: verdict.missing.len() + expected_mails.saturating_sub(mail.distinct),
            duplicated: verdict.conflicting.len(),
            double_sent: mail.double_sent.len(),
            copies: verdict.copies,
            money_errors,
            requests: self.requests.len() + self.new.len(),
            mails: mail.distinct,
            ..Report::default()
        }
    }
}

/// Every request has an outcome, and the only failures are for insufficient funds (which the
/// workload causes).
fn assert_outcomes(verdict: &Verdict) {
    assert!(verdict.unknown.is_empty(), "{:?}", verdict.unknown);
    let unexpected: Vec<&String> = verdict
        .failures
        .keys()
        .filter(|r| *r != "insufficient_funds")
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected failures: {:?}",
        verdict.failures
    );
    assert!(
        verdict
            .failures
            .get("insufficient_funds")
            .copied()
            .unwrap_or(0)
            > 0,
        "the workload overdraws"
    );
}

/// The poison record was dead-lettered (a copy more is allowed) and skipped nothing.
async fn assert_dead_lettered(stack: &Stack) {
    let dead = read_topic(
        &stack.kafka,
        &format!("{}.DLT", topics::TRANSACTION_REQUESTED),
        Duration::from_secs(60),
        |records| !records.is_empty(),
    )
    .await;
    assert!(!dead.is_empty(), "the poison record reached the DLT");
}

/// Money: exact per account, conserved overall; what is not, said.
async fn money_errors(
    client: &reqwest::Client,
    stack: &Stack,
    customers: &[String],
    verdict: &Verdict,
) -> Vec<String> {
    let actual = balances(client, stack, customers).await;
    let mut money_errors = Vec::new();
    for account in customers {
        let expected = verdict.balances.get(account).copied().unwrap_or(0);
        if actual[account] != expected || actual[account] < 0 {
            money_errors.push(format!(
                "{account}: {} (outcomes say {expected})",
                actual[account]
            ));
        }
    }
    let total: i64 = actual.values().sum();
    if total != verdict.net_deposits {
        money_errors.push(format!(
            "sum of balances {total} != deposits - withdrawals {}",
            verdict.net_deposits
        ));
    }
    money_errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_crash_point_loses_and_duplicates_nothing() {
    let _turn = crate::exclusive().await;
    let only: Option<Vec<String>> = std::env::var("EMS_CRASH_POINTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let points: Vec<Point> = POINTS
        .into_iter()
        .filter(|p| match &only {
            Some(only) => only.contains(&p.label()),
            None => true,
        })
        .collect();
    assert!(!points.is_empty(), "no crash point selected");
    // A few stacks at a time keep the machine responsive.
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    let runs: Vec<_> = points
        .iter()
        .enumerate()
        .map(|(n, point)| {
            let (point, slots) = (*point, slots.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore");
                run_point(point, 20_261_200 + n as u64).await
            })
        })
        .collect();
    let mut failures = Vec::new();
    let (mut lost, mut duplicated, mut double_sent, mut topped_up) = (0, 0, 0, 0);
    for (point, run) in points.iter().zip(runs) {
        match run.await {
            Ok(report) => {
                println!(
                    "{}: pending at crash {}, unanswered {}, {} requests ({} after the \
                     workload), {} e-mails; lost={} duplicated={} double_sent={} \
                     (outcome copies {})",
                    point.label(),
                    report.pending_at_crash,
                    report.unanswered,
                    report.requests,
                    report.topped_up,
                    report.mails,
                    report.lost,
                    report.duplicated,
                    report.double_sent,
                    report.copies,
                );
                lost += report.lost;
                duplicated += report.duplicated;
                double_sent += report.double_sent;
                topped_up += report.topped_up;
                if report.lost + report.duplicated + report.double_sent > 0
                    || !report.money_errors.is_empty()
                {
                    failures.push(format!("{}: {report:?}", point.label()));
                }
            }
            Err(error) => failures.push(format!("{}: {error}", point.label())),
        }
    }
    assert!(
        failures.is_empty(),
        "crash points failed:\n{}",
        failures.join("\n")
    );
    platform::testing::summary_line(&format!(
        "crash points: {} tested, lost={lost} duplicated={duplicated} double_sent={double_sent} \
         (requests after the workload to reach a point: {topped_up})",
        points.len()
    ));
}
