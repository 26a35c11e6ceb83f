//! Logs (tracing, JSON when `LOG_FORMAT=json`, filtered by `RUST_LOG`), Prometheus metrics and
//! distributed tracing.
//!
//! Tracing: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, [`init`] adds a `tracing-opentelemetry`
//! layer whose spans a batch exporter sends over OTLP/HTTP (protobuf) to
//! `<endpoint>/v1/traces`, with resource `service.name` = the service's name; [`shutdown`]
//! exports what is still buffered. Extra exporter settings (`OTEL_EXPORTER_OTLP_HEADERS` for a
//! collector's API key, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`) are read by the exporter
//! itself and never logged. Without an endpoint no OpenTelemetry layer is installed at all.
//!
//! Propagation: events carry a W3C `traceparent` ([`current_traceparent`], written by the
//! outbox), and the consumer loop makes it the parent of the span that handles the record. Without
//! an exporter traceparents still flow, cheaply: the one of the record being consumed is passed
//! on, and work that has none starts a trace with [`new_traceparent`] (random ids, no spans).

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceFlags, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::span::{self, Attributes, Id};
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{self, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::foundation::env::LogFormat;

const DEFAULT_FILTER: &str = "info,rdkafka=warn,sqlx=warn,tower_http=info,opentelemetry=warn";

/// Added to the filter of exported spans (logs keep theirs): HTTP request spans, which
/// tower-http makes at DEBUG; never the exporter's own machinery (it would trace its exports).
const TRACE_DIRECTIVES: &[&str] = &[
    "tower_http::trace::make_span=debug",
    "opentelemetry=off",
    "opentelemetry_sdk=off",
    "opentelemetry_otlp=off",
    "opentelemetry_http=off",
    "reqwest=off",
    "hyper=off",
    "hyper_util=off",
    "h2=off",
];

/// The OTLP/HTTP path of traces, appended to `OTEL_EXPORTER_OTLP_ENDPOINT` (as the spec says).
const TRACES_PATH: &str = "v1/traces";

/// The header that carries the trace context (W3C Trace Context).
const TRACEPARENT: &str = contracts::envelope::headers::TRACEPARENT;

/// The provider [`init`] installed, for [`shutdown`].
static TRACER_PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

tokio::task_local! {
    /// The traceparent of the record the current task is handling (see [`consumed`]).
    static CONSUMED_TRACEPARENT: Option<String>;
}

/// Telemetry could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[error("invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces to {endpoint}: {reason}")]
    Exporter {
        /// The traces URL, without credentials.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
}

/// What [`init`] needs of the service's configuration (a `&ServiceConfig` converts into it: see
/// [`crate::runtime::config::ServiceConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// The service name: the `service.name` of exported spans.
    pub name: &'static str,
    /// Log output format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Where spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`); none = logs only.
    pub otlp_endpoint: Option<String>,
}

/// Installs the global subscriber for service `config.name`: logs as [`init_logging`] does and,
/// when `config.otlp_endpoint` is set, span export over OTLP/HTTP. Once per process: when a
/// subscriber is already installed, this changes nothing (and exports nothing).
pub fn init(config: impl Into<TelemetrySettings>) -> Result<(), TelemetryError> {
    let config: TelemetrySettings = config.into();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let Some(endpoint) = config.otlp_endpoint.as_deref() else {
        init_logging(config.log_format);
        return Ok(());
    };
    let url = traces_url(endpoint);
    let provider = tracer_provider(config.name, &url)?;
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(config.name))
        .with_filter(Fresh(trace_filter()));
    let installed = tracing_subscriber::registry()
        .with(log_layer(config.log_format))
        .with(traces)
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        *TRACER_PROVIDER
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(provider);
        tracing::info!(endpoint = %redact_endpoint(&url), "exporting traces over OTLP/HTTP");
    } else {
        tracing::warn!("a log subscriber was installed before: traces are not exported");
        if let Err(error) = provider.shutdown() {
            tracing::debug!(%error, "unused trace exporter shutdown");
        }
    }
    Ok(())
}

/// Installs the global log subscriber (once; later calls are no-ops). No span export: see
/// [`init`].
pub fn init_logging(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format))
        .try_init();
}

