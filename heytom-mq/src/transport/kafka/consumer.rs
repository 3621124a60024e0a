//! The consuming side of the Kafka transport.
//!
//! One librdkafka consumer per (topic, group), polled by a dedicated thread
//! (so rebalance callbacks may wait for in-flight work without blocking the
//! async runtime). Several events on one topic in one group share that
//! consumer: each message goes to the [`Dispatcher`] of its type (the
//! `heytom-event-name` header, routed by the core's dispatcher); a message
//! of a type none of them handles is dead-lettered as an unknown type. Each assigned partition gets an
//! ordered lane, a tokio task that dispatches its messages one after the
//! other; lanes run concurrently. After a message is acked (or its dead
//! letter is acknowledged by the broker) the lane stores its offset; stored
//! offsets are committed every `commit_interval`, when partitions are
//! revoked and on shutdown. A message that is handed back (`Requeue`) is
//! never stored: the lane seeks back to it and skips what was fetched after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::{FutureExt as _, Shared as SharedFuture};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::raw::RawMessage;
use super::{log_rdkafka, TransportInner, KAFKA};
use crate::dispatch::{DeadLetter, Dispatcher, Outcome};
use crate::error::{Error, Result};
use crate::event::{headers, Route};
use crate::transport::{Subscription, SubscriptionHandle};

pub use crate::event::headers::{
    DEAD_LETTER_GROUP, DEAD_LETTER_OFFSET, DEAD_LETTER_PARTITION, DEAD_LETTER_TOPIC,
};

const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Messages taken from librdkafka's queue per wake-up of the lanes.
const MAX_BATCH: usize = 256;
/// A lane working through a batch stores its position at least this often.
const STORE_INTERVAL: Duration = Duration::from_millis(50);

/// Running / stopping gracefully / aborted (handle dropped without `stop`).
const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const ABORTED: u8 = 2;

/// Bounds the messages fetched but not yet finished.
struct InFlight {
    slots: Mutex<Slots>,
    freed: Condvar,
    /// A waiting poll thread is woken once this many slots are free, so that
    /// it fetches a batch rather than one message per freed slot.
    low_water: usize,
}

struct Slots {
    free: usize,
    /// The poll thread waits for a slot: only then is a notification worth a syscall.
    waiting: bool,
}

impl InFlight {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(InFlight {
            slots: Mutex::new(Slots {
                free: n,
                waiting: false,
            }),
            freed: Condvar::new(),
            low_water: (n / 2).clamp(1, MAX_BATCH),
        })
    }

    /// Takes a slot, waiting at most `wait` (zero: do not wait).
    fn acquire(self: &Arc<Self>, wait: Duration) -> Option<Permit> {
        let mut slots = lock(&self.slots);
        if slots.free == 0 && !wait.is_zero() {
            slots.waiting = true;
            slots = match self
                .freed
                .wait_timeout_while(slots, wait, |s| s.free < self.low_water)
            {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            slots.waiting = false;
        }
        if slots.free == 0 {
            return None;
        }
        slots.free -= 1;
        Some(Permit(self.clone()))
    }
}

/// One in-flight slot, given back on drop.
struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = lock(&self.0.slots);
        slots.free += 1;
        if slots.waiting && slots.free >= self.0.low_water {
            self.0.freed.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One fetched message on its way to a lane.
struct Delivery {
    offset: i64,
    generation: u64,
    message: RawMessage,
    _permit: Permit,
}

struct LaneState {
    /// Bumped on revocation and shutdown: deliveries of older generations are dropped.
    generation: u64,
    in_flight: bool,
    /// Drains waiting for `in_flight` to clear.
    drain_waiting: u32,
    /// After a requeue: skip everything until this offset comes again.
    resume_at: Option<i64>,
}

struct Lane {
    state: Mutex<LaneState>,
    idle: Condvar,
}

/// The poll thread's end of a lane; dropping it ends the lane's task.
struct LaneHandle {
    lane: Arc<Lane>,
    tx: mpsc::UnboundedSender<Vec<Delivery>>,
}

/// The consumer settings an event's route asks for. Events that share a
/// consumer (same topic and group) must ask for the same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsumerSettings {
    auto_commit: bool,
    auto_offset_reset: &'static str,
    session_timeout_ms: Option<u32>,
    max_in_flight: usize,
}

