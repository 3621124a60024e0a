//! RabbitMQ transport on lapin.
//!
//! - Topology comes from `#[rabbitmq(...)]`: the exchange (`exchange_type`,
//!   default `topic`; `durable`, default `true`), the queue with its
//!   `x-message-ttl`, `x-max-length`, `x-max-priority`,
//!   `x-dead-letter-exchange` and `x-dead-letter-routing-key` arguments, the
//!   binding, and a dead-letter queue. A queue that already exists with
//!   other arguments is an [`Error::Topology`](crate::Error::Topology) naming the argument.
//! - Publishing: persistent JSON messages carrying message id (the event
//!   id), type (the event name), timestamp and the envelope's headers; every
//!   publish waits for the broker's confirm, batches pipeline the confirms,
//!   and an unroutable (returned) or nacked message is an error. The
//!   [`PRIORITY_HEADER`] header sets the AMQP priority.
//! - Consuming: one channel per subscription with `basic.qos` prefetch and a
//!   concurrency limit; ack on success (the acks of consecutive handled
//!   deliveries go out as one `multiple` ack), publish to the dead-letter
//!   destination (then ack) when the handlers give up, nack-requeue when a
//!   message is handed back (stopping mid-retry, a handler abandoned at the
//!   stop deadline, an unknown type under `UnknownEventPolicy::HandBack`, or
//!   a dead-letter publish that failed: never acked then).
//! - Queue types and overflow: `queue_type` becomes `x-queue-type` (a
//!   quorum or stream queue's dead letters go to a quorum queue); a queue
//!   with `max_length` refuses new messages when full (`x-overflow =
//!   reject-publish`, so the publish is nacked and `send` fails) unless
//!   `overflow` says `drop-head` or `reject-publish-dlx`.
//! - Foreign messages: the AMQP `message_id` gives the event id (the id
//!   itself when a UUID, else a UUID v5 of it), stable across redeliveries.
//! - Recovery: producer and consumers reconnect with backoff and redeclare
//!   their topology; a publish caught by an outage fails within
//!   [`RabbitMqOptions::publish_timeout`] instead of hanging.
//!
//! Queue names: a handler's `group` if set, else the event's `queue_name`,
//! else `<routing key>.<handler name>`. Handlers with the same queue share
//! one consumer, and each message runs through all of them; apps (or
//! manual consumers) on the same queue compete for its messages. Several
//! events may share a queue (one binding each): a delivery goes to the
//! handlers of its type, and the first subscription's concurrency applies.
//!
//! Dead letters go to the queue's `dead_letter_exchange` (with
//! `dead_letter_routing_key`, or the message's routing key), where a queue
//! named `<exchange>.dlq` is bound; without one, to a `<queue>.dlq` queue.

mod connection;
mod consume;
mod delivery;
mod options;
mod properties;
mod publish;
mod settle;
mod topology;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{Route, TransportKind};
use crate::handler::HandlerEntry;
use crate::transport::health::ConnectionState;
use crate::transport::{Outgoing, Subscription, SubscriptionHandle, Transport};

use connection::ConnectionSlot;
use consume::{RabbitMqSubscription, SubscriptionShared};
pub use options::{RabbitMqOptions, DEFAULT_EXCHANGE};
use publish::Publisher;
pub use publish::PRIORITY_HEADER;
use topology::{destination, QueueTopology};

/// The RabbitMQ [`Transport`]: one connection for publishing, one for
/// consuming (so a broker blocking publishers does not stall consumers).
pub struct RabbitMqTransport {
    options: Arc<RabbitMqOptions>,
    publisher: Arc<Publisher>,
    consumers: Arc<ConnectionSlot>,
}

impl std::fmt::Debug for RabbitMqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqTransport")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RabbitMqTransport {
    /// Connects to the broker (the publishing connection; consumers
    /// connect on their first subscription).
    pub async fn connect(options: RabbitMqOptions) -> Result<Self> {
        let transport = Self::new(options)?;
        transport.publisher.channel().await?;
        Ok(transport)
    }

    /// Checks the options without connecting; connections open on first use.
    pub(crate) fn new(options: RabbitMqOptions) -> Result<Self> {
        options.validate()?;
        let uri = options.parse_uri()?;
        let shown = options.redacted_url();
        let backoff = (options.reconnect_initial, options.reconnect_max);
        let slot = |role: &str| {
            ConnectionSlot::new(
                uri.clone(),
                shown.clone(),
                format!("{} ({role})", options.connection_name),
                options.connect_timeout,
                backoff,
            )
        };
        let publishing = slot("publish");
        let consuming = slot("consume");
        let options = Arc::new(options);
        Ok(RabbitMqTransport {
            publisher: Arc::new(Publisher::new(publishing, options.clone())),
            consumers: Arc::new(consuming),
            options,
        })
    }

    /// Opens the consuming connection now (a wrong URL or credentials fail
    /// here, not at the first subscription).
    pub(crate) async fn check_consuming_connection(&self) -> Result<()> {
        self.consumers.get().await.map(drop)
    }

    /// The options it was made with.
    pub fn options(&self) -> &RabbitMqOptions {
        &self.options
    }
}

