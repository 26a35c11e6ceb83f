//! The HTTP API against the real broker and database: the seed's request, validation problems,
//! idempotency, API keys, reads and the OpenAPI document.

use crate::helpers::Ledger;
use contracts::topics;
use platform::auth::ApiKeys;
use platform::testing::{eventually, RecordExt, Reply, TestApp, DEADLINE};
use serde_json::{json, Value};
use transaction_service::{LedgerSettings, TransactionService};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_transfer_is_accepted_and_fails_for_insufficient_funds() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["cust-001", "cust-002"]).await;

    let (status, body) = ledger
        .post_transaction(json!({"from": "cust-001", "to": "cust-002", "amount": 100, "transactionId": "txn-123"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"transactionId": "txn-123", "status": "requested"})
    );

    let failed = ledger.failed("txn-123").await;
    assert_eq!(failed["reason"], "insufficient_funds");
    assert_eq!(failed["kind"], "transfer");
    assert_eq!(failed["from"], "cust-001");
    assert_eq!(failed["to"], "cust-002");
    assert_eq!(failed["amount"], "100.00");
    assert_eq!(failed["currency"], "USD");
    assert!(
        failed["message"].as_str().unwrap().contains("0.00 USD"),
        "{failed}"
    );
    assert!(failed["failedAt"].is_string());

    let (status, txn) = ledger.get("/transactions/txn-123").await;
    assert_eq!(status, 200);
    assert_eq!(txn["status"], "failed");
    assert_eq!(txn["reason"], "insufficient_funds");
    assert_eq!(txn["amount"], "100.00");
    assert!(txn["completedAt"].is_string());
    assert!(txn.get("balances").is_none());

    // The event record is keyed by the debited account, with CloudEvents headers.
    let record = ledger
        .events
        .on(topics::TRANSACTION_FAILED)
        .into_iter()
        .next()
        .expect("failed record");
    assert_eq!(record.key.as_deref(), Some("cust-001"));
    assert_eq!(
        record.header("ce_type").as_deref(),
        Some("transaction.failed.v1")
    );
    assert_eq!(
        record.header("ce_source").as_deref(),
        Some("/transaction-service")
    );
    assert!(record.header("ce_id").is_some());

    assert_eq!(ledger.balance("cust-001").await, "0.00");
    assert_eq!(ledger.balance("cust-002").await, "0.00");
    ledger.stop().await;
}

/// Invalid bodies, each with the field its 422 names.
fn invalid_bodies() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"amount": 10}), "to"),
        (json!({"from": null, "to": null, "amount": 10}), "to"),
        (json!({"from": "a", "to": "a", "amount": 10}), "to"),
        (json!({"to": "a"}), "amount"),
        (json!({"to": "a", "amount": 0}), "amount"),
        (json!({"to": "a", "amount": -5}), "amount"),
        (json!({"to": "a", "amount": "-5"}), "amount"),
        (json!({"to": "a", "amount": 10.001}), "amount"),
        (json!({"to": "a", "amount": "1.001"}), "amount"),
        (json!({"to": "a", "amount": "ten"}), "amount"),
        (json!({"to": "a", "amount": true}), "amount"),
        (
            json!({"to": "a", "amount": "99999999999999999999"}),
            "amount",
        ),
        (
            json!({"to": "a", "amount": 5, "currency": "DOLLAR"}),
            "currency",
        ),
        (
            json!({"to": "a", "amount": 5, "currency": "U5D"}),
            "currency",
        ),
        (json!({"to": "a", "amount": 5, "currency": 840}), "currency"),
        (
            json!({"to": "a", "amount": 5, "transactionId": ""}),
            "transactionId",
        ),
        (
            json!({"to": "a", "amount": 5, "transactionId": "no spaces"}),
            "transactionId",
        ),
        (
            json!({"to": "a", "amount": 5, "transactionId": "x".repeat(65)}),
            "transactionId",
        ),
        (
            json!({"to": "a", "amount": 5, "transactionId": 12}),
            "transactionId",
        ),
        (json!({"to": "", "amount": 5}), "to"),
        (json!({"from": "has space", "amount": 5}), "from"),
        (json!({"to": ["a"], "amount": 5}), "to"),
        (json!({"form": "a", "to": "b", "amount": 5}), "form"),
        // JPY has no minor unit.
        (
            json!({"to": "a", "amount": "1.5", "currency": "JPY"}),
            "amount",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_problems_naming_the_field() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    for (body, field) in invalid_bodies() {
        let (status, problem) = ledger.post_transaction(body.clone()).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(problem["field"], field, "{body} -> {problem}");
        assert_eq!(problem["status"], 422);
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{problem}"
        );
    }
    bodies_that_are_not_json_objects_are_problems(&ledger).await;
    unknown_resources_are_404_problems(&ledger).await;

    // Nothing invalid reached Kafka: a valid request afterwards is the only one.
    let (status, _) = ledger
        .post_transaction(json!({"to": "a", "amount": 5, "transactionId": "valid-1"}))
        .await;
    assert_eq!(status, 202);
    eventually("the valid request's event", DEADLINE, || async {
        (!ledger.events.on(topics::TRANSACTION_REQUESTED).is_empty()).then_some(())
    })
    .await;
    let requested = ledger.events.on(topics::TRANSACTION_REQUESTED);
    assert_eq!(requested.len(), 1);
    ledger.stop().await;
}

