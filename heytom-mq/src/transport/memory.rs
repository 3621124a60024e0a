//! The embedded in-process broker: topics with consumer groups, ordered
//! lanes per partition key, ack / requeue and an inspectable dead-letter list.
//!
//! Every event travels here under its `NAME`, whatever its attribute, with
//! the same ack, retry and dead-letter semantics as the real brokers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinSet;

mod lanes;

use lanes::{key_lane, lock, Group, Run};

use crate::dispatch::{DeadLetter, Incoming, Outcome};
use crate::error::{Error, Result};
use crate::event::{Envelope, Headers, SharedEnvelope, TransportKind};
use crate::handler::HandlerEntry;
use crate::transport::{EncodedBatch, Outgoing, Subscription, SubscriptionHandle, Transport};

/// Deliveries in flight per subscription unless a handler asks otherwise.
const DEFAULT_CONCURRENCY: usize = 8;

/// The in-process broker. Clones share the same topics, so two apps (or a
/// manual producer and consumer) built on one broker talk to each other.
///
/// ```
/// use heytom_mq::InMemoryBroker;
/// let broker = InMemoryBroker::new();
/// assert!(broker.dead_letters().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct InMemoryBroker {
    inner: Arc<BrokerInner>,
}

#[derive(Default)]
struct BrokerInner {
    /// topic (event name) -> group name -> group
    topics: Mutex<HashMap<String, HashMap<String, Arc<Group>>>>,
    dead_letters: Mutex<Vec<DeadLetteredMessage>>,
    dead_letter_signal: Notify,
    /// Told of every settled delivery: the test harness's hook.
    #[cfg(feature = "testing")]
    settle_observer: std::sync::OnceLock<SettleObserver>,
}

/// Told of every delivery a group settled, once the broker acted on it
/// (acknowledged, or dead-lettered and in the list): topic, group, the
/// message and the outcome. Deliveries handed back are not settled.
#[cfg(feature = "testing")]
pub(crate) type SettleObserver = Arc<dyn Fn(&str, &str, &Incoming, &Outcome) + Send + Sync>;

impl std::fmt::Debug for InMemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBroker").finish_non_exhaustive()
    }
}

/// A message that ended in the in-memory dead-letter destination.
#[derive(Debug, Clone)]
pub struct DeadLetteredMessage {
    /// The event name (topic) it was published under.
    pub topic: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// Wire headers, reserved ones included.
    pub headers: Headers,
    /// The original body.
    pub body: Vec<u8>,
    /// Why.
    pub dead_letter: DeadLetter,
}

