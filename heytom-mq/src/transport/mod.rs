//! The transport traits every broker adapter implements, and the adapters.
//!
//! A transport knows how to publish an [`Envelope`] to a [`Route`] and how
//! to consume a destination (a topic in a group, a queue), feeding each
//! delivery to the destination's [`Dispatcher`] and acting on the
//! [`Outcome`](crate::Outcome) it returns (ack, dead-letter, requeue).
//! Routing by event name, decoding, retry policy and handler calls live in
//! the dispatcher, so every transport behaves the same.

use std::sync::Arc;

use async_trait::async_trait;

use crate::dispatch::Dispatcher;
use crate::error::Result;
use crate::event::{Envelope, EventId, Route, TransportKind};
use crate::handler::HandlerEntry;

#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
pub(crate) mod declare_once;
pub mod health;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
mod wire;

/// The results of a batch handed over by
/// [`Transport::publish_batch_queued`], one per message, in order.
pub type PendingResults = futures::future::BoxFuture<'static, Vec<Result<()>>>;

/// Reads one transport's configuration from the environment, if set.
pub(crate) type ConfigFromEnv = fn() -> Option<Box<dyn TransportConfig>>;

/// The built-in transports [`App::from_env`](crate::App::from_env) looks
/// for in the environment: one line per transport.
pub(crate) const FROM_ENV: &[ConfigFromEnv] = &[
    #[cfg(feature = "rabbitmq")]
    rabbitmq::from_env,
    #[cfg(feature = "kafka")]
    kafka::from_env,
];

/// A transport's configuration, which `AppBuilder` connects when the app is
/// built: `RabbitMqOptions`, `KafkaOptions`, and any transport you made
/// yourself (`Arc<dyn Transport>`, added with `AppBuilder::transport`).
#[async_trait]
pub trait TransportConfig: Send + Sync + 'static {
    /// The identity of the transport it connects; a later configuration of
    /// the same kind replaces an earlier one.
    fn kind(&self) -> TransportKind;

    /// Connects the transport.
    async fn connect(self: Box<Self>) -> Result<Arc<dyn Transport>>;

    /// Why this transport cannot confirm the delivery of some of `events`
    /// (the events it would carry, with their routes): `None` when every
    /// publish waits for the broker's acknowledgement. `AppBuilder::build`
    /// refuses an outbox over a transport that answers `Some`, unless
    /// `Outbox::allow_unconfirmed_transport(true)`: a row would be marked
    /// Sent for a message the broker may never have stored.
    fn unconfirmed_delivery(&self, events: &[(&'static str, &'static Route)]) -> Option<String> {
        let _ = events;
        None
    }
}

#[async_trait]
impl TransportConfig for Arc<dyn Transport> {
    fn kind(&self) -> TransportKind {
        Transport::kind(self.as_ref())
    }

    async fn connect(self: Box<Self>) -> Result<Arc<dyn Transport>> {
        Ok(*self)
    }
}

/// One message to publish: where it goes and what it is.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The event's route.
    pub route: &'static Route,
    /// The envelope.
    pub envelope: Envelope,
}

/// Events of one type serialized for one batch: their payloads back to
/// back in one buffer (serialized before anything is sent, so that a
/// serialization error fails the batch first), their ids and partition keys.
#[derive(Debug, Clone, Copy)]
pub struct EncodedBatch<'a> {
    /// The events' route.
    pub route: &'static Route,
    /// The event name.
    pub name: &'static str,
    /// Each message's event id (also its correlation id).
    pub ids: &'a [EventId],
    /// The JSON payloads, back to back.
    pub payloads: &'a [u8],
    /// Where each payload ends in `payloads`.
    pub ends: &'a [usize],
    /// Each message's partition key.
    pub keys: &'a [Option<String>],
}

impl EncodedBatch<'_> {
    /// How many messages.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The payload of message `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.payloads[start..self.ends[i]]
    }

    /// The envelope of message `i`, as [`Envelope::new`] makes it (the
    /// correlation id is the event id, so not stored; it occurred now).
    pub fn envelope(&self, i: usize) -> Envelope {
        Envelope {
            id: self.ids[i],
            name: self.name.into(),
            occurred_at: chrono::Utc::now(),
            headers: crate::event::Headers::new(),
            partition_key: self.keys[i].clone(),
            payload: self.payload(i).to_vec(),
        }
    }
}

/// One subscription: the deliveries of one destination for one consumer
/// group (Kafka topic and group / RabbitMQ queue / in-memory topic and
/// group), whatever their event types, run by one dispatcher that routes
/// each by its event name.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Where to consume from, from [`Transport::destination_of`].
    pub destination: String,
    /// The consumer group or queue, from [`Transport::group_for`].
    pub group: String,
    /// The events consumed here at the start, with their routes (what the
    /// topology and the consumer settings come from). More may be added
    /// later through [`SubscriptionHandle::add_event`].
    pub events: Vec<(&'static str, &'static Route)>,
    /// Parallel deliveries wanted (the transport may bound it further).
    pub concurrency: Option<usize>,
    /// Routes each delivery to its handlers and says what to do with it.
    pub dispatcher: Arc<Dispatcher>,
}

