//! Dispatch: the core step between a transport and the handlers.
//!
//! A transport consumes a destination (a Kafka topic in a group, a RabbitMQ
//! queue, an in-memory topic in a group) and hands each delivery to that
//! destination's [`Dispatcher`]. The dispatcher routes it by event name to
//! the handlers of its type, decodes it, runs every handler with its retry
//! policy (a panic is a failure), and answers with an [`Outcome`]: ack,
//! dead-letter (with the reason, built here), or requeue (hand back) when
//! stopping or when the [`UnknownEventPolicy`] says so. The transport only
//! acts on the outcome, so every transport behaves the same. Delivery is at
//! least once: a message is acked after its handlers finished, so a crash in
//! between delivers it again.
//!
//! Stopping has a deadline ([`stop_by`]): first no new delivery is taken
//! and a message waiting for a retry is handed back; handlers running may
//! finish until shortly before the deadline; then they are abandoned (their
//! futures dropped) and their messages handed back, never acknowledged.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::event::{headers, Headers};

mod handlers;
mod incoming;
mod stop;

pub(crate) use handlers::EventHandlers;
pub use incoming::Incoming;
#[cfg(any(feature = "rabbitmq", feature = "kafka"))]
pub(crate) use incoming::Wire;
use stop::{reached, seen, stage, stage_since};
pub(crate) use stop::{stop_by, StopSignal, Stopping};

/// What the transport should do with a delivery once the dispatcher is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every handler succeeded: acknowledge / commit.
    Ack,
    /// Give up on the message: send it to the dead-letter destination, then
    /// acknowledge / commit.
    DeadLetter(DeadLetter),
    /// Hand the message back unacknowledged (RabbitMQ: nack with requeue;
    /// Kafka: the offset is not committed and the partition goes back to
    /// it; in-memory: back to the front of its lane) so another consumer,
    /// or the next start, gets it: when stopping (the delivery came after
    /// the stop began, its retry was waiting, or its handler was abandoned
    /// at the stop deadline), or for an event type this consumer does not
    /// know under [`UnknownEventPolicy::HandBack`].
    Requeue,
}

/// What a consumer does with a message of an event type it does not know:
/// on a topic or queue shared with other services or versions, during a
/// rolling deploy the new version may publish an event the old one has
/// never heard of. Set it with
/// [`AppBuilder::unknown_event_policy`](crate::AppBuilder::unknown_event_policy)
/// or `with_unknown_event_policy` on a manual consumer.
///
/// A message without an event name is not unknown: it goes to the
/// destination's (first) event, as from a foreign producer.
///
/// ```
/// use heytom_mq::{App, UnknownEventPolicy};
/// let builder = App::builder().unknown_event_policy(UnknownEventPolicy::HandBack);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEventPolicy {
    /// Send it to the dead-letter destination, with the reason "unknown
    /// message type" and attempts 0 (the default).
    #[default]
    DeadLetter,
    /// Acknowledge it without handling it (logged at `info`): for events
    /// this app is not meant to handle.
    Skip,
    /// Hand it back unacknowledged ([`Outcome::Requeue`]) after a pause of
    /// [`UnknownEventPolicy::HAND_BACK_PAUSE`], so that a consumer that knows
    /// the type (the new version) takes it and this one does not spin on
    /// it. On a Kafka partition nothing after it is handled here until
    /// someone else handles it or this consumer stops; on a RabbitMQ queue
    /// other messages go on.
    HandBack,
}

impl UnknownEventPolicy {
    /// How long a message is held before [`UnknownEventPolicy::HandBack`]
    /// hands it back.
    pub const HAND_BACK_PAUSE: Duration = Duration::from_secs(1);
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// What went wrong (decode error, unknown type, the handler's last error).
    pub reason: String,
    /// Delivery attempts made (0 when the message never reached a handler).
    pub attempts: u32,
    /// The handler that gave up, if one did.
    pub handler: Option<String>,
}