/// Exports the spans still buffered and stops the exporter [`init`] installed (a no-op when it
/// installed none). Call once, when the service stops; it waits at most the export timeout.
pub async fn shutdown() {
    let provider = TRACER_PROVIDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(provider) = provider else {
        return;
    };
    // Blocks until the exporter thread has sent the last batch.
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => tracing::debug!("trace exporter flushed"),
        Ok(Err(error)) => tracing::warn!(%error, "trace exporter shutdown failed"),
        Err(error) => tracing::warn!(%error, "trace exporter shutdown failed"),
    }
}

/// The handle of the registry in scope (see [`crate::foundation::metrics_scope`]): the process-wide
/// Prometheus registry (installed on first use), or the private one of the service whose task
/// calls.
pub fn metrics_handle() -> PrometheusHandle {
    crate::foundation::metrics_scope::current().handle()
}

/// Whether `value` is a well-formed W3C `traceparent` with non-zero trace and span ids.
pub fn is_valid_traceparent(value: &str) -> bool {
    remote_context(value).is_some()
}

/// Makes the span that `traceparent` names the (remote) parent of `span`, so both share a trace.
/// Call right after creating `span`. Returns `false`, changing nothing, when `traceparent` is
/// malformed, `span` is disabled, or spans are not exported (no OpenTelemetry layer).
pub fn set_parent(span: &tracing::Span, traceparent: &str) -> bool {
    match remote_context(traceparent) {
        Some(parent) => span.set_parent(parent).is_ok(),
        None => false,
    }
}

/// The `traceparent` to hand on with work started now: the current span's when spans are
/// exported and it is valid, else that of the Kafka record being handled (see the consumer
/// loop), else `None`.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        return traceparent_of(&context);
    }
    CONSUMED_TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

/// A new `traceparent` with random ids, sampled: the start of a trace for work that has none.
pub fn new_traceparent() -> String {
    let ids = RandomIdGenerator::default();
    format!(
        "00-{}-{}-{:02x}",
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::SAMPLED.to_u8()
    )
}

/// Runs `work` (handling one record) with `traceparent` (the record's, when valid) as the
/// fallback of [`current_traceparent`].
pub(crate) fn consumed<F: Future>(
    traceparent: Option<&str>,
    work: F,
) -> impl Future<Output = F::Output> {
    let traceparent = traceparent
        .filter(|value| is_valid_traceparent(value))
        .map(|value| value.trim().to_string());
    CONSUMED_TRACEPARENT.scope(traceparent, work)
}

/// The context of the remote span `traceparent` names; `None` when malformed or invalid.
fn remote_context(traceparent: &str) -> Option<Context> {
    let context = TraceContextPropagator::new().extract(&OneHeader(traceparent.trim()));
    let valid = context.span().span_context().is_valid();
    valid.then_some(context)
}

/// The `traceparent` of the span in `context`.
fn traceparent_of(context: &Context) -> Option<String> {
    let mut header = InjectedTraceparent(None);
    TraceContextPropagator::new().inject_context(context, &mut header);
    header.0
}

/// A carrier holding only a `traceparent`.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// A carrier that keeps only the `traceparent` (events carry no `tracestate`).
struct InjectedTraceparent(Option<String>);

impl Injector for InjectedTraceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// `<endpoint>/v1/traces`, as the OTLP spec builds a signal's URL from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.ends_with('/') {
        format!("{endpoint}{TRACES_PATH}")
    } else {
        format!("{endpoint}/{TRACES_PATH}")
    }
}

/// `url` without user information or query, for messages.
fn redact_endpoint(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => url.rsplit('@').next().unwrap_or_default().to_string(),
    }
}

