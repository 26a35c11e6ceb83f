//! Three replicas of transaction-service and notification-service and two of customer-service on
//! six partitions, as processes sharing PostgreSQL databases: kill -9 of one replica of each under
//! load. The rebalance completes, every accepted request has exactly one distinct outcome, money
//! is conserved, no e-mail goes out twice. Prints the throughput with one transaction-service
//! replica and with three (a figure for BENCHMARKS.md, not an assertion). PostgreSQL only: a
//! SQLite file belongs to one process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use platform::testing::{poll_until, summary_line};
use serde_json::{json, Value};
use system_tests::{
    balances, random_transfer, register_accounts, settled_mail, transaction_ids, try_post,
    wait_accounts, Lcg, OutcomeClock, Stack, Verdict,
};
use tokio::task::JoinHandle;

const CUSTOMERS: usize = 12;
const DEPOSIT: &str = "1000.00";
const DEPOSIT_MINOR: i64 = 100_000;
/// Transfers per measured phase.
const MEASURED: usize = 400;
/// Transfers while replicas are killed, and customers registered meanwhile.
const UNDER_FIRE: usize = 400;
const LATE_CUSTOMERS: usize = 6;
const CLIENTS: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(180);
/// What a takeover of the relay's lease may take beyond the lease's TTL and a standby's poll.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(9);