impl DeadLetter {
    /// A dead letter for a message that never reached a handler.
    pub fn rejected(reason: impl Into<String>) -> Self {
        DeadLetter {
            reason: reason.into(),
            attempts: 0,
            handler: None,
        }
    }

    /// The headers a dead-lettered copy carries on top of the original
    /// ones: why (reason, attempts, handler) and where it came from
    /// (`origin`: the `heytom-dead-letter-*` headers of the transport's
    /// destination, such as topic, partition, offset and group). Built here,
    /// the same for every transport; a transport only sends the copy.
    pub fn headers_from(&self, origin: &[(&'static str, String)]) -> Headers {
        let mut h = self.headers();
        for (k, v) in origin {
            h.insert((*k).to_owned(), v.clone());
        }
        h
    }

    /// Logs the dead-lettering once, in the same words on every transport.
    pub(crate) fn log(&self, origin: &[(&'static str, String)], event_id: &str, to: &str) {
        let from = origin
            .iter()
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("heytom-dead-letter-")))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::warn!(
            %from,
            %event_id,
            dead_letter_destination = to,
            reason = %self.reason,
            attempts = self.attempts,
            handler = self.handler.as_deref().unwrap_or(""),
            "dead-lettering message"
        );
    }

    /// The headers added to the dead-lettered message: reason, attempts and
    /// handler (see [`DeadLetter::headers_from`] for the origin too).
    pub fn headers(&self) -> Headers {
        let mut h = Headers::new();
        h.insert(headers::DEAD_LETTER_REASON.to_owned(), self.reason.clone());
        h.insert(
            headers::DEAD_LETTER_ATTEMPTS.to_owned(),
            self.attempts.to_string(),
        );
        if let Some(handler) = &self.handler {
            h.insert(headers::DEAD_LETTER_HANDLER.to_owned(), handler.clone());
        }
        h
    }
}

/// Routes the deliveries of one destination to the handlers of their
/// event type: the one thing a transport calls.
///
/// A delivery without an event name goes to the destination's only event
/// (the first, when there are several): messages from foreign producers
/// carry no heytom headers. A name no event here has follows the
/// [`UnknownEventPolicy`] (dead-lettered as an unknown type by default);
/// with no event left (every subscriber gone) the message is handed back.
pub struct Dispatcher {
    events: RwLock<Vec<Arc<EventHandlers>>>,
    stop: watch::Receiver<Stopping>,
    /// The stage of `stop` when it was subscribed to, while nothing changed.
    stop_seen: Option<Stopping>,
    unknown: UnknownEventPolicy,
    /// Where the deliveries come from, for the consume spans.
    source: crate::telemetry::Source,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("events", &self.event_names())
            .field("unknown", &self.unknown)
            .finish()
    }
}

/// Where one delivery goes.
enum Target {
    Event(Arc<EventHandlers>),
    Unknown(String),
    Nobody,
}

impl Dispatcher {
    /// A dispatcher for the events of one destination.
    pub(crate) fn new(
        events: Vec<EventHandlers>,
        stop: watch::Receiver<Stopping>,
        unknown: UnknownEventPolicy,
    ) -> Self {
        Dispatcher {
            events: RwLock::new(events.into_iter().map(Arc::new).collect()),
            stop_seen: seen(&stop),
            stop,
            unknown,
            source: crate::telemetry::Source::default(),
        }
    }

    /// Names the transport, destination and group its deliveries come from
    /// (what its consume spans say).
    pub(crate) fn describe(
        mut self,
        transport: crate::event::TransportKind,
        destination: &str,
        group: &str,
    ) -> Self {
        self.source = crate::telemetry::Source::new(transport, destination, group);
        self
    }

    /// Whether it takes no more messages: its app or consumer is stopping,
    /// or every event was unsubscribed (the subscription is being stopped).
    /// A transport handed a message back ([`Outcome::Requeue`]) then stops
    /// taking messages instead of taking it again.
    pub fn is_stopping(&self) -> bool {
        stage(&self.stop) >= Stopping::Draining || self.read().is_empty()
    }