impl InMemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn group(&self, topic: &str, group: &str) -> Arc<Group> {
        let mut topics = lock(&self.inner.topics);
        topics
            .entry(topic.to_owned())
            .or_default()
            .entry(group.to_owned())
            .or_insert_with(|| Arc::new(Group::new()))
            .clone()
    }

    /// Publishes raw wire headers and body to a topic (an event name), as a
    /// foreign producer would; every group of the topic gets a copy.
    /// Returns how many groups received it.
    pub fn publish_raw(
        &self,
        topic: &str,
        headers: Headers,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> usize {
        let groups: Vec<Arc<Group>> = lock(&self.inner.topics)
            .get(topic)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        let lane = key_lane(key);
        let msg = Incoming::new(headers, body);
        if let Some((last, others)) = groups.split_last() {
            for g in others {
                g.push_all([(lane, msg.clone())]);
            }
            last.push_all([(lane, msg)]);
        }
        groups.len()
    }

    fn groups_of(&self, topic: &str) -> Vec<Arc<Group>> {
        lock(&self.inner.topics)
            .get(topic)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Envelopes travel as they are: shared by every group, never turned
    /// into wire headers and parsed back. One lock per group for each run
    /// of one topic.
    fn publish_envelopes(&self, envelopes: impl IntoIterator<Item = Envelope>) {
        let mut run: Vec<(Option<usize>, Incoming)> = Vec::new();
        let mut topic = String::new();
        for e in envelopes {
            if *e.name != *topic {
                self.publish_run(&topic, &mut run);
                topic.clear();
                topic.push_str(&e.name);
            }
            let lane = key_lane(e.partition_key.as_deref());
            run.push((lane, Incoming::shared(SharedEnvelope::new(e))));
        }
        self.publish_run(&topic, &mut run);
    }

    /// A batch of one event type serialized up front: its messages share
    /// one allocation (see [`SharedEnvelope::batch`]).
    fn publish_batch_of(&self, topic: &str, envelopes: impl IntoIterator<Item = Envelope>) {
        let mut run: Vec<(Option<usize>, Incoming)> = SharedEnvelope::batch(envelopes)
            .map(|e| (key_lane(e.partition_key.as_deref()), Incoming::shared(e)))
            .collect();
        self.publish_run(topic, &mut run);
    }

    fn publish_run(&self, topic: &str, run: &mut Vec<(Option<usize>, Incoming)>) {
        if run.is_empty() {
            return;
        }
        let groups = self.groups_of(topic);
        if let Some((last, others)) = groups.split_last() {
            for g in others {
                g.push_all(run.iter().cloned());
            }
            last.push_all(run.drain(..));
        }
        run.clear();
    }

    /// Messages waiting (not yet taken) in one group of a topic.
    pub fn pending(&self, topic: &str, group: &str) -> usize {
        lock(&self.inner.topics)
            .get(topic)
            .and_then(|g| g.get(group))
            .map_or(0, |g| g.len())
    }

    /// Every message dead-lettered so far.
    pub fn dead_letters(&self) -> Vec<DeadLetteredMessage> {
        lock(&self.inner.dead_letters).clone()
    }

    /// Removes and returns the dead-lettered messages.
    pub fn take_dead_letters(&self) -> Vec<DeadLetteredMessage> {
        std::mem::take(&mut *lock(&self.inner.dead_letters))
    }

    /// Waits until at least `n` messages have been dead-lettered.
    pub async fn wait_for_dead_letters(&self, n: usize) -> Vec<DeadLetteredMessage> {
        loop {
            let notified = self.inner.dead_letter_signal.notified();
            {
                let dl = lock(&self.inner.dead_letters);
                if dl.len() >= n {
                    return dl.clone();
                }
            }
            notified.await;
        }
    }

    /// Sets the observer of settled deliveries; false when one is set already.
    #[cfg(feature = "testing")]
    pub(crate) fn observe_settled(&self, observer: SettleObserver) -> bool {
        self.inner.settle_observer.set(observer).is_ok()
    }

    /// A copy of a message for the settle observer, when there is one.
    fn observing(&self, message: &Incoming) -> Option<Incoming> {
        #[cfg(feature = "testing")]
        if self.inner.settle_observer.get().is_some() {
            return Some(message.clone());
        }
        let _ = message;
        None
    }

    /// Tells the settle observer of a settled delivery.
    #[cfg(feature = "testing")]
    fn settled(&self, topic: &str, group: &str, observed: Option<Incoming>, outcome: &Outcome) {
        if let (Some(observer), Some(message)) = (self.inner.settle_observer.get(), observed) {
            observer(topic, group, &message, outcome);
        }
    }

    #[cfg(not(feature = "testing"))]
    fn settled(&self, _: &str, _: &str, _: Option<Incoming>, _: &Outcome) {}

    /// The in-memory dead-letter act: keep the copy in the inspectable list.
    fn dead_letter(&self, topic: &str, group: &str, msg: Incoming, dead_letter: DeadLetter) {
        let origin = [
            (crate::event::headers::DEAD_LETTER_TOPIC, topic.to_owned()),
            (crate::event::headers::DEAD_LETTER_GROUP, group.to_owned()),
        ];
        let event_id = msg.id_text();
        dead_letter.log(&origin, &event_id, "the in-memory dead-letter list");
        let (mut headers, body) = msg.into_wire();
        headers.extend(dead_letter.headers_from(&origin));
        lock(&self.inner.dead_letters).push(DeadLetteredMessage {
            topic: topic.to_owned(),
            group: group.to_owned(),
            headers,
            body,
            dead_letter,
        });
        self.inner.dead_letter_signal.notify_waiters();
    }
}

/// The in-memory [`Transport`].
#[derive(Debug, Clone)]
pub struct InMemoryTransport {
    broker: InMemoryBroker,
}

impl InMemoryTransport {
    /// A transport on a broker.
    pub fn new(broker: InMemoryBroker) -> Self {
        InMemoryTransport { broker }
    }

    /// The broker underneath.
    pub fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }
}