/// A broker adapter.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// The consumer group (Kafka), queue (RabbitMQ) or group (in-memory) a
    /// handler consumes from. Handlers with the same group for the same
    /// event share one subscription; each message is run by all of them.
    fn group_for(&self, handler: &HandlerEntry) -> String;

    /// The destination an event is consumed from, within a group: events
    /// with the same destination and group share one subscription. By
    /// default the event's name (one topic per event, as in memory).
    fn destination_of(&self, route: &'static Route, event_name: &'static str) -> String {
        let _ = route;
        event_name.to_owned()
    }

    /// Declares what publishing to this route needs (exchange, topic).
    async fn declare(&self, route: &'static Route, event_name: &'static str) -> Result<()> {
        let _ = (route, event_name);
        Ok(())
    }

    /// Publishes one message; returns once the broker has confirmed it.
    async fn publish(&self, message: &Outgoing) -> Result<()>;

    /// Publishes many messages, pipelining the confirms; one result per message.
    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.publish(m).await);
        }
        out
    }

    /// Publishes many messages the transport may keep (an in-process
    /// broker stores them as they are, without a copy); one result per
    /// message. By default the same as [`publish_batch`](Self::publish_batch).
    async fn publish_batch_owned(&self, messages: Vec<Outgoing>) -> Vec<Result<()>> {
        self.publish_batch(&messages).await
    }

    /// Publishes many messages in two steps, so a caller can start the
    /// next batch while this one waits for its confirms and still keep
    /// the order: the call returns once the messages are handed to the
    /// broker connection, in order (a later call's messages go after
    /// them); the future it returns gives one result per message once the
    /// broker has answered. By default the call publishes the whole batch
    /// and returns its results ready (no overlap, the same order).
    async fn publish_batch_queued(&self, messages: Vec<Outgoing>) -> PendingResults {
        let results = self.publish_batch_owned(messages).await;
        Box::pin(std::future::ready(results))
    }

    /// Starts consuming a subscription.
    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn SubscriptionHandle>>;

    /// Whether [`publish_encoded`](Self::publish_encoded) is supported:
    /// then `send_batch` serializes the events into one buffer and hands
    /// them over without building an [`Envelope`] each (false by default).
    fn publishes_encoded(&self) -> bool {
        false
    }

    /// Publishes a batch of one event type serialized up front (see
    /// [`EncodedBatch`]), sending each message while earlier ones are in
    /// flight; one result per message, in order. The wire form must be what
    /// [`EncodedBatch::envelope`] gives. Called only when
    /// [`publishes_encoded`](Self::publishes_encoded) is true; by default it
    /// builds the envelopes and calls [`publish_batch`](Self::publish_batch).
    async fn publish_encoded(&self, batch: &EncodedBatch<'_>) -> Vec<Result<()>> {
        let messages: Vec<Outgoing> = (0..batch.len())
            .map(|i| Outgoing {
                route: batch.route,
                envelope: batch.envelope(i),
            })
            .collect();
        self.publish_batch(&messages).await
    }

    /// Flushes and closes connections; called once at app shutdown.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// The state of the connection to the broker, from what the transport
    /// already knows (no round trip): for [`RunningApp::health`](crate::RunningApp::health).
    /// By default always connected (an in-process transport).
    fn connection_state(&self) -> health::ConnectionState {
        health::ConnectionState::Connected
    }
}

/// A running subscription.
#[async_trait]
pub trait SubscriptionHandle: Send + Sync {
    /// Prepares consuming one more event on this destination (RabbitMQ:
    /// declares its binding), before the dispatcher starts routing it here.
    async fn add_event(&self, event_name: &'static str, route: &'static Route) -> Result<()> {
        let _ = (event_name, route);
        Ok(())
    }

    /// Stops taking new deliveries, waits for in-flight ones to finish and
    /// be acknowledged (or handed back), then closes.
    ///
    /// The app or consumer bounds it: at its deadline the handlers still
    /// running are abandoned and their deliveries come back as
    /// [`Outcome::Requeue`](crate::Outcome::Requeue), which the transport
    /// hands back as usual; if this still has not finished a little later,
    /// the future is dropped. Dropping it must acknowledge nothing, so that
    /// the broker delivers what it held again.
    async fn stop(self: Box<Self>) -> Result<()>;

    /// The monitor its consumer task keeps up to date (lost, resumed), for
    /// [`RunningApp::health`](crate::RunningApp::health). `None` (the
    /// default): the subscription counts as running until the app stops it.
    fn monitor(&self) -> Option<health::SubscriptionMonitor> {
        None
    }
}