/// Posts `bodies` to `path` with `CLIENTS` concurrent clients spread over `urls`; a request that
/// gets no answer (its replica died) goes to the next replica, as a load balancer would retry it.
/// Panics on a status other than `accepted`.
async fn post_all(urls: &[String], path: &str, bodies: Vec<Value>, accepted: &'static [u16]) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (n, chunk) in bodies.chunks(bodies.len().div_ceil(CLIENTS)).enumerate() {
        let (client, urls, chunk) = (client.clone(), urls.to_vec(), chunk.to_vec());
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            for (i, body) in chunk.iter().enumerate() {
                let mut attempt = n + i;
                loop {
                    let url = format!("{}{path}", urls[attempt % urls.len()]);
                    match try_post(&client, &url, body).await {
                        Ok((status, answer)) => {
                            assert!(accepted.contains(&status), "{body}: {status} {answer}");
                            break;
                        }
                        Err(_) => attempt += 1,
                    }
                    assert!(
                        attempt < n + i + 20 * urls.len(),
                        "no replica answers {body}"
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
}

/// `n` random transfers between `accounts` (up to 200.00), numbered `<prefix>-0000`, ….
fn transfers(random: &mut Lcg, accounts: &[String], prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut body = random_transfer(random, accounts, 20_000);
            body["transactionId"] = json!(format!("{prefix}-{i:04}"));
            body
        })
        .collect()
}

/// Posts `bodies` to transaction-service's `urls` and waits for all their outcomes; returns the
/// rate, transfers per second from the first request to the last outcome.
async fn measured_phase(clock: &mut OutcomeClock, urls: &[String], bodies: Vec<Value>) -> f64 {
    let wanted = transaction_ids(&bodies);
    let started = Instant::now();
    post_all(urls, "/transactions", bodies, &[202]).await;
    let seen = clock.wait_for(&wanted, TIMEOUT).await;
    assert_eq!(
        seen.len(),
        wanted.len(),
        "every measured transfer has an outcome"
    );
    let last = seen.values().map(|a| a.at).max().expect("outcomes");
    wanted.len() as f64 / last.duration_since(started).as_secs_f64()
}

/// The process id and epoch of the relay holding the outbox lease of the database at `url`
/// (holders are named `host/pid/suffix`).
async fn lease(url: &str) -> Option<(u32, i64)> {
    let db = platform::Database::connect(url).await.expect("database");
    let holder = platform::outbox::lease::holder(&db).await.expect("lease");
    db.close().await;
    let (name, epoch) = holder?;
    let pid = name.split('/').nth(1)?.parse().ok()?;
    Some((pid, epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_lose_nothing_when_one_of_each_is_killed() {
    let _turn = crate::exclusive().await;
    if !std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres")) {
        println!(
            "skipped: replicas share a PostgreSQL database (set TEST_DATABASE_URL); \
             a SQLite file belongs to one process"
        );
        return;
    }
    let mut stack = Stack::start_for_replicas().await;
    let client = reqwest::Client::new();
    let accounts: Vec<String> = (0..CUSTOMERS).map(|n| format!("r-{n:02}")).collect();
    register_accounts(&client, &stack, &accounts).await;
    let mut clock = OutcomeClock::start(&stack.kafka);
    let mut random = Lcg::new(20_261_125);
    let (mut requests, three) =
        measure_one_and_three(&mut stack, &mut clock, &mut random, &accounts).await;

    // Under load: transfers and new customers, and one replica of each service killed.
    let fire = transfers(&mut random, &accounts, "fire", UNDER_FIRE);
    requests.extend(transaction_ids(&fire));
    let load = load_under_fire(&mut stack, three, fire);
    let first_fire = vec!["fire-0040".to_string()];
    assert_eq!(clock.wait_for(&first_fire, TIMEOUT).await.len(), 1);
    let victim = kill_one_of_each(&mut stack).await;
    load.await.expect("load");
    // The killed ledger replica comes back (the checks below ask the first one).
    stack.replica("transaction-service", victim).start().await;
    judge(&stack, &client, &accounts, &requests).await;
}

/// Deposits, then the rate with one transaction-service replica and with three (after a
/// warm-up that rides out the rebalance), as a summary line; returns the requests sent and the
/// three replicas' URLs.
async fn measure_one_and_three(
    stack: &mut Stack,
    clock: &mut OutcomeClock,
    random: &mut Lcg,
    accounts: &[String],
) -> (Vec<String>, Vec<String>) {
    let deposits: Vec<Value> = accounts
        .iter()
        .map(|a| json!({"transactionId": format!("dep-{a}"), "to": a, "amount": DEPOSIT}))
        .collect();
    let mut requests = transaction_ids(&deposits);
    let one = stack.urls("transaction-service");
    measured_phase(clock, &one, deposits).await;

    let phase = transfers(random, accounts, "one", MEASURED);
    requests.extend(transaction_ids(&phase));
    let rate_one = measured_phase(clock, &one, phase).await;

    for name in [
        "transaction-service",
        "transaction-service",
        "notification-service",
    ] {
        stack.add_replica(name).await;
    }
    for name in ["notification-service", "customer-service"] {
        stack.add_replica(name).await;
    }
    let three = stack.urls("transaction-service");
    assert_eq!(three.len(), 3);
    // A first batch rides out the rebalance; the second is measured.
    let warm_up = transfers(random, accounts, "warm", 60);
    requests.extend(transaction_ids(&warm_up));
    measured_phase(clock, &three, warm_up).await;
    let phase = transfers(random, accounts, "three", MEASURED);
    requests.extend(transaction_ids(&phase));
    let rate_three = measured_phase(clock, &three, phase).await;
    summary_line(&format!(
        "replicas: transfers_per_s one={rate_one:.0} three={rate_three:.0} \
         (transaction-service replicas on 6 partitions, PostgreSQL, one machine)"
    ));
    (requests, three)
}

/// In the background: the transfers `fire` to the replicas at `three`, and `LATE_CUSTOMERS`
/// new customers.
fn load_under_fire(stack: &mut Stack, three: Vec<String>, fire: Vec<Value>) -> JoinHandle<()> {
    let late: Vec<Value> = (0..LATE_CUSTOMERS)
        .map(|n| {
            let id = format!("late-{n}");
            json!({"id": id, "name": format!("Customer {id}"), "email": system_tests::email(&id)})
        })
        .collect();
    let customer_urls = stack.urls("customer-service");
    tokio::spawn(async move {
        let customers = post_all(&customer_urls, "/app/customers", late, &[200, 201]);
        let transfers = post_all(&three, "/transactions", fire, &[200, 202]);
        tokio::join!(customers, transfers);
    })
}

/// Kills the transaction-service replica that publishes its outbox (holds the relay's lease)
/// and one replica of each other service; another replica takes the lease over in time.
/// Returns the killed transaction-service replica.
async fn kill_one_of_each(stack: &mut Stack) -> usize {
    let ledger_db = stack.services["transaction-service"]
        .database_url()
        .to_string();
    let (holder, epoch) = lease(&ledger_db).await.expect("a relay holds the lease");
    let victim = (0..3)
        .find(|n| Some(holder) == stack.replica("transaction-service", *n).pid())
        .expect("the lease holder is a replica");
    stack.replica("transaction-service", victim).kill().await;
    for name in ["notification-service", "customer-service"] {
        stack.replica(name, 1).kill().await;
    }
    let killed = Instant::now();
    let takeover = poll_until(TIMEOUT, || {
        let url = ledger_db.clone();
        async move {
            lease(&url)
                .await
                .filter(|(pid, e)| *pid != holder && *e > epoch)
        }
    })
    .await;
    assert!(
        takeover.is_some(),
        "another replica took the relay's lease over"
    );
    let took = killed.elapsed();
    println!(
        "relay lease taken over {:.1} s after its holder was killed",
        took.as_secs_f64()
    );
    // The lease runs out at most its TTL after the kill; a standby tries every poll; the rest
    // is margin for a loaded machine (and this test's own polling).
    let relay = platform::outbox::RelayOptions::default();
    let bound = relay.lease_ttl + relay.standby_poll + TAKEOVER_MARGIN;
    assert!(
        took <= bound,
        "the relay lease was taken over {took:?} after the kill, beyond {bound:?}"
    );
    victim
}

/// Every request has exactly one distinct outcome, balances follow the outcomes and money is
/// conserved, the late customers have accounts, and no e-mail went out twice.
async fn judge(stack: &Stack, client: &reqwest::Client, accounts: &[String], requests: &[String]) {
    let verdict = Verdict::read(&stack.kafka, requests, TIMEOUT).await;
    verdict.assert_one_outcome_each();
    let actual = balances(client, stack, accounts).await;
    let expected: BTreeMap<String, i64> = accounts
        .iter()
        .map(|a| (a.clone(), verdict.balances.get(a).copied().unwrap_or(0)))
        .collect();
    assert_eq!(actual, expected, "balances follow the outcomes");
    assert_eq!(
        actual.values().sum::<i64>(),
        DEPOSIT_MINOR * CUSTOMERS as i64,
        "money is conserved"
    );
    let late_ids: Vec<String> = (0..LATE_CUSTOMERS).map(|n| format!("late-{n}")).collect();
    wait_accounts(client, stack, &late_ids, Duration::from_secs(60)).await;

    // Every notification recorded once and settled; none e-mailed twice (a send the kill
    // interrupted is settled as failed, never repeated).
    let expected_mail = CUSTOMERS + LATE_CUSTOMERS + verdict.alerts;
    let mail = settled_mail(stack, expected_mail, TIMEOUT).await;
    assert!(
        mail.double_sent.is_empty(),
        "sent twice: {:?}",
        mail.double_sent
    );
    println!(
        "{} requests, {} copies re-published, {} e-mails of {expected_mail}",
        requests.len(),
        verdict.copies,
        mail.distinct
    );
}
