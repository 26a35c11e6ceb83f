//! Distributed tracing end to end: a service configured with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! exports its spans over OTLP/HTTP (protobuf) to a collector stand-in in this test, and an
//! event's `traceparent` links the HTTP request that wrote it to the span that consumed it.
//!
//! One test per file: telemetry installs the process-wide subscriber once.

//
// A binary of its own, not a module of `integration`: it installs the process-wide tracing
// subscriber and OpenTelemetry tracer, and every service stop in the process exports and shuts
// that tracer down (`telemetry::shutdown`), so the other tests' services would take part in it.

// Test helpers outside #[test] functions unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]
// A test reads as one story from setup to the last assertion; some stories are long.
#![allow(clippy::too_many_lines)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use contracts::{topics, CustomerCreated, EventMetadata};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use platform::inbox::{Applied, Apply, Attempt};
use platform::kafka::{ConsumerOptions, HandleError, Record};
use platform::parking::ParkingLot;
use platform::testing::{fresh_database_url, unique, LocalKafka, RunningService};
use platform::{telemetry, Database, Outbox, Service, ServiceConfig};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE: &str = "telemetry-test";

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// What the collector stand-in received.
#[derive(Default)]
struct Received {
    /// `(content-type, body)` of each `POST /v1/traces`.
    exports: Vec<(Option<String>, Bytes)>,
    /// Any other request, as `METHOD path`.
    stray: Vec<String>,
}

