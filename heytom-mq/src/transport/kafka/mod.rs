//! Kafka transport on rdkafka (librdkafka).
//!
//! - **Topics** are created from `#[kafka(...)]` when missing (partitions,
//!   replication factor, `retention.ms`, `compression.type`); an existing topic
//!   with fewer partitions than asked is a [`Error::Topology`]. Without a
//!   `replication_factor` (and without [`KafkaOptions::topic_defaults`]) a topic
//!   gets the broker's default replication factor (`default.replication.factor`).
//! - **Producing** is keyed by the event's `partition_key`, so one key always
//!   lands on one partition; `acks`, `enable_idempotence` and
//!   `compression_type` configure the producer (one cached producer per
//!   distinct setting). By default a producer waits for every in-sync
//!   replica (`acks=all`) and is idempotent (no duplicate from its own
//!   retries); a route asking for `acks` 0 or 1 gets a non-idempotent one
//!   unless it sets `enable_idempotence` too. Every wire header travels as a
//!   Kafka header.
//! - **Consuming** is at-least-once: one consumer per (topic, group), shared
//!   by every event on that topic in that group (each message goes to the
//!   handlers of its type), one
//!   ordered lane per assigned partition, partitions handled concurrently. An
//!   offset is stored only after the dispatcher acked or dead-lettered the
//!   message, and committed on a timer, on revocation and on shutdown.
//! - **Dead letters** go to `<topic>.dlq` (or
//!   [`KafkaOptions::dead_letter_topic`]) with the reason, attempts, handler
//!   and the original topic, partition and offset as headers.

mod admin;
mod health;
mod options;
mod produce;
mod raw;
mod subscription;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

pub use options::{KafkaOptions, DEFAULT_DEAD_LETTER_SUFFIX, DEFAULT_GROUP_ID};

use crate::error::{Error, Result};
use crate::event::{Route, TransportKind};
use crate::handler::HandlerEntry;
use crate::transport::health::{ConnectionState, LinkState};
use crate::transport::wire;
use crate::transport::{
    EncodedBatch, Outgoing, PendingResults, Subscription, SubscriptionHandle, Transport,
};
use produce::record;

const KAFKA: &str = "Kafka";

/// How long a send waits before trying a full local producer queue again.
const QUEUE_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The producers' `acks` when the route gives none: every in-sync replica.
const DEFAULT_ACKS: &str = "all";

/// Routes librdkafka's log lines and client errors to `tracing`, and
/// keeps the transport's connection state (see [`health`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct TracingContext {
    link: Arc<LinkState>,
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_rdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        health::client_error(&self.link, &error, reason);
        tracing::warn!(target: "heytom_mq::kafka", %error, reason, "kafka client error");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        health::client_stats(&self.link, &statistics);
    }
}

/// Only for the client that checks producer settings, which sends nothing.
impl rdkafka::producer::ProducerContext for TracingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

pub(crate) fn log_rdkafka(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "heytom_mq::kafka", facility = fac, "{msg}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "heytom_mq::kafka", facility = fac, "{msg}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "heytom_mq::kafka", facility = fac, "{msg}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "heytom_mq::kafka", facility = fac, "{msg}")
        }
    }
}

/// The producer settings a route asks for; one producer per distinct value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct ProducerKey {
    acks: Option<&'static str>,
    idempotence: Option<bool>,
    compression: Option<&'static str>,
}

impl ProducerKey {
    fn of(route: &Route) -> Self {
        match route.as_kafka() {
            Some(k) => ProducerKey {
                acks: k.acks.map(|a| a.as_str()),
                idempotence: k.enable_idempotence,
                compression: k.compression_type.map(|c| c.as_str()),
            },
            None => ProducerKey::default(),
        }
    }
}

/// The topic an event travels on: the attribute's, or the event name for
/// events without `#[kafka]`.
pub(crate) fn topic_of<'a>(route: &'a Route, event_name: &'a str) -> &'a str {
    match route {
        Route::Kafka(k) => k.topic,
        _ => event_name,
    }
}

