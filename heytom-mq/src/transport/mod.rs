//! The transport traits every broker adapter implements, and the adapters.
//!
//! A transport knows how to publish an [`Envelope`] to a [`Route`] and how
//! to feed deliveries of one subscription to a [`Dispatcher`], acting on the
//! [`Outcome`](crate::Outcome) it returns (ack, dead-letter, requeue).
//! Retry policy, decoding and handler calls live in the dispatcher, so every
//! transport behaves the same.

use std::sync::Arc;

use async_trait::async_trait;

use crate::consumer::Dispatcher;
use crate::error::Result;
use crate::event::{Envelope, Route, TransportKind};
use crate::handler::HandlerEntry;

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;

/// One message to publish: where it goes and what it is.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The event's route.
    pub route: &'static Route,
    /// The envelope.
    pub envelope: Envelope,
}

/// One subscription: the deliveries of one event for one consumer group
/// (Kafka group / RabbitMQ queue / in-memory group), run by one dispatcher.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The event's `NAME`.
    pub event_name: &'static str,
    /// The event's route.
    pub route: &'static Route,
    /// The consumer group or queue, from [`Transport::group_for`].
    pub group: String,
    /// Parallel deliveries wanted (the transport may bound it further).
    pub concurrency: Option<usize>,
    /// Runs the handlers and says what to do with each message.
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

    /// Starts consuming a subscription.
    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn SubscriptionHandle>>;

    /// Flushes and closes connections; called once at app shutdown.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A running subscription.
#[async_trait]
pub trait SubscriptionHandle: Send + Sync {
    /// Stops taking new deliveries, waits for in-flight ones to finish and
    /// be acknowledged (or handed back), then closes.
    async fn stop(self: Box<Self>) -> Result<()>;
}
