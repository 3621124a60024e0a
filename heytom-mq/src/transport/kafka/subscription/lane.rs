//! The flow of messages inside one consumer: the poll loop, the bound on
//! messages in flight, one ordered lane per partition, and what a lane does
//! with each outcome (store the offset, hand back, dead-letter).

use super::*;

/// Bounds the messages fetched but not yet finished.
pub(super) struct InFlight {
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
    pub(super) fn new(n: usize) -> Arc<Self> {
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
pub(super) struct LaneHandle {
    lane: Arc<Lane>,
    tx: mpsc::UnboundedSender<Vec<Delivery>>,
}

impl Shared {
    /// Drops queued deliveries of these partitions and waits (up to the
    /// drain timeout) for the one in flight on each to finish.
    pub(super) fn drain(&self, partitions: Option<&[i32]>) {
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

pub(super) fn poll_loop(
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