/// The Kafka [`Transport`].
///
/// Built by `AppBuilder::kafka(..)`; [`KafkaProducer`](crate::KafkaProducer) and [`KafkaConsumer`](crate::KafkaConsumer)
/// wrap it for manual use.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<TransportInner>,
}

pub(crate) struct TransportInner {
    pub(crate) options: KafkaOptions,
    producers: Mutex<HashMap<ProducerKey, FutureProducer<TracingContext>>>,
    /// The default settings' producer (most routes'), without the lock.
    default_producer: std::sync::OnceLock<FutureProducer<TracingContext>>,
    admin: Mutex<Option<Arc<AdminClient<TracingContext>>>>,
    /// Topics declared (or found) already; looked up on every send, so
    /// hashed with foldhash rather than SipHash.
    declared: RwLock<HashSet<String, foldhash::fast::RandomState>>,
    /// One declaration at a time per topic: the sends (or subscriptions)
    /// that meet a topic not declared yet wait for that one declaration
    /// instead of each asking the brokers to create it.
    declaring: crate::transport::declare_once::DeclareOnce,
    /// The brokers' reachability, as the clients report it.
    link: Arc<LinkState>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the caches stay usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn connection_error(options: &KafkaOptions, what: &str, e: KafkaError) -> Error {
    Error::connection(
        KAFKA,
        format!(
            "{what} ({})",
            crate::redact::redact_url(&options.bootstrap_servers)
        ),
        e,
    )
}

impl KafkaTransport {
    /// A transport; its settings are checked here (no network round trip
    /// yet), its clients made when first needed.
    pub fn new(options: KafkaOptions) -> Result<Self> {
        options.validate()?;
        let t = KafkaTransport {
            inner: Arc::new(TransportInner {
                options,
                producers: Mutex::new(HashMap::new()),
                default_producer: std::sync::OnceLock::new(),
                admin: Mutex::new(None),
                declared: RwLock::new(HashSet::default()),
                declaring: Default::default(),
                link: Arc::default(),
            }),
        };
        // Bad settings are reported here, but the producer itself is created
        // when something is first sent: an idle producer (a consume-only
        // transport's, the dead letters' until one comes) would cost its
        // threads' wake-ups all along.
        t.inner.check_producer_settings(ProducerKey::default())?;
        Ok(t)
    }

    /// A transport after checking that the brokers answer a metadata request.
    pub async fn connect(options: KafkaOptions) -> Result<Self> {
        let t = Self::new(options)?;
        // Asked through the admin client, which declaring topics needs anyway.
        let admin = t.inner.admin()?;
        let timeout = t.inner.options.operation_timeout;
        let result = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| Error::connection(KAFKA, "metadata request task failed", e))?;
        result
            .map_err(|e| connection_error(&t.inner.options, "cannot reach the Kafka brokers", e))?;
        Ok(t)
    }

    /// The options.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// Creates the topic of a route if it is missing (and checks its
    /// partition count if it exists), whatever [`KafkaOptions::declare_topics`] says.
    pub async fn declare_topic(&self, route: &Route, event_name: &str) -> Result<()> {
        let spec = self.inner.topic_spec(route, event_name);
        self.inner.create_topic(&spec).await
    }
}

