//! Publishing with confirms on one channel that is re-opened when it breaks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;

use futures::future::{BoxFuture, FutureExt};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Channel;
use lapin::{Confirmation, PublisherConfirm};
use tokio::time::Instant;

use super::connection::TRANSPORT;
use crate::error::{Error, Result};
use crate::transport::declare_once::DeclareOnce;
use crate::transport::{Outgoing, PendingResults};

use super::connection::{describe, lock, ConnectionSlot};
use super::options::RabbitMqOptions;
use super::properties::properties;
use super::topology::{declare_exchange, destination, Destination, ExchangeSpec};

/// The header that sets a message's AMQP priority (`0..=255`), honoured by
/// queues with `max_priority`.
///
/// ```
/// # use heytom_mq::Headers;
/// use heytom_mq::PRIORITY_HEADER;
/// let headers = Headers::from([(PRIORITY_HEADER.to_owned(), "9".to_owned())]);
/// // producer.send_with_headers(&event, headers).await?;
/// # let _ = headers;
/// ```
pub const PRIORITY_HEADER: &str = "priority";

pub(crate) struct Publisher {
    slot: Arc<ConnectionSlot>,
    options: Arc<RabbitMqOptions>,
    channel: RwLock<Option<Arc<Channel>>>,
    reopen: tokio::sync::Mutex<()>,
    /// Exchanges published to so far; declared once per channel.
    exchanges: Mutex<HashMap<String, ExchangeSpec>>,
    /// One declaration at a time per exchange.
    declaring: DeclareOnce,
    /// Slots for single sends waiting for their confirms, at most
    /// [`MAX_UNCONFIRMED_SENDS`] on the channel at once.
    unconfirmed: tokio::sync::Semaphore,
}

impl Publisher {
    /// The publishing connection's state.
    pub(crate) fn connection_state(&self) -> crate::transport::health::ConnectionState {
        self.slot.connection_state()
    }

    pub(crate) fn new(slot: ConnectionSlot, options: Arc<RabbitMqOptions>) -> Self {
        Publisher {
            slot: Arc::new(slot),
            options,
            channel: RwLock::new(None),
            reopen: tokio::sync::Mutex::new(()),
            exchanges: Mutex::new(HashMap::new()),
            declaring: DeclareOnce::default(),
            unconfirmed: tokio::sync::Semaphore::new(MAX_UNCONFIRMED_SENDS),
        }
    }