impl ConsumerSettings {
    fn of(route: &Route, default_max_in_flight: usize) -> Self {
        let k = route.as_kafka();
        ConsumerSettings {
            auto_commit: k.and_then(|r| r.enable_auto_commit).unwrap_or(false),
            auto_offset_reset: k
                .and_then(|r| r.auto_offset_reset)
                .map_or("earliest", |a| a.as_str()),
            session_timeout_ms: k.and_then(|r| r.session_timeout_ms),
            max_in_flight: k
                .and_then(|r| r.max_poll_records)
                .map_or(default_max_in_flight, |n| n as usize)
                .max(1),
        }
    }

    /// What differs from `other`, in attribute terms.
    fn differences(&self, other: &Self) -> Vec<String> {
        let mut d = Vec::new();
        if self.auto_commit != other.auto_commit {
            d.push(format!(
                "enable_auto_commit {} vs {}",
                self.auto_commit, other.auto_commit
            ));
        }
        if self.auto_offset_reset != other.auto_offset_reset {
            d.push(format!(
                "auto_offset_reset {} vs {}",
                self.auto_offset_reset, other.auto_offset_reset
            ));
        }
        if self.session_timeout_ms != other.session_timeout_ms {
            let show = |v: Option<u32>| v.map_or_else(|| "unset".to_owned(), |v| v.to_string());
            d.push(format!(
                "session_timeout_ms {} vs {}",
                show(self.session_timeout_ms),
                show(other.session_timeout_ms)
            ));
        }
        if self.max_in_flight != other.max_in_flight {
            d.push(format!(
                "max_poll_records {} vs {}",
                self.max_in_flight, other.max_in_flight
            ));
        }
        d
    }
}

/// What the poll thread, the lanes and the rebalance callback share.
struct Shared {
    transport: Arc<TransportInner>,
    /// Routes each message to the handlers of its type.
    dispatcher: Arc<Dispatcher>,
    settings: ConsumerSettings,
    topic: String,
    group: String,
    dead_letter_topic: String,
    /// Offsets are stored by the lanes (false: librdkafka auto-commit asked by the route).
    manual_offsets: bool,
    lanes: Mutex<HashMap<i32, LaneHandle>>,
    state: AtomicU8,
    /// Offsets stored since the last commit.
    dirty: AtomicBool,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    /// Drops queued deliveries of these partitions and waits (up to the
    /// drain timeout) for the one in flight on each to finish.
    fn drain(&self, partitions: Option<&[i32]>) {
        let lanes: Vec<(i32, Arc<Lane>)> = lock(&self.lanes)
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .map(|(p, l)| (*p, l.lane.clone()))
            .collect();
        let deadline = Instant::now() + self.transport.options.drain_timeout;
        for (partition, lane) in lanes {
            let mut st = lock(&lane.state);
            st.generation += 1;
            st.resume_at = None;
            while st.in_flight {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(topic = %self.topic, partition, "handler still running after the drain timeout; its message will be delivered again");
                    break;
                }
                st.drain_waiting += 1;
                st = match lane.idle.wait_timeout(st, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                st.drain_waiting -= 1;
            }
        }
    }
}

fn is_no_offset(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

fn commit_sync(consumer: &BaseConsumer<SubscriptionContext>, shared: &Shared, why: &str) {
    if !shared.manual_offsets {
        return;
    }
    shared.dirty.store(false, Ordering::Release);
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {
            tracing::debug!(topic = %shared.topic, group = %shared.group, why, "offsets committed")
        }
        Err(e) if is_no_offset(&e) => {}
        Err(e) => {
            tracing::warn!(topic = %shared.topic, group = %shared.group, why, error = %e, "committing offsets failed")
        }
    }
}

/// The librdkafka context of a subscription: logging, rebalance and commit callbacks.
pub(crate) struct SubscriptionContext {
    shared: Arc<Shared>,
}

impl ClientContext for SubscriptionContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_rdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "heytom_mq::kafka", topic = %self.shared.topic, group = %self.shared.group, %error, reason, "kafka consumer error");
    }
}

