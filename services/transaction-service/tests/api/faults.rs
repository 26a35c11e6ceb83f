//! Database faults: SQLite's disk filling up (a size limit the test sets with
//! `PRAGMA max_page_count`, then lifts) and PostgreSQL restarted under load (a private cluster
//! of the test's own). While the database is away a request is answered 503 with a problem
//! that says why and `Retry-After`, never a 500; nothing is lost (every accepted transfer gets
//! exactly one outcome, refused ones get in when retried, money is conserved); and the service
//! recovers by itself, without a restart.

use std::sync::{Arc, Mutex};

use platform::db_outage::RETRY_AFTER_SECS;
use platform::testing::{eventually, PrivateCluster, TestApp, DEADLINE};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use transaction_service::{LedgerSettings, TransactionService};

use crate::helpers::{Answer, Ledger};

/// What the payer holds at the start: more than every transfer of a test together.
const FUNDS: u64 = 100_000;
/// How many transfers may go in before the full disk refuses one (free pages in the file).
const MAX_BEFORE_FULL: usize = 5_000;
/// The accepted transfers each load task waits for before and after the restart.
const LOAD_STEP: usize = 20;
/// SQLite's default page limit, once the test lifts its own.
const NO_PAGE_LIMIT: u64 = 1_073_741_823;

/// A transfer of 1 from the payer to the payee under `id`.
fn transfer(id: &str) -> Value {
    json!({"transactionId": id, "from": "payer", "to": "payee", "amount": "1"})
}

/// Asserts that `answer` is the 503 problem of a database outage whose detail says `why`.
fn assert_outage(answer: &Answer, why: &str) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.retry_after, Some(RETRY_AFTER_SECS.to_string()));
    assert_eq!(answer.body["status"], 503);
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(why) && detail.contains("try again later"),
        "{detail}"
    );
}

/// Opens the payer's and the payee's accounts and funds the payer with [`FUNDS`].
async fn fund(ledger: &Ledger) {
    ledger.open_accounts(&["payer", "payee"]).await;
    ledger.deposit("funding", "payer", &FUNDS.to_string()).await;
}

/// Retries `id` (refused before) until it is accepted, as a client told to come back does.
async fn retry_until_accepted(ledger: &Ledger, id: &str) {
    let answer = eventually(
        &format!("{id} to be accepted on retry"),
        DEADLINE,
        || async {
            let answer = ledger.post_answer(&transfer(id)).await;
            (answer.status != 503).then_some(answer)
        },
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
}

/// Every transfer in `accepted` is processed, each exactly once, and no money was made or
/// lost: the payee holds one per transfer, the payer the rest.
async fn assert_each_processed_once(ledger: &Ledger, accepted: &[String]) {
    for id in accepted {
        ledger.processed(id).await;
    }
    for id in accepted {
        // A record published twice (same event) is one outcome; two different ones are not.
        let mut outcomes: Vec<String> = ledger
            .outcomes_for(id)
            .iter()
            .map(|(_, payload)| payload.to_string())
            .collect();
        outcomes.sort();
        outcomes.dedup();
        assert_eq!(outcomes.len(), 1, "{id}: {outcomes:?}");
    }
    let amount = |text: String| text.parse::<f64>().expect("a decimal balance");
    let payee = amount(ledger.balance("payee").await);
    let payer = amount(ledger.balance("payer").await);
    assert_eq!(payee, accepted.len() as f64, "one per accepted transfer");
    assert_eq!(payer + payee, FUNDS as f64, "money is conserved");
}

fn on_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"))
}

/// Sets SQLite's page limit on the writer's connection (the pool has one); the limit cannot
/// go below the file's size, so 1 caps the file where it is.
async fn set_page_limit(ledger: &Ledger, pages: u64) {
    sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
        .execute(ledger.db.pool())
        .await
        .unwrap();
}