/// An OTLP/HTTP collector stand-in on an ephemeral port: accepts `POST /v1/traces`.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Arc<Mutex<Received>>>, headers: HeaderMap, body: Bytes| async move {
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    received.lock().unwrap().exports.push((content_type, body));
                    // An empty ExportTraceServiceResponse: full success.
                    ([(header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
                },
            ),
        )
        .fallback(
            |State(received): State<Arc<Mutex<Received>>>, method: Method, uri: Uri| async move {
                received.lock().unwrap().stray.push(format!("{method} {uri}"));
                StatusCode::NOT_FOUND
            },
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Hands each consumed record's `traceparent` header, and the traceparent a handler's outbox
/// write would carry on, to the test.
#[derive(Clone)]
struct Probe(mpsc::UnboundedSender<(String, Option<String>, Option<String>)>);

impl Apply for Probe {
    /// The record's own `traceparent` header.
    type Event = Option<String>;
    type Done = ();

    fn decode(&self, record: &Record) -> Result<(EventMetadata, Option<String>), HandleError> {
        Ok((record.metadata(), record.traceparent().map(str::to_string)))
    }

    async fn apply(
        &self,
        _conn: &mut platform::db::Conn,
        metadata: &EventMetadata,
        traceparent: &Option<String>,
        _attempt: Attempt,
    ) -> Result<Applied<()>, HandleError> {
        let _ = self.0.send((
            metadata.id.clone(),
            traceparent.clone(),
            telemetry::current_traceparent(),
        ));
        Ok(Applied::Done(()))
    }
}

/// `POST /customers`: writes a `Customer.created` event without an explicit traceparent, and
/// answers with `<event id> <traceparent>`.
async fn create_customer(State((db, outbox)): State<(Database, Outbox)>) -> String {
    let customer = CustomerCreated {
        id: unique("c"),
        name: "Ann".to_string(),
        email: "ann@example.com".to_string(),
        created_at: chrono::Utc::now(),
    };
    let mut tx = db.begin().await.unwrap();
    let metadata = outbox.enqueue(&mut tx, &customer, None).await.unwrap();
    tx.commit().await.unwrap();
    outbox.notify();
    format!(
        "{} {}",
        metadata.id,
        metadata.traceparent.unwrap_or_default()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// `(trace id, span id)` of a traceparent.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test]
async fn spans_are_exported_over_otlp_http_and_follow_an_event_through_kafka() {
    let (collector_url, received) = collector().await;
    let mut config = ServiceConfig::from_env(
        SERVICE,
        0,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url.as_str())],
    )
    .expect("configuration");
    config.kafka = LocalKafka::load().isolated();
    telemetry::init(&config).expect("telemetry");
    config.database_url = fresh_database_url().await;

    let mut service = Service::start_with(config, &NO_MIGRATIONS, CancellationToken::new())
        .await
        .expect("service starts");
    let (consumed_tx, mut consumed) = mpsc::unbounded_channel();
    let group = unique("g");
    service.consume_events(
        ConsumerOptions::new(group.clone(), &[topics::CUSTOMER_CREATED]),
        Probe(consumed_tx),
        ParkingLot::new("probe", Duration::ZERO),
    );
    let routes = Router::new()
        .route("/customers", post(create_customer))
        .with_state((service.db.clone(), service.outbox.clone()));
    let running = RunningService::spawn(service, routes).await;

    // A check that one layer's filter refuses and no span or event follows (sqlx asks one after
    // every query) must not hide the next span from the exporter (tokio-rs/tracing#2519).
    let _ = tracing::enabled!(target: "hyper", tracing::Level::INFO);
    let next = tracing::info_span!("after_a_check");
    assert!(
        next.context().span().span_context().is_valid(),
        "a span after a refused check is exported"
    );
    drop(next);

    // An HTTP request from a traced caller writes the event; the consumer handles it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{}/customers", running.base_url))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("x-request-id", "req-telemetry-1")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "req-telemetry-1");
    let answer = response.text().await.unwrap();
    let (event_id, event_traceparent) = answer.split_once(' ').unwrap();
    assert!(
        telemetry::is_valid_traceparent(event_traceparent),
        "{answer}"
    );
    let (id, header, handed_on) = tokio::time::timeout(TIMEOUT, consumed.recv())
        .await
        .expect("the event is consumed")
        .unwrap();
    assert_eq!(id, event_id);
    assert_eq!(header.as_deref(), Some(event_traceparent));
    let (trace_id, request_span_id) = ids(event_traceparent);
    assert_eq!(
        trace_id, caller_trace,
        "the request joins the caller's trace"
    );
    let (handed_on_trace, consume_span_id) = ids(&handed_on.expect("a traceparent"));
    assert_eq!(handed_on_trace, trace_id, "one trace across Kafka");
    assert_ne!(consume_span_id, request_span_id);

    // Stopping the service exports what the batch exporter still holds.
    running.stop().await.expect("orderly stop");

    let received = received.lock().unwrap();
    assert!(received.stray.is_empty(), "{:?}", received.stray);
    assert!(!received.exports.is_empty(), "nothing was exported");
    let mut spans: Vec<Span> = Vec::new();
    for (content_type, body) in &received.exports {
        assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
        assert!(!body.is_empty());
        let request = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.expect("a resource");
            assert_eq!(
                attribute(&resource.attributes, "service.name").as_deref(),
                Some(SERVICE)
            );
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans);
            }
        }
    }
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();

    let request = in_trace
        .iter()
        .find(|s| hex(&s.span_id) == request_span_id)
        .unwrap_or_else(|| panic!("the HTTP request span is exported: {names:?}"));
    assert_eq!(request.name, "request");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), caller_span);
    assert_eq!(
        attribute(&request.attributes, "uri").as_deref(),
        Some("/customers")
    );
    assert_eq!(
        attribute(&request.attributes, "request_id").as_deref(),
        Some("req-telemetry-1")
    );

    // The relay's publish span: a child of the request that wrote the event.
    let publish = in_trace
        .iter()
        .find(|s| s.name == "publish")
        .unwrap_or_else(|| panic!("the publish span is exported: {names:?}"));
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(hex(&publish.parent_span_id), request_span_id);
    for (name, value) in [
        ("messaging.system", Some("kafka")),
        ("messaging.operation.type", Some("send")),
        ("messaging.destination.name", Some(topics::CUSTOMER_CREATED)),
        ("event_id", Some(event_id)),
        ("messaging.destination.partition.id", None),
        ("messaging.kafka.offset", None),
        ("messaging.kafka.message.key", None),
    ] {
        let found = attribute(&publish.attributes, name);
        assert!(found.is_some(), "publish span attribute {name}");
        if value.is_some() {
            assert_eq!(found.as_deref(), value, "publish span attribute {name}");
        }
    }

    let consume = in_trace
        .iter()
        .find(|s| hex(&s.span_id) == consume_span_id)
        .unwrap_or_else(|| panic!("the consume span is exported: {names:?}"));
    assert_eq!(consume.name, "consume");
    assert_eq!(consume.kind, SpanKind::Consumer as i32);
    assert_eq!(hex(&consume.parent_span_id), request_span_id);
    // The OpenTelemetry messaging conventions; the consume span is where the publish span
    // says the record went.
    for (name, value) in [
        ("messaging.system", Some("kafka")),
        ("messaging.operation.type", Some("process")),
        ("messaging.destination.name", Some(topics::CUSTOMER_CREATED)),
        ("messaging.consumer.group.name", Some(group.as_str())),
        ("event_id", Some(event_id)),
        (
            "messaging.destination.partition.id",
            attribute(&publish.attributes, "messaging.destination.partition.id").as_deref(),
        ),
        (
            "messaging.kafka.offset",
            attribute(&publish.attributes, "messaging.kafka.offset").as_deref(),
        ),
        (
            "messaging.kafka.message.key",
            attribute(&publish.attributes, "messaging.kafka.message.key").as_deref(),
        ),
    ] {
        assert_eq!(
            attribute(&consume.attributes, name).as_deref(),
            value,
            "consume span attribute {name}"
        );
    }
}