impl TransportInner {
    /// A producer's settings: the safe defaults (acks `all`, idempotent),
    /// then the route's `acks` / `enable_idempotence` / `compression_type`,
    /// then the options' properties, which win.
    fn producer_config(&self, key: ProducerKey) -> rdkafka::ClientConfig {
        let mut c = self.options.client_config();
        // The route's acks, else the options' `acks` property, else all.
        let from_options = self
            .options
            .properties
            .iter()
            .rev()
            .find(|(k, _)| matches!(k.trim(), "acks" | "request.required.acks"))
            .map(|(_, v)| v.trim().to_owned());
        let acks = key
            .acks
            .map(str::to_owned)
            .or(from_options)
            .unwrap_or_else(|| DEFAULT_ACKS.to_owned());
        let acks = acks.as_str();
        c.set("acks", acks);
        // Idempotence needs acks=all; a route (or property) asking for fewer
        // acks gets a plain producer unless it asks for idempotence itself.
        let user_set = |name: &str| {
            self.options
                .properties
                .iter()
                .chain(&self.options.producer_properties)
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let all_acks = |a: &str| a == "all" || a == "-1";
        let idempotence = key
            .idempotence
            .unwrap_or_else(|| all_acks(acks) && user_set("acks").is_none_or(all_acks));
        c.set(
            "enable.idempotence",
            if idempotence { "true" } else { "false" },
        );
        if let Some(z) = key.compression {
            c.set("compression.type", z);
        }
        for (k, v) in &self.options.producer_properties {
            c.set(k, v);
        }
        c
    }

    /// Checks a producer's settings the way creating it does (librdkafka
    /// checks some only when the client is made): a client without the
    /// polling thread is made and dropped at once.
    fn check_producer_settings(&self, key: ProducerKey) -> Result<()> {
        let _: rdkafka::producer::BaseProducer<TracingContext> = self
            .producer_config(key)
            .create_with_context(self.context())
            .map_err(|e| {
                self.options
                    .config_error("invalid Kafka producer settings", &e)
            })?;
        Ok(())
    }

    /// The default settings' producer, once made, borrowed.
    fn default_producer_for(&self, key: ProducerKey) -> Option<&FutureProducer<TracingContext>> {
        if key == ProducerKey::default() {
            self.default_producer.get()
        } else {
            None
        }
    }

    fn producer(&self, key: ProducerKey) -> Result<FutureProducer<TracingContext>> {
        if let Some(p) = self.default_producer_for(key) {
            return Ok(p.clone());
        }
        let mut map = lock(&self.producers);
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let p: FutureProducer<TracingContext> = self
            .producer_config(key)
            .create_with_context(self.context())
            .map_err(|e| {
                self.options
                    .config_error("invalid Kafka producer settings", &e)
            })?;
        map.insert(key, p.clone());
        if key == ProducerKey::default() {
            let _ = self.default_producer.set(p.clone());
        }
        Ok(p)
    }

    /// Hands `record` to librdkafka once its local queue has room, trying
    /// again every 100 ms (as `FutureProducer::send` does) for up to
    /// `operation_timeout`; then the queue-full error (`Unavailable`).
    async fn enqueue_when_room(
        &self,
        producer: &FutureProducer<TracingContext>,
        mut record: FutureRecord<'_, str, [u8]>,
        name: &str,
    ) -> Result<DeliveryFuture> {
        let deadline = tokio::time::Instant::now() + self.options.operation_timeout;
        loop {
            tokio::time::sleep(QUEUE_FULL_RETRY).await;
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = back;
                }
                Err((e, _)) => return Err(produce_error(name, &e)),
            }
        }
    }

    /// The producer dead letters go through: the default settings.
    pub(crate) fn dead_letter_producer(&self) -> Result<FutureProducer<TracingContext>> {
        self.producer(ProducerKey::default())
    }
}

/// A failed produce: the broker being unreachable or slow (timed out, no
/// broker, transport failure, no leader, purged on close) is
/// [`Error::Unavailable`]; the message itself being refused is [`Error::Publish`].
fn produce_error(name: &str, e: &KafkaError) -> Error {
    use RDKafkaErrorCode as C;
    let unavailable = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::QueueFull
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::NetworkException
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::BrokerNotAvailable
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::PurgeQueue
                | C::PurgeInflight
                | C::BrokerDestroy
        )
    );
    if unavailable {
        Error::unavailable(KAFKA, name, e.to_string())
    } else {
        Error::publish(name, e.to_string())
    }
}

