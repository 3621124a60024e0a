//! The flow of messages inside one consumer: the poll loop (which pauses
//! partitions while no in-flight slot is free, and keeps polling), the bound
//! on messages in flight, one ordered lane per partition, and what a lane
//! does with each outcome (store the offset, hand back, dead-letter).

use super::*;

mod dead_letter;
mod in_flight;
mod run;

use std::sync::atomic::AtomicI64;

pub(super) use in_flight::InFlight;
use in_flight::Slots;
use run::{hand_back, run_lane};

/// A message fetched while no slot was free, held back (its partition
/// paused) until a slot frees.
pub(super) struct Held {
    pub(super) partition: i32,
    offset: i64,
    generation: u64,
    /// The message, packed alone.
    buf: Vec<u8>,
}

/// One fetched message on its way to a lane.
struct Delivery {
    offset: i64,
    generation: u64,
    /// Where it is packed in its batch's buffer.
    at: std::ops::Range<usize>,
}

/// The messages of one partition from one poll round, packed in one
/// buffer, with their in-flight slots.
struct LaneBatch {
    buf: Vec<u8>,
    deliveries: Vec<Delivery>,
    slots: Slots,
}

/// The messages of one partition from one poll round, being collected.
struct Batch {
    partition: i32,
    buf: Vec<u8>,
    deliveries: Vec<Delivery>,
}

/// The message a lane works on.
struct Current<'a> {
    offset: i64,
    generation: u64,
    message: RawMessage<'a>,
}

struct LaneState {
    in_flight: bool,
    /// After a requeue: skip everything until this offset comes again.
    resume_at: Option<i64>,
}

/// `Lane::done` while the running batch finished nothing unstored.
const NOTHING_DONE: i64 = -1;

struct Lane {
    state: Mutex<LaneState>,
    idle: Condvar,
    /// Bumped on revocation and shutdown (under the state lock, before the
    /// drain waits): deliveries of older generations are dropped.
    generation: AtomicU64,
    /// Drains waiting for `in_flight` to clear (changed under the state
    /// lock; read without it between messages).
    drain_waiting: AtomicU32,
    /// The last offset the running batch finished and has not stored yet
    /// ([`NOTHING_DONE`] if none), for a drain that gives up on the handler
    /// running after it. Written by the lane alone, between messages.
    done: AtomicI64,
}

impl Lane {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set_done(&self, last_done: Option<i64>) {
        self.done
            .store(last_done.unwrap_or(NOTHING_DONE), Ordering::Release);
    }

    fn take_done(&self) -> Option<i64> {
        Some(self.done.swap(NOTHING_DONE, Ordering::AcqRel)).filter(|&o| o != NOTHING_DONE)
    }
}

/// The poll thread's end of a lane; dropping it ends the lane's task.
pub(super) struct LaneHandle {
    lane: Arc<Lane>,
    tx: mpsc::UnboundedSender<LaneBatch>,
}

