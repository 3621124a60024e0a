//! Dispatch: the core step between a transport and the handlers.
//!
//! A transport consumes a destination (a Kafka topic in a group, a RabbitMQ
//! queue, an in-memory topic in a group) and hands each delivery to that
//! destination's [`Dispatcher`]. The dispatcher routes it by event name to
//! the handlers of its type, decodes it, runs every handler with its retry
//! policy (a panic is a failure), and answers with an [`Outcome`]: ack,
//! dead-letter (with the reason, built here), or requeue when shutting down.
//! The transport only acts on the outcome, so every transport behaves the
//! same. Delivery is at least once: a message is acked after its handlers
//! finished, so a crash in between delivers it again.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::event::{headers, Envelope, Headers};
use crate::handler::{Context, HandlerEntry, HandlerFailure, Publisher, StateMap};
use crate::retry::RetryPolicy;

/// What the transport should do with a delivery once the dispatcher is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every handler succeeded: acknowledge / commit.
    Ack,
    /// Give up on the message: send it to the dead-letter destination, then
    /// acknowledge / commit.
    DeadLetter(DeadLetter),
    /// Shutting down (mid-retry, or the delivery came after shutdown
    /// began): hand the message back unacknowledged so another consumer (or
    /// the next start) gets it.
    Requeue,
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

/// A message as a transport received it: wire headers and body.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// Wire headers (reserved `heytom-*` ones included).
    pub headers: Headers,
    /// The body (the event's JSON).
    pub body: Vec<u8>,
}