/// A tracer provider exporting to `url` (OTLP/HTTP, protobuf) in batches, as `service`.
fn tracer_provider(service: &'static str, url: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: redact_endpoint(url),
            reason: match error {
                // Its first field is the URL itself, which may hold credentials.
                ExporterBuildError::InvalidUri(_, reason) => format!("invalid URL: {reason}"),
                other => other.to_string(),
            },
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// `RUST_LOG`, or the default filter.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// The log filter plus [`TRACE_DIRECTIVES`]: which spans are exported.
fn trace_filter() -> EnvFilter {
    TRACE_DIRECTIVES
        .iter()
        .filter_map(|directive| directive.parse().ok())
        .fold(log_filter(), EnvFilter::add_directive)
}

/// A per-layer filter that never lets a callsite cache `Interest::always`, so its
/// [`Filter::enabled`] runs before every span and event.
///
/// Why: tracing-subscriber hands each per-layer filter's decision from `enabled` to
/// `on_new_span`/`on_event` through a thread-local bitmap, and assumes `enabled` ran just before
/// for the same callsite. A callsite cached as `always` skips `enabled`, so it reads whatever
/// the last `enabled` call on the thread left there. An `enabled`-only check that no span or
/// event follows — sqlx asks `log_enabled!`/`tracing::enabled!("sqlx::query")` after every
/// query, and on PostgreSQL it does so on the runtime's threads (SQLite runs queries on its own
/// worker thread) — leaves a layer's "disabled" bit behind, and the next `always` span (the
/// consumer's `consume` span) silently misses that layer: it is never exported, and
/// [`current_traceparent`] falls back to the record's. (tokio-rs/tracing#2519.)
/// `sometimes` costs one filter check per span or event and keeps the bitmap fresh.
struct Fresh<F>(F);

impl<S, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &tracing::Metadata<'_>, cx: &layer::Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if self.0.callsite_enabled(meta).is_never() {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &layer::Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: layer::Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &Id, values: &span::Record<'_>, cx: layer::Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &Id, cx: layer::Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &Id, cx: layer::Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: Id, cx: layer::Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

/// The log output layer, with its own filter (so exported spans need not be logged).
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(Fresh(log_filter()))
            .boxed(),
        LogFormat::Pretty => layer.with_filter(Fresh(log_filter())).boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparents_are_validated() {
        assert!(is_valid_traceparent(PARENT));
        assert!(is_valid_traceparent(&format!(" {PARENT} ")));
        assert!(!is_valid_traceparent("garbage"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        ));
        assert!(!is_valid_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"
        ));
        assert!(!is_valid_traceparent("00-xyz-b7ad6b7169203331-01"));
        let context = remote_context(PARENT)
            .unwrap()
            .span()
            .span_context()
            .clone();
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(context.is_remote() && context.is_sampled());
    }

    #[test]
    fn new_traceparents_are_valid_sampled_and_distinct() {
        let a = new_traceparent();
        let b = new_traceparent();
        assert!(is_valid_traceparent(&a), "{a}");
        assert!(a.starts_with("00-") && a.ends_with("-01"), "{a}");
        assert_eq!(a.len(), 55);
        assert_ne!(a[3..35], b[3..35]);
    }

    #[test]
    fn without_an_opentelemetry_layer_spans_have_no_trace_context() {
        let span = tracing::info_span!("work");
        assert!(!set_parent(&span, PARENT));
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }

    #[tokio::test]
    async fn the_consumed_records_traceparent_is_handed_on_without_an_exporter() {
        let inside = consumed(Some(PARENT), async { current_traceparent() }).await;
        assert_eq!(inside.as_deref(), Some(PARENT));
        let malformed = consumed(Some("nope"), async { current_traceparent() }).await;
        assert_eq!(malformed, None);
        assert_eq!(current_traceparent(), None, "only inside the scope");
    }

    #[test]
    fn the_traces_url_follows_the_otlp_spec() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example.com/base/"),
            "https://otel.example.com/base/v1/traces"
        );
    }

    #[test]
    fn endpoints_are_logged_without_credentials() {
        assert_eq!(
            redact_endpoint("https://user:s3cret@otel.example.com:4318/v1/traces?key=s3cret"),
            "https://otel.example.com:4318/v1/traces"
        );
        assert_eq!(
            redact_endpoint("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn every_trace_directive_parses() {
        for directive in TRACE_DIRECTIVES {
            assert!(
                directive
                    .parse::<tracing_subscriber::filter::Directive>()
                    .is_ok(),
                "{directive}"
            );
        }
    }

    #[test]
    fn a_bad_endpoint_is_a_clear_error_without_secrets() {
        let error = tracer_provider("s", "http://user:s3cret@bad host/v1/traces").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("invalid configuration: OTEL_EXPORTER_OTLP_ENDPOINT:"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
}