async fn await_delivery(name: &str, fut: DeliveryFuture) -> Result<()> {
    match fut.await {
        Ok(Ok(d)) => {
            tracing::trace!(
                event_name = name,
                partition = d.partition,
                offset = d.offset,
                "delivered"
            );
            Ok(())
        }
        Ok(Err((e, _))) => Err(produce_error(name, &e)),
        Err(_) => Err(Error::unavailable(
            KAFKA,
            name,
            "producer closed before the broker acknowledged",
        )),
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Kafka
    }

    fn connection_state(&self) -> ConnectionState {
        self.inner.link.state()
    }

    fn group_for(&self, handler: &HandlerEntry) -> String {
        handler
            .group
            .clone()
            .or_else(|| {
                handler
                    .route
                    .as_kafka()
                    .and_then(|k| k.group_id)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.inner.options.group_id.clone())
    }

    /// The topic: events on one topic in one group share a consumer.
    fn destination_of(&self, route: &'static Route, event_name: &'static str) -> String {
        topic_of(route, event_name).to_owned()
    }

    async fn declare(&self, route: &'static Route, event_name: &'static str) -> Result<()> {
        if !self.inner.options.declare_topics {
            return Ok(());
        }
        let spec = self.inner.topic_spec(route, event_name);
        self.inner.create_topic(&spec).await
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        // Thousands of these futures may be in flight at once (concurrent
        // `send()`s): what they hold across an await is kept to the
        // delivery future, and the rare paths (declaring a new topic,
        // waiting for room in a full local queue) are boxed futures of
        // their own.
        let envelope = &message.envelope;
        let topic = topic_of(message.route, &envelope.name);
        if self.inner.declares_before_publish(topic) {
            Box::pin(
                self.inner
                    .ensure_topic_for_publish(message.route, &envelope.name),
            )
            .await;
        }
        // The default producer is borrowed: no reference count touched
        // (a cache line every sending thread shares) per message.
        let key = ProducerKey::of(message.route);
        let owned;
        let producer = match self.inner.default_producer_for(key) {
            Some(p) => p,
            None => {
                owned = self.inner.producer(key)?;
                &owned
            }
        };
        let delivery = match producer.send_result(record(topic, envelope)) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                Box::pin(self.inner.enqueue_when_room(producer, back, &envelope.name)).await?
            }
            Err((e, _)) => return Err(produce_error(&envelope.name, &e)),
        };
        await_delivery(&envelope.name, delivery).await
    }

    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let queued = produce::queue_batch(&self.inner, messages).await;
        queued.settle(messages).await
    }

    async fn publish_batch_queued(&self, messages: Vec<Outgoing>) -> PendingResults {
        let queued = produce::queue_batch(&self.inner, &messages).await;
        Box::pin(async move { queued.settle(&messages).await })
    }

    fn publishes_encoded(&self) -> bool {
        true
    }

    async fn publish_encoded(&self, batch: &EncodedBatch<'_>) -> Vec<Result<()>> {
        produce::publish_encoded(&self.inner, batch).await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn SubscriptionHandle>> {
        subscription::subscribe(self.inner.clone(), subscription).await
    }

    async fn close(&self) -> Result<()> {
        let producers: Vec<_> = lock(&self.inner.producers).values().cloned().collect();
        let timeout = self.inner.options.operation_timeout;
        let flushed = tokio::task::spawn_blocking(move || {
            producers.iter().try_for_each(|p| p.flush(timeout))
        })
        .await;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::publish(
                "?",
                format!("flushing Kafka producers failed: {e}"),
            )),
            Err(e) => Err(Error::publish(
                "?",
                format!("flushing Kafka producers failed: {e}"),
            )),
        }
    }
}

#[async_trait]
impl crate::transport::TransportConfig for KafkaOptions {
    fn kind(&self) -> TransportKind {
        TransportKind::Kafka
    }

    async fn connect(self: Box<Self>) -> Result<Arc<dyn Transport>> {
        Ok(Arc::new(KafkaTransport::connect(*self).await?))
    }

    fn unconfirmed_delivery(&self, events: &[(&'static str, &'static Route)]) -> Option<String> {
        self.unconfirmed_reason(events)
    }
}

/// `HEYTOM_KAFKA_BOOTSTRAP_SERVERS`, for `App::from_env`.
pub(crate) fn from_env() -> Option<Box<dyn crate::transport::TransportConfig>> {
    let servers = std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS").ok()?;
    (!servers.trim().is_empty()).then(|| Box::new(KafkaOptions::new(servers)) as Box<_>)
}