impl Shared {
    /// Drops queued deliveries of these partitions and waits (up to the
    /// drain timeout, and not at all once the handle was dropped) for the one
    /// in flight on each to finish. True when every lane is idle.
    pub(super) fn drain(&self, partitions: Option<&[i32]>) -> bool {
        let lanes: Vec<(i32, Arc<Lane>)> = lock(&self.lanes)
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .map(|(p, l)| (*p, l.lane.clone()))
            .collect();
        // The poll thread's cached lane generations are stale now.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + self.transport.options.drain_timeout;
        let mut idle = true;
        for (partition, lane) in lanes {
            let mut st = lock(&lane.state);
            lane.generation.fetch_add(1, Ordering::AcqRel);
            st.resume_at = None;
            while st.in_flight {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.aborted() {
                    tracing::warn!(topic = %self.topic, partition, "handler still running after the drain timeout; it is abandoned and its message will be delivered again");
                    idle = false;
                    // What finished before it is kept.
                    let done = lane.take_done();
                    drop(st);
                    store(self, partition, done);
                    break;
                }
                lane.drain_waiting.fetch_add(1, Ordering::AcqRel);
                // In slices, so that dropping the handle ends the wait.
                st = match lane.idle.wait_timeout(st, left.min(POLL_INTERVAL)) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                lane.drain_waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        idle
    }
}

/// Pauses one partition (librdkafka stops fetching it and drops what it
/// prefetched; `resume` fetches on from the last message polled).
fn pause(shared: &Shared, consumer: &KafkaBaseConsumer, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&shared.topic, partition);
    match consumer.pause(&tpl) {
        Ok(()) => {
            tracing::debug!(topic = %shared.topic, partition, "no free in-flight slot; partition paused")
        }
        Err(e) => tracing::debug!(topic = %shared.topic, partition, error = %e, "pausing failed"),
    }
}

/// Resumes the paused partitions that hold nothing back.
fn resume_ready(shared: &Shared, consumer: &KafkaBaseConsumer, flow: &mut Flow) {
    let ready: Vec<i32> = flow
        .paused
        .iter()
        .copied()
        .filter(|p| !flow.held.iter().any(|h| h.partition == *p))
        .collect();
    if ready.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for p in &ready {
        tpl.add_partition(&shared.topic, *p);
        flow.paused.remove(p);
    }
    match consumer.resume(&tpl) {
        Ok(()) => tracing::debug!(topic = %shared.topic, partitions = ?ready, "partitions resumed"),
        Err(e) => {
            tracing::debug!(topic = %shared.topic, partitions = ?ready, error = %e, "resuming failed")
        }
    }
}

/// A batch buffer starts as big as the last round's biggest (within these
/// bounds), so that a full batch is not copied while it grows.
const BATCH_BUF: usize = 64 * 1024;
const BATCH_BUF_MAX: usize = 4 * 1024 * 1024;

/// The batch of a partition, started if needed with room for `room` bytes.
fn batch_of(batches: &mut Vec<Batch>, partition: i32, room: usize) -> &mut Batch {
    match batches.iter().position(|b| b.partition == partition) {
        Some(i) => &mut batches[i],
        None => {
            batches.push(Batch {
                partition,
                // Room for a batch of small messages without regrowing.
                buf: Vec::with_capacity(room),
                deliveries: Vec::with_capacity(MAX_BATCH.min(64)),
            });
            let last = batches.len() - 1;
            &mut batches[last]
        }
    }
}

pub(super) fn poll_loop(
    shared: Arc<Shared>,
    consumer: Arc<KafkaBaseConsumer>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<InFlight>,
    commit_interval: Duration,
) {
    let mut workers: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut last_commit = Instant::now();
    // The lanes' generations as of `epoch`: a drain (on this thread, inside
    // a poll's rebalance callback) bumps the epoch, which empties the cache.
    let mut generations: Vec<(i32, u64)> = Vec::new();
    let mut seen_epoch = shared.epoch.load(Ordering::Acquire);
    let mut our_topic = std::ptr::null_mut();
    let mut room = BATCH_BUF;
    while !shared.stopping() {
        if shared.manual_offsets
            && last_commit.elapsed() >= commit_interval
            && !shared.committing.load(Ordering::Acquire)
            && shared.dirty.swap(false, Ordering::AcqRel)
        {
            last_commit = Instant::now();
            timed_commit(&shared, &runtime);
        }
        // Wait (briefly) for a slot; poll() below is called either way.
        in_flight.wait(POLL_INTERVAL);
        // Slots are taken in bulk; what is left goes back after the round.
        let mut avail = in_flight.take(MAX_BATCH);
        let mut batches: Vec<Batch> = Vec::new();
        let (holding, none_paused) = {
            let mut flow = lock(&shared.flow);
            // Held-back messages go first: they come before anything fetched later.
            while !flow.held.is_empty() {
                if avail == 0 {
                    avail = in_flight.take(MAX_BATCH);
                    if avail == 0 {
                        break;
                    }
                }
                if let Some(h) = flow.held.pop_front() {
                    avail -= 1;
                    let b = batch_of(&mut batches, h.partition, room);
                    let start = b.buf.len();
                    b.buf.extend_from_slice(&h.buf);
                    b.deliveries.push(Delivery {
                        offset: h.offset,
                        generation: h.generation,
                        at: start..b.buf.len(),
                    });
                }
            }
            if !flow.paused.is_empty() && in_flight.roomy(avail) {
                resume_ready(&shared, &consumer, &mut flow);
            }
            // Only this thread pauses (rebalance callbacks only unpause): none
            // paused now is none until this loop pauses one, and needs no lock.
            (!flow.held.is_empty(), flow.paused.is_empty())
        };
        // With a free slot, wait up to POLL_INTERVAL for the first message
        // and take what is fetched while slots last (the rest stays in
        // librdkafka's queue). Without one (for POLL_INTERVAL already), poll
        // all the same to keep the consumer alive (heartbeats, rebalances,
        // max.poll.interval.ms), and hold back what comes.
        let keep_alive = avail == 0 || holding;
        let mut timeout = if keep_alive {
            Duration::ZERO
        } else {
            POLL_INTERVAL
        };
        for _ in 0..MAX_BATCH {
            if !keep_alive && avail == 0 {
                avail = in_flight.take(MAX_BATCH);
                if avail == 0 {
                    break;
                }
            }
            let message = match consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(topic = %shared.topic, group = %shared.group, error = %e, "Kafka fetch error");
                    break;
                }
                Some(Ok(m)) => m,
            };
            timeout = Duration::ZERO;
            // The topic's handle, once its name matched: a pointer compare per message.
            if message.topic_ptr() != our_topic {
                if message.topic() != shared.topic {
                    continue;
                }
                our_topic = message.topic_ptr();
            }
            let partition = message.partition();
            // Stamped now: a revocation inside a later poll of this batch makes it stale.
            let epoch = shared.epoch.load(Ordering::Acquire);
            if epoch != seen_epoch {
                generations.clear();
                seen_epoch = epoch;
            }
            let generation = match generations.iter().find(|(p, _)| *p == partition) {
                Some(&(_, g)) => g,
                None => {
                    let g = lane_generation(&shared, &runtime, &mut workers, partition);
                    generations.push((partition, g));
                    g
                }
            };
            let offset = message.offset();
            if avail > 0 && (none_paused || !lock(&shared.flow).paused.contains(&partition)) {
                avail -= 1;
                let b = batch_of(&mut batches, partition, room);
                let at = pack_message(&mut b.buf, &message);
                b.deliveries.push(Delivery {
                    offset,
                    generation,
                    at,
                });
            } else {
                let mut flow = lock(&shared.flow);
                let mut buf = Vec::new();
                pack_message(&mut buf, &message);
                flow.held.push_back(Held {
                    partition,
                    offset,
                    generation,
                    buf,
                });
                if flow.paused.insert(partition) {
                    pause(&shared, &consumer, partition);
                }
                break;
            }
        }
        in_flight.release(avail);
        if let Some(used) = batches.iter().map(|b| b.buf.len()).max() {
            room = (used + used / 8).clamp(BATCH_BUF, BATCH_BUF_MAX);
        }
        if !batches.is_empty() {
            let lanes = lock(&shared.lanes);
            for b in batches {
                let slots = Slots::new(&in_flight, b.deliveries.len());
                if let Some(handle) = lanes.get(&b.partition) {
                    let _ = handle.tx.send(LaneBatch {
                        buf: b.buf,
                        deliveries: b.deliveries,
                        slots,
                    });
                }
            }
        }
    }

    let aborted = shared.aborted();
    if !aborted {
        if !shared.drain(None) {
            tracing::warn!(topic = %shared.topic, group = %shared.group, "stopping without waiting longer for running handlers");
        }
        if !shared.aborted() {
            commit_sync(&consumer, &shared, "shutdown");
        }
    }
    // Handlers still running are abandoned: their offsets are not stored,
    // so their messages come again.
    for w in &workers {
        w.abort();
    }
    lock(&shared.lanes).clear();
    *lock(&shared.flow) = Flow::default();
    close(&shared, consumer);
    tracing::info!(topic = %shared.topic, group = %shared.group, aborted, "Kafka consumer stopped");
}

