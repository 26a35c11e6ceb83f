//! The service runtime: what every `main` does, in one place. Configuration, logging, metrics,
//! the database and its migrations, the producer, topic creation, the outbox relay, consumers,
//! the HTTP server, and the shutdown order (stop HTTP and consumers, drain the outbox, flush).
//!
//! The broker need not be up at start: HTTP serves at once (`/readyz` names `kafka` until the
//! broker comes), topic creation is retried with backoff in the background, and consumers and the
//! relay start once the topics exist. Credentials or certificates the broker rejects stop the
//! process at once: retrying cannot fix them.
//!
//! A service without a database ([`NoDatabase`], see [`Storage`]) gets the same runtime less
//! what writes: no migrations, relay, pruner or producer (unless a consumer needs one for its
//! dead letters), no topics created; it checks the broker's credentials before it serves, as it
//! has nothing to serve without the broker.

mod broker;
mod starting;
mod storage;
mod writes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::migrate::Migrator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::inbox::{Apply, Inboxed};
use crate::events::parking::{self, ParkingLot};
use crate::events::readiness::Readiness;
use crate::events::retention::Rule;
use crate::foundation::health::Health;
use crate::foundation::telemetry;
use crate::guard::auth::ApiKeys;
use crate::http;
use crate::kafka::{self, ConsumerOptions, Handler, Producer};
use crate::outbox::{self, Outbox, RelayOptions};
use crate::runtime::config::{ProcessEnv, ServiceConfig};
use crate::store::db::Database;

use broker::{bring_up_broker, check_credentials, TopicSetup};
use starting::log_starting;
pub use storage::{NoDatabase, Storage};

/// A started service: shared resources for its handlers, and the tasks it runs. `S` is where it
/// keeps its state: its [`Database`], or [`NoDatabase`] (see [`Storage`]).
pub struct Service<S: Storage = Database> {
    /// Configuration.
    pub config: ServiceConfig,
    /// The database, migrated ([`NoDatabase`] for a service without one).
    pub db: S,
    /// The idempotent producer (outbox relay and dead letters); a service without a database
    /// opens it only when a consumer needs it.
    producer: Option<Producer>,
    /// Where handlers write events.
    pub outbox: Outbox,
    /// API keys (see [`crate::guard::auth`]).
    pub api_keys: ApiKeys,
    /// Cancelled on SIGTERM/SIGINT (or by a test).
    pub shutdown: CancellationToken,
    /// What the consumers and the relay report for `/readyz`.
    pub health: Health,
    consumers: JoinSet<()>,
    /// Cancelled once HTTP has stopped taking requests: the group committers then commit what
    /// is queued and end, before the relay's last round (see [`Service::group_commit`]).
    writes_stop: CancellationToken,
    /// Closed while a rebuild from a compacted topic runs: consumers start once it is open.
    gate: crate::events::rebuild::Gate,
    /// An error that stopped the service from the background (the broker refused us).
    fatal: Arc<std::sync::Mutex<Option<kafka::KafkaError>>>,
    /// What the pruner keeps bounded: the inbox keys of the consumers, and the service's own.
    retention: Vec<crate::events::retention::Rule>,
    /// Per consumer group, the token that stops that consumer alone (tests).
    #[cfg(feature = "testing")]
    consumer_stops: std::collections::HashMap<String, CancellationToken>,
}

impl Service {
    /// Starts service `name` from the process environment, with its logs and (when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set) trace export.
    pub async fn start(
        name: &'static str,
        default_port: u16,
        migrations: &'static Migrator,
    ) -> anyhow::Result<Self> {
        Self::start_on(name, default_port, migrations).await
    }

    /// Starts with an explicit configuration and shutdown token (tests, tools). What it and
    /// the service's tasks record goes to `config.metrics`.
    pub async fn start_with(
        config: ServiceConfig,
        migrations: &'static Migrator,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::start_on_with(config, migrations, shutdown).await
    }
}