/// The partitions of `topic` in a rebalance's list.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for SubscriptionContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let s = &self.shared;
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl, &s.topic);
                tracing::info!(topic = %s.topic, group = %s.group, ?partitions, "partitions revoked");
                if s.state.load(Ordering::Acquire) == ABORTED {
                    return;
                }
                s.drain(Some(&partitions));
                if consumer.assignment_lost() {
                    tracing::warn!(topic = %s.topic, group = %s.group, "assignment lost; offsets not committed");
                } else {
                    commit_sync(consumer, s, "revocation");
                }
            }
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl, &s.topic);
                tracing::info!(topic = %s.topic, group = %s.group, ?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(topic = %s.topic, group = %s.group, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if !is_no_offset(&e) {
                tracing::warn!(topic = %self.shared.topic, group = %self.shared.group, error = %e, "offset commit failed");
            }
        }
    }
}

type KafkaBaseConsumer = BaseConsumer<SubscriptionContext>;

/// A running consumer of one (topic, group) and the events it handles.
pub(crate) struct RunningConsumer {
    shared: Arc<Shared>,
    /// Resolves when the poll thread has finished (offsets committed).
    done: SharedFuture<oneshot::Receiver<()>>,
}

pub(crate) async fn subscribe(
    transport: Arc<TransportInner>,
    sub: Subscription,
) -> Result<Box<dyn SubscriptionHandle>> {
    let topic = sub.destination.clone();
    let options = &transport.options;
    let Some(&(first_name, first_route)) = sub.events.first() else {
        return Err(Error::config(format!(
            "a Kafka subscription to `{topic}` without any event"
        )));
    };

    let spec = transport.topic_spec(first_route, first_name);
    transport.ensure_topic(&spec).await?;
    let dead_letter_topic = options.dead_letter.for_topic(&topic);
    let mut dlq_spec = spec.clone();
    dlq_spec.name = dead_letter_topic.clone();
    dlq_spec.explicit_partitions = false;
    dlq_spec.configs.retain(|(k, _)| *k != "retention.ms");
    transport.ensure_topic(&dlq_spec).await?;

    // Events on one topic in one group share this consumer, so they must
    // ask for the same consumer settings.
    let settings = ConsumerSettings::of(first_route, options.max_in_flight);
    for &(name, route) in &sub.events[1..] {
        check_same_settings(
            &settings,
            &[first_name],
            name,
            route,
            &topic,
            &sub.group,
            options.max_in_flight,
        )?;
    }

    let mut config = options.client_config();
    let auto_commit = settings.auto_commit;
    config
        .set("group.id", &sub.group)
        .set(
            "enable.auto.commit",
            if auto_commit { "true" } else { "false" },
        )
        .set(
            "enable.auto.offset.store",
            if auto_commit { "true" } else { "false" },
        )
        .set("auto.offset.reset", settings.auto_offset_reset);
    if let Some(ms) = settings.session_timeout_ms {
        config.set("session.timeout.ms", ms.to_string());
    }
    for (k, v) in &options.consumer_properties {
        config.set(k, v);
    }
    let max_in_flight = settings.max_in_flight;

    let shared = Arc::new(Shared {
        transport: transport.clone(),
        dispatcher: sub.dispatcher.clone(),
        settings,
        topic: topic.clone(),
        group: sub.group.clone(),
        dead_letter_topic,
        manual_offsets: !auto_commit,
        lanes: Mutex::new(HashMap::new()),
        state: AtomicU8::new(RUNNING),
        dirty: AtomicBool::new(false),
    });
    let consumer: KafkaBaseConsumer = config
        .create_with_context(SubscriptionContext {
            shared: shared.clone(),
        })
        .map_err(|e| Error::config(format!("invalid Kafka consumer settings: {e}")))?;
    consumer
        .subscribe(&[topic.as_str()])
        .map_err(|e| Error::connection(KAFKA, format!("subscribing to `{topic}` failed"), e))?;
    let consumer = Arc::new(consumer);

    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let thread_shared = shared.clone();
    let commit_interval = options.commit_interval;
    std::thread::Builder::new()
        .name(format!("heytom-kafka-{topic}"))
        .spawn(move || {
            poll_loop(
                thread_shared,
                consumer,
                runtime,
                InFlight::new(max_in_flight),
                commit_interval,
            );
            let _ = done_tx.send(());
        })
        .map_err(|e| Error::connection(KAFKA, "could not start the consumer thread", e))?;
    tracing::info!(topic = %topic, group = %sub.group, events = ?sub.dispatcher.event_names(), max_in_flight, auto_commit, "Kafka consumer started");
    Ok(Box::new(KafkaSubscription {
        consumer: Arc::new(RunningConsumer {
            shared,
            done: done_rx.shared(),
        }),
        group: sub.group,
        stopped: false,
    }))
}

