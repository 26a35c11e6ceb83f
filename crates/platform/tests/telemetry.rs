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

/// What one traced request left: the event's id and trace, and the consumer's group and span.
struct Traced {
    event_id: String,
    trace_id: String,
    request_span_id: String,
    consume_span_id: String,
    group: String,
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn spans_are_exported_over_otlp_http_and_follow_an_event_through_kafka() {
    let (collector_url, received) = collector().await;
    let traced = trace_one_request(&collector_url).await;
    let spans = exported_spans(&received.lock().unwrap());
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == traced.trace_id)
        .collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();
    let find = |what: &str, found: Option<&&Span>| -> Span {
        (*found.unwrap_or_else(|| panic!("the {what} span is exported: {names:?}"))).clone()
    };
    let request = find(
        "HTTP request",
        in_trace
            .iter()
            .find(|s| hex(&s.span_id) == traced.request_span_id),
    );
    assert_request_span(&request);
    // The relay's publish span: a child of the request that wrote the event.
    let publish = find("publish", in_trace.iter().find(|s| s.name == "publish"));
    assert_publish_span(&publish, &traced);
    let consume = find(
        "consume",
        in_trace
            .iter()
            .find(|s| hex(&s.span_id) == traced.consume_span_id),
    );
    assert_consume_span(&consume, &publish, &traced);
}

/// Starts a traced service whose consumer reads what its `POST /customers` writes, sends one
/// request from a traced caller, waits for the consumer, and stops the service (which exports
/// what the batch exporter still holds).
async fn trace_one_request(collector_url: &str) -> Traced {
    let mut config = ServiceConfig::from_env(
        SERVICE,
        0,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)],
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
    a_span_after_a_refused_check_is_exported();

    // An HTTP request from a traced caller writes the event; the consumer handles it.
    let response = reqwest::Client::new()
        .post(format!("{}/customers", running.base_url))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
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
        trace_id, CALLER_TRACE,
        "the request joins the caller's trace"
    );
    let (handed_on_trace, consume_span_id) = ids(&handed_on.expect("a traceparent"));
    assert_eq!(handed_on_trace, trace_id, "one trace across Kafka");
    assert_ne!(consume_span_id, request_span_id);

    running.stop().await.expect("orderly stop");
    Traced {
        event_id: event_id.to_string(),
        trace_id,
        request_span_id,
        consume_span_id,
        group,
    }
}

/// A check that one layer's filter refuses and no span or event follows (sqlx asks one after
/// every query) must not hide the next span from the exporter (tokio-rs/tracing#2519).
fn a_span_after_a_refused_check_is_exported() {
    let _ = tracing::enabled!(target: "hyper", tracing::Level::INFO);
    let next = tracing::info_span!("after_a_check");
    assert!(
        next.context().span().span_context().is_valid(),
        "a span after a refused check is exported"
    );
}

/// Every span the collector received, each export checked to be OTLP protobuf from `SERVICE`.
fn exported_spans(received: &Received) -> Vec<Span> {
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
    spans
}

/// The HTTP request's span: a server span, child of the caller's, naming the route and the id.
fn assert_request_span(request: &Span) {
    assert_eq!(request.name, "request");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(
        attribute(&request.attributes, "uri").as_deref(),
        Some("/customers")
    );
    assert_eq!(
        attribute(&request.attributes, "request_id").as_deref(),
        Some("req-telemetry-1")
    );
}

/// The relay's publish span: a producer span, child of the request that wrote the event.
fn assert_publish_span(publish: &Span, traced: &Traced) {
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(hex(&publish.parent_span_id), traced.request_span_id);
    for (name, value) in [
        ("messaging.system", Some("kafka")),
        ("messaging.operation.type", Some("send")),
        ("messaging.destination.name", Some(topics::CUSTOMER_CREATED)),
        ("event_id", Some(traced.event_id.as_str())),
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
}

/// The consume span follows the OpenTelemetry messaging conventions and is where the publish
/// span says the record went.
fn assert_consume_span(consume: &Span, publish: &Span, traced: &Traced) {
    assert_eq!(consume.name, "consume");
    assert_eq!(consume.kind, SpanKind::Consumer as i32);
    assert_eq!(hex(&consume.parent_span_id), traced.request_span_id);
    let published = |name: &str| attribute(&publish.attributes, name);
    for (name, value) in [
        ("messaging.system", Some("kafka".to_string())),
        ("messaging.operation.type", Some("process".to_string())),
        (
            "messaging.destination.name",
            Some(topics::CUSTOMER_CREATED.to_string()),
        ),
        ("messaging.consumer.group.name", Some(traced.group.clone())),
        ("event_id", Some(traced.event_id.clone())),
        (
            "messaging.destination.partition.id",
            published("messaging.destination.partition.id"),
        ),
        (
            "messaging.kafka.offset",
            published("messaging.kafka.offset"),
        ),
        (
            "messaging.kafka.message.key",
            published("messaging.kafka.message.key"),
        ),
    ] {
        assert_eq!(
            attribute(&consume.attributes, name),
            value,
            "consume span attribute {name}"
        );
    }
}
