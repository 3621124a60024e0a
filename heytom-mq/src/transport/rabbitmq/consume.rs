//! Consuming: one channel per subscription, a concurrency limit, ack /
//! dead-letter / requeue per [`Outcome`] (sent by the channel's settling
//! task, `settle.rs`), and reconnection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::dispatch::{DeadLetter, Dispatcher, Outcome};
use crate::error::{Error, Result};
use crate::event::{headers, QueueType};
use crate::transport::health::SubscriptionMonitor;
use crate::transport::SubscriptionHandle;

use super::connection::{describe, ConnectionSlot, TRANSPORT};
use super::delivery::incoming;
use super::publish::check;
use super::settle::{Pending, Settle, Settler};
use super::topology::{DeadLetterTarget, QueueTopology};

/// What a running queue consumer shares with its delivery tasks. Several
/// events may share one queue (same `queue_name` or group), one binding
/// each; the dispatcher routes each delivery by its type.
pub(crate) struct SubscriptionShared {
    pub(crate) slot: Arc<ConnectionSlot>,
    pub(crate) queue: String,
    /// The queue's topology per event, declared again on every reconnect.
    pub(crate) topologies: std::sync::RwLock<Vec<QueueTopology>>,
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// Handlers running at once (permits held while dispatching).
    pub(crate) handling: Arc<Semaphore>,
    /// Deliveries not yet acknowledged (at most `prefetch`; permits held
    /// until the ack / nack is sent, so stopping can wait for them).
    pub(crate) unacked: Arc<Semaphore>,
    pub(crate) prefetch: u16,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) consumer_tag: String,
    /// Consuming, reconnecting or stopped, for health checks.
    pub(crate) monitor: SubscriptionMonitor,
}

impl SubscriptionShared {
    fn topologies(&self) -> Vec<QueueTopology> {
        self.topologies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the queue is a stream (declared so by its first event).
    fn is_stream(&self) -> bool {
        self.topologies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .is_some_and(|t| t.queue_type == Some(QueueType::Stream))
    }

    /// Where the queue's dead letters go: a property of the queue (its
    /// `x-dead-letter-exchange`), the same for every event bound to it.
    fn dead_letter_target(&self) -> Option<DeadLetterTarget> {
        self.topologies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|t| t.dead_letter.clone())
    }

    /// Declares one more event's topology (its binding) on the running
    /// queue, so that a conflict is reported to this subscriber.
    pub(crate) async fn add_topology(&self, topology: QueueTopology) -> Result<()> {
        let conn = self.slot.get().await?;
        let channel = conn.create_channel().await.map_err(|e| {
            Error::connection(
                TRANSPORT,
                format!("cannot open a channel: {}", describe(&e)),
                e,
            )
        })?;
        topology.declare(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        self.topologies
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(topology);
        Ok(())
    }

    /// Opens a channel, declares the topology and starts consuming.
    pub(crate) async fn open(&self) -> Result<(Arc<Channel>, lapin::Consumer)> {
        let conn = self.slot.get().await?;
        let lost = |what: &str, e: lapin::Error| {
            Error::connection(
                TRANSPORT,
                format!("{what} for queue `{}`: {}", self.queue, describe(&e)),
                e,
            )
        };
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| lost("cannot open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| lost("cannot turn on publisher confirms", e))?;
        for topology in self.topologies() {
            topology.declare(&channel).await?;
        }
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| lost("cannot set the prefetch", e))?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                self.consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| lost("cannot start consuming", e))?;
        Ok((Arc::new(channel), consumer))
    }
}

/// A running queue consumer.
pub(crate) struct RunningQueue {
    pub(crate) shared: Arc<SubscriptionShared>,
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RunningQueue {
    /// Stops consuming and waits for in-flight deliveries (the core bounds
    /// the wait: their handlers are abandoned at its deadline and hand
    /// their messages back).
    pub(crate) async fn stop(&self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut task = self.task.lock().await;
        // Awaited in place: if this wait is dropped, `Drop` aborts the task.
        let done = match task.as_mut() {
            Some(t) => t
                .await
                .map_err(|e| Error::config(format!("RabbitMQ consumer task failed: {e}"))),
            None => Ok(()),
        };
        task.take();
        done
    }
}

impl Drop for RunningQueue {
    /// A stop given up on: the consumer task ends, dropping its channel,
    /// and the broker requeues what the channel held unacknowledged.
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().take() {
            t.abort();
        }
    }
}

