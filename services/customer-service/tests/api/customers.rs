//! Registering, reading and listing customers: status codes, problems, events, limits, keys.

use platform::auth::ApiKeys;
use reqwest::StatusCode;
use serde_json::{json, Value};

use platform::testing::RecordExt;

use crate::helpers::{events_for, App, CUSTOMERS};

#[tokio::test(flavor = "multi_thread")]
async fn seed_request_creates_the_customer_and_publishes_customer_created() {
    let app = App::start().await;
    let body = app
        .create(json!({"id": "cust-001", "name": "John Doe", "email": "john@example.com"}))
        .await;
    assert_eq!(body["id"], "cust-001");
    assert_eq!(body["name"], "John Doe");
    assert_eq!(body["email"], "john@example.com");
    let created_at = body["createdAt"].as_str().expect("createdAt");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339 createdAt");

    let events = app.published_events().await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.key.as_deref(), Some("cust-001"));
    assert!(event.header("ce_id").is_some_and(|id| !id.is_empty()));
    assert_eq!(event.header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(
        event.header("ce_type").as_deref(),
        Some("customer.created.v1")
    );
    assert_eq!(
        event.header("ce_source").as_deref(),
        Some("/customer-service")
    );
    let ce_time = event.header("ce_time").expect("ce_time");
    chrono::DateTime::parse_from_rfc3339(&ce_time).expect("RFC 3339 ce_time");
    assert_eq!(
        event.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        event.json(),
        json!({"id": "cust-001", "name": "John Doe", "email": "john@example.com",
               "createdAt": created_at})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_id_is_generated_and_unknown_fields_are_ignored() {
    let app = App::start().await;
    let body = app
        .create(json!({"name": "Ann", "email": "ann@example.com", "nickname": "A"}))
        .await;
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("cust-"), "{id}");
    assert!(body.get("nickname").is_none());
    let (status, found) = app.get(&format!("/app/customers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_invalid_field_is_a_422_naming_it() {
    let app = App::start().await;
    let cases = [
        (json!({"id": "", "name": "A", "email": "a@b.io"}), "id"),
        (
            json!({"id": "has space", "name": "A", "email": "a@b.io"}),
            "id",
        ),
        (
            json!({"id": "x".repeat(65), "name": "A", "email": "a@b.io"}),
            "id",
        ),
        (json!({"id": 42, "name": "A", "email": "a@b.io"}), "id"),
        (json!({"email": "a@b.io"}), "name"),
        (json!({"name": "   ", "email": "a@b.io"}), "name"),
        (json!({"name": "n".repeat(201), "email": "a@b.io"}), "name"),
        (json!({"name": 5, "email": "a@b.io"}), "name"),
        (json!({"name": "A"}), "email"),
        (json!({"name": "A", "email": "not-an-email"}), "email"),
        (json!({"name": "A", "email": "a@@b.io"}), "email"),
        (json!({"name": "A", "email": "@b.io"}), "email"),
        (json!({"name": "A", "email": "a@localhost"}), "email"),
        (json!({"name": "A", "email": "a b@c.io"}), "email"),
        (
            json!({"name": "A", "email": format!("{}@b.io", "a".repeat(250))}),
            "email",
        ),
        // Addresses the mailer (lettre) refuses: their welcome e-mail could never be sent.
        (json!({"name": "A", "email": "a..b@example.com"}), "email"),
        (json!({"name": "A", "email": ".a@example.com"}), "email"),
        (json!({"name": "A", "email": "a@-example.com"}), "email"),
        (
            json!({"name": "A", "email": "jos\u{e9}@example.com"}),
            "email",
        ),
        (
            json!({"name": "A", "email": format!("{}@example.com", "a".repeat(65))}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post(body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {problem}"
        );
        assert_eq!(problem["field"], field, "{body} -> {problem}");
        assert_eq!(problem["status"], 422);
    }
    let (_, page) = app.get("/app/customers").await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
    assert!(
        app.published_events().await.is_empty(),
        "nothing was published"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exact_repeat_is_200_and_publishes_no_second_event() {
    let app = App::start().await;
    let body = json!({"id": "cust-rep", "name": "Rita", "email": "rita@example.com"});
    let first = app.create(body.clone()).await;
    let (status, again) = app.post(body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "the stored customer, unchanged");
    // Surrounding whitespace is not a different body.
    let (status, _) = app
        .post(json!({"id": "cust-rep", "name": " Rita ", "email": "rita@example.com"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = app.published_events().await;
    assert_eq!(events_for(&events, "cust-rep"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_id_with_another_body_is_a_409() {
    let app = App::start().await;
    app.create(json!({"id": "cust-c", "name": "Carl", "email": "carl@example.com"}))
        .await;
    for other in [
        json!({"id": "cust-c", "name": "Carla", "email": "carl@example.com"}),
        json!({"id": "cust-c", "name": "Carl", "email": "carl@example.org"}),
    ] {
        let (status, problem) = app.post(other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("cust-c"));
    }
    let (_, stored) = app.get("/app/customers/cust-c").await;
    assert_eq!(stored["name"], "Carl");
    assert_eq!(events_for(&app.published_events().await, "cust-c"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_id_have_a_single_winner() {
    let app = App::start().await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..10 {
        let name = if i % 2 == 0 { "Even" } else { "Odd" };
        let body = json!({"id": "cust-race", "name": name, "email": "race@example.com"});
        let request = app.http.post(app.url(CUSTOMERS)).json(&body).send();
        requests.spawn(async move { (name, request.await.unwrap().status()) });
    }
    let outcomes = requests.join_all().await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, s)| *s == StatusCode::CREATED)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].0;
    for (name, status) in &outcomes {
        if *status == StatusCode::CREATED {
            continue;
        }
        let expected = if *name == winner {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(*status, expected, "{outcomes:?}");
    }
    assert_eq!(events_for(&app.published_events().await, "cust-race"), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_finds_a_customer_or_answers_404() {
    let app = App::start().await;
    let (_, created) = app
        .post(json!({"id": "cust-g", "name": "Gina", "email": "gina@example.com"}))
        .await;
    let (status, found) = app.get("/app/customers/cust-g").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, created);
    let (status, problem) = app.get("/app/customers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("nobody"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_is_in_creation_order_and_paged() {
    let app = App::start().await;
    for (id, name) in [("c-b", "B"), ("c-a", "A"), ("c-c", "C")] {
        app.create(json!({"id": id, "name": name, "email": format!("{id}@example.com")}))
            .await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, page) = app.get("/app/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), ["c-b", "c-a", "c-c"]);
    let (_, page) = app.get("/app/customers?limit=2").await;
    assert_eq!(ids(&page), ["c-b", "c-a"]);
    assert_eq!(page["limit"], 2);
    let (_, page) = app.get("/app/customers?limit=2&offset=2").await;
    assert_eq!(ids(&page), ["c-c"]);
    for bad in ["limit=0", "limit=100000", "limit=x", "offset=-1"] {
        let (status, problem) = app.get(&format!("/app/customers?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(problem["field"], bad.split('=').next().unwrap());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_limit_input_is_a_problem_naming_the_limit() {
    let app = App::start().await;
    let body_with = |field: &str, value: String| {
        let mut body = json!({"id": "lim-1", "name": "Lim It", "email": "lim@example.com"});
        body[field] = json!(value);
        body
    };
    // An address the mailer accepts (local part <= 64, labels <= 63) of `len` characters.
    let email_of = |len: usize| {
        format!(
            "{}@{}.{}.{}.com",
            "e".repeat(64),
            "d".repeat(63),
            "d".repeat(63),
            "d".repeat(len - 197)
        )
    };
    for (field, value, limit) in [
        ("id", "i".repeat(65), "64"),
        ("name", "n".repeat(201), "200"),
        // Counted as sent: padding does not make a long value fit.
        ("name", format!(" {}", "n".repeat(200)), "200"),
        ("email", email_of(255), "254"),
    ] {
        let (status, problem) = app.post(body_with(field, value)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {problem}"
        );
        assert_eq!(problem["field"], field);
        assert!(
            problem["detail"].as_str().unwrap().contains(limit),
            "{problem}"
        );
    }
    // At the limits, accepted.
    app.create(json!({"id": "i".repeat(64), "name": "n".repeat(200), "email": email_of(254)}))
        .await;

    let (status, problem) = app.get(&format!("/app/customers/{}", "i".repeat(65))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (problem["field"].as_str(), problem["limit"].as_u64()),
        (Some("id"), Some(64))
    );
    for query in ["limit=501", "limit=", "offset=-1"] {
        let (status, _) = app.get(&format!("/app/customers?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
    }
    let (status, problem) = app.get("/app/customers?limit=1&limit=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");

    let (status, problem) = app
        .post(json!({"name": "Big", "email": "big@example.com",
            "pad": "x".repeat(platform::limits::MAX_BODY_BYTES)}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["limit"], platform::limits::MAX_BODY_BYTES);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_writes_need_a_key_of_the_right_scope_when_configured() {
    const REGISTRAR: &str = "k-registrar-0123456789abcdef";
    const READER: &str = "k-reader-0123456789abcdefghi";
    const TELLER: &str = "k-teller-0123456789abcdefghi";
    let keys = ApiKeys::parse([
        format!("registrar:customers:write:{REGISTRAR}").as_str(),
        format!("dash:customers:read:{READER}").as_str(),
        format!("teller:transactions:read+transactions:write:{TELLER}").as_str(),
    ])
    .unwrap();
    let app = App::start_with_keys(keys).await;
    let body = json!({"id": "cust-k", "name": "Kim", "email": "kim@example.com"});
    let post = || app.http.post(app.url(CUSTOMERS)).json(&body);
    let get = |path: &str| app.http.get(app.url(path));
    let (status, problem) = app.call(post()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = app.call(post().bearer_auth("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem) = app.call(post().bearer_auth(READER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a read key cannot register");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("customers:write"),
        "{problem}"
    );
    let (status, _) = app.call(post().bearer_auth(TELLER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another service's key");
    for path in ["/app/customers", "/app/customers/cust-k"] {
        let (status, _) = app.call(get(path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} needs a key");
        let (status, _) = app.call(get(path).bearer_auth(REGISTRAR)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: write is not read");
        let (status, _) = app.call(get(path).bearer_auth(TELLER)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{path}: another service's key"
        );
    }
    let (status, _) = app
        .call(get("/app/customers/cust-k").bearer_auth(READER))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing stored without a write key"
    );
    let (status, _) = app.call(post().bearer_auth(REGISTRAR)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, customer) = app
        .call(get("/app/customers/cust-k").bearer_auth(READER))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(customer["id"], "cust-k");
    let (status, _) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "the API document stays open");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_and_a_missing_content_type_is_415() {
    let app = App::start().await;
    let post = || app.http.post(app.url(CUSTOMERS));
    let (status, _) = app
        .call(
            post()
                .header("content-type", "application/json")
                .body(r#"{"id": "x", "name": "#),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .call(post().body(r#"{"id": "x", "name": "A", "email": "a@b.io"}"#))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_an_openapi_document() {
    let app = App::start().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/app/customers"]["post"].is_object());
    app.stop().await;
}