    /// The names of the events it routes, in subscription order.
    pub fn event_names(&self) -> Vec<&'static str> {
        self.read().iter().map(|e| e.event_name).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<EventHandlers>>> {
        self.events.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<EventHandlers>>> {
        self.events.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event (a manual consumer subscribing one more type here).
    pub(crate) fn add(&self, events: EventHandlers) {
        self.write().push(Arc::new(events));
    }

    /// Removes an event; returns it (in-flight deliveries hold clones) and
    /// how many events remain.
    pub(crate) fn remove(&self, event_name: &str) -> (Option<Arc<EventHandlers>>, usize) {
        let mut events = self.write();
        let removed = events
            .iter()
            .position(|e| e.event_name == event_name)
            .map(|i| events.remove(i));
        (removed, events.len())
    }

    fn target(&self, event_name: Option<&str>) -> Target {
        let events = self.read();
        let found = match event_name {
            Some(name) => events.iter().find(|e| e.event_name == name),
            None => events.first(),
        };
        match (found, event_name) {
            (Some(e), _) => Target::Event(e.clone()),
            (None, _) if events.is_empty() => Target::Nobody,
            (None, name) => Target::Unknown(format!(
                "unknown message type `{}`: this subscription handles {}",
                name.unwrap_or_default(),
                events
                    .iter()
                    .map(|e| format!("`{}`", e.event_name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Routes one delivery, runs its handlers and says what to do with the
    /// message. Never panics.
    pub async fn dispatch(&self, incoming: Incoming) -> Outcome {
        // Stopping: take no new message, not even one just handed back
        // (the transport may redeliver it before its consumer stops).
        if stage_since(&self.stop, self.stop_seen) >= Stopping::Draining {
            return Outcome::Requeue;
        }
        match self.target(incoming.name()) {
            // Held until the handlers finish: unsubscribing waits for it.
            Target::Event(events) => events.dispatch(incoming, &self.source).await,
            Target::Unknown(reason) => self.unknown(reason, &incoming).await,
            Target::Nobody => Outcome::Requeue,
        }
    }

    /// A message of a type no event here has, per the policy.
    async fn unknown(&self, reason: String, incoming: &Incoming) -> Outcome {
        let event_id = incoming.id_text();
        match self.unknown {
            UnknownEventPolicy::DeadLetter => Outcome::DeadLetter(DeadLetter::rejected(reason)),
            UnknownEventPolicy::Skip => {
                tracing::info!(%event_id, %reason, "message of an unknown type skipped (UnknownEventPolicy::Skip)");
                Outcome::Ack
            }
            UnknownEventPolicy::HandBack => {
                tracing::debug!(%event_id, %reason, "message of an unknown type handed back (UnknownEventPolicy::HandBack)");
                // Not at once: this consumer may get it straight back.
                tokio::select! {
                    _ = tokio::time::sleep(UnknownEventPolicy::HAND_BACK_PAUSE) => {}
                    _ = reached(&self.stop, Stopping::Draining) => {}
                }
                Outcome::Requeue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;
    use crate::event::{Envelope, Event};
    use crate::handler::{HandlerEntry, StateMap};
    use crate::retry::RetryPolicy;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping {
        n: u32,
    }

    impl Event for Ping {
        const NAME: &'static str = "Ping";
        fn route() -> &'static crate::Route {
            static ROUTE: crate::Route = crate::Route::Default;
            &ROUTE
        }
        fn partition_key(&self) -> Option<String> {
            None
        }
    }

    fn ping_dispatcher(
        entry: HandlerEntry,
        stop: &StopSignal,
        unknown: UnknownEventPolicy,
    ) -> Dispatcher {
        Dispatcher::new(
            vec![EventHandlers::new(
                "Ping",
                vec![entry],
                Arc::new(StateMap::new()),
                RetryPolicy::default(),
                None,
                stop.subscribe(),
            )],
            stop.subscribe(),
            unknown,
        )
    }

    fn ping() -> Incoming {
        let envelope = Envelope::new(&Ping { n: 1 }).expect("serializes");
        Incoming::new(envelope.wire_headers(), envelope.payload.clone())
    }

    fn counting() -> (Arc<AtomicU32>, HandlerEntry) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let entry = HandlerEntry::from_closure("ping", move |_: Ping| {
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        (calls, entry)
    }

    #[tokio::test]
    async fn after_shutdown_began_a_delivery_is_handed_back_unhandled() {
        let (calls, entry) = counting();
        let stop = StopSignal::default();
        let dispatcher = ping_dispatcher(entry, &stop, UnknownEventPolicy::default());
        assert_eq!(dispatcher.dispatch(ping()).await, Outcome::Ack);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        stop.set(Stopping::Draining);
        assert!(dispatcher.is_stopping());
        assert_eq!(dispatcher.dispatch(ping()).await, Outcome::Requeue);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "handler not run");
    }

    #[tokio::test]
    async fn a_dropped_app_takes_no_more_messages() {
        let (calls, entry) = counting();
        let stop = StopSignal::default();
        let dispatcher = ping_dispatcher(entry, &stop, UnknownEventPolicy::default());
        drop(stop);
        assert!(dispatcher.is_stopping());
        assert_eq!(dispatcher.dispatch(ping()).await, Outcome::Requeue);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unknown_type_follows_the_policy() {
        let unknown = ping().event_name("Pong");
        let stop = StopSignal::default();
        let dead = ping_dispatcher(counting().1, &stop, UnknownEventPolicy::DeadLetter);
        match dead.dispatch(unknown.clone()).await {
            Outcome::DeadLetter(d) => {
                assert!(d.reason.contains("unknown message type `Pong`"), "{d:?}");
                assert_eq!(d.attempts, 0);
            }
            other => panic!("{other:?}"),
        }
        let skip = ping_dispatcher(counting().1, &stop, UnknownEventPolicy::Skip);
        assert_eq!(skip.dispatch(unknown.clone()).await, Outcome::Ack);

        let (calls, entry) = counting();
        let hand_back = ping_dispatcher(entry, &stop, UnknownEventPolicy::HandBack);
        let started = Instant::now();
        assert_eq!(hand_back.dispatch(unknown.clone()).await, Outcome::Requeue);
        assert!(
            started.elapsed() >= UnknownEventPolicy::HAND_BACK_PAUSE,
            "handed back without a pause"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // The pause ends when the consumer stops.
        let pending = hand_back.dispatch(unknown);
        tokio::pin!(pending);
        assert!(futures::poll!(&mut pending).is_pending());
        stop.set(Stopping::Draining);
        let handed = tokio::time::timeout(Duration::from_millis(200), pending).await;
        assert_eq!(handed.expect("stop ends the pause"), Outcome::Requeue);
    }

    // On tokio's paused clock: the times below are the stop's own schedule, not a speed.
    #[tokio::test(start_paused = true)]
    async fn a_handler_that_never_returns_is_abandoned_at_the_deadline() {
        let entry = HandlerEntry::from_closure("stuck", |_: Ping| std::future::pending::<()>());
        let stop = StopSignal::default();
        let dispatcher = Arc::new(ping_dispatcher(entry, &stop, UnknownEventPolicy::default()));
        let running = tokio::spawn({
            let d = dispatcher.clone();
            async move { d.dispatch(ping()).await }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        stop.set(Stopping::Draining);
        let stopped = stop_by(
            started + Duration::from_millis(500),
            || stop.set(Stopping::Abandoning),
            running,
        )
        .await;
        assert!(stopped.abandoned);
        let outcome = stopped.output.expect("handed back in time").expect("task");
        assert_eq!(outcome, Outcome::Requeue, "the message is not acknowledged");
        // Abandoned at 4/5 of the time, handed back by 9/10 of it.
        assert!(
            started.elapsed() < Duration::from_millis(460),
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_stop_that_finishes_in_time_is_not_abandoned() {
        let stopped = stop_by(
            Instant::now() + Duration::from_secs(5),
            || panic!("nothing to abandon"),
            async { 7 },
        )
        .await;
        assert_eq!((stopped.output, stopped.abandoned), (Some(7), false));
    }
}