/// A configuration error when `name`'s consumer settings differ from those
/// of the events already on the consumer.
fn check_same_settings(
    settings: &ConsumerSettings,
    others: &[&str],
    name: &str,
    route: &Route,
    topic: &str,
    group: &str,
    max_in_flight: usize,
) -> Result<()> {
    let differences = settings.differences(&ConsumerSettings::of(route, max_in_flight));
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "events {} and `{name}` share topic `{topic}` in group `{group}`, so they share one consumer, \
         but ask for different consumer settings ({}); give them the same \
         #[kafka(...)] consumer settings or different groups",
        others
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        differences.join(", ")
    )))
}

fn poll_loop(
    shared: Arc<Shared>,
    consumer: Arc<KafkaBaseConsumer>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<InFlight>,
    commit_interval: Duration,
) {
    let mut workers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut last_commit = Instant::now();
    while !shared.stopping() {
        if shared.manual_offsets
            && last_commit.elapsed() >= commit_interval
            && shared.dirty.swap(false, Ordering::AcqRel)
        {
            last_commit = Instant::now();
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                if !is_no_offset(&e) {
                    tracing::warn!(topic = %shared.topic, error = %e, "offset commit failed");
                }
            }
        }
        let Some(permit) = in_flight.acquire(POLL_INTERVAL) else {
            continue;
        };
        // The first message may wait; the rest of the batch is what is already fetched.
        let mut permit = Some(permit);
        let mut timeout = POLL_INTERVAL;
        let mut batches: Vec<(i32, Vec<Delivery>)> = Vec::new();
        for _ in 0..MAX_BATCH {
            let Some(p) = permit.take().or_else(|| in_flight.acquire(Duration::ZERO)) else {
                break;
            };
            let message = match consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(topic = %shared.topic, group = %shared.group, error = %e, "Kafka fetch error");
                    break;
                }
                Some(Ok(m)) => m,
            };
            timeout = Duration::ZERO;
            if message.topic() != shared.topic {
                continue;
            }
            let partition = message.partition();
            let delivery = Delivery {
                offset: message.offset(),
                // Stamped now: a revocation inside a later poll of this batch makes it stale.
                generation: lane_generation(&shared, &consumer, &runtime, &mut workers, partition),
                message: RawMessage::from_message(&message),
                _permit: p,
            };
            match batches.iter_mut().find(|(q, _)| *q == partition) {
                Some((_, b)) => b.push(delivery),
                None => batches.push((partition, vec![delivery])),
            }
        }
        if !batches.is_empty() {
            let lanes = lock(&shared.lanes);
            for (partition, batch) in batches {
                if let Some(handle) = lanes.get(&partition) {
                    let _ = handle.tx.send(batch);
                }
            }
        }
    }

    let aborted = shared.state.load(Ordering::Acquire) == ABORTED;
    if aborted {
        for w in &workers {
            w.abort();
        }
    } else {
        shared.drain(None);
        commit_sync(&consumer, &shared, "shutdown");
    }
    lock(&shared.lanes).clear();
    // Joining needs no timer, so it is safe even while the runtime shuts down.
    for w in workers {
        let _ = runtime.block_on(w);
    }
    consumer.unsubscribe();
    tracing::info!(topic = %shared.topic, group = %shared.group, aborted, "Kafka consumer stopped");
    // Dropping the last reference closes the consumer and leaves the group.
    drop(consumer);
}

