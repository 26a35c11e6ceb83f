//! Secrets and personal data stay out of real output: the seed flow runs with marker secrets —
//! the Event Streams password (the services on SASL_SSL), a database password in the URL's user
//! information and as `?password=` (on PostgreSQL), an API key, an SMTP password — and JSON logs;
//! then every log line of every service, `/metrics`, `/openapi.json` and error bodies (401, 404,
//! 409, 422) are searched for every marker, and the logs for the customers' names and e-mail
//! addresses.

use platform::kafka::SaslMechanism;
use platform::testing::{LocalKafka, SmtpServer};
use serde_json::json;
use system_tests::{full_access_entry, get, post, seed_flow, Stack, SEED_CUSTOMERS, SERVICES};

const API_KEY: &str = "apikey-MARKER-7f3a9c-0123456";
const SMTP_PASSWORD: &str = "smtp-MARKER-41d2e8";
const DB_USERINFO_PASSWORD: &str = "dbuser-MARKER-9b6c05";
const DB_QUERY_PASSWORD: &str = "dbquery-MARKER-2e7d13";

/// `url` (a PostgreSQL URL without password) with both database password markers.
fn with_database_passwords(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a user in the URL");
    format!("{scheme}://{user}:{DB_USERINFO_PASSWORD}@{host}?password={DB_QUERY_PASSWORD}")
}

/// Where `marker` occurs in `text` (named `what`), as a line for the failure message.
fn leaks(what: &str, text: &str, markers: &[&str]) -> Vec<String> {
    markers
        .iter()
        .filter(|marker| text.contains(*marker))
        .map(|marker| format!("{what} contains `{marker}`"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_and_no_personal_data_reaches_logs_metrics_documents_or_errors() {
    let _turn = crate::shared().await;
    let postgres = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres"));
    if !postgres {
        println!(
            "secrets: database password markers skipped: SQLite URLs take no password \
             (set TEST_DATABASE_URL to a PostgreSQL server to check them)"
        );
    }
    let (stack, kafka_password) = start_with_marked_secrets(postgres).await;
    let mut secrets = vec![kafka_password.as_str(), API_KEY, SMTP_PASSWORD];
    if postgres {
        secrets.extend([DB_USERINFO_PASSWORD, DB_QUERY_PASSWORD]);
    }
    let client = system_tests::keyed_client(API_KEY);
    seed_flow(&client, &stack).await;

    let mut bodies = error_bodies(&client, &stack).await;
    bodies.extend(served_documents(&client, &stack).await);
    let mut found = Vec::new();
    for (what, text) in &bodies {
        found.extend(leaks(what, text, &secrets));
    }
    let all_logs = search_logs(&stack, &secrets, &mut found);
    assert!(found.is_empty(), "{}", found.join("\n"));

    // The searched logs are the real ones: they tell of the run, in masked form.
    assert!(all_logs.contains("SASL_SSL"), "{all_logs}");
    for (_, _, email) in &SEED_CUSTOMERS {
        let masked = platform::redact::mask_email(email);
        assert!(
            all_logs.contains(&format!("\"recipient\":\"{masked}\"")),
            "a sent notification to {masked} is logged"
        );
    }
    if postgres {
        assert!(
            all_logs.contains("password=***"),
            "the database URL is logged, redacted"
        );
    }
}

/// The stack on SASL_SSL, with an API key, an SMTP login, JSON logs and (on PostgreSQL) both
/// database password markers; returns it with the Event Streams password it uses.
async fn start_with_marked_secrets(postgres: bool) -> (Stack, String) {
    let local = LocalKafka::load();
    let kafka = local.isolated_sasl_ssl(SaslMechanism::Plain);
    let kafka_password = local.plain_password.expose().to_string();
    let smtp = SmtpServer::start_with_login("mailer", SMTP_PASSWORD).await;
    let keys = full_access_entry("ops", API_KEY);
    let stack = Stack::start_with(
        kafka,
        smtp,
        &[("API_KEYS", keys.as_str()), ("LOG_FORMAT", "json")],
        |_, env| {
            if postgres {
                for (name, value) in env.iter_mut() {
                    if name == "DATABASE_URL" {
                        *value = with_database_passwords(value);
                    }
                }
            }
        },
    )
    .await;
    (stack, kafka_password)
}

/// Error bodies (401, 404, 409, 422), each status asserted so the bodies searched are the real
/// ones, named for the failure message.
async fn error_bodies(client: &reqwest::Client, stack: &Stack) -> Vec<(String, String)> {
    let customers = format!("{}/app/customers", stack.url("customer-service"));
    let transactions = format!("{}/transactions", stack.url("transaction-service"));
    let anonymous = reqwest::Client::new();
    let errors = [
        (
            401,
            post(&anonymous, &customers, json!({"name": "A", "email": "a@example.com"})).await,
        ),
        (
            401,
            post(&anonymous, &transactions, json!({"to": "cust-001", "amount": 1})).await,
        ),
        (404, get(client, &format!("{customers}/nobody")).await),
        (404, get(client, &format!("{transactions}/nothing")).await),
        (
            409,
            post(
                client,
                &customers,
                json!({"id": "cust-001", "name": "Someone Else", "email": "else@example.com"}),
            )
            .await,
        ),
        (
            409,
            post(
                client,
                &transactions,
                json!({"from": "cust-001", "to": "cust-002", "amount": 7, "transactionId": "txn-123"}),
            )
            .await,
        ),
        (
            422,
            post(client, &customers, json!({"name": "", "email": "not-an-address"})).await,
        ),
        (
            422,
            post(client, &transactions, json!({"to": "cust-001", "amount": "1.234"})).await,
        ),
    ];
    let mut bodies = Vec::new();
    for (i, (expected, (status, body))) in errors.into_iter().enumerate() {
        assert_eq!(status, expected, "error {i}: {body}");
        assert!(body["detail"].is_string(), "error {i} is a problem: {body}");
        bodies.push((format!("error {i} ({status})"), body.to_string()));
    }
    bodies
}

/// What every service serves to anyone who asks: `/metrics` and `/openapi.json`.
async fn served_documents(client: &reqwest::Client, stack: &Stack) -> Vec<(String, String)> {
    let mut bodies = Vec::new();
    for name in SERVICES {
        for path in ["/metrics", "/openapi.json"] {
            let response = client
                .get(format!("{}{path}", stack.url(name)))
                .send()
                .await
                .expect("request");
            assert!(response.status().is_success(), "{name}{path}");
            let text = response.text().await.expect("body");
            assert!(!text.is_empty(), "{name}{path}");
            bodies.push((format!("{name}{path}"), text));
        }
    }
    bodies
}

/// Checks that every log line of every service is JSON, adds to `found` each secret or piece
/// of personal data a line holds, and returns all the logs.
fn search_logs(stack: &Stack, secrets: &[&str], found: &mut Vec<String>) -> String {
    let mut personal: Vec<&str> = Vec::new();
    for (_, name, email) in &SEED_CUSTOMERS {
        personal.extend([*name, *email]);
    }
    let mut all_logs = String::new();
    for name in SERVICES {
        let log = stack.services[name].log();
        assert!(log.lines().count() > 3, "{name} logged:\n{log}");
        for (n, line) in log
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{name} log line {} is not JSON: {line}",
                n + 1
            );
            let what = format!("{name} log line {}", n + 1);
            found.extend(leaks(&what, line, secrets));
            found.extend(leaks(&what, line, &personal));
        }
        all_logs.push_str(&log);
    }
    all_logs
}