#[async_trait]
impl Transport for RabbitMqTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::RabbitMq
    }

    fn group_for(&self, handler: &HandlerEntry) -> String {
        topology::queue_for(handler)
    }

    /// The queue (the group) is the whole address; events bound to one
    /// queue share its consumer.
    fn destination_of(&self, _route: &'static Route, _event_name: &'static str) -> String {
        String::new()
    }

    async fn declare(&self, route: &'static Route, event_name: &'static str) -> Result<()> {
        let dest = destination(route, event_name, &self.options.exchange)?;
        let channel = self.publisher.channel().await?;
        self.publisher.ensure_exchange(&channel, &dest).await
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        self.publisher.publish(message).await
    }

    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        self.publisher.publish_batch(messages).await
    }

    async fn publish_batch_queued(
        &self,
        messages: Vec<Outgoing>,
    ) -> crate::transport::PendingResults {
        self.publisher.publish_batch_queued(messages).await
    }

    async fn subscribe(&self, sub: Subscription) -> Result<Box<dyn SubscriptionHandle>> {
        let topologies = sub
            .events
            .iter()
            .map(|(name, route)| {
                QueueTopology::new(route, name, &sub.group, &self.options.exchange)
            })
            .collect::<Result<Vec<_>>>()?;
        let concurrency = sub.concurrency.unwrap_or(self.options.concurrency).max(1);
        let shared = Arc::new(SubscriptionShared {
            slot: self.consumers.clone(),
            consumer_tag: format!(
                "{}.{}.{}",
                self.options.connection_name,
                sub.group,
                uuid::Uuid::now_v7().simple()
            ),
            queue: sub.group.clone(),
            topologies: std::sync::RwLock::new(topologies),
            dispatcher: sub.dispatcher,
            handling: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            unacked: Arc::new(tokio::sync::Semaphore::new(usize::from(
                self.options.prefetch,
            ))),
            prefetch: self.options.prefetch,
            backoff: (self.options.reconnect_initial, self.options.reconnect_max),
            monitor: Default::default(),
        });
        let first = shared.open().await?;
        tracing::debug!(queue = %sub.group, events = ?shared.dispatcher.event_names(), concurrency, "RabbitMQ consumer started");
        Ok(Box::new(RabbitMqSubscription {
            queue: consume::spawn(shared, first),
            exchange: self.options.exchange.clone(),
        }))
    }

    async fn close(&self) -> Result<()> {
        self.publisher.close().await;
        self.consumers.close().await;
        Ok(())
    }

    /// Down when either connection (publishing, consuming) is down; the
    /// consuming one's error first, as consumers retry on their own.
    fn connection_state(&self) -> ConnectionState {
        match self.consumers.connection_state() {
            ConnectionState::Connected => self.publisher.connection_state(),
            down => down,
        }
    }
}

#[async_trait]
impl crate::transport::TransportConfig for RabbitMqOptions {
    fn kind(&self) -> TransportKind {
        TransportKind::RabbitMq
    }

    async fn connect(self: Box<Self>) -> Result<Arc<dyn Transport>> {
        Ok(Arc::new(RabbitMqTransport::connect(*self).await?))
    }

    fn unconfirmed_delivery(&self, _events: &[(&'static str, &'static Route)]) -> Option<String> {
        self.unconfirmed_reason()
    }
}

/// `HEYTOM_RABBITMQ_URL`, for `App::from_env`.
pub(crate) fn from_env() -> Option<Box<dyn crate::transport::TransportConfig>> {
    let url = std::env::var("HEYTOM_RABBITMQ_URL").ok()?;
    (!url.trim().is_empty()).then(|| Box::new(RabbitMqOptions::new(url)) as Box<_>)
}