/// Commits the stored offsets off the poll thread and waits for the answer
/// there (librdkafka reports nothing back for an asynchronous manual
/// commit): a failure marks the offsets dirty, so the next round tries again.
fn timed_commit(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle) {
    let Some(consumer) = shared.consumer() else {
        return;
    };
    shared.committing.store(true, Ordering::Release);
    let shared = shared.clone();
    runtime.spawn_blocking(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::trace!(topic = %shared.topic, "offsets committed"),
            Err(e) if is_no_offset(&e) => {}
            Err(e) => {
                shared.dirty.store(true, Ordering::Release);
                tracing::warn!(topic = %shared.topic, group = %shared.group, error = %e, "offset commit failed; trying again at the next commit");
            }
        }
        drop(consumer);
        shared.committing.store(false, Ordering::Release);
    });
}

/// Leaves the group and closes the consumer, then marks it closed. The
/// lanes' access goes first, so that the drop here is the last reference
/// (rdkafka's drop closes the consumer, leaving the group) whatever the
/// aborted lane tasks still hold.
fn close(shared: &Shared, consumer: Arc<KafkaBaseConsumer>) {
    shared
        .consumer
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    consumer.unsubscribe();
    // A lane may be inside a call on it (storing an offset, seeking): wait briefly.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut consumer = consumer;
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(c) => {
                drop(c);
                break;
            }
            Err(c) if Instant::now() < deadline => {
                consumer = c;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(c) => {
                // Still shared: close it here; the last drop finds it closed.
                if c.close_queue().is_ok() {
                    while !c.closed() {
                        let _ = c.poll(POLL_INTERVAL);
                    }
                }
                drop(c);
                break;
            }
        }
    }
    shared.mark_closed();
}