/// The current generation of a partition's lane, creating the lane (and its task) first if needed.
fn lane_generation(
    shared: &Arc<Shared>,
    consumer: &Arc<KafkaBaseConsumer>,
    runtime: &tokio::runtime::Handle,
    workers: &mut Vec<tokio::task::JoinHandle<()>>,
    partition: i32,
) -> u64 {
    let mut lanes = lock(&shared.lanes);
    let handle = lanes.entry(partition).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            state: Mutex::new(LaneState {
                generation: 0,
                in_flight: false,
                drain_waiting: 0,
                resume_at: None,
            }),
            idle: Condvar::new(),
        });
        workers.push(runtime.spawn(run_lane(
            shared.clone(),
            consumer.clone(),
            lane.clone(),
            partition,
            rx,
        )));
        LaneHandle { lane, tx }
    });
    let generation = lock(&handle.lane.state).generation;
    generation
}

/// Stores the offset after `last_done` (if any) and marks the lane idle.
fn finish_run(
    shared: &Shared,
    consumer: &KafkaBaseConsumer,
    lane: &Lane,
    partition: i32,
    last_done: Option<i64>,
) {
    store(shared, consumer, partition, last_done);
    let mut st = lock(&lane.state);
    st.in_flight = false;
    if st.drain_waiting > 0 {
        lane.idle.notify_all();
    }
}

/// Stores the offset after `last_done`, so that the next commit covers it.
fn store(shared: &Shared, consumer: &KafkaBaseConsumer, partition: i32, last_done: Option<i64>) {
    if let (Some(offset), true) = (last_done, shared.manual_offsets) {
        match consumer.store_offset(&shared.topic, partition, offset) {
            Ok(()) => shared.dirty.store(true, Ordering::Release),
            // The partition was revoked meanwhile: its new owner gets the messages again.
            Err(e) => {
                tracing::debug!(topic = %shared.topic, partition, offset, error = %e, "offset not stored")
            }
        }
    }
}

async fn run_lane(
    shared: Arc<Shared>,
    consumer: Arc<KafkaBaseConsumer>,
    lane: Arc<Lane>,
    partition: i32,
    mut rx: mpsc::UnboundedReceiver<Vec<Delivery>>,
) {
    let mut stored_at = Instant::now();
    while let Some(batch) = rx.recv().await {
        // `in_flight` spans a run of messages; their last offset is stored once at its end.
        let mut running = false;
        let mut last_done = None;
        for d in batch {
            {
                let mut st = lock(&lane.state);
                if st.generation != d.generation {
                    continue;
                }
                if let Some(r) = st.resume_at {
                    if d.offset != r {
                        continue;
                    }
                    st.resume_at = None;
                }
                st.in_flight = true;
            }
            running = true;
            let span = tracing::debug_span!("kafka.deliver", topic = %shared.topic, partition, offset = d.offset);
            if handle(&shared, &consumer, &lane, partition, &d)
                .instrument(span)
                .await
            {
                last_done = Some(d.offset);
            }
            if last_done.is_some() && stored_at.elapsed() >= STORE_INTERVAL {
                // Slow handlers: keep the stored position close behind them.
                store(&shared, &consumer, partition, last_done.take());
                stored_at = Instant::now();
            }
            if lock(&lane.state).drain_waiting > 0 {
                // A revocation or shutdown waits: hand over what is done now.
                finish_run(&shared, &consumer, &lane, partition, last_done.take());
                running = false;
            }
        }
        if running {
            finish_run(&shared, &consumer, &lane, partition, last_done);
        }
    }
}

/// Dispatches one delivery to the dispatcher of its type; true when its
/// offset may be stored.
async fn handle(
    shared: &Arc<Shared>,
    consumer: &Arc<KafkaBaseConsumer>,
    lane: &Lane,
    partition: i32,
    d: &Delivery,
) -> bool {
    let incoming = d.message.to_incoming();
    // `route` stays held until the message is finished (dead letter included).
    match shared.dispatcher.dispatch(incoming).await {
        Outcome::Ack => true,
        Outcome::DeadLetter(dead) => dead_letter(shared, lane, partition, d, &dead).await,
        Outcome::Requeue => hand_back(shared, consumer, lane, partition, d).await,
    }
}