impl<S: Storage> Service<S> {
    /// Starts service `name` on its storage `S`, opened with `migrations`: [`Service::start`]
    /// for either storage (what [`crate::runtime::definition::main`] runs).
    pub async fn start_on(
        name: &'static str,
        default_port: u16,
        migrations: S::Migrations,
    ) -> anyhow::Result<Self> {
        let config = ServiceConfig::from_env(name, default_port, &ProcessEnv)?;
        telemetry::init(&config)?;
        Self::start_on_with(config, migrations, crate::foundation::shutdown::on_signal()).await
    }

    /// [`Service::start_with`] for either storage.
    pub async fn start_on_with(
        config: ServiceConfig,
        migrations: S::Migrations,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = config.metrics.clone();
        metrics
            .scope(Self::start_in_scope(config, migrations, shutdown))
            .await
    }

    async fn start_in_scope(
        config: ServiceConfig,
        migrations: S::Migrations,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        log_starting::<S>(&config);
        config.bind.log(&config.api_keys);
        // The recorder is installed (with `config.metrics`) before anything records: a metric
        // recorded before would be lost (the pool gauges of the first sample).
        let db = S::open(&config, migrations).await?;
        let producer = if S::DATABASE {
            Some(Producer::new(&config.kafka, config.name)?)
        } else {
            check_credentials(&config.kafka).await?;
            None
        };
        let health = Health::new(config.ready_stall);
        if S::DATABASE {
            health.register_relay();
        }
        let fatal = Arc::default();
        let mut consumers = JoinSet::new();
        if S::DATABASE && !config.create_topics {
            tracing::info!("KAFKA_CREATE_TOPICS=false: the topics are expected to exist");
        }
        consumers.spawn(config.metrics.scope(bring_up_broker(
            config.kafka.clone(),
            TopicSetup {
                create: S::DATABASE && config.create_topics,
                fix: config.fix_topic_configs,
                report: S::DATABASE,
            },
            health.clone(),
            Arc::clone(&fatal),
            shutdown.clone(),
        )));
        Ok(Self {
            outbox: Outbox::new(config.name),
            api_keys: config.api_keys.clone(),
            config,
            db,
            producer,
            shutdown,
            health,
            consumers,
            writes_stop: CancellationToken::new(),
            gate: crate::events::rebuild::Gate::default(),
            fatal,
            retention: Vec::new(),
            #[cfg(feature = "testing")]
            consumer_stops: Default::default(),
        })
    }
}

