//! SIGTERM under load: transaction-service is asked to stop while requests keep arriving and
//! records are being processed. It must answer every request it accepted, exit 0 in time, leave
//! its consumer offsets committed for all it processed, and after the restart every accepted
//! request gets exactly one outcome, published once (nothing processed or published twice).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contracts::topics;
use futures::StreamExt;
use platform::testing::poll_until;
use serde_json::{json, Value};
use system_tests::{
    balances, committed_total, count_rows, register_accounts, settled_mail, try_post, Lcg, Stack,
    Verdict,
};

const CUSTOMERS: usize = 4;
/// Transfers prepared; the load sends them until the service has stopped.
const TRANSFERS: usize = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_in_flight_requests_and_repeats_nothing() {
    let _turn = crate::exclusive().await;
    let mut stack = Stack::start(&[]).await;
    let client = reqwest::Client::new();
    let transactions_url = format!("{}/transactions", stack.url("transaction-service"));
    let accounts: Vec<String> = (0..CUSTOMERS).map(|n| format!("acct-{n}")).collect();
    register_accounts(&client, &stack, &accounts).await;

    let mut bodies: Vec<Value> = accounts
        .iter()
        .map(|id| json!({"transactionId": format!("dep-{id}"), "to": id, "amount": "500.00"}))
        .collect();
    let mut random = Lcg::new(20_261_207);
    for n in 0..TRANSFERS {
        let from = random.below(CUSTOMERS as u64) as usize;
        let to = (from + 1 + random.below(CUSTOMERS as u64 - 1) as usize) % CUSTOMERS;
        let cents = 1 + random.below(30_000);
        bodies.push(
            json!({"transactionId": format!("t{n:04}"), "from": accounts[from],
            "to": accounts[to], "amount": format!("{}.{:02}", cents / 100, cents % 100)}),
        );
    }
    // The load: four requests at a time, in the background, until the service refuses one (so
    // that requests are still arriving at the SIGTERM, however fast the service is).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, url, stop) = (client.clone(), transactions_url.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let refused = Arc::clone(&stop);
            futures::stream::iter(bodies)
                .take_while(move |_| std::future::ready(!stop.load(Ordering::SeqCst)))
                .map(|body| {
                    let (client, url, refused) =
                        (client.clone(), url.clone(), Arc::clone(&refused));
                    async move {
                        let answered = match try_post(&client, &url, &body).await {
                            Ok((status, answer)) => {
                                assert_eq!(status, 202, "{body}: {answer}");
                                true
                            }
                            Err(_) => {
                                refused.store(true, Ordering::SeqCst);
                                false
                            }
                        };
                        (body, answered)
                    }
                })
                .buffered(4)
                .collect::<Vec<(Value, bool)>>()
                .await
        })
    };

    // SIGTERM once processing is under way and while requests are still arriving.
    let probe = format!("{transactions_url}/t0020");
    let started = poll_until(Duration::from_secs(60), || {
        let request = client.get(&probe).send();
        async move {
            let body: Value = request.await.ok()?.json().await.ok()?;
            (body["status"] == "processed" || body["status"] == "failed").then_some(())
        }
    })
    .await;
    assert!(started.is_some(), "processing started");
    assert!(
        !load.is_finished(),
        "requests still arriving at the SIGTERM"
    );
    let service = stack.service("transaction-service");
    service.signal_terminate();
    let status = service
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exited within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "clean exit: {status}");
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.expect("load");
    let ids: Vec<String> = sent
        .iter()
        .map(|(b, _)| b["transactionId"].as_str().expect("id").to_string())
        .collect();
    let unanswered: Vec<Value> = sent
        .into_iter()
        .filter_map(|(body, answered)| (!answered).then_some(body))
        .collect();

    // What it left behind: no request accepted without an answer, offsets for all it decided.
    let db = stack.services["transaction-service"]
        .database_url()
        .to_string();
    let accepted = count_rows(&db, "SELECT COUNT(*) AS n FROM transactions").await;
    assert_eq!(
        accepted as usize,
        ids.len() - unanswered.len(),
        "every request the service accepted was answered"
    );
    let decided = count_rows(
        &db,
        "SELECT COUNT(*) AS n FROM transactions WHERE status <> 'requested'",
    )
    .await;
    let unsent = count_rows(
        &db,
        "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL",
    )
    .await;
    let committed = committed_total(
        &stack.kafka,
        "transaction-service",
        topics::TRANSACTION_REQUESTED,
    );
    assert_eq!(
        committed, decided,
        "the consumer committed the offset of every record it processed"
    );
    println!(
        "stopped after accepting {accepted} of {} requests ({} refused), {decided} decided, \
         {unsent} events left in the outbox",
        ids.len(),
        unanswered.len()
    );
    // SQLite: a stopping relay publishes until a round finds nothing. PostgreSQL: rows may be
    // left (customer-service's stop left one in 1 of 10 runs, not explained yet); they go out
    // after the restart (the verdict below).
    if !db.starts_with("postgres") {
        assert_eq!(unsent, 0, "the relay drained the outbox before it stopped");
    }

    // Restart; the refused requests are sent again.
    stack.service("transaction-service").start().await;
    for body in &unanswered {
        let (status, answer) = try_post(&client, &transactions_url, body)
            .await
            .expect("answer after the restart");
        assert_eq!(status, 202, "{body}: {answer}");
    }

    let verdict = Verdict::read(&stack.kafka, &ids, Duration::from_secs(120)).await;
    verdict.assert_one_outcome_each();
    assert_eq!(verdict.copies, 0, "an outcome was published twice");
    let actual = balances(&client, &stack, &accounts).await;
    for (account, balance) in &actual {
        assert_eq!(Some(balance), verdict.balances.get(account), "{account}");
    }
    assert_eq!(
        actual.values().sum::<i64>(),
        verdict.net_deposits,
        "money is conserved"
    );

    let mail = settled_mail(&stack, CUSTOMERS + verdict.alerts, Duration::from_secs(90)).await;
    assert!(mail.double_sent.is_empty(), "{:?}", mail.double_sent);
}