    fn open_channel(&self) -> Option<Arc<Channel>> {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// The publishing channel; (re)connects and redeclares the known
    /// exchanges when it is gone. The open channel is taken without a
    /// future of its own: every publish's future holds this one, and the
    /// reopening's would make each of them (thousands in flight at once)
    /// as big as a reconnect.
    pub(crate) async fn channel(&self) -> Result<Arc<Channel>> {
        match self.open_channel() {
            Some(c) => Ok(c),
            None => Box::pin(self.reopen_channel()).await,
        }
    }

    async fn reopen_channel(&self) -> Result<Arc<Channel>> {
        let _guard = self.reopen.lock().await;
        if let Some(c) = self.open_channel() {
            return Ok(c);
        }
        let conn = self.slot.get().await?;
        let channel = conn.create_channel().await.map_err(|e| {
            Error::connection(
                super::connection::TRANSPORT,
                format!("cannot open a channel: {}", describe(&e)),
                e,
            )
        })?;
        if self.options.publisher_confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| {
                    Error::connection(
                        super::connection::TRANSPORT,
                        format!("cannot turn on publisher confirms: {}", describe(&e)),
                        e,
                    )
                })?;
        }
        let known: Vec<ExchangeSpec> = lock(&self.exchanges).values().cloned().collect();
        for spec in known {
            if let Err(e) = declare_exchange(&channel, &spec).await {
                // Forget it so the next publish to it declares again and reports.
                lock(&self.exchanges).remove(&spec.name);
                return Err(e);
            }
        }
        let channel = Arc::new(channel);
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = Some(channel.clone());
        Ok(channel)
    }

    /// Whether `dest`'s exchange was declared as it asks.
    fn declared(&self, dest: &Destination<'_>) -> bool {
        lock(&self.exchanges)
            .get(dest.exchange)
            .is_some_and(|s| dest.matches(s))
    }

    /// Declares an exchange on the publishing channel unless done already
    /// (the declaration, once per exchange, in a boxed future of its own,
    /// for the same reason as [`channel`](Self::channel)'s reopening). One
    /// declaration at a time per exchange: the sends that wait for it find
    /// it done.
    pub(crate) async fn ensure_exchange(
        &self,
        channel: &Channel,
        dest: &Destination<'_>,
    ) -> Result<()> {
        if self.declared(dest) {
            return Ok(());
        }
        Box::pin(async {
            let _turn = self.declaring.turn(dest.exchange).await;
            if self.declared(dest) {
                return Ok(());
            }
            let spec = dest.exchange_spec();
            tracing::debug!(exchange = %spec.name, kind = spec.kind.as_str(), "declaring RabbitMQ exchange");
            declare_exchange(channel, &spec).await?;
            lock(&self.exchanges).insert(spec.name.clone(), spec);
            Ok(())
        })
        .await
    }

    /// Sends one message; the confirm future is awaited by the caller.
    async fn start(&self, channel: &Channel, message: &Outgoing) -> Result<PublisherConfirm> {
        let dest = destination(
            message.route,
            &message.envelope.name,
            &self.options.exchange,
        )?;
        self.ensure_exchange(channel, &dest).await?;
        let props = properties(&message.envelope)?;
        let publish = channel.basic_publish(
            dest.exchange.into(),
            dest.routing_key.into(),
            self.publish_options(),
            &message.envelope.payload,
            props,
        );
        publish
            .await
            .map_err(|e| not_sent(&message.envelope.name, &e))
    }

    fn publish_options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            // Without confirms nobody would read the returns; they would pile up.
            mandatory: self.options.mandatory && self.options.publisher_confirms,
            immediate: false,
        }
    }

    pub(crate) async fn publish(&self, message: &Outgoing) -> Result<()> {
        let timeout = self.options.publish_timeout;
        let name = &message.envelope.name;
        let work = async {
            // Held until the confirm: beyond the window a send waits for
            // an earlier one's confirm before it is published.
            let _slot = self.unconfirmed.acquire().await;
            let channel = self.channel().await?;
            let confirm = self.start(&channel, message).await?;
            check(confirm.await, name)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(name, timeout)),
        }
    }

    /// Queues the messages' frames on the channel in order, up to
    /// [`WRITE_WINDOW`] not yet written (lapin's I/O thread writes them
    /// while the next are encoded), then waits for the writes and the
    /// confirms. One deadline covers the whole batch.
    pub(crate) async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let timeout = self.options.publish_timeout;
        let deadline = Instant::now() + timeout;
        let channel = match self.batch_channel(messages, deadline).await {
            Ok(c) => c,
            Err(results) => return results,
        };
        let mut sent: Vec<Sent<'_>> = Vec::with_capacity(messages.len());
        let queue = self.queue_batch(&channel, messages, &mut sent);
        let queued = tokio::time::timeout_at(deadline, queue).await.is_ok();
        settle_batch(&mut sent, messages, queued, deadline, timeout).await
    }

    /// [`publish_batch`](Self::publish_batch) in two steps: returns once
    /// every message's frames are queued on the channel, in order (lapin
    /// queues a publish's frames on its first poll), with the writes and
    /// the confirms still to come in the future it gives. The next batch
    /// can be queued meanwhile and stays behind this one.
    pub(crate) async fn publish_batch_queued(
        self: &Arc<Self>,
        messages: Vec<Outgoing>,
    ) -> PendingResults {
        let timeout = self.options.publish_timeout;
        let deadline = Instant::now() + timeout;
        let channel = match self.batch_channel(&messages, deadline).await {
            Ok(c) => c,
            Err(results) => return Box::pin(std::future::ready(results)),
        };
        let (queued_tx, mut queued_rx) = tokio::sync::oneshot::channel::<()>();
        let publisher = self.clone();
        let mut batch: PendingResults = Box::pin(async move {
            let mut sent: Vec<Sent<'_>> = Vec::with_capacity(messages.len());
            let queue = publisher.queue_batch(&channel, &messages, &mut sent);
            let queued = tokio::time::timeout_at(deadline, queue).await.is_ok();
            let _ = queued_tx.send(());
            settle_batch(&mut sent, &messages, queued, deadline, timeout).await
        });
        // Driven here until every message is queued (or the batch is done).
        let done = std::future::poll_fn(|cx| {
            if let Poll::Ready(results) = batch.as_mut().poll(cx) {
                return Poll::Ready(Some(results));
            }
            match std::pin::Pin::new(&mut queued_rx).poll(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match done {
            Some(results) => Box::pin(std::future::ready(results)),
            None => batch,
        }
    }

    /// The publishing channel for a batch, or every message's error.
    async fn batch_channel(
        &self,
        messages: &[Outgoing],
        deadline: Instant,
    ) -> std::result::Result<Arc<Channel>, Vec<Result<()>>> {
        let timeout = self.options.publish_timeout;
        match tokio::time::timeout_at(deadline, self.channel()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                let reason = e.to_string();
                let unavailable = e.is_unavailable();
                Err(messages
                    .iter()
                    .map(|m| {
                        Err(if unavailable {
                            Error::unavailable(TRANSPORT, &m.envelope.name, reason.clone())
                        } else {
                            Error::publish(&m.envelope.name, reason.clone())
                        })
                    })
                    .collect())
            }
            Err(_) => Err(messages
                .iter()
                .map(|m| Err(timed_out(&m.envelope.name, timeout)))
                .collect()),
        }
    }

    /// Queues every message of a batch in order, at most [`WRITE_WINDOW`]
    /// of them not yet written.
    async fn queue_batch<'a>(
        &'a self,
        channel: &'a Channel,
        messages: &'a [Outgoing],
        sent: &mut Vec<Sent<'a>>,
    ) {
        // The exchange checked last: a batch of one event type checks once.
        let mut ensured: Option<Destination<'_>> = None;
        let mut oldest = 0;
        for m in messages {
            while sent.len() - oldest >= WRITE_WINDOW {
                sent[oldest].written(&messages[oldest].envelope.name).await;
                oldest += 1;
            }
            sent.push(match self.queue(channel, m, &mut ensured).await {
                Ok(s) => s,
                Err(e) => Sent::Done(Err(e)),
            });
        }
    }

    /// Puts one message's frames in the channel's queue, in order: the
    /// publish future is polled once here, and lapin queues the frames on
    /// that first poll (the exchange is declared before, so nothing else
    /// can be pending in it).
    async fn queue<'a>(
        &'a self,
        channel: &'a Channel,
        message: &'a Outgoing,
        ensured: &mut Option<Destination<'a>>,
    ) -> Result<Sent<'a>> {
        let name = &message.envelope.name;
        let dest = destination(message.route, name, &self.options.exchange)?;
        if !ensured.as_ref().is_some_and(|d| d.same_exchange(&dest)) {
            self.ensure_exchange(channel, &dest).await?;
            *ensured = Some(dest.clone());
        }
        let props = properties(&message.envelope)?;
        let mut publish = Box::pin(channel.basic_publish(
            dest.exchange.into(),
            dest.routing_key.into(),
            self.publish_options(),
            &message.envelope.payload,
            props,
        ));
        Ok(match futures::poll!(publish.as_mut()) {
            Poll::Ready(Ok(confirm)) => Sent::Written(confirm),
            Poll::Ready(Err(e)) => Sent::Done(Err(not_sent(name, &e))),
            Poll::Pending => Sent::Writing(publish),
        })
    }

    pub(crate) async fn close(&self) {
        let channel = self
            .channel
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = channel {
            if c.status().connected() {
                let _ =
                    tokio::time::timeout(self.options.publish_timeout, c.wait_for_confirms()).await;
                // Closed here and awaited: a channel dropped open is closed by
                // lapin in the background, racing the connection close below,
                // and that race logs an ERROR on an orderly shutdown.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    c.close(200, "closing".into()),
                )
                .await;
            }
        }
        self.slot.close().await;
    }
}

