//! A lane's task: the messages of one partition, one after the other, and
//! what each outcome does (store the offset, hand back, dead-letter).

use super::*;

use futures::future::BoxFuture;

use super::dead_letter::dead_letter;

pub(super) async fn run_lane(
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    partition: i32,
    mut rx: mpsc::UnboundedReceiver<LaneBatch>,
) {
    let mut stored_at = Instant::now();
    let mut since_check = 0u32;
    // Set after a message that was not acked (a hand-back sets `resume_at`):
    // the next ones look at the lane state under its lock until it is clear.
    let mut check_resume = false;
    while let Some(LaneBatch {
        buf,
        deliveries,
        mut slots,
    }) = rx.recv().await
    {
        // `in_flight` spans a run of messages; their last offset is stored once at its end.
        let mut running = false;
        let mut last_done = None;
        for d in &deliveries {
            // Inside a run (`in_flight` set) with nothing to skip to, a
            // current generation needs no lock: a drain bumps it (under the
            // lock) before it waits for `in_flight` to clear.
            let locked = !running || check_resume || lane.generation() != d.generation;
            if locked {
                let mut st = lock(&lane.state);
                if lane.generation() != d.generation {
                    slots.finish_one();
                    continue;
                }
                if let Some(r) = st.resume_at {
                    if d.offset != r {
                        slots.finish_one();
                        continue;
                    }
                    st.resume_at = None;
                }
                check_resume = false;
                st.in_flight = true;
            }
            lane.set_done(last_done);
            running = true;
            let current = Current {
                offset: d.offset,
                generation: d.generation,
                message: RawMessage::new(buf.get(d.at.clone()).unwrap_or_default()),
            };
            // No span per message unless someone listens at debug level.
            let span = tracing::enabled!(tracing::Level::DEBUG).then(|| {
                tracing::debug_span!("kafka.deliver", topic = %shared.topic, partition, offset = d.offset, messaging.system = "kafka", messaging.destination.name = %shared.topic, messaging.destination.partition.id = partition, messaging.kafka.offset = d.offset, messaging.consumer.group.name = %shared.group)
            });
            // Made in place: the future is moved (copied whole) as little as possible.
            let mut handled = std::pin::pin!(handle(&shared, &lane, partition, &current, span));
            // A handler done at once is quick: the clock is read after one
            // that had to wait, and every STORE_CHECK messages.
            let (ok, waited) = match futures::poll!(handled.as_mut()) {
                std::task::Poll::Ready(ok) => (ok, false),
                std::task::Poll::Pending => {
                    // Finished messages hold no slot while this one waits.
                    slots.flush();
                    (handled.await, true)
                }
            };
            if ok {
                last_done = Some(d.offset);
            } else {
                check_resume = true;
            }
            slots.finish_one();
            since_check += 1;
            if last_done.is_some() && (waited || since_check >= STORE_CHECK) && {
                since_check = 0;
                stored_at.elapsed() >= STORE_INTERVAL
            } {
                // Slow handlers: keep the stored position close behind them.
                store(&shared, partition, last_done.take());
                stored_at = Instant::now();
            }
            if lane.drain_waiting.load(Ordering::Acquire) > 0 {
                // A revocation or shutdown waits: hand over what is done now.
                finish_run(&shared, &lane, partition, last_done.take());
                running = false;
            }
        }
        if running {
            finish_run(&shared, &lane, partition, last_done);
        }
    }
}

/// Dispatches one delivery to the dispatcher of its type (in `span`, if
/// any); true when its offset may be stored.
async fn handle(
    shared: &Arc<Shared>,
    lane: &Lane,
    partition: i32,
    d: &Current<'_>,
    span: Option<tracing::Span>,
) -> bool {
    let incoming = d.message.to_incoming(&shared.topic, partition, d.offset);
    let outcome = match &span {
        None => shared.dispatcher.dispatch(incoming).await,
        Some(span) => {
            shared
                .dispatcher
                .dispatch(incoming)
                .instrument(span.clone())
                .await
        }
    };
    // The rare outcomes are boxed: their futures are big, and this one is
    // moved whole for every message.
    let rare: BoxFuture<'_, bool> = match outcome {
        Outcome::Ack => return true,
        Outcome::DeadLetter(dead) => {
            Box::pin(async move { dead_letter(shared, lane, partition, d, &dead).await })
        }
        Outcome::Requeue => Box::pin(hand_back(shared, lane, partition, d)),
    };
    match span {
        None => rare.await,
        Some(span) => rare.instrument(span).await,
    }
}

/// A message handed back: the lane skips everything until it comes again
/// and seeks back to it. Always false (the offset is not stored).
pub(super) async fn hand_back(
    shared: &Arc<Shared>,
    lane: &Lane,
    partition: i32,
    d: &Current<'_>,
) -> bool {
    lock(&lane.state).resume_at = Some(d.offset);
    if shared.stopping() {
        return false;
    }
    let Some(consumer) = shared.consumer() else {
        return false;
    };
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
    false
}