/// Not JSON (400), not an object (422), not declared as JSON (415): each a problem.
async fn bodies_that_are_not_json_objects_are_problems(ledger: &Ledger) {
    let url = ledger.url("/transactions");
    let response = ledger
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (status, _) = ledger.post_transaction(json!(["to", "a"])).await;
    assert_eq!(status, 422);
    let response = ledger
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"to": "a", "amount": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("application/json"));
}

/// Unknown transactions and accounts are 404 problems naming what was asked for.
async fn unknown_resources_are_404_problems(ledger: &Ledger) {
    let (status, problem) = ledger.get("/transactions/nope").await;
    assert_eq!(
        (status.as_u16(), problem["status"].clone()),
        (404, json!(404))
    );
    assert!(problem["detail"].as_str().unwrap().contains("nope"));
    let (status, _) = ledger.get("/accounts/nobody").await;
    assert_eq!(status, 404);
    let (status, _) = ledger.get("/accounts/nobody/entries").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_amount_gets_the_answer_of_the_same_amount_as_a_string() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    // (amount as written, what the 422 says; None: accepted)
    let cases = [
        ("100.999999999999999", Some("decimal places")),
        ("1234567890123456.789", Some("decimal places")),
        ("1234567890123456.78", Some("MAX_AMOUNT_MINOR")),
        ("1e2", Some("exponent")),
        ("1.5E1", Some("exponent")),
        ("0.000", Some("greater than zero")),
        ("12345678.91", None),
        ("100.10", None),
    ];
    for (n, (amount, refusal)) in cases.into_iter().enumerate() {
        let mut answers = Vec::new();
        for (form, text) in [
            ("number", amount.to_string()),
            ("string", format!("\"{amount}\"")),
        ] {
            let id = format!("exact-{n}-{form}");
            let body = format!(r#"{{"to": "a", "amount": {text}, "transactionId": "{id}"}}"#);
            let reply = ledger.post_transaction_raw(body.clone()).await;
            let (status, answer) = (reply.status.as_u16(), reply.body);
            match refusal {
                Some(reason) => {
                    assert_eq!(
                        (status, answer["field"].as_str()),
                        (422, Some("amount")),
                        "{body}: {answer}"
                    );
                    let detail = answer["detail"].as_str().unwrap_or_default();
                    assert!(detail.contains(reason), "{body}: {detail}");
                }
                None => {
                    assert_eq!(status, 202, "{body}: {answer}");
                    let (_, stored) = ledger.get(&format!("/transactions/{id}")).await;
                    let expected = contracts::Money::parse(amount, contracts::Currency::USD)
                        .unwrap()
                        .to_decimal_string();
                    assert_eq!(stored["amount"], expected.as_str(), "{body}");
                }
            }
            answers.push((status, answer["field"].clone()));
        }
        assert_eq!(answers[0], answers[1], "{amount}: number and string differ");
    }
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_input_is_a_problem_naming_the_limit() {
    let settings = LedgerSettings {
        max_amount_minor: 10_000,
        ..LedgerSettings::default()
    };
    let ledger = Ledger::start(settings).await;

    // MAX_AMOUNT_MINOR: 100.00 USD here.
    let (status, _) = ledger
        .post_transaction(json!({"to": "a", "amount": "100.00"}))
        .await;
    assert_eq!(status, 202);
    let (status, problem) = ledger
        .post_transaction(json!({"to": "a", "amount": "100.01"}))
        .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("amount")),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("100.00 USD") && detail.contains("MAX_AMOUNT_MINOR"),
        "{detail}"
    );
    ids_over_their_limit_are_problems(&ledger).await;
    page_sizes_out_of_range_are_problems(&ledger).await;
    a_body_over_64_kib_is_a_413_problem(&ledger).await;
    ledger.stop().await;
}