/// Single sends (`send()`, thousands of them awaited at once) published and
/// not yet confirmed, at most, per publishing channel. lapin looks through
/// every unconfirmed message of the channel for each (multiple) confirm
/// the broker sends: 20,000 concurrent sends spent 6% of the process's
/// time there. With this window the concurrent sends of `bench_rabbitmq`
/// (`BENCH_PROFILE=concurrent BENCH_COUNT=40000`) took 18.0 against 25.8
/// µs of CPU per message (median of 6 warm rounds, side by side) at the
/// same rate; 2,048 confirms in flight still outrun the broker (~20-25k
/// persistent messages/s here, a confirm within milliseconds).
const MAX_UNCONFIRMED_SENDS: usize = 2048;

/// How many messages of a batch may wait in lapin's outgoing queue at once.
/// Queueing without any bound (20,000 messages) left lapin's I/O thread a
/// backlog to serialize and cost more CPU per message (11 µs against 9 µs
/// at 64, `bench_rabbitmq`) with no faster confirms; awaiting each write (a
/// window of 1, what a plain `basic_publish(..).await` loop does) costs a
/// thread switch per message.
const WRITE_WINDOW: usize = 64;

/// A message of a batch after its frames were queued.
enum Sent<'a> {
    /// Still being written by lapin's I/O thread.
    Writing(BoxFuture<'a, lapin::Result<PublisherConfirm>>),
    /// Written; the confirm is pending.
    Written(PublisherConfirm),
    /// Its result: confirmed, refused, not written or never queued.
    Done(Result<()>),
    /// The result was read.
    Taken,
}

