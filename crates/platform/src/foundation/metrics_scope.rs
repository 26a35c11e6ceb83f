//! Whose metrics a `metrics::counter!` (gauge, histogram) lands in: the registry of the service
//! whose work is running.
//!
//! One process runs one service in production, and every series goes to the process-wide
//! registry ([`Registry::process`], what `/metrics` renders; unchanged output). A test binary runs
//! many services at once, each with a private registry ([`Registry::private`], set by
//! `testing::service_config`): a service's `/metrics` then shows only its own series, and tests
//! running at the same time cannot read (or move) each other's counters and gauges.
//!
//! The recorder installed globally ([`install`]) routes each registration to the registry in
//! scope: the one a task runs under ([`Registry::scope`], inherited by tasks started with
//! [`spawn`]), else the one a thread runs under ([`Registry::in_scope`]: the consumer's
//! dispatcher thread, librdkafka's callbacks), else the process-wide one.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets of `http_server_request_duration_seconds`, in seconds.
const HTTP_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

tokio::task_local! {
    /// The registry of the task's service (see [`Registry::scope`]).
    static TASK: Registry;
}

thread_local! {
    /// The registry of the thread's service (see [`Registry::in_scope`]).
    static THREAD: RefCell<Option<Registry>> = const { RefCell::new(None) };
}

/// A Prometheus registry: what one service records and its `/metrics` renders.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let process = Arc::ptr_eq(&self.recorder, &Self::process().recorder);
        f.debug_struct("Registry")
            .field("process", &process)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The process-wide registry (installing the routing recorder on first use): a service
    /// alone in its process records here.
    pub fn process() -> Self {
        static PROCESS: OnceLock<Registry> = OnceLock::new();
        PROCESS
            .get_or_init(|| {
                install();
                Self::build()
            })
            .clone()
    }

    /// A new registry of its own, for a service that shares its process (tests).
    pub fn private() -> Self {
        install();
        Self::build()
    }

    /// The handle that renders this registry (`/metrics`).
    pub fn handle(&self) -> PrometheusHandle {
        self.handle.clone()
    }

    /// Runs `work` with this registry in scope: what it records (and what tasks it starts with
    /// [`spawn`] record) lands here.
    pub fn scope<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        TASK.scope(self.clone(), work)
    }

    /// Runs `work` on this thread with this registry in scope (for threads that are not tokio
    /// tasks: a consumer's dispatcher, librdkafka's callbacks).
    pub fn in_scope<R>(&self, work: impl FnOnce() -> R) -> R {
        let before = THREAD.with(|scope| scope.replace(Some(self.clone())));
        let _restore = Restore(before);
        work()
    }

    fn build() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Full("http_server_request_duration_seconds".to_string()),
            &HTTP_DURATION_BUCKETS,
        ) {
            Ok(builder) => builder,
            // Only for an empty bucket list, which the constant is not.
            Err(error) => {
                tracing::warn!(%error, "HTTP duration buckets");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }
}

/// Puts back the thread's previous registry (also when `work` panics).
struct Restore(Option<Registry>);

impl Drop for Restore {
    fn drop(&mut self) {
        let before = self.0.take();
        THREAD.with(|scope| *scope.borrow_mut() = before);
    }
}

/// The registry in scope: the task's, else the thread's, else the process-wide one.
pub fn current() -> Registry {
    with_current(Registry::clone)
}

/// `tokio::spawn`, the task keeping the registry in scope of the caller.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(current().scope(task))
}

fn with_current<R>(work: impl FnOnce(&Registry) -> R) -> R {
    let registry = TASK
        .try_with(Registry::clone)
        .ok()
        .or_else(|| THREAD.with(|scope| scope.borrow().clone()))
        .unwrap_or_else(Registry::process);
    work(&registry)
}

/// Installs the routing recorder as the global one (once; a recorder installed before — some
/// other test harness — is left alone, and series then go there).
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if metrics::set_global_recorder(Routing).is_err() {
            tracing::warn!("a metrics recorder was installed before: /metrics may be empty");
        }
    });
}

/// The global recorder: forwards to the registry in scope.
struct Routing;

impl Recorder for Routing {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        with_current(|r| r.recorder.describe_counter(key, unit, description));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        with_current(|r| r.recorder.describe_gauge(key, unit, description));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        with_current(|r| r.recorder.describe_histogram(key, unit, description));
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        with_current(|r| r.recorder.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        with_current(|r| r.recorder.register_gauge(key, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        with_current(|r| r.recorder.register_histogram(key, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(registry: &Registry, name: &str) -> Option<String> {
        registry
            .handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")).map(str::to_string))
    }

    #[tokio::test]
    async fn each_registry_sees_only_what_its_scope_records() {
        let (a, b) = (Registry::private(), Registry::private());
        a.scope(async { metrics::counter!("scope_test_total").increment(2) })
            .await;
        b.scope(async {
            metrics::counter!("scope_test_total").increment(5);
            // A task started in scope stays in it.
            spawn(async { metrics::counter!("scope_test_total").increment(1) })
                .await
                .expect("the task");
        })
        .await;
        b.in_scope(|| metrics::gauge!("scope_test_gauge").set(3.0));
        assert_eq!(value(&a, "scope_test_total").as_deref(), Some("2"));
        assert_eq!(value(&b, "scope_test_total").as_deref(), Some("6"));
        assert_eq!(value(&b, "scope_test_gauge").as_deref(), Some("3"));
        assert_eq!(value(&a, "scope_test_gauge"), None);
        assert_eq!(value(&Registry::process(), "scope_test_total"), None);
    }
}