/// Ids in bodies and paths over their limits: 422 naming the field and the limit.
async fn ids_over_their_limit_are_problems(ledger: &Ledger) {
    let (status, problem) = ledger
        .post_transaction(json!({"to": "x".repeat(129), "amount": 1}))
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("to")));
    assert!(
        problem["detail"].as_str().unwrap().contains("128"),
        "{problem}"
    );
    for (path, limit) in [
        (format!("/transactions/{}", "t".repeat(257)), 256),
        (format!("/accounts/{}", "a".repeat(129)), 128),
        (format!("/accounts/{}/entries", "a".repeat(129)), 128),
    ] {
        let (status, problem) = ledger.get(&path).await;
        assert_eq!(
            (status.as_u16(), problem["field"].as_str()),
            (422, Some("id")),
            "{path}"
        );
        assert_eq!(problem["limit"], limit, "{path}: {problem}");
    }
    let (status, _) = ledger
        .get(&format!("/transactions/{}", "t".repeat(256)))
        .await;
    assert_eq!(status, 404);
}

/// Page sizes and cursors out of range: 422 saying what is allowed.
async fn page_sizes_out_of_range_are_problems(ledger: &Ledger) {
    for query in ["limit=1001", "limit=0", "limit=", "after=-1", "limit=x"] {
        let (status, problem) = ledger.get(&format!("/accounts/a/entries?{query}")).await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("must be an integer from"),
            "{problem}"
        );
    }
}