/// What needs the database: the consumers that apply through the inbox, and the pruner's rules.
impl Service {
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
        self.consume_inboxed(options, apply, lot);
    }

    /// Like [`Service::consume_events`], for the compacted topic the service's view is built
    /// from (`options.topics`, the first): when `view_table` has no row at start (a new
    /// database, or a read model dropped to be rebuilt), what the consumer group had consumed of
    /// the topic (from its start up to the group's committed offsets; see [`crate::events::rebuild`]) is
    /// first read again through `replay` and the same inbox (records seen before are skipped; the records replayed
    /// are marked as seen for the consumer), and no consumer of the service starts before that
    /// is done. `replay` is the handler of the rebuild (e.g. one that sends no welcome again).
    /// Register it before the other consumers.
    pub fn consume_events_rebuilding<A: Apply>(
        &mut self,
        options: ConsumerOptions,
        apply: A,
        replay: A,
        lot: ParkingLot,
        view_table: &'static str,
    ) {
        let apply = Arc::new(apply);
        let lot = lot.in_group(&options.group_id);
        let held = self.gate.hold();
        let handler = Inboxed::new(self.db.clone(), Arc::new(replay), lot.clone());
        let topic = options.topics.first().cloned().unwrap_or_default();
        let group = options.group_id.clone();
        let (db, kafka, max_batch) = (
            self.db.clone(),
            self.config.kafka.clone(),
            self.config.consumer.max_batch,
        );
        let health = self.health.clone();
        self.spawn(move |shutdown| async move {
            let rebuild = async {
                health.broker_ready().await;
                crate::events::rebuild::rebuild_when_empty(
                    &db, &kafka, view_table, &topic, &group, &handler, max_batch,
                )
                .await
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = rebuild => match result {
                    Ok(_) => drop(held),
                    Err(error) => {
                        tracing::error!(%error, "rebuild failed; shutting down");
                        shutdown.cancel();
                    }
                },
            }
        });
        self.consume_inboxed(options, apply, lot);
    }

    /// A consumer of `options` applying with `apply` through the inbox, and the resolver of
    /// what it parks in `lot`.
    fn consume_inboxed<A: Apply>(
        &mut self,
        options: ConsumerOptions,
        apply: Arc<A>,
        lot: ParkingLot,
    ) {
        match self.config.retention.inbox_window(&options.topics) {
            Some(keep) => self.retain(Rule::inbox(lot.consumer(), keep)),
            None => tracing::info!(consumer = lot.consumer(), topics = ?options.topics,
                "inbox keys kept: a topic can redeliver any record at any time (compacted)"),
        }
        let (db, resolver_apply, resolver_lot) = (self.db.clone(), Arc::clone(&apply), lot.clone());
        self.spawn(move |shutdown| {
            parking::run_resolver(db, resolver_apply, resolver_lot, shutdown)
        });
        self.consume(options, Inboxed::new(self.db.clone(), apply, lot));
    }

    /// Prunes with `rule` in the background, with the inbox keys (see [`crate::events::retention`]).
    pub fn retain(&mut self, rule: Rule) {
        self.retention.retain(|r| r.name != rule.name);
        self.retention.push(rule);
    }
}