impl Sent<'_> {
    /// Waits for the write.
    async fn written(&mut self, name: &str) {
        if let Sent::Writing(publish) = self {
            *self = match publish.await {
                Ok(confirm) => Sent::Written(confirm),
                Err(e) => Sent::Done(Err(not_sent(name, &e))),
            };
        }
    }

    /// Waits for the write, then the confirm.
    async fn settle(&mut self, name: &str) {
        self.written(name).await;
        if let Sent::Written(confirm) = self {
            *self = Sent::Done(check(confirm.await, name));
        }
    }

    /// Settles what is settled already, without waiting; whether it is.
    fn settle_now(&mut self, name: &str) -> bool {
        self.settle(name).now_or_never();
        matches!(self, Sent::Done(_))
    }

    /// The message's result once settled.
    fn result(&mut self, name: &str) -> Result<()> {
        match std::mem::replace(self, Sent::Taken) {
            Sent::Done(r) => r,
            Sent::Writing(_) | Sent::Written(_) | Sent::Taken => Err(Error::publish(
                name,
                "publish result read before it was settled",
            )),
        }
    }
}

/// Waits for a batch's confirms until the deadline; one result per
/// message (those never queued, not written or not confirmed in time
/// timed out).
async fn settle_batch(
    sent: &mut [Sent<'_>],
    messages: &[Outgoing],
    queued: bool,
    deadline: Instant,
    timeout: std::time::Duration,
) -> Vec<Result<()>> {
    let mut out = Vec::with_capacity(messages.len());
    let confirms = async {
        // The last message first: RabbitMQ confirms a channel's messages
        // in order, so once the last is in, the others are too, and
        // collecting them costs no wake-up (and thread switch) each.
        if let Some(last) = sent.len().checked_sub(1) {
            sent[last].settle(&messages[last].envelope.name).await;
        }
        for (m, s) in messages.iter().zip(sent.iter_mut()) {
            s.settle(&m.envelope.name).await;
            out.push(s.result(&m.envelope.name));
        }
    };
    let confirmed = tokio::time::timeout_at(deadline, confirms).await.is_ok();
    if !(queued && confirmed) {
        // Cut off by the deadline: what is in by now counts; the rest
        // (not written, not confirmed or never queued) timed out.
        for (i, m) in messages.iter().enumerate().skip(out.len()) {
            let name = &m.envelope.name;
            let settled = sent
                .get_mut(i)
                .and_then(|s| s.settle_now(name).then_some(s));
            out.push(match settled {
                Some(s) => s.result(name),
                None => Err(timed_out(name, timeout)),
            });
        }
    }
    out
}

fn not_sent(name: &str, e: &lapin::Error) -> Error {
    Error::unavailable(TRANSPORT, name, format!("could not send: {}", describe(e)))
}

fn timed_out(name: &str, timeout: std::time::Duration) -> Error {
    Error::unavailable(
        TRANSPORT,
        name,
        format!("no confirm from RabbitMQ within {timeout:?}"),
    )
}

/// Turns the broker's answer into the publish's result.
pub(crate) fn check(confirm: lapin::Result<Confirmation>, name: &str) -> Result<()> {
    match confirm {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => Err(Error::publish(
            name,
            format!(
                "unroutable: no queue is bound to exchange `{}` for routing key `{}` (broker: {} {})",
                returned.delivery.exchange, returned.delivery.routing_key, returned.reply_code, returned.reply_text
            ),
        )),
        Ok(Confirmation::Nack(None)) => Err(Error::publish(
            name,
            "the broker refused the message (nack): a queue it routes to is full (`max_length`, overflow `reject-publish`) or failed to store it",
        )),
        Err(e) => Err(Error::unavailable(
            TRANSPORT,
            name,
            format!("connection lost before the broker confirmed: {}", describe(&e)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_become_results() {
        assert!(check(Ok(Confirmation::Ack(None)), "E").is_ok());
        assert!(check(Ok(Confirmation::NotRequested), "E").is_ok());
        let err = check(Ok(Confirmation::Nack(None)), "E").unwrap_err();
        assert!(matches!(err, Error::Publish { .. }));
        let lost: lapin::Error =
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "basic.publish")
                .into();
        assert!(check(Err(lost), "E")
            .unwrap_err()
            .to_string()
            .contains("connection lost"));
    }
}
