//! Operating a service: the Prometheus metrics a flow leaves behind (HTTP by route template,
//! consumer lag per partition, the database pool), what `/readyz` says when a consumer stops or
//! the relay cannot publish, and a service started while the broker is unreachable: it serves at
//! once, says why it is not ready, and goes ready when the broker comes.

use std::future::Future;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use contracts::{topics, CustomerCreated};
use platform::kafka::{ConsumerOptions, HandleError, Handler, Record, Rejected};
use platform::testing::{
    free_port, poll_until, service_config, unique, LocalKafka, RunningService, TestProducer,
};
use platform::{Database, Outbox, Service, ServiceConfig};
use serde_json::Value;

use crate::NO_MIGRATIONS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "health-test";
const PATIENCE: Duration = Duration::from_secs(60);

/// Counts what it consumes.
struct Counter(mpsc::UnboundedSender<usize>);

impl Handler for Counter {
    fn handle(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<Vec<Rejected>, HandleError>> + Send {
        let _ = self.0.send(records.len());
        async { Ok(Vec::new()) }
    }
}

/// Fails every record transiently: the first record wedges its partition.
struct Failing;

impl Handler for Failing {
    async fn handle(&self, _records: &[Record]) -> Result<Vec<Rejected>, HandleError> {
        Err(HandleError::Transient("the database is away".into()))
    }
}

/// Gives up on every record: each goes to the dead-letter topic.
struct Rejecting;

impl Handler for Rejecting {
    async fn handle(&self, _records: &[Record]) -> Result<Vec<Rejected>, HandleError> {
        Err(HandleError::permanent("never valid"))
    }
}

/// `POST /customers/{id}`: writes `Customer.created` through the outbox; 201.
async fn create_customer(
    State((db, outbox)): State<(Database, Outbox)>,
    Path(id): Path<String>,
) -> StatusCode {
    let customer = CustomerCreated {
        id: id.clone(),
        name: "Ann".into(),
        email: format!("{id}@example.com"),
        created_at: chrono::Utc::now(),
    };
    let mut tx = db.begin().await.expect("begin");
    outbox
        .enqueue(&mut tx, &customer, None)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    outbox.notify();
    StatusCode::CREATED
}

/// A started service with one consumer (group `group`) of `Customer.created`.
struct Started {
    service: Service,
    group: String,
    consumed: mpsc::UnboundedReceiver<usize>,
}

async fn start(config: ServiceConfig) -> Started {
    let (sender, consumed) = mpsc::unbounded_channel();
    start_with(config, Counter(sender), consumed).await
}

async fn start_with(
    config: ServiceConfig,
    handler: impl Handler,
    consumed: mpsc::UnboundedReceiver<usize>,
) -> Started {
    let mut service = Service::start_with(config, &NO_MIGRATIONS, CancellationToken::new())
        .await
        .expect("service starts");
    let group = unique("g");
    let mut options = ConsumerOptions::new(&group, &[topics::CUSTOMER_CREATED]);
    options.statistics_interval = Duration::from_secs(1);
    service.consume(options, handler);
    Started {
        service,
        group,
        consumed,
    }
}

/// A test configuration under which work waiting 2 s without progress makes `/readyz` say
/// not ready.
async fn impatient_config() -> ServiceConfig {
    let mut config = service_config(SERVICE, LocalKafka::load().isolated()).await;
    config.ready_stall = Duration::from_secs(2);
    config
}

fn routes(service: &Service) -> Router {
    Router::new()
        .route("/customers/{id}", post(create_customer))
        .with_state((service.db.clone(), service.outbox.clone()))
}

async fn get(base: &str, path: &str) -> (StatusCode, String) {
    let response = reqwest::get(format!("{base}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    (status, response.text().await.expect("body"))
}

async fn readyz(base: &str) -> (StatusCode, Value) {
    let (status, body) = get(base, "/readyz").await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// Waits until `/readyz` of `base` says `ready` (every check passing); panics after PATIENCE.
async fn wait_until_ready(base: &str) {
    let ready = poll_until(PATIENCE, || async {
        (readyz(base).await.1["status"] == "ready").then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready at first: {}", readyz(base).await.1);
}

/// The value of the series of `name` whose labels include every one of `labels`.
fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| labelset.split(',').any(|l| l == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_leaves_http_consumer_lag_and_pool_metrics_and_a_ready_report() {
    let config = service_config(SERVICE, LocalKafka::load().isolated()).await;
    let Started {
        service,
        group,
        mut consumed,
    } = start(config).await;
    let routes = routes(&service);
    let running = RunningService::spawn(service, routes).await;
    let base = running.base_url.clone();

    flow(&base, &mut consumed).await;
    let metrics = metrics_once_caught_up(&base, &group).await;
    assert_http_metrics(&metrics);
    assert_consumer_and_pool_metrics(&metrics, &group);
    assert_ready(&base, &group).await;
    running.stop().await.expect("orderly stop");
}

/// The flow: a customer created (201, its event consumed) and a request no route matches (404).
async fn flow(base: &str, consumed: &mut mpsc::UnboundedReceiver<usize>) {
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/customers/c-1"))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(get(base, "/no/such/route").await.0, StatusCode::NOT_FOUND);
    tokio::time::timeout(PATIENCE, consumed.recv())
        .await
        .expect("the event is consumed");
}

/// `/metrics` once the consumer of `group` reports its lag, after its lag age has come to 0.
async fn metrics_once_caught_up(base: &str, group: &str) -> String {
    let metrics = poll_until(PATIENCE, || async {
        let (_, text) = get(base, "/metrics").await;
        // The lag appears with the first statistics after the consumed offset is committed.
        series(
            &text,
            "kafka_consumer_lag",
            &[("group", group), ("topic", topics::CUSTOMER_CREATED)],
        )
        .map(|_| text)
    })
    .await
    .expect("kafka_consumer_lag of the consumed topic");
    let caught_up = poll_until(PATIENCE, || async {
        let (_, text) = get(base, "/metrics").await;
        series(
            &text,
            "kafka_consumer_lag_age_seconds",
            &[("group", group), ("topic", topics::CUSTOMER_CREATED)],
        )
        .filter(|age| *age == 0.0)
    })
    .await;
    assert_eq!(caught_up, Some(0.0), "nothing waits: the lag age is 0");
    metrics
}

/// The flow's requests are counted by route template, with a histogram; the ops routes are not.
fn assert_http_metrics(metrics: &str) {
    let post = [
        ("method", "POST"),
        ("route", "/customers/{id}"),
        ("status", "201"),
    ];
    assert_eq!(
        series(metrics, "http_server_requests_total", &post),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        series(
            metrics,
            "http_server_request_duration_seconds_bucket",
            &[post[0], post[1], post[2], ("le", "10")]
        ) == Some(1.0),
        "a histogram with buckets: {metrics}"
    );
    assert!(
        series(
            metrics,
            "http_server_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        )
        .is_some(),
        "{metrics}"
    );
    assert!(
        series(
            metrics,
            "http_server_requests_total",
            &[("route", "/metrics")]
        )
        .is_none(),
        "the ops routes are not counted"
    );
}

/// The consumer of `group` has both partitions; the database pool reports its connections.
fn assert_consumer_and_pool_metrics(metrics: &str, group: &str) {
    assert_eq!(
        series(
            metrics,
            "kafka_consumer_assigned_partitions",
            &[("group", group)]
        ),
        Some(2.0),
        "both partitions of the one topic: {metrics}"
    );
    assert!(series(metrics, "db_pool_connections", &[("state", "idle")]).is_some());
    assert!(series(metrics, "db_pool_connections", &[("state", "in_use")]).is_some());
    assert!(series(metrics, "db_pool_max_connections", &[]).is_some_and(|n| n >= 1.0));
}

/// `/readyz` says ready, every check passing, and `service_ready` agrees.
async fn assert_ready(base: &str, group: &str) {
    let (status, report) = readyz(base).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "ready");
    for check in ["database", "kafka", "relay", &format!("consumer:{group}")] {
        assert_eq!(report["checks"][check]["ok"], true, "{check}: {report}");
    }
    let (_, metrics) = get(base, "/metrics").await;
    assert_eq!(
        series(&metrics, "service_ready", &[("check", "kafka")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_stopped_consumer_and_a_relay_that_cannot_publish() {
    let config = impatient_config().await;
    let Started { service, group, .. } = start(config).await;
    let stop_consumer = service.consumer_stop(&group).expect("the consumer's stop");
    let (db, outbox) = (service.db.clone(), service.outbox.clone());
    let routes = routes(&service);
    let running = RunningService::spawn(service, routes).await;
    let base = running.base_url.clone();
    let consumer_check = format!("consumer:{group}");
    wait_until_ready(&base).await;

    // A stopped consumer is named, but the replica keeps taking HTTP traffic (the outbox takes
    // requests while their processing is away).
    stop_consumer.cancel();
    let report = poll_until(PATIENCE, || async {
        let (status, report) = readyz(&base).await;
        (report["checks"][&consumer_check]["ok"] == false).then_some((status, report))
    })
    .await
    .expect("degraded once a consumer stopped");
    let (status, report) = report;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["checks"][&consumer_check]["ok"], false, "{report}");
    assert_eq!(report["checks"][&consumer_check]["detail"], "stopped");
    assert_eq!(report["checks"]["database"]["ok"], true, "{report}");
    assert_eq!(report["checks"]["relay"]["ok"], true, "{report}");

    // A row the relay can never publish (its headers are not JSON) wedges the outbox.
    let mut tx = db.begin().await.expect("begin");
    let customer = CustomerCreated {
        id: "c-wedged".into(),
        name: "Bo".into(),
        email: "bo@example.com".into(),
        created_at: chrono::Utc::now(),
    };
    let metadata = outbox
        .enqueue(&mut tx, &customer, None)
        .await
        .expect("enqueue");
    sqlx::query("UPDATE outbox SET headers = 'not json' WHERE id = $1")
        .bind(&metadata.id)
        .execute(&mut *tx)
        .await
        .expect("spoil the row");
    tx.commit().await.expect("commit");
    outbox.notify();
    let relay = poll_until(PATIENCE, || async {
        let (_, report) = readyz(&base).await;
        (report["checks"]["relay"]["ok"] == false).then_some(report)
    })
    .await
    .expect("the relay check fails once nothing is published for READY_STALL_SECS");
    let detail = relay["checks"]["relay"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("1 outbox rows waiting"), "{relay}");
    let (_, metrics) = get(&base, "/metrics").await;
    assert_eq!(
        series(&metrics, "service_ready", &[("check", "relay")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, "service_ready", &[("check", &consumer_check)]),
        Some(0.0)
    );
    running.stop().await.expect("orderly stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_database_does_not_answer_is_not_ready() {
    let Started { service, .. } = start(impatient_config().await).await;
    let db = service.db.clone();
    let routes = routes(&service);
    let running = RunningService::spawn(service, routes).await;
    let base = running.base_url.clone();
    wait_until_ready(&base).await;

    // The database is what decides: without it the replica can take no request.
    db.close().await;
    let (status, report) = readyz(&base).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["status"], "not_ready", "{report}");
    assert_eq!(report["checks"]["database"]["ok"], false, "{report}");
    assert_eq!(report["checks"]["kafka"]["ok"], true, "{report}");
    running.handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_consumer_whose_partition_is_wedged() {
    let config = impatient_config().await;
    let (_, consumed) = mpsc::unbounded_channel();
    let Started { service, group, .. } = start_with(config, Failing, consumed).await;
    let routes = routes(&service);
    let running = RunningService::spawn(service, routes).await;
    let base = running.base_url.clone();
    let consumer_check = format!("consumer:{group}");

    let created = reqwest::Client::new()
        .post(format!("{base}/customers/c-stuck"))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status().as_u16(), 201);
    // The relay's check is waited for too: on PostgreSQL a published row may wait for the
    // server's transaction horizon (shared with every other database) before it is deleted,
    // and the 2 s stall time of this test can pass meanwhile.
    let report = poll_until(PATIENCE, || async {
        let (status, report) = readyz(&base).await;
        (status == StatusCode::OK
            && report["checks"][&consumer_check]["ok"] == false
            && report["checks"]["relay"]["ok"] == true)
            .then_some(report)
    })
    .await
    .expect("degraded once a record waits without progress for READY_STALL_SECS");
    assert_eq!(report["status"], "degraded", "{report}");
    let detail = report["checks"][&consumer_check]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.starts_with(&format!("{}/", topics::CUSTOMER_CREATED))
            && detail.contains("1 records waiting"),
        "{report}"
    );
    assert_eq!(report["checks"]["relay"]["ok"], true, "{report}");
    // The age of the record that waits grows in /metrics (what the retention alert watches).
    let labels = [
        ("group", group.as_str()),
        ("topic", topics::CUSTOMER_CREATED),
    ];
    let age = poll_until(PATIENCE, || async {
        let (_, text) = get(&base, "/metrics").await;
        series(&text, "kafka_consumer_lag_age_seconds", &labels).filter(|age| *age >= 3.0)
    })
    .await
    .expect("kafka_consumer_lag_age_seconds of the wedged partition grows");
    assert!(age < PATIENCE.as_secs_f64() * 2.0, "{age}");
    running.stop().await.expect("orderly stop");
}

/// Deletes topic `name` (unprefixed) from the broker of `kafka`.
async fn delete_topic(kafka: &platform::kafka::KafkaConfig, name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config("test-admin")
        .create()
        .expect("admin client");
    let full = kafka.topic_name(name);
    let results = admin
        .delete_topics(&[full.as_str()], &AdminOptions::new())
        .await
        .expect("delete topics");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("delete {topic}: {code}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_published_holds_its_partition_and_is_named() {
    let config = impatient_config().await;
    let kafka = config.kafka.clone();
    let (_, consumed) = mpsc::unbounded_channel();
    let Started { service, group, .. } = start_with(config, Rejecting, consumed).await;
    let routes = routes(&service);
    let running = RunningService::spawn(service, routes).await;
    let base = running.base_url.clone();
    let consumer_check = format!("consumer:{group}");
    wait_until_ready(&base).await;

    // The dead-letter topic disappears (a broken deploy, a missing ACL would do the same):
    // the record's dead letter cannot be published, and the partition waits for it.
    let dead_letters = topics::dead_letter(topics::CUSTOMER_CREATED);
    delete_topic(&kafka, &dead_letters).await;
    TestProducer::new(&kafka)
        .send(topics::CUSTOMER_CREATED, "c-1", b"{}", &[], Some(0))
        .await;
    let report = poll_until(PATIENCE, || async {
        let (status, report) = readyz(&base).await;
        (report["checks"][&consumer_check]["ok"] == false).then_some((status, report))
    })
    .await
    .expect("the consumer check names the dead letter it cannot publish");
    let (status, report) = report;
    assert_eq!(status, StatusCode::OK, "degraded, still serving: {report}");
    let detail = report["checks"][&consumer_check]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.starts_with(&format!(
            "{}/0: a record's dead letter has not been published",
            topics::CUSTOMER_CREATED
        )),
        "{report}"
    );
    let (_, metrics) = get(&base, "/metrics").await;
    let failing = poll_until(PATIENCE, || async {
        let (_, metrics) = get(&base, "/metrics").await;
        (series(&metrics, "kafka_dead_letter_failing", &[("group", &group)]) == Some(1.0))
            .then_some(())
    })
    .await;
    assert!(
        failing.is_some(),
        "kafka_dead_letter_failing is 1: {metrics}"
    );

    // The topic comes back: the dead letter goes out and the partition moves on.
    let recreated = poll_until(PATIENCE, || async {
        platform::kafka::admin::ensure_topics(&kafka, std::slice::from_ref(&dead_letters))
            .await
            .ok()
    })
    .await;
    assert!(recreated.is_some(), "{dead_letters} recreated");
    let cleared = poll_until(PATIENCE, || async {
        let (_, report) = readyz(&base).await;
        (report["checks"][&consumer_check]["ok"] == true).then_some(())
    })
    .await;
    assert!(
        cleared.is_some(),
        "published at last: {}",
        readyz(&base).await.1
    );
    let (_, metrics) = get(&base, "/metrics").await;
    assert_eq!(
        series(&metrics, "kafka_dead_letter_failing", &[("group", &group)]),
        Some(0.0),
        "{metrics}"
    );
    running.stop().await.expect("orderly stop");
}

/// Forwards connections from `listener` to `target` (the broker's bootstrap port).
async fn proxy(listener: tokio::net::TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_while_the_broker_is_unreachable_serves_and_goes_ready_when_it_comes() {
    let local = LocalKafka::load();
    let port = free_port();
    let mut kafka = local.isolated();
    kafka.brokers = vec![format!("127.0.0.1:{port}")];
    let config = service_config(SERVICE, kafka).await;
    let Started { service, group, .. } = start(config).await;
    let routes = routes(&service);
    let running = RunningService::spawn_now(service, routes).await;
    let base = running.base_url.clone();

    let (status, body) = get(&base, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without the broker the replica still takes HTTP traffic (requests wait in the outbox):
    // 200, `degraded`, naming the broker.
    let (status, report) = readyz(&base).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(report["checks"]["kafka"]["ok"], false, "{report}");
    assert_eq!(report["checks"]["database"]["ok"], true, "{report}");

    // It keeps serving, and keeps saying what is wrong; a probe never waits for the broker.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!running.handle.is_finished(), "the service still runs");
    assert_eq!(get(&base, "/healthz").await.0, StatusCode::OK);
    let asked = std::time::Instant::now();
    let (status, report) = readyz(&base).await;
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "a probe answered in {waited:?}, longer than the deploy files' probe timeout (2 s)"
    );
    assert_eq!(status, StatusCode::OK, "{report}");
    let detail = report["checks"]["kafka"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.starts_with("waiting for the broker"), "{report}");
    assert_eq!(
        report["checks"][format!("consumer:{group}")]["detail"],
        "waiting for the broker",
        "{report}"
    );

    // The broker comes: the port now leads to it.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the broker port is still free");
    let forwarding = tokio::spawn(proxy(listener, local.brokers.clone()));
    let ready = poll_until(PATIENCE, || async {
        let (status, report) = readyz(&base).await;
        (status == StatusCode::OK && report["status"] == "ready").then_some(report)
    })
    .await;
    let report = match ready {
        Some(report) => report,
        None => panic!("not ready after the broker came: {}", readyz(&base).await.1),
    };
    assert_eq!(
        report["checks"][format!("consumer:{group}")]["ok"],
        true,
        "{report}"
    );
    running.stop().await.expect("orderly stop");
    forwarding.abort();
}
