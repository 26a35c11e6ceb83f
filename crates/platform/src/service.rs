//! The service runtime: what every `main` does, in one place. Configuration, logging, metrics,
//! the database and its migrations, the producer, topic creation, the outbox relay, consumers,
//! the HTTP server, and the shutdown order (stop HTTP and consumers, drain the outbox, flush).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::migrate::Migrator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::ApiKeys;
use crate::config::{ProcessEnv, ServiceConfig};
use crate::db::Database;
use crate::http::{self, Readiness};
use crate::inbox::{Apply, Inboxed};
use crate::kafka::{self, ConsumerOptions, Handler, Producer};
use crate::outbox::{self, Outbox};
use crate::parking::{self, ParkingLot};
use crate::telemetry;

/// A started service: shared resources for its handlers, and the tasks it runs.
pub struct Service {
    /// Configuration.
    pub config: ServiceConfig,
    /// The database, migrated.
    pub db: Database,
    /// The idempotent producer (outbox relay and dead letters).
    pub producer: Producer,
    /// Where handlers write events.
    pub outbox: Outbox,
    /// API keys (see [`crate::auth`]).
    pub api_keys: ApiKeys,
    /// Cancelled on SIGTERM/SIGINT (or by a test).
    pub shutdown: CancellationToken,
    consumers: JoinSet<()>,
}

impl Service {
    /// Starts service `name` from the process environment, with its logs and (when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set) trace export.
    pub async fn start(
        name: &'static str,
        default_port: u16,
        migrations: &Migrator,
    ) -> anyhow::Result<Self> {
        let config = ServiceConfig::from_env(name, default_port, &ProcessEnv)?;
        telemetry::init(&config)?;
        Self::start_with(config, migrations, crate::shutdown::on_signal()).await
    }

    /// Starts with an explicit configuration and shutdown token (tests, tools).
    pub async fn start_with(
        config: ServiceConfig,
        migrations: &Migrator,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        tracing::info!(service = config.name, kafka = ?config.kafka.brokers,
            protocol = config.kafka.security_protocol.as_str(),
            database = %crate::db::redact_url(&config.database_url), "starting");
        log_api_keys(&config.api_keys);
        let db = Database::connect(&config.database_url).await?;
        db.migrate(migrations).await?;
        let producer = Producer::new(&config.kafka, config.name)?;
        ensure_topics_with_retry(&config).await?;
        Ok(Self {
            outbox: Outbox::new(config.name),
            api_keys: config.api_keys.clone(),
            config,
            db,
            producer,
            shutdown,
            consumers: JoinSet::new(),
        })
    }

    /// Runs the consumer of an [`Apply`] in the background until shutdown: batches applied in
    /// one transaction with their inbox claims, waiting events parked in `lot` and decided by
    /// the lot's resolver.
    pub fn consume_events<A: Apply>(
        &mut self,
        options: ConsumerOptions,
        apply: A,
        lot: ParkingLot,
    ) {
        let apply = Arc::new(apply);
        let lot = lot.in_group(&options.group_id);
        let (db, resolver_apply, resolver_lot) = (self.db.clone(), Arc::clone(&apply), lot.clone());
        self.spawn(move |shutdown| {
            parking::run_resolver(db, resolver_apply, resolver_lot, shutdown)
        });
        self.consume(options, Inboxed::new(self.db.clone(), apply, lot));
    }

    /// Runs a consumer in the background until shutdown, with the configured batch size and
    /// retry limit (`CONSUMER_MAX_BATCH`, `CONSUMER_RETRY_LIMIT_SECS`).
    pub fn consume<H: Handler>(&mut self, mut options: ConsumerOptions, handler: H) {
        options.max_batch = self.config.consumer.max_batch;
        options.retry_limit = self.config.consumer.retry_limit;
        let kafka = self.config.kafka.clone();
        let producer = self.producer.clone();
        let shutdown = self.shutdown.clone();
        let group = options.group_id.clone();
        self.consumers.spawn(async move {
            if let Err(error) =
                kafka::run_consumer(&kafka, options, handler, producer, shutdown.clone()).await
            {
                tracing::error!(%error, %group, "consumer failed; shutting down");
                shutdown.cancel();
            }
        });
    }

    /// Runs a background task until shutdown (e.g. a retry loop); it gets the shutdown token.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.consumers.spawn(task(self.shutdown.clone()));
    }

    /// Binds `PORT` on all interfaces and serves until shutdown.
    pub async fn serve(self, routes: Router) -> anyhow::Result<()> {
        let address = std::net::SocketAddr::from(([0, 0, 0, 0], self.config.port));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (PORT)"))?;
        self.serve_on(listener, routes).await
    }

    /// Serves `routes` (plus `/healthz`, `/readyz`, `/metrics`) on `listener` until shutdown,
    /// then stops in order: HTTP and consumers finish their work, the outbox is drained, the
    /// producer flushed, and the spans still buffered are exported (when tracing exports).
    pub async fn serve_on(
        mut self,
        listener: tokio::net::TcpListener,
        routes: Router,
    ) -> anyhow::Result<()> {
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(outbox::run_relay(
            self.db.clone(),
            self.producer.clone(),
            self.outbox.clone(),
            relay_stop.clone(),
        ));
        let readiness = Readiness::new(self.db.clone(), self.config.kafka.clone());
        let app = http::with_common_layers(
            routes.merge(http::ops_routes(readiness, telemetry::metrics_handle())),
        );
        tracing::info!(service = self.config.name, address = %listener.local_addr()?, "listening");
        let served = http::serve(listener, app, self.shutdown.clone()).await;
        // HTTP has stopped taking requests; consumers finish their in-flight record.
        self.shutdown.cancel();
        while self.consumers.join_next().await.is_some() {}
        relay_stop.cancel();
        let _ = relay.await;
        // Dropping the producer's last handle purges, flushes and destroys the client, which
        // blocks.
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        self.db.close().await;
        tracing::info!(service = self.config.name, "stopped");
        telemetry::shutdown().await;
        served.context("HTTP server failed")
    }
}

/// One line at start-up: the keys' names and scopes, or a warning that everything is open.
pub fn log_api_keys(keys: &ApiKeys) {
    if keys.is_empty() {
        tracing::warn!(
            "no API keys configured (API_KEYS, API_KEYS_FILE): every endpoint is open to anyone \
             who can reach it"
        );
    } else {
        tracing::info!(keys = ?keys.describe(), "API keys configured");
    }
}

async fn ensure_topics_with_retry(config: &ServiceConfig) -> anyhow::Result<()> {
    // Credentials and certificates are checked first: retrying cannot fix them.
    if let Err(error @ (kafka::KafkaError::Authentication(_) | kafka::KafkaError::Tls(_))) =
        kafka::check_connection(&config.kafka, Duration::from_secs(10)).await
    {
        return Err(error.into());
    }
    let topics = contracts::topics::all_with_dead_letters();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match kafka::ensure_topics(&config.kafka, &topics).await {
            Ok(()) => return Ok(()),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(%error, "Kafka not ready; retrying topic creation");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => {
                return Err(error).context(format!(
                "cannot create topics on {} — is the broker running (`cargo xtask kafka start`)?",
                config.kafka.brokers.join(",")
            ))
            }
        }
    }
}
