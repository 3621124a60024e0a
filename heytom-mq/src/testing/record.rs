//! What a [`TestApp`](super::TestApp) records: the deliveries its handlers
//! settled ([`Handled`]) and the envelopes the app published, through a
//! transport that wraps the in-memory one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::dispatch::{DeadLetter, Incoming, Outcome};
use crate::error::Result;
use crate::event::{Envelope, EventId, Route, TransportKind};
use crate::handler::HandlerEntry;
use crate::transport::memory::InMemoryTransport;
use crate::transport::{Outgoing, Subscription, SubscriptionHandle, Transport};

/// One message every handler of its event in the [`TestApp`](super::TestApp)
/// is done with: each acknowledged it, or gave up on it and it went to the
/// dead-letter list.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The message's event id (nil when it carried none that parses).
    pub event_id: EventId,
    /// The event name it carried (the topic's, when it carried none).
    pub event_name: String,
    /// Why each handler (consumer group) that gave up on it did: empty when
    /// every handler succeeded.
    pub dead_letters: Vec<DeadLetter>,
}

impl Handled {
    /// Whether every handler succeeded (nothing was dead-lettered).
    pub fn succeeded(&self) -> bool {
        self.dead_letters.is_empty()
    }
}

/// A message some groups of its topic settled, waiting for the others.
#[derive(Default)]
struct Partly {
    groups: Vec<String>,
    dead_letters: Vec<DeadLetter>,
}

#[derive(Default)]
struct RecordState {
    /// topic -> the groups consuming it (one per subscription).
    expected: HashMap<String, Vec<String>>,
    /// (topic, event id) -> what settled it so far.
    partly: HashMap<(String, String), Partly>,
    /// topic -> messages every group settled, in the order they finished.
    handled: HashMap<String, Vec<Handled>>,
    /// Everything the app published, in order.
    published: Vec<Envelope>,
}

/// The recording, shared by the transport, the broker's settle observer
/// and the [`TestApp`](super::TestApp).
pub(super) struct Record {
    state: Mutex<RecordState>,
    /// Bumped on every change; waits wake on it.
    changed: watch::Sender<u64>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            state: Mutex::new(RecordState::default()),
            changed: watch::Sender::new(0),
        }
    }
}

impl Record {
    fn state(&self) -> std::sync::MutexGuard<'_, RecordState> {
        // A poisoned lock only means a panic elsewhere (a failed assertion
        // in a test); what is recorded is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every change from now on.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The groups each topic is consumed by, set once the app is built.
    pub(super) fn expect(&self, expected: HashMap<String, Vec<String>>) {
        self.state().expected = expected;
    }

    /// The groups consuming `topic` (empty: no handler here handles it).
    pub(super) fn groups_of(&self, topic: &str) -> Vec<String> {
        self.state()
            .expected
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Every topic a handler here consumes.
    pub(super) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.state().expected.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// The broker settled a delivery in one group.
    pub(super) fn settled(&self, topic: &str, group: &str, message: &Incoming, outcome: &Outcome) {
        let id = message.id_text();
        {
            let mut st = self.state();
            let expected = st.expected.get(topic).cloned().unwrap_or_default();
            let key = (topic.to_owned(), id.clone());
            let partly = st.partly.entry(key.clone()).or_default();
            partly.groups.push(group.to_owned());
            if let Outcome::DeadLetter(d) = outcome {
                partly.dead_letters.push(d.clone());
            }
            if expected.iter().all(|g| partly.groups.contains(g)) {
                let done = st.partly.remove(&key).unwrap_or_default();
                st.handled
                    .entry(topic.to_owned())
                    .or_default()
                    .push(Handled {
                        event_id: EventId::parse_str(&id).unwrap_or_default(),
                        event_name: message.name().unwrap_or(topic).to_owned(),
                        dead_letters: done.dead_letters,
                    });
            }
        }
        self.bump();
    }

    /// The messages of `topic` every group is done with.
    pub(super) fn handled(&self, topic: &str) -> Vec<Handled> {
        self.state().handled.get(topic).cloned().unwrap_or_default()
    }

    /// How many messages of `topic` some groups settled and others not yet.
    pub(super) fn partly_handled(&self, topic: &str) -> usize {
        self.state()
            .partly
            .keys()
            .filter(|(t, _)| t == topic)
            .count()
    }

    fn published(&self, envelopes: impl IntoIterator<Item = Envelope>) {
        self.state().published.extend(envelopes);
        self.bump();
    }

    /// The envelopes the app published named `name` (all when `None`).
    pub(super) fn published_named(&self, name: Option<&str>) -> Vec<Envelope> {
        self.state()
            .published
            .iter()
            .filter(|e| name.is_none_or(|n| e.name == n))
            .cloned()
            .collect()
    }
}

/// The app's transport in a test: the in-memory one, recording every
/// envelope the app publishes before handing it to the broker (so a
/// follow-up is recorded before any handler of it runs).
pub(super) struct RecordingTransport {
    inner: InMemoryTransport,
    record: Arc<Record>,
}

impl RecordingTransport {
    pub(super) fn new(inner: InMemoryTransport, record: Arc<Record>) -> Self {
        RecordingTransport { inner, record }
    }
}

#[async_trait]
impl Transport for RecordingTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::InMemory
    }

    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.inner.group_for(handler)
    }

    fn destination_of(&self, route: &'static Route, event_name: &'static str) -> String {
        self.inner.destination_of(route, event_name)
    }

    async fn declare(&self, route: &'static Route, event_name: &'static str) -> Result<()> {
        self.inner.declare(route, event_name).await
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        self.record.published([message.envelope.clone()]);
        self.inner.publish(message).await
    }

    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        self.record
            .published(messages.iter().map(|m| m.envelope.clone()));
        self.inner.publish_batch(messages).await
    }

    async fn publish_batch_owned(&self, messages: Vec<Outgoing>) -> Vec<Result<()>> {
        self.record
            .published(messages.iter().map(|m| m.envelope.clone()));
        self.inner.publish_batch_owned(messages).await
    }

    async fn publish_batch_queued(
        &self,
        messages: Vec<Outgoing>,
    ) -> crate::transport::PendingResults {
        self.record
            .published(messages.iter().map(|m| m.envelope.clone()));
        self.inner.publish_batch_queued(messages).await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<Box<dyn SubscriptionHandle>> {
        self.inner.subscribe(subscription).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