/// Posts transfers until one is refused; returns the accepted ids and the refused one.
async fn post_until_refused(ledger: &Ledger) -> (Vec<String>, String, Answer) {
    let mut accepted = Vec::new();
    for n in 0..MAX_BEFORE_FULL {
        let id = format!("full-{n}");
        let answer = ledger.post_answer(&transfer(&id)).await;
        if answer.status == 202 {
            accepted.push(id);
        } else {
            return (accepted, id, answer);
        }
    }
    panic!("{MAX_BEFORE_FULL} transfers went in: the disk never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_disk_refuses_with_503_loses_nothing_and_recovers_by_itself() {
    if on_postgres() {
        println!("skipped: the size limit is SQLite's (the PostgreSQL pass restarts a server)");
        return;
    }
    let ledger = Ledger::start(LedgerSettings::default()).await;
    fund(&ledger).await;

    // Full: transfers go in while the file has free pages, then one is refused.
    set_page_limit(&ledger, 1).await;
    let (mut accepted, refused, answer) = post_until_refused(&ledger).await;
    println!("the disk was full after {} transfers", accepted.len());
    assert_outage(&answer, "out of space");
    assert_eq!(ledger.get(&format!("/transactions/{refused}")).await.0, 404);

    // Space is back: the refused transfer gets in when retried, everything accepted is
    // processed once, new transfers go in.
    set_page_limit(&ledger, NO_PAGE_LIMIT).await;
    retry_until_accepted(&ledger, &refused).await;
    accepted.push(refused);
    let after = "after-full".to_string();
    assert_eq!(ledger.post_answer(&transfer(&after)).await.status, 202);
    accepted.push(after);
    assert_each_processed_once(&ledger, &accepted).await;
    ledger.stop().await;
}

/// The transfers a load task sent: accepted ids and refused ones (with their answers).
#[derive(Default)]
struct Load {
    accepted: Vec<String>,
    refused: Vec<(String, Answer)>,
}

/// Posts transfers `<prefix>-<n>` one after another until `stop`, recording each answer.
async fn load(
    ledger: Arc<Ledger>,
    prefix: String,
    sent: Arc<Mutex<Load>>,
    stop: CancellationToken,
) {
    let mut n = 0;
    while !stop.is_cancelled() {
        let id = format!("{prefix}-{n}");
        n += 1;
        let answer = ledger.post_answer(&transfer(&id)).await;
        let mut sent = sent.lock().unwrap();
        match answer.status {
            202 => sent.accepted.push(id),
            _ => sent.refused.push((id, answer)),
        }
    }
}

/// Waits until the load has `n` accepted transfers in all.
async fn wait_accepted(sent: &Mutex<Load>, n: usize) {
    eventually(&format!("{n} accepted transfers"), DEADLINE, || async {
        (sent.lock().unwrap().accepted.len() >= n).then_some(())
    })
    .await;
}

/// While the server is stopped: a transfer is refused with the outage's problem and
/// `/readyz` says not ready, naming the database.
async fn assert_refused_while_stopped(ledger: &Ledger) {
    let answer = ledger.post_answer(&transfer("while-stopped")).await;
    assert_outage(&answer, "cannot be reached");
    let (status, report) = ledger.get("/readyz").await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["status"], "not_ready", "{report}");
    assert_eq!(report["checks"]["database"]["ok"], false, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_loses_nothing_and_recovers_by_itself() {
    if !on_postgres() {
        println!("skipped: a PostgreSQL server is restarted (the SQLite pass fills a disk)");
        return;
    }
    let cluster = PrivateCluster::start().await.expect("a private cluster");
    let app = TestApp::of::<TransactionService>().database_url(cluster.url());
    let ledger = Arc::new(Ledger::collecting(app.run(LedgerSettings::default()).await));
    fund(&ledger).await;
    let (sent, stop) = (
        Arc::new(Mutex::new(Load::default())),
        CancellationToken::new(),
    );
    let tasks: Vec<_> = (0..2)
        .map(|task| {
            let load = load(
                Arc::clone(&ledger),
                format!("load{task}"),
                Arc::clone(&sent),
                stop.clone(),
            );
            tokio::spawn(load)
        })
        .collect();

    wait_accepted(&sent, LOAD_STEP).await;
    cluster.stop_server().await.expect("server stopped");
    assert_refused_while_stopped(&ledger).await;
    cluster.start_server().await.expect("server started again");
    let before = sent.lock().unwrap().accepted.len();
    wait_accepted(&sent, before + LOAD_STEP).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }

    let Load {
        mut accepted,
        refused,
    } = std::mem::take(&mut *sent.lock().unwrap());
    println!(
        "restart under load: {} transfers accepted, {} refused with 503 (retried below)",
        accepted.len(),
        refused.len()
    );
    for (id, answer) in &refused {
        assert_outage(answer, "");
        retry_until_accepted(&ledger, id).await;
        accepted.push(id.clone());
    }
    retry_until_accepted(&ledger, "while-stopped").await;
    accepted.push("while-stopped".into());
    assert_each_processed_once(&ledger, &accepted).await;
    Arc::into_inner(ledger)
        .expect("the load tasks ended")
        .stop()
        .await;
}
