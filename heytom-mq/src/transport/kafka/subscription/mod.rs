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
//! revoked and on shutdown; a commit that fails is tried again. A message
//! that is handed back (`Requeue`, or a dead letter that cannot be produced)
//! is never stored, nor is anything after it: the lane seeks back to it and
//! skips what was fetched after it.
//!
//! The poll thread calls `poll()` at least every [`POLL_INTERVAL`], also while
//! every in-flight slot is taken, so heartbeats, rebalances and
//! `max.poll.interval.ms` never depend on how long handlers take. A message
//! fetched while no slot is free is held back and its partition paused
//! (librdkafka's `pause`); once its lane took it and slots are free again the
//! partition is resumed, and librdkafka fetches on from there.
//!
//! Stopping is bounded: the lanes get `drain_timeout` to finish what they
//! run, a handler still running then is abandoned (its task aborted, its
//! offset not stored, so the message comes again), and
//! [`SubscriptionHandle::stop`] gives up waiting for the poll thread after
//! `drain_timeout` plus `operation_timeout`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
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

use super::raw::{pack_message, RawMessage};
use super::{log_rdkafka, TransportInner, KAFKA};
use crate::dispatch::{DeadLetter, Dispatcher, Outcome};
use crate::error::{Error, Result};
use crate::event::{headers, Route};
use crate::transport::{Subscription, SubscriptionHandle};

mod lane;
mod settings;

use lane::{poll_loop, InFlight, LaneHandle};
use settings::ConsumerSettings;

/// The longest the poll thread goes without calling `poll()`.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Messages taken from librdkafka's queue per wake-up of the lanes.
const MAX_BATCH: usize = 256;
/// A lane working through a batch stores its position at least this often
/// (checked after a handler that had to wait, and every STORE_CHECK messages).
const STORE_INTERVAL: Duration = Duration::from_millis(50);
const STORE_CHECK: u32 = 32;

/// Tries of a synchronous commit (revocation, shutdown) before giving up.
const COMMIT_TRIES: u32 = 3;
/// How long dropping a subscription handle waits for its consumer to leave
/// the group.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Running / stopping gracefully / aborted (handle dropped without `stop`).
const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const ABORTED: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Bumped by every drain: the poll thread's cached lane generations are stale.
    epoch: AtomicU64,
    state: AtomicU8,
    /// Offsets stored (or a commit failed) since the last commit.
    dirty: AtomicBool,
    /// A timed commit is under way.
    committing: AtomicBool,
    /// The consumer, for the lanes. The poll thread owns it and takes it out
    /// of here before closing it, so that its drop (which leaves the group)
    /// never waits for a lane; lanes borrow it only for one call.
    consumer: RwLock<Option<Arc<KafkaBaseConsumer>>>,
    /// Paused partitions and the messages held back for them.
    flow: Mutex<Flow>,
    /// Set once the consumer is closed (it left the group).
    closed: Mutex<bool>,
    closed_cv: Condvar,
}

/// Flow control of the poll thread: what it holds back and what it paused.
#[derive(Default)]
struct Flow {
    /// Partitions paused because a message of theirs found no free slot.
    paused: BTreeSet<i32>,
    /// Messages fetched while no slot was free, oldest first.
    held: VecDeque<lane::Held>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    fn aborted(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABORTED
    }

    /// The consumer while it is open.
    fn consumer(&self) -> Option<Arc<KafkaBaseConsumer>> {
        self.consumer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn mark_closed(&self) {
        *lock(&self.closed) = true;
        self.closed_cv.notify_all();
    }

    /// Waits up to `timeout` for the consumer to be closed; true if it is.
    fn wait_closed(&self, timeout: Duration) -> bool {
        let guard = lock(&self.closed);
        let (guard, _) = self
            .closed_cv
            .wait_timeout_while(guard, timeout, |closed| !*closed)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

fn is_no_offset(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

/// Commits the stored offsets and waits for the answer, trying again
/// ([`COMMIT_TRIES`] in all) when it fails; a commit still failing leaves the
/// offsets marked dirty for the next timed commit.
fn commit_sync(consumer: &BaseConsumer<SubscriptionContext>, shared: &Shared, why: &str) {
    if !shared.manual_offsets {
        return;
    }
    shared.dirty.store(false, Ordering::Release);
    let mut tries = 0;
    loop {
        tries += 1;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(topic = %shared.topic, group = %shared.group, why, "offsets committed");
                return;
            }
            Err(e) if is_no_offset(&e) => return,
            Err(e) if tries < COMMIT_TRIES && !shared.aborted() => {
                tracing::warn!(topic = %shared.topic, group = %shared.group, why, error = %e, tries, "committing offsets failed; trying again");
                std::thread::sleep(Duration::from_millis(200) * tries);
            }
            Err(e) => {
                shared.dirty.store(true, Ordering::Release);
                tracing::warn!(topic = %shared.topic, group = %shared.group, why, error = %e, tries, "committing offsets failed");
                return;
            }
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

    /// librdkafka's statistics (feature `metrics`): the consumer lag of
    /// each partition this consumer is assigned (`desired`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.desired {
                    crate::telemetry::metrics::kafka_lag(topic, partition, p.consumer_lag);
                }
            }
        }
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
                // What was held back for them goes to their next owner (not stored).
                {
                    let mut flow = lock(&s.flow);
                    flow.held.retain(|h| !partitions.contains(&h.partition));
                    for p in &partitions {
                        flow.paused.remove(p);
                    }
                }
                if s.aborted() {
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // librdkafka keeps a partition's pause across assignments; one
            // assigned (again) starts unpaused, as the poll thread sees it.
            let s = &self.shared;
            let paused = lock(&s.flow).paused.clone();
            let mut resume = TopicPartitionList::new();
            for p in partitions_of(tpl, &s.topic) {
                if !paused.contains(&p) {
                    resume.add_partition(&s.topic, p);
                }
            }
            if resume.count() > 0 {
                if let Err(e) = consumer.resume(&resume) {
                    tracing::debug!(topic = %s.topic, error = %e, "resuming assigned partitions failed");
                }
            }
        }
    }