/// The current generation of a partition's lane, creating the lane (and its task) first if needed.
fn lane_generation(
    shared: &Arc<Shared>,
    runtime: &tokio::runtime::Handle,
    workers: &mut Vec<tokio::task::JoinHandle<()>>,
    partition: i32,
) -> u64 {
    let mut lanes = lock(&shared.lanes);
    let handle = lanes.entry(partition).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            state: Mutex::new(LaneState {
                in_flight: false,
                resume_at: None,
            }),
            idle: Condvar::new(),
            generation: AtomicU64::new(0),
            drain_waiting: AtomicU32::new(0),
            done: AtomicI64::new(NOTHING_DONE),
        });
        workers.push(runtime.spawn(run_lane(shared.clone(), lane.clone(), partition, rx)));
        LaneHandle { lane, tx }
    });
    handle.lane.generation()
}

/// Stores the offset after `last_done` (if any) and marks the lane idle.
fn finish_run(shared: &Shared, lane: &Lane, partition: i32, last_done: Option<i64>) {
    store(shared, partition, last_done);
    let mut st = lock(&lane.state);
    st.in_flight = false;
    lane.set_done(None);
    if lane.drain_waiting.load(Ordering::Acquire) > 0 {
        lane.idle.notify_all();
    }
}

/// Stores the offset after `last_done`, so that the next commit covers it.
fn store(shared: &Shared, partition: i32, last_done: Option<i64>) {
    let (Some(offset), true) = (last_done, shared.manual_offsets) else {
        return;
    };
    if shared.aborted() {
        return;
    }
    let guard = shared.consumer.read().unwrap_or_else(|p| p.into_inner());
    let Some(consumer) = guard.as_ref() else {
        return;
    };
    match consumer.store_offset(&shared.topic, partition, offset) {
        Ok(()) => shared.dirty.store(true, Ordering::Release),
        // The partition was revoked meanwhile: its new owner gets the messages again.
        Err(e) => {
            tracing::debug!(topic = %shared.topic, partition, offset, error = %e, "offset not stored")
        }
    }
}