/// The subscription of one queue.
pub(crate) struct RabbitMqSubscription {
    pub(crate) queue: Arc<RunningQueue>,
    pub(crate) exchange: String,
}

#[async_trait::async_trait]
impl SubscriptionHandle for RabbitMqSubscription {
    async fn add_event(
        &self,
        event_name: &'static str,
        route: &'static crate::event::Route,
    ) -> Result<()> {
        let topology =
            QueueTopology::new(route, event_name, &self.queue.shared.queue, &self.exchange)?;
        self.queue.shared.add_topology(topology).await
    }

    async fn stop(self: Box<Self>) -> Result<()> {
        self.queue.stop().await
    }

    fn monitor(&self) -> Option<SubscriptionMonitor> {
        Some(self.queue.shared.monitor.clone())
    }
}

/// Starts the supervisor of a queue consumer whose first channel is open.
pub(crate) fn spawn(
    shared: Arc<SubscriptionShared>,
    first: (Arc<Channel>, lapin::Consumer),
) -> Arc<RunningQueue> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(supervise(shared.clone(), first, stop_rx));
    Arc::new(RunningQueue {
        shared,
        stop: stop_tx,
        task: tokio::sync::Mutex::new(Some(task)),
    })
}

enum LoopEnd {
    Stopped,
    Lost(String),
}

async fn supervise(
    shared: Arc<SubscriptionShared>,
    first: (Arc<Channel>, lapin::Consumer),
    mut stop: watch::Receiver<bool>,
) {
    let queue = shared.queue.clone();
    let mut current = Some(first);
    let mut delay = shared.backoff.0;
    loop {
        let (channel, consumer) = match current.take() {
            Some(c) => c,
            None => {
                let opened = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    r = shared.open() => r,
                };
                match opened {
                    Ok(c) => {
                        tracing::info!(%queue, "RabbitMQ consumer resumed");
                        shared.monitor.running();
                        delay = shared.backoff.0;
                        c
                    }
                    Err(e) => {
                        tracing::warn!(%queue, error = %e, retry_in = ?delay, "RabbitMQ consumer cannot resume yet");
                        shared.monitor.lost(e.to_string());
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(shared.backoff.1);
                        continue;
                    }
                }
            }
        };
        match consume(&shared, &channel, consumer, &mut stop).await {
            LoopEnd::Stopped => {
                shared.monitor.stopped();
                finish(&shared, &channel).await;
                return;
            }
            LoopEnd::Lost(reason) => {
                tracing::warn!(%queue, %reason, "RabbitMQ consumer lost its channel; reconnecting");
                shared.monitor.lost(format!("lost its channel: {reason}"));
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(shared.backoff.0) => {}
                }
            }
        }
    }
    // Stopped while reconnecting: let in-flight deliveries finish.
    shared.monitor.stopped();
    wait_in_flight(&shared).await;
}

/// `fut`'s output, or `None` once the consumer is told to stop.
async fn until_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => None,
        v = fut => Some(v),
    }
}

async fn consume(
    shared: &Arc<SubscriptionShared>,
    channel: &Arc<Channel>,
    mut consumer: lapin::Consumer,
    stop: &mut watch::Receiver<bool>,
) -> LoopEnd {
    let settler = Settler::start(channel.clone(), shared.queue.clone(), shared.prefetch);
    loop {
        // Taken in delivery order, so `concurrency = 1` handles in queue order.
        let next = async {
            let handling = shared.handling.clone().acquire_owned().await;
            let unacked = shared.unacked.clone().acquire_owned().await;
            (handling, unacked, consumer.next().await)
        };
        let Some((Ok(handling), Ok(unacked), next)) = until_stopped(stop, next).await else {
            return LoopEnd::Stopped;
        };
        match next {
            Some(Ok(delivery)) => {
                let pending = settler.pending(delivery.delivery_tag, unacked);
                tokio::spawn(handle(
                    shared.clone(),
                    channel.clone(),
                    delivery,
                    handling,
                    pending,
                ));
            }
            Some(Err(e)) => return LoopEnd::Lost(describe(&e)),
            None => {
                return LoopEnd::Lost(
                    "the broker cancelled the consumer or closed the channel".to_owned(),
                )
            }
        }
    }
}