impl<S: Storage> Service<S> {
    /// Runs a consumer in the background until shutdown, with the configured batch size and
    /// retry limit (`CONSUMER_MAX_BATCH`, `CONSUMER_RETRY_LIMIT_SECS`). It starts once the
    /// broker has come, and reports to [`Service::health`] as `consumer:<group>`.
    pub fn consume<H: Handler>(&mut self, mut options: ConsumerOptions, handler: H) {
        options.max_batch = self.config.consumer.max_batch;
        options.retry_limit = self.config.consumer.retry_limit;
        let group = options.group_id.clone();
        let reports = self.health.consumer(&group);
        options.health = Some(reports.clone());
        let kafka = self.config.kafka.clone();
        let producer = self.producer();
        let (health, shutdown) = (self.health.clone(), self.shutdown.clone());
        let gate = self.gate.clone();
        let stop = shutdown.child_token();
        #[cfg(feature = "testing")]
        self.consumer_stops.insert(group.clone(), stop.clone());
        self.consumers.spawn(self.config.metrics.scope(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                () = async { health.broker_ready().await; gate.opened().await } => {
                    let ran = match producer {
                        Ok(producer) =>
                            kafka::run_consumer(&kafka, options, handler, producer, stop).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = ran {
                        tracing::error!(%error, %group, "consumer failed; shutting down");
                        shutdown.cancel();
                    }
                }
            }
            reports.stopped();
        }));
    }

    /// The token that stops consumer `group` alone (the rest of the service runs on): for tests
    /// of what `/readyz` says about a stopped consumer.
    #[cfg(feature = "testing")]
    pub fn consumer_stop(&self, group: &str) -> Option<CancellationToken> {
        self.consumer_stops.get(group).cloned()
    }

    /// The producer; a service without a database opens it now, for its first consumer.
    fn producer(&mut self) -> Result<Producer, kafka::KafkaError> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        let producer = Producer::new(&self.config.kafka, self.config.name)?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }

    /// Runs a background task until shutdown (e.g. a retry loop); it gets the shutdown token.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = task(self.shutdown.clone());
        self.consumers.spawn(self.config.metrics.scope(task));
    }

    /// Binds `PORT` on the configured address (`BIND_ADDRESS`; loopback only without keys,
    /// see [`crate::guard::bind`]) and serves until shutdown.
    pub async fn serve(self, routes: Router) -> anyhow::Result<()> {
        let address = std::net::SocketAddr::new(self.config.bind.address, self.config.port);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (PORT)"))?;
        self.serve_on(listener, routes).await
    }

    /// Serves `routes` (plus `/healthz`, `/readyz`, `/metrics`) on `listener` until shutdown,
    /// then stops in order: HTTP and consumers finish their work, the outbox is drained, the
    /// producer flushed, and the spans still buffered are exported (when tracing exports).
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        routes: Router,
    ) -> anyhow::Result<()> {
        let metrics = self.config.metrics.clone();
        metrics.scope(self.serve_in_scope(listener, routes)).await
    }

    async fn serve_in_scope(
        mut self,
        listener: tokio::net::TcpListener,
        routes: Router,
    ) -> anyhow::Result<()> {
        let relay_stop = CancellationToken::new();
        let relay = match self.db.database().cloned() {
            Some(db) => Some(self.run_database_tasks(db, relay_stop.clone())?),
            None => None,
        };
        let (kafka, health) = (self.config.kafka.clone(), self.health.clone());
        let readiness = match self.db.database() {
            Some(db) => Readiness::new(db.clone(), kafka, health, self.shutdown.clone()),
            None => Readiness::without_database(kafka, health, self.shutdown.clone()),
        };
        let watched = readiness.clone();
        self.spawn(move |shutdown| watched.watch(shutdown));
        let app = http::with_common_layers(
            routes.merge(http::ops_routes(readiness, self.config.metrics.handle())),
        );
        tracing::info!(service = self.config.name, address = %listener.local_addr()?, "listening");
        let served = http::serve(listener, app, &self.config.http, self.shutdown.clone()).await;
        // HTTP has stopped: the committers commit what is queued, consumers finish their
        // in-flight record, and only then does the relay take its last round.
        self.writes_stop.cancel();
        self.shutdown.cancel();
        while self.consumers.join_next().await.is_some() {}
        relay_stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        // Dropping the producer's last handle purges, flushes and destroys the client, which
        // blocks.
        if let Some(producer) = self.producer {
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        }
        if let Some(db) = self.db.database() {
            db.close().await;
        }
        tracing::info!(service = self.config.name, "stopped");
        telemetry::shutdown().await;
        let fatal = self
            .fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match fatal {
            Some(error) => Err(error.into()),
            None => served.context("HTTP server failed"),
        }
    }

    /// With a database: the outbox relay (returned: it stops after the consumers), the pool
    /// gauges and the pruner.
    fn run_database_tasks(
        &mut self,
        db: Database,
        relay_stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, kafka::KafkaError> {
        let relay = crate::foundation::metrics_scope::spawn(run_relay_once_broker_up(
            db.clone(),
            self.producer()?,
            self.outbox.clone(),
            self.health.clone(),
            relay_stop,
        ));
        let sampled = db.clone();
        self.spawn(move |shutdown| sample(sampled, shutdown));
        let (rules, settings) = (std::mem::take(&mut self.retention), self.config.retention);
        self.spawn(move |shutdown| {
            crate::events::retention::run_pruner(db, rules, settings, shutdown)
        });
        Ok(relay)
    }
}

/// How often the pool gauges are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Refreshes the database pool gauges until shutdown.
async fn sample(db: Database, shutdown: CancellationToken) {
    loop {
        db.report_pool_metrics();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// Runs the outbox relay once the broker has come, until `stop`.
async fn run_relay_once_broker_up(
    db: Database,
    producer: Producer,
    outbox: Outbox,
    health: Health,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = health.broker_ready() => {}
    }
    let options = RelayOptions {
        health,
        ..RelayOptions::default()
    };
    outbox::run_relay_with(db, producer, outbox, stop, options).await;
}