#[async_trait]
impl Transport for InMemoryTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::InMemory
    }

    fn group_for(&self, handler: &HandlerEntry) -> String {
        handler
            .group
            .clone()
            .unwrap_or_else(|| handler.name.clone())
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        self.broker.publish_envelopes([message.envelope.clone()]);
        Ok(())
    }

    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        self.broker
            .publish_envelopes(messages.iter().map(|m| m.envelope.clone()));
        messages.iter().map(|_| Ok(())).collect()
    }

    async fn publish_batch_owned(&self, messages: Vec<Outgoing>) -> Vec<Result<()>> {
        let n = messages.len();
        self.broker
            .publish_envelopes(messages.into_iter().map(|m| m.envelope));
        (0..n).map(|_| Ok(())).collect()
    }

    fn publishes_encoded(&self) -> bool {
        true
    }

    /// The messages of a `send_batch`, without a copy of the event name or
    /// of the default correlation id in each (the messages share one allocation).
    async fn publish_encoded(&self, batch: &EncodedBatch<'_>) -> Vec<Result<()>> {
        // Made in place in the batch's one allocation.
        let envelopes = (0..batch.len()).map(|i| Envelope {
            id: batch.ids[i],
            name: batch.name.into(),
            occurred_at: chrono::Utc::now(),
            headers: Headers::new(),
            partition_key: batch.keys[i].clone(),
            payload: batch.payload(i).to_vec(),
        });
        self.broker.publish_batch_of(batch.name, envelopes);
        (0..batch.len()).map(|_| Ok(())).collect()
    }

    async fn subscribe(&self, sub: Subscription) -> Result<Box<dyn SubscriptionHandle>> {
        // The destination is the topic: an event's name.
        let group = self.broker.group(&sub.destination, &sub.group);
        let stopped = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        let workers_n = sub.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
        for _ in 0..workers_n {
            let group = group.clone();
            let stopped = stopped.clone();
            let dispatcher = sub.dispatcher.clone();
            let broker = self.broker.clone();
            let topic = sub.destination.clone();
            let group_name = sub.group.clone();
            workers.spawn(async move {
                loop {
                    let notified = group.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    let Some((mut run, more)) = Run::take(&group, workers_n) else {
                        notified.await;
                        continue;
                    };
                    if more {
                        // Another worker may take other lanes while this one works.
                        group.notify.notify_one();
                    }
                    while let Some(message) = run.current().cloned() {
                        let observed = broker.observing(&message);
                        match dispatcher.dispatch(message).await {
                            Outcome::Ack => {
                                run.settle();
                                broker.settled(&topic, &group_name, observed, &Outcome::Ack);
                            }
                            Outcome::Requeue if dispatcher.is_stopping() => {
                                // Stopping: take nothing more, not even this
                                // message back (it waits for the next start).
                                stopped.store(true, Ordering::Release);
                                drop(run);
                                group.notify.notify_waiters();
                                break;
                            }
                            // Handed back: to the front of its lane, with
                            // the rest of the run behind it.
                            Outcome::Requeue => break,
                            Outcome::DeadLetter(d) => {
                                let seen = observed.map(|m| (m, Outcome::DeadLetter(d.clone())));
                                if let Some(msg) = run.current().cloned() {
                                    broker.dead_letter(&topic, &group_name, msg, d);
                                }
                                run.settle();
                                if let Some((m, outcome)) = seen {
                                    broker.settled(&topic, &group_name, Some(m), &outcome);
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(Box::new(MemorySubscription {
            group,
            stopped,
            workers,
        }))
    }
}

struct MemorySubscription {
    group: Arc<Group>,
    stopped: Arc<AtomicBool>,
    workers: JoinSet<()>,
}

#[async_trait]
impl SubscriptionHandle for MemorySubscription {
    /// Waits for the workers; dropped before they finish (a stop past its
    /// deadline), it aborts them and their messages go back to their lanes.
    async fn stop(mut self: Box<Self>) -> Result<()> {
        self.stopped.store(true, Ordering::Release);
        self.group.notify.notify_waiters();
        while let Some(r) = self.workers.join_next().await {
            if let Err(e) = r {
                return Err(Error::Configuration(format!(
                    "in-memory worker failed: {e}"
                )));
            }
        }
        Ok(())
    }
}