/// Cancels the consumer, waits for in-flight deliveries, closes the channel.
async fn finish(shared: &SubscriptionShared, channel: &Channel) {
    if channel.status().connected() {
        let cancel = channel.basic_cancel(
            shared.consumer_tag.as_str().into(),
            BasicCancelOptions::default(),
        );
        match tokio::time::timeout(Duration::from_secs(5), cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(queue = %shared.queue, error = %describe(&e), "basic.cancel failed")
            }
            Err(_) => tracing::debug!(queue = %shared.queue, "no answer to basic.cancel"),
        }
    }
    wait_in_flight(shared).await;
    if channel.status().connected() {
        // Deliveries prefetched but never started go back to the queue.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            channel.close(200, "unsubscribed".into()),
        )
        .await;
    }
}

async fn wait_in_flight(shared: &SubscriptionShared) {
    if let Ok(all) = shared
        .unacked
        .acquire_many(u32::from(shared.prefetch))
        .await
    {
        drop(all);
    }
}

async fn handle(
    shared: Arc<SubscriptionShared>,
    channel: Arc<Channel>,
    delivery: Delivery,
    handling: OwnedSemaphorePermit,
    pending: Pending,
) {
    let incoming = incoming(&delivery.properties, delivery.data.clone());
    let outcome = shared.dispatcher.dispatch(incoming).await;
    // The next delivery may start while this one's ack is on its way.
    drop(handling);
    let settle = match outcome {
        Outcome::Ack => Settle::Ack,
        Outcome::Requeue => hand_back(&shared),
        Outcome::DeadLetter(dead) => match dead_letter(&shared, &channel, &delivery, &dead).await {
            Ok(()) => Settle::Ack,
            Err(e) => {
                tracing::error!(queue = %shared.queue, error = %e, "could not dead-letter a message; handing it back");
                // Not in a hot loop: the message comes back after a pause.
                tokio::time::sleep(shared.backoff.1.min(Duration::from_secs(1))).await;
                hand_back(&shared)
            }
        },
    };
    pending.settle(settle);
}

/// How a delivery is given back to the queue unacknowledged: `basic.nack`
/// with requeue. A stream takes nothing back (RabbitMQ answers a nack on a
/// stream by closing the whole connection): the message stays in the log
/// where it is, and the delivery is acked to free its prefetch slot.
fn hand_back(shared: &SubscriptionShared) -> Settle {
    if shared.is_stream() {
        tracing::debug!(queue = %shared.queue, "a stream takes no message back; it stays in the stream");
        return Settle::Ack;
    }
    Settle::Requeue
}

/// Publishes a copy of the delivery, with the dead-letter headers, to the
/// queue's dead-letter destination and waits for the confirm.
async fn dead_letter(
    shared: &SubscriptionShared,
    channel: &Channel,
    delivery: &Delivery,
    dead: &DeadLetter,
) -> Result<()> {
    let target = shared
        .dead_letter_target()
        .ok_or_else(|| Error::publish(&shared.queue, "the queue has no dead-letter destination"))?;
    let (exchange, routing_key) = match &target {
        DeadLetterTarget::Exchange {
            exchange,
            routing_key,
        } => (
            exchange.as_str(),
            routing_key
                .as_deref()
                .unwrap_or(delivery.routing_key.as_str()),
        ),
        DeadLetterTarget::Queue(q) => ("", q.as_str()),
    };
    let origin = [(headers::DEAD_LETTER_QUEUE, shared.queue.clone())];
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    for (k, v) in dead.headers_from(&origin) {
        table.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    let props = delivery
        .properties
        .clone()
        .with_headers(table)
        .with_delivery_mode(2);
    let name = delivery
        .properties
        .kind()
        .as_ref()
        .map_or(shared.queue.as_str(), |t| t.as_str());
    let event_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    dead.log(
        &origin,
        &event_id,
        &format!("exchange `{exchange}` routing key `{routing_key}`"),
    );
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &delivery.data,
            props,
        )
        .await
        .map_err(|e| {
            Error::publish(
                name,
                format!("dead-letter publish failed: {}", describe(&e)),
            )
        })?;
    match tokio::time::timeout(Duration::from_secs(30), confirm).await {
        Ok(r) => check(r, name),
        Err(_) => Err(Error::publish(
            name,
            "no confirm for the dead-letter publish",
        )),
    }
}
