//! The embedded in-process broker: topics with consumer groups, ordered
//! lanes per partition key, ack / requeue and an inspectable dead-letter list.
//!
//! Every event travels here under its `NAME`, whatever its attribute, with
//! the same ack, retry and dead-letter semantics as the real brokers.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::dispatch::{DeadLetter, Incoming, Outcome};
use crate::error::{Error, Result};
use crate::event::{Envelope, Headers, TransportKind};
use crate::handler::HandlerEntry;
use crate::transport::{Outgoing, Subscription, SubscriptionHandle, Transport};

/// Lanes per group: messages with one partition key share a lane and are
/// handled in order; messages without a key spread over all lanes.
const LANES: usize = 16;
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
}

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

struct Group {
    state: Mutex<GroupState>,
    notify: Notify,
    next_lane: AtomicUsize,
}

struct GroupState {
    /// Messages with their arrival number, per lane.
    lanes: Vec<VecDeque<(u64, Incoming)>>,
    busy: [bool; LANES],
    next_seq: u64,
}

impl Group {
    fn new() -> Self {
        Group {
            state: Mutex::new(GroupState {
                lanes: (0..LANES).map(|_| VecDeque::new()).collect(),
                busy: [false; LANES],
                next_seq: 0,
            }),
            notify: Notify::new(),
            next_lane: AtomicUsize::new(0),
        }
    }

    fn push(&self, key: Option<&str>, msg: Incoming) {
        let lane = match key {
            Some(k) => {
                let mut h = DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() % LANES as u64) as usize
            }
            None => self.next_lane.fetch_add(1, Ordering::Relaxed) % LANES,
        };
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.lanes[lane].push_back((seq, msg));
        drop(st);
        self.notify.notify_one();
    }

    /// The oldest message of a free lane: in arrival order across lanes,
    /// so one worker takes unkeyed messages as a queue would.
    fn take(&self) -> Option<(usize, u64, Incoming)> {
        let mut st = lock(&self.state);
        let lane = (0..LANES)
            .filter(|&i| !st.busy[i])
            .filter_map(|i| st.lanes[i].front().map(|(seq, _)| (*seq, i)))
            .min()?
            .1;
        let (seq, m) = st.lanes[lane].pop_front()?;
        st.busy[lane] = true;
        Some((lane, seq, m))
    }

    fn release(&self, lane: usize, requeue: Option<(u64, Incoming)>) {
        let mut st = lock(&self.state);
        if let Some(m) = requeue {
            st.lanes[lane].push_front(m);
        }
        st.busy[lane] = false;
        let more = !st.lanes[lane].is_empty();
        drop(st);
        if more {
            self.notify.notify_one();
        }
    }

    fn len(&self) -> usize {
        lock(&self.state).lanes.iter().map(VecDeque::len).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the queues are still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        self.push(&groups, key, Incoming::new(headers, body))
    }

    fn push(&self, groups: &[Arc<Group>], key: Option<&str>, msg: Incoming) -> usize {
        if let Some((last, others)) = groups.split_last() {
            for g in others {
                g.push(key, msg.clone());
            }
            last.push(key, msg);
        }
        groups.len()
    }

    /// An envelope travels as it is: shared by every group, never turned
    /// into wire headers and parsed back.
    fn publish_envelope(&self, envelope: &Envelope) {
        let groups: Vec<Arc<Group>> = lock(&self.inner.topics)
            .get(envelope.name.as_str())
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        if groups.is_empty() {
            return;
        }
        let key = envelope.partition_key.as_deref();
        self.push(&groups, key, Incoming::from_envelope(envelope.clone()));
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
        self.broker.publish_envelope(&message.envelope);
        Ok(())
    }

    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        messages
            .iter()
            .map(|m| {
                self.broker.publish_envelope(&m.envelope);
                Ok(())
            })
            .collect()
    }

    async fn subscribe(&self, sub: Subscription) -> Result<Box<dyn SubscriptionHandle>> {
        // The destination is the topic: an event's name.
        let group = self.broker.group(&sub.destination, &sub.group);
        let stopped = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        for _ in 0..sub.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1) {
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
                    let Some(taken) = Taken::from(&group) else {
                        notified.await;
                        continue;
                    };
                    // Another worker may take the next lane while this one works.
                    group.notify.notify_one();
                    let outcome = dispatcher.dispatch(taken.message().clone()).await;
                    match outcome {
                        Outcome::Ack => taken.settle(),
                        Outcome::Requeue if dispatcher.is_stopping() => {
                            // Stopping: take nothing more, not even this
                            // message back (it waits for the next start).
                            stopped.store(true, Ordering::Release);
                            drop(taken);
                            group.notify.notify_waiters();
                        }
                        // Handed back: to the front of its lane.
                        Outcome::Requeue => drop(taken),
                        Outcome::DeadLetter(d) => {
                            let msg = taken.message().clone();
                            broker.dead_letter(&topic, &group_name, msg, d);
                            taken.settle();
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

/// A message taken from its lane, which stays busy until this is dropped.
/// A message not settled by then (handed back, or its worker aborted when
/// a stop outlasted its deadline) goes back to the front of its lane.
struct Taken {
    group: Arc<Group>,
    lane: usize,
    seq: u64,
    message: Incoming,
    settled: bool,
}

impl Taken {
    /// The oldest message of a free lane, if any.
    fn from(group: &Arc<Group>) -> Option<Self> {
        let (lane, seq, message) = group.take()?;
        Some(Taken {
            group: group.clone(),
            lane,
            seq,
            message,
            settled: false,
        })
    }

    fn message(&self) -> &Incoming {
        &self.message
    }

    /// Done with: acknowledged or dead-lettered; the lane is free again.
    fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let back = (!self.settled).then(|| (self.seq, std::mem::take(&mut self.message)));
        self.group.release(self.lane, back);
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