/// A body over 64 KiB: 413 problem naming the limit.
async fn a_body_over_64_kib_is_a_413_problem(ledger: &Ledger) {
    let padding = "x".repeat(platform::limits::MAX_BODY_BYTES);
    let Reply {
        status,
        content_type,
        body: problem,
    } = ledger
        .post_transaction_raw(format!(r#"{{"to": "a", "amount": 1, "pad": "{padding}"}}"#))
        .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["limit"], platform::limits::MAX_BODY_BYTES);
    assert!(
        problem["detail"].as_str().unwrap().contains("65536 bytes"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_gets_the_same_answer_and_another_body_conflicts() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["alice"]).await;

    let request = json!({"to": "alice", "amount": 12.5, "transactionId": "dep-1"});
    let (status, first) = ledger.post_transaction(request.clone()).await;
    assert_eq!(status, 202);
    let (status, again) = ledger.post_transaction(request.clone()).await;
    assert_eq!((status, &again), (202, &first));
    // The same amount written differently is the same request.
    let (status, again) = ledger
        .post_transaction(
            json!({"to": "alice", "amount": "12.50", "currency": "usd", "transactionId": "dep-1"}),
        )
        .await;
    assert_eq!((status, &again), (202, &first));

    let (status, problem) = ledger
        .post_transaction(json!({"to": "alice", "amount": 13, "transactionId": "dep-1"}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("dep-1"));
    let (status, _) = ledger
        .post_transaction(json!({"from": "alice", "amount": 12.5, "transactionId": "dep-1"}))
        .await;
    assert_eq!(status, 409);

    ledger.processed("dep-1").await;
    // Repeating after processing still answers the same.
    let (status, again) = ledger.post_transaction(request).await;
    assert_eq!((status, &again), (202, &first));

    // A later request on the same account (same partition) marks the point by which any
    // duplicate event or outcome of dep-1 would have been seen.
    ledger.deposit("marker", "alice", "1").await;
    assert_eq!(
        ledger
            .payloads_for(topics::TRANSACTION_REQUESTED, "dep-1")
            .len(),
        1
    );
    assert_eq!(ledger.outcomes_for("dep-1").len(), 1);
    assert_eq!(ledger.balance("alice").await, "13.50");

    // Generated ids are distinct.
    let (_, a) = ledger
        .post_transaction(json!({"to": "alice", "amount": 1}))
        .await;
    let (_, b) = ledger
        .post_transaction(json!({"to": "alice", "amount": 1}))
        .await;
    let (a, b) = (
        a["transactionId"].as_str().unwrap(),
        b["transactionId"].as_str().unwrap(),
    );
    assert!(a.starts_with("txn-") && b.starts_with("txn-") && a != b);
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_id_record_it_once() {
    // Sent at once, the requests land in one group or in several groups committed at the same
    // time (PostgreSQL runs several committers): either way one of them records the transaction.
    let ledger = Ledger::start(LedgerSettings::default()).await;
    ledger.open_accounts(&["carol"]).await;
    let request = json!({"to": "carol", "amount": 3, "transactionId": "dep-race"});
    let answers =
        futures::future::join_all((0..24).map(|_| ledger.post_transaction(request.clone()))).await;
    let first = &answers[0].1;
    for (status, body) in &answers {
        assert_eq!((*status, body), (202, first));
    }
    // Two bodies under one id: one of them is recorded, every request of the other conflicts.
    let mixed = futures::future::join_all((0..24).map(|i| {
        let amount = if i % 2 == 0 { 4 } else { 5 };
        ledger.post_transaction(
            json!({"to": "carol", "amount": amount, "transactionId": "dep-race-2"}),
        )
    }))
    .await;
    assert!(
        mixed
            .iter()
            .all(|(status, _)| *status == 202 || *status == 409),
        "{mixed:?}"
    );
    let accepted = mixed.iter().filter(|(status, _)| *status == 202).count();
    assert_eq!(
        accepted,
        mixed.len() / 2,
        "the winning body's requests, and only those: {mixed:?}"
    );

    ledger.processed("dep-race").await;
    let winner = ledger.processed("dep-race-2").await;
    ledger.deposit("marker", "carol", "1").await;
    for id in ["dep-race", "dep-race-2"] {
        assert_eq!(
            ledger.payloads_for(topics::TRANSACTION_REQUESTED, id).len(),
            1
        );
        assert_eq!(ledger.outcomes_for(id).len(), 1);
    }
    let expected = if winner["amount"] == "4.00" {
        "8.00"
    } else {
        "9.00"
    };
    assert_eq!(ledger.balance("carol").await, expected, "{winner}");
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_key_of_the_right_scope_when_keys_are_configured() {
    const TELLER: &str = "s3cret-teller-0123456789abc";
    const AUDITOR: &str = "r3ad-auditor-0123456789abcd";
    const REGISTRAR: &str = "w-registrar-0123456789abcde";
    let keys = ApiKeys::parse([
        format!("teller:transactions:read+transactions:write:{TELLER}").as_str(),
        format!("auditor:transactions:read:{AUDITOR}").as_str(),
        format!("registrar:customers:read+customers:write:{REGISTRAR}").as_str(),
    ])
    .unwrap();
    let app = TestApp::of::<TransactionService>().api_keys(keys);
    let ledger = Ledger::collecting(app.run(LedgerSettings::default()).await);
    let body = json!({"to": "a", "amount": 1, "transactionId": "k-1"});
    let call = |method: reqwest::Method, path: &str, authorization: Option<&str>| {
        let mut request = ledger.http.request(method.clone(), ledger.url(path));
        if method == reqwest::Method::POST {
            request = request.json(&body);
        }
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        async move { request.send().await.unwrap() }
    };
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    for (method, path) in [
        (&post, "/transactions"),
        (&get, "/transactions/k-1"),
        (&get, "/accounts/a"),
        (&get, "/accounts/a/entries"),
    ] {
        let response = call(method.clone(), path, None).await;
        assert_eq!(response.status().as_u16(), 401, "{method} {path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let response = call(method.clone(), path, Some("Bearer wrong")).await;
        assert_eq!(response.status().as_u16(), 401, "{method} {path}");
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
    let (auditor, registrar) = (format!("Bearer {AUDITOR}"), format!("Bearer {REGISTRAR}"));
    let response = call(post.clone(), "/transactions", Some(&auditor)).await;
    assert_eq!(response.status().as_u16(), 403, "a read key cannot write");
    let response = call(post.clone(), "/transactions", Some(&registrar)).await;
    assert_eq!(
        response.status().as_u16(),
        403,
        "a registration key cannot move money"
    );
    let response = call(get.clone(), "/accounts/a", Some(&registrar)).await;
    assert_eq!(response.status().as_u16(), 403, "nor read the ledger");
    let teller = format!("bearer {TELLER}");
    let response = call(post.clone(), "/transactions", Some(&teller)).await;
    assert_eq!(
        response.status().as_u16(),
        202,
        "the scheme is case-insensitive"
    );
    let response = call(get.clone(), "/transactions/k-1", Some(&auditor)).await;
    assert_eq!(response.status().as_u16(), 200);
    let response = call(get.clone(), "/transactions/k-1", Some(&teller)).await;
    assert_eq!(
        response.status().as_u16(),
        200,
        "the teller's key also reads"
    );
    for open in ["/openapi.json", "/healthz", "/metrics"] {
        let response = call(get.clone(), open, None).await;
        assert_eq!(response.status().as_u16(), 200, "{open} stays open");
    }
    ledger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_api() {
    let ledger = Ledger::start(LedgerSettings::default()).await;
    let (status, doc) = ledger.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/transactions",
        "/transactions/{id}",
        "/accounts/{id}",
        "/accounts/{id}/entries",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["paths"]["/transactions"]["post"]["responses"]
        .get("202")
        .is_some());
    ledger.stop().await;
}