/// The handlers of one event on one destination, run on each delivery of
/// that event with their retry policies.
pub(crate) struct EventHandlers {
    event_name: &'static str,
    handlers: Vec<HandlerEntry>,
    handler_names: Vec<Arc<str>>,
    state: Arc<StateMap>,
    default_retry: RetryPolicy,
    producer: Option<Arc<dyn Publisher>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for EventHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandlers")
            .field("event_name", &self.event_name)
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl EventHandlers {
    /// The handlers of one event.
    pub(crate) fn new(
        event_name: &'static str,
        handlers: Vec<HandlerEntry>,
        state: Arc<StateMap>,
        default_retry: RetryPolicy,
        producer: Option<Arc<dyn Publisher>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        EventHandlers {
            event_name,
            handler_names: handlers
                .iter()
                .map(|h| Arc::from(h.name.as_str()))
                .collect(),
            handlers,
            state,
            default_retry,
            producer,
            shutdown,
        }
    }

    /// Decodes the envelope, runs every handler (each with its own retry
    /// policy) and says what to do with the message. Never panics. The
    /// [`Dispatcher`] chose this event by the message's type.
    async fn dispatch(&self, incoming: Incoming) -> Outcome {
        let mut wire = incoming.headers;
        // Messages from foreign producers carry no heytom headers: the
        // subscription's event is the only type they can be.
        if !wire.contains_key(headers::EVENT_NAME) {
            wire.insert(headers::EVENT_NAME.to_owned(), self.event_name.to_owned());
        }
        if !wire.contains_key(headers::EVENT_ID) {
            wire.insert(
                headers::EVENT_ID.to_owned(),
                uuid::Uuid::now_v7().to_string(),
            );
        }
        let envelope = match Envelope::from_wire(wire, incoming.body) {
            Ok(e) => e,
            Err(e) => {
                return Outcome::DeadLetter(DeadLetter::rejected(format!(
                    "malformed envelope: {e}"
                )))
            }
        };
        let envelope = Arc::new(envelope);
        let span =
            tracing::info_span!("consume", event_id = %envelope.id, event_name = %envelope.name);
        async {
            if self.handlers.len() == 1 {
                return self.run_handler(0, &envelope).await;
            }
            let results = futures::future::join_all(
                (0..self.handlers.len()).map(|i| self.run_handler(i, &envelope)),
            )
            .await;
            let mut dead = Vec::new();
            let mut requeue = false;
            for r in results {
                match r {
                    Outcome::Ack => {}
                    Outcome::Requeue => requeue = true,
                    Outcome::DeadLetter(d) => dead.push(d),
                }
            }
            if let Some(first) = dead.first().cloned() {
                if dead.len() == 1 {
                    return Outcome::DeadLetter(first);
                }
                return Outcome::DeadLetter(DeadLetter {
                    reason: dead
                        .iter()
                        .map(|d| format!("{}: {}", d.handler.as_deref().unwrap_or("?"), d.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                    attempts: dead.iter().map(|d| d.attempts).max().unwrap_or(0),
                    handler: Some(
                        dead.iter()
                            .filter_map(|d| d.handler.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                });
            }
            if requeue {
                Outcome::Requeue
            } else {
                Outcome::Ack
            }
        }
        .instrument(span)
        .await
    }

    async fn run_handler(&self, index: usize, envelope: &Arc<Envelope>) -> Outcome {
        let entry = &self.handlers[index];
        let policy = entry.retry.unwrap_or(self.default_retry);
        let base = Context::shared(
            envelope.clone(),
            self.handler_names[index].clone(),
            self.producer.clone(),
        );
        let mut shutdown = self.shutdown.clone();
        let mut attempt = 1;
        loop {
            let ctx = base.with_attempt(attempt);
            let span = tracing::debug_span!("handler", handler = %entry.name, attempt);
            let fut = entry.handler.call(envelope, ctx, &self.state);
            let result = AssertUnwindSafe(fut).catch_unwind().instrument(span).await;
            let error = match result {
                Ok(Ok(())) => return Outcome::Ack,
                Ok(Err(HandlerFailure::Decode(reason))) => {
                    tracing::warn!(handler = %entry.name, event_id = %envelope.id, %reason, "undecodable payload dead-lettered");
                    return Outcome::DeadLetter(DeadLetter {
                        reason: format!("payload does not decode: {reason}"),
                        attempts: 0,
                        handler: Some(entry.name.clone()),
                    });
                }
                Ok(Err(HandlerFailure::Failed(e))) => e.to_string(),
                Err(panic) => format!("handler panicked: {}", panic_message(&panic)),
            };
            if attempt >= policy.max_attempts {
                tracing::warn!(handler = %entry.name, event_id = %envelope.id, attempt, error = %error, "handler failed; dead-lettering");
                return Outcome::DeadLetter(DeadLetter {
                    reason: error,
                    attempts: attempt,
                    handler: Some(entry.name.clone()),
                });
            }
            let wait = policy.backoff(attempt);
            tracing::info!(handler = %entry.name, event_id = %envelope.id, attempt, error = %error, ?wait, "handler failed; retrying");
            if *shutdown.borrow() {
                return Outcome::Requeue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return Outcome::Requeue,
            }
            attempt += 1;
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Routes the deliveries of one destination to the handlers of their
/// event type: the one thing a transport calls.
///
/// A delivery without an event name goes to the destination's only event
/// (the first, when there are several): messages from foreign producers
/// carry no heytom headers. A name no event here has is dead-lettered as
/// an unknown type at once; with no event left (every subscriber gone) the
/// message is handed back.
pub struct Dispatcher {
    events: RwLock<Vec<Arc<EventHandlers>>>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("events", &self.event_names())
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
    pub(crate) fn new(events: Vec<EventHandlers>, shutdown: watch::Receiver<bool>) -> Self {
        Dispatcher {
            events: RwLock::new(events.into_iter().map(Arc::new).collect()),
            shutdown,
        }
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
        // Shutdown began: take no new message, not even one just handed
        // back (the transport may redeliver it before its consumer stops).
        if *self.shutdown.borrow() {
            return Outcome::Requeue;
        }
        let name = incoming
            .headers
            .get(headers::EVENT_NAME)
            .map(String::as_str);
        match self.target(name) {
            // Held until the handlers finish: unsubscribing waits for it.
            Target::Event(events) => events.dispatch(incoming).await,
            Target::Unknown(reason) => Outcome::DeadLetter(DeadLetter::rejected(reason)),
            Target::Nobody => Outcome::Requeue,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::event::Event;

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

    #[tokio::test]
    async fn after_shutdown_began_a_delivery_is_handed_back_unhandled() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let entry = HandlerEntry::from_closure("ping", move |_: Ping| {
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let (tx, rx) = watch::channel(false);
        let dispatcher = Dispatcher::new(
            vec![EventHandlers::new(
                "Ping",
                vec![entry],
                Arc::new(StateMap::new()),
                RetryPolicy::default(),
                None,
                rx.clone(),
            )],
            rx,
        );
        let envelope = Envelope::new(&Ping { n: 1 }).expect("serializes");
        let incoming = || Incoming {
            headers: envelope.wire_headers(),
            body: envelope.payload.clone(),
        };
        assert_eq!(dispatcher.dispatch(incoming()).await, Outcome::Ack);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tx.send(true).expect("receiver alive");
        assert_eq!(dispatcher.dispatch(incoming()).await, Outcome::Requeue);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "handler not run");
    }
}