    /// Results of librdkafka's own commits (`enable_auto_commit`); heytom's
    /// commits are synchronous and see their result directly.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // A failure is reported for the whole request or per partition.
        let failed = match result {
            Err(e) if !is_no_offset(&e) => Some(e.to_string()),
            Err(_) => None,
            Ok(()) => offsets
                .elements()
                .iter()
                .find_map(|e| e.error().err())
                .map(|e| format!("partition: {e}")),
        };
        if let Some(error) = failed {
            // Not forgotten: the next timed commit tries again.
            self.shared.dirty.store(true, Ordering::Release);
            tracing::warn!(topic = %self.shared.topic, group = %self.shared.group, %error, "offset commit failed; trying again at the next commit");
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
    if crate::telemetry::metrics::kafka_lag_enabled() {
        let ms = crate::telemetry::KAFKA_STATISTICS_INTERVAL_MS;
        config.set("statistics.interval.ms", ms.to_string());
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
        epoch: AtomicU64::new(0),
        state: AtomicU8::new(RUNNING),
        dirty: AtomicBool::new(false),
        committing: AtomicBool::new(false),
        consumer: RwLock::new(None),
        flow: Mutex::new(Flow::default()),
        closed: Mutex::new(false),
        closed_cv: Condvar::new(),
    });
    let consumer: KafkaBaseConsumer = config
        .create_with_context(SubscriptionContext {
            shared: shared.clone(),
        })
        .map_err(|e| options.config_error("invalid Kafka consumer settings", &e))?;
    consumer
        .subscribe(&[topic.as_str()])
        .map_err(|e| Error::connection(KAFKA, format!("subscribing to `{topic}` failed"), e))?;
    let consumer = Arc::new(consumer);
    *shared.consumer.write().unwrap_or_else(|p| p.into_inner()) = Some(consumer.clone());

    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let thread_shared = shared.clone();
    let commit_interval = options.commit_interval;
    let spawned = std::thread::Builder::new()
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
        });
    if let Err(e) = spawned {
        // Break the reference cycle (consumer -> context -> shared -> consumer).
        shared
            .consumer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        return Err(Error::connection(
            KAFKA,
            "could not start the consumer thread",
            e,
        ));
    }
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

    /// Stops the consumer: waits up to `drain_timeout` for the handlers
    /// running, commits what is done and leaves the group. Returns after at
    /// most `drain_timeout` + `operation_timeout` whatever the handlers or the
    /// broker do; past that the consumer is left to close on its own
    /// (committing nothing more) and this returns an error.
    async fn stop(mut self: Box<Self>) -> Result<()> {
        self.stopped = true;
        let shared = self.consumer.shared.clone();
        let _ =
            shared
                .state
                .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire);
        let options = &shared.transport.options;
        let deadline = options
            .drain_timeout
            .saturating_add(options.operation_timeout);
        match tokio::time::timeout(deadline, self.consumer.done.clone()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Connection {
                transport: KAFKA,
                message: format!(
                    "the consumer thread of `{}` ended unexpectedly",
                    shared.topic
                ),
                source: None,
            }),
            Err(_) => {
                // Give up: commit nothing more, close as soon as the thread can.
                shared.state.store(ABORTED, Ordering::Release);
                tracing::warn!(topic = %shared.topic, group = %self.group, ?deadline, "the Kafka consumer did not stop in time; abandoning it (uncommitted messages come again)");
                Err(Error::Connection {
                    transport: KAFKA,
                    message: format!(
                        "the consumer of `{}` did not stop within {deadline:?}",
                        shared.topic
                    ),
                    source: None,
                })
            }
        }
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Dropped without stop(): commit nothing more (like a crashed
        // process), but leave the group before returning, as dropping an
        // rdkafka consumer does: a member that is already gone cannot hold
        // on to partitions a replacement started next is waiting for (with
        // tansu, whose coordinator keeps a departed leader while a new member
        // joins, a replacement that joined first would wait for ever).
        let shared = &self.consumer.shared;
        let _ =
            shared
                .state
                .compare_exchange(RUNNING, ABORTED, Ordering::AcqRel, Ordering::Acquire);
        let _ =
            shared
                .state
                .compare_exchange(STOPPING, ABORTED, Ordering::AcqRel, Ordering::Acquire);
        if !shared.wait_closed(LEAVE_TIMEOUT) {
            tracing::warn!(topic = %shared.topic, group = %self.group, "the dropped Kafka consumer has not left its group yet; it closes in the background");
        }
    }
}
