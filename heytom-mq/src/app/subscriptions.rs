//! What a running app consumes, for operators: [`SubscriptionInfo`] and
//! the accessors of [`RunningApp`] the dashboard reads.

use crate::event::TransportKind;
use crate::handler::HandlerEntry;

use super::RunningApp;

/// One subscription of a running app: the handlers that consume one
/// destination (Kafka topic, RabbitMQ queue, in-memory topic) in one group.
/// Every message arriving there runs each handler of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The transport it consumes from.
    pub transport: TransportKind,
    /// The topic or queue.
    pub destination: String,
    /// The consumer group (Kafka), queue (RabbitMQ) or group (in-memory).
    pub group: String,
    /// The `NAME`s of the events handled here.
    pub events: Vec<&'static str>,
    /// The names of the handlers.
    pub handlers: Vec<String>,
}

impl SubscriptionInfo {
    pub(super) fn new(
        transport: TransportKind,
        destination: &str,
        group: &str,
        handlers: &[HandlerEntry],
    ) -> Self {
        let mut events: Vec<&'static str> = Vec::new();
        for h in handlers {
            if !events.contains(&h.event_name) {
                events.push(h.event_name);
            }
        }
        SubscriptionInfo {
            transport,
            destination: destination.to_owned(),
            group: group.to_owned(),
            events,
            handlers: handlers.iter().map(|h| h.name.clone()).collect(),
        }
    }
}

impl RunningApp {
    /// The handlers this app runs.
    pub fn handlers(&self) -> &[HandlerEntry] {
        &self.app.handlers
    }

    /// The subscriptions this app started, by transport, destination and group.
    ///
    /// ```no_run
    /// # async fn f(running: heytom_mq::RunningApp) {
    /// for s in running.subscriptions() {
    ///     println!("{} {} ({}): {:?}", s.transport, s.destination, s.group, s.handlers);
    /// }
    /// # }
    /// ```
    pub fn subscriptions(&self) -> &[SubscriptionInfo] {
        &self.topology
    }

    /// Admin access to the app's local message table (counts, rows,
    /// requeue, delete), when it has an outbox; a requeue wakes this app's relay.
    #[cfg(feature = "_outbox")]
    pub fn outbox_admin(&self) -> Option<crate::outbox::OutboxAdmin> {
        self.app
            .outbox
            .clone()
            .map(crate::outbox::OutboxAdmin::from_runtime)
    }
}