/// A message handed back: the lane skips everything until it comes again
/// and seeks back to it. Always false (the offset is not stored).
async fn hand_back(
    shared: &Arc<Shared>,
    consumer: &Arc<KafkaBaseConsumer>,
    lane: &Lane,
    partition: i32,
    d: &Delivery,
) -> bool {
    lock(&lane.state).resume_at = Some(d.offset);
    if !shared.stopping() {
        let consumer = consumer.clone();
        let topic = shared.topic.clone();
        let offset = d.offset;
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
        })
        .await;
        match sought {
            Ok(Ok(())) => {
                tracing::info!(topic = %shared.topic, partition, offset, "message handed back; will be delivered again")
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = %shared.topic, partition, offset, error = %e, "seeking back failed; the message comes again after a rebalance or restart")
            }
            Err(e) => {
                tracing::warn!(topic = %shared.topic, partition, offset, error = %e, "seek task failed")
            }
        }
    }
    false
}

/// Produces a dead letter and waits for the broker's acknowledgement,
/// retrying while the subscription runs; true once it is safely written.
async fn dead_letter(
    shared: &Arc<Shared>,
    lane: &Lane,
    partition: i32,
    d: &Delivery,
    dead: &DeadLetter,
) -> bool {
    // The original headers byte for byte, then why and where from.
    let original = d.message.headers();
    let origin = [
        (DEAD_LETTER_TOPIC, shared.topic.clone()),
        (DEAD_LETTER_PARTITION, partition.to_string()),
        (DEAD_LETTER_OFFSET, d.offset.to_string()),
        (DEAD_LETTER_GROUP, shared.group.clone()),
    ];
    let added = dead.headers_from(&origin);
    let event_id = original
        .iter()
        .find(|(k, _)| *k == headers::EVENT_ID.as_bytes())
        .and_then(|(_, v)| *v)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    dead.log(&origin, &event_id, &shared.dead_letter_topic);
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = match shared.transport.dead_letter_producer() {
            Ok(producer) => {
                let mut kh = OwnedHeaders::new_with_capacity(original.len() + added.len());
                for (k, v) in &original {
                    // A dead-letter header from an earlier trip is replaced, not repeated.
                    let Ok(k) = std::str::from_utf8(k) else {
                        continue;
                    };
                    if added.contains_key(k) {
                        continue;
                    }
                    kh = kh.insert(Header { key: k, value: *v });
                }
                for (k, v) in &added {
                    kh = kh.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                let record = FutureRecord {
                    topic: shared.dead_letter_topic.as_str(),
                    partition: None,
                    payload: Some(d.message.payload()),
                    key: d.message.key(),
                    timestamp: None,
                    headers: Some(kh),
                };
                producer
                    .send(
                        record,
                        Timeout::After(shared.transport.options.operation_timeout),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(dead_letter_topic = %shared.dead_letter_topic, error = %e, ?backoff, "producing dead letter failed; retrying");
            }
        }
        if shared.stopping() || lock(&lane.state).generation != d.generation {
            // Not stored: the message is delivered again later.
            return false;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The subscription of one (topic, group).
struct KafkaSubscription {
    consumer: Arc<RunningConsumer>,
    group: String,
    /// `stop` ran: dropping the handle then does nothing more.
    stopped: bool,
}

#[async_trait]
impl SubscriptionHandle for KafkaSubscription {
    async fn add_event(&self, event_name: &'static str, route: &'static Route) -> Result<()> {
        let shared = &self.consumer.shared;
        check_same_settings(
            &shared.settings,
            &shared.dispatcher.event_names(),
            event_name,
            route,
            &shared.topic,
            &self.group,
            shared.transport.options.max_in_flight,
        )
    }

    async fn stop(mut self: Box<Self>) -> Result<()> {
        self.stopped = true;
        let shared = self.consumer.shared.clone();
        let _ =
            shared
                .state
                .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire);
        self.consumer
            .done
            .clone()
            .await
            .map_err(|_| Error::Connection {
                transport: KAFKA,
                message: format!(
                    "the consumer thread of `{}` ended unexpectedly",
                    shared.topic
                ),
                source: None,
            })
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Dropped without stop(): close like a crashed process, committing
        // nothing more.
        let _ = self.consumer.shared.state.compare_exchange(
            RUNNING,
            ABORTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}
