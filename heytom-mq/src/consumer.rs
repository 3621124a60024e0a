//! The consuming side: the dispatcher that runs handlers with the retry
//! policy, and the manual [`Consumer`] behind `InMemoryConsumer`,
//! `RabbitMqConsumer` and `KafkaConsumer`.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{watch, Mutex};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::event::{headers, Envelope, Event, Headers};
use crate::handler::{
    Context, EventHandler, HandlerEntry, HandlerFailure, IntoHandlerResult, StateMap,
};
use crate::producer::Producer;
use crate::retry::RetryPolicy;
use crate::transport::{Subscription, SubscriptionHandle, Transport};

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

    /// The headers added to the dead-lettered message.
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

/// Runs the handlers of one subscription on each delivery, with retries.
///
/// Transports call [`Dispatcher::dispatch`] and then ack, dead-letter or
/// requeue according to the [`Outcome`].
pub struct Dispatcher {
    event_name: &'static str,
    handlers: Vec<HandlerEntry>,
    handler_names: Vec<Arc<str>>,
    state: Arc<StateMap>,
    default_retry: RetryPolicy,
    producer: Option<Producer>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("event_name", &self.event_name)
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher for handlers of one event.
    pub fn new(
        event_name: &'static str,
        handlers: Vec<HandlerEntry>,
        state: Arc<StateMap>,
        default_retry: RetryPolicy,
        producer: Option<Producer>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Dispatcher {
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

    /// The `NAME` of the event this dispatcher handles.
    pub fn event_name(&self) -> &'static str {
        self.event_name
    }

    /// The handlers it runs.
    pub fn handlers(&self) -> &[HandlerEntry] {
        &self.handlers
    }

    /// Whether its owner (the app or the manual consumer) is shutting down.
    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Decodes the envelope, runs every handler (each with its own retry
    /// policy) and says what to do with the message. Never panics.
    pub async fn dispatch(&self, incoming: Incoming) -> Outcome {
        // Shutdown began: take no new message, not even one just handed
        // back (the transport may redeliver it before its consumer stops).
        if *self.shutdown.borrow() {
            return Outcome::Requeue;
        }
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
        if envelope.name != self.event_name {
            return Outcome::DeadLetter(DeadLetter::rejected(format!(
                "unknown message type `{}`: this subscription handles `{}`",
                envelope.name, self.event_name
            )));
        }
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

/// The consuming half of a transport, used by hand.
///
/// `InMemoryConsumer`, `RabbitMqConsumer` and `KafkaConsumer` all implement it.
pub trait MessageConsumer: Send + Sync {
    /// Starts consuming; subscriptions made before `start` begin now.
    fn start(&self) -> impl Future<Output = Result<()>> + Send;
    /// Subscribes a closure to an event type.
    fn subscribe<E, F, Fut, R>(&self, f: F) -> impl Future<Output = Result<()>> + Send
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult + 'static;
    /// Subscribes an [`EventHandler`] to an event type.
    fn subscribe_handler<E, H>(&self, handler: H) -> impl Future<Output = Result<()>> + Send
    where
        E: Event,
        H: EventHandler<E>;
    /// Stops the subscription for `E`, finishing in-flight messages.
    fn unsubscribe<E: Event>(&self) -> impl Future<Output = Result<()>> + Send;
    /// Stops every subscription, finishing in-flight messages.
    fn stop(&self) -> impl Future<Output = Result<()>> + Send;
}

/// A consumer over any transport; the manual consumers wrap it.
pub struct Consumer {
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
    state: Arc<StateMap>,
    group: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    inner: Mutex<ConsumerState>,
}

#[derive(Default)]
struct ConsumerState {
    started: bool,
    pending: Vec<HandlerEntry>,
    active: HashMap<&'static str, Box<dyn SubscriptionHandle>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("transport", &self.transport.kind())
            .finish()
    }
}

impl Consumer {
    /// A consumer on a transport.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let (shutdown_tx, _) = watch::channel(false);
        Consumer {
            transport,
            retry: RetryPolicy::default(),
            state: Arc::new(StateMap::new()),
            group: None,
            shutdown_tx,
            inner: Mutex::new(ConsumerState::default()),
        }
    }

    /// Sets the retry policy for handlers subscribed afterwards.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the consumer group / queue every subscription of this consumer uses.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The transport underneath.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    async fn add(&self, mut entry: HandlerEntry) -> Result<()> {
        if entry.group.is_none() {
            entry.group = self.group.clone();
        }
        let mut st = self.inner.lock().await;
        if st.active.contains_key(entry.event_name)
            || st.pending.iter().any(|e| e.event_name == entry.event_name)
        {
            return Err(Error::AlreadySubscribed(entry.event_name.to_owned()));
        }
        if st.started {
            let handle = self.open(entry.clone()).await?;
            st.active.insert(entry.event_name, handle);
        } else {
            st.pending.push(entry);
        }
        Ok(())
    }

    async fn open(&self, entry: HandlerEntry) -> Result<Box<dyn SubscriptionHandle>> {
        let group = self.transport.group_for(&entry);
        let dispatcher = Dispatcher::new(
            entry.event_name,
            vec![entry.clone()],
            self.state.clone(),
            self.retry,
            None,
            self.shutdown_tx.subscribe(),
        );
        self.transport
            .subscribe(Subscription {
                event_name: entry.event_name,
                route: entry.route,
                group,
                concurrency: entry.concurrency,
                dispatcher: Arc::new(dispatcher),
            })
            .await
    }
}

impl MessageConsumer for Consumer {
    async fn start(&self) -> Result<()> {
        let mut st = self.inner.lock().await;
        if st.started {
            return Ok(());
        }
        let _ = self.shutdown_tx.send(false);
        let pending = std::mem::take(&mut st.pending);
        for entry in pending {
            let handle = self.open(entry.clone()).await?;
            st.active.insert(entry.event_name, handle);
        }
        st.started = true;
        Ok(())
    }

    async fn subscribe<E, F, Fut, R>(&self, f: F) -> Result<()>
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult + 'static,
    {
        self.add(HandlerEntry::from_closure(
            format!("{}.subscriber", E::NAME),
            f,
        ))
        .await
    }

    async fn subscribe_handler<E, H>(&self, handler: H) -> Result<()>
    where
        E: Event,
        H: EventHandler<E>,
    {
        let name = format!("{}.{}", E::NAME, short_type_name::<H>());
        self.add(HandlerEntry::from_type::<E, H>(name, handler))
            .await
    }

    async fn unsubscribe<E: Event>(&self) -> Result<()> {
        let mut st = self.inner.lock().await;
        st.pending.retain(|e| e.event_name != E::NAME);
        if let Some(handle) = st.active.remove(E::NAME) {
            handle.stop().await?;
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        let mut st = self.inner.lock().await;
        let handles: Vec<_> = st.active.drain().collect();
        st.started = false;
        drop(st);
        let mut first_err = None;
        for (_, h) in handles {
            if let Err(e) = h.stop().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

pub(crate) fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Defines a manual consumer newtype over [`Consumer`] that implements
/// [`MessageConsumer`] by delegation.
macro_rules! manual_consumer {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $name(pub(crate) $crate::consumer::Consumer);

        impl $name {
            /// Sets the retry policy for handlers subscribed afterwards.
            pub fn with_retry(self, policy: $crate::RetryPolicy) -> Self {
                Self(self.0.with_retry(policy))
            }

            /// Sets the consumer group / queue every subscription uses.
            pub fn with_group(self, group: impl Into<String>) -> Self {
                Self(self.0.with_group(group))
            }

            /// Starts consuming (see [`MessageConsumer::start`](crate::MessageConsumer::start)).
            pub async fn start(&self) -> $crate::Result<()> {
                $crate::MessageConsumer::start(&self.0).await
            }

            /// Subscribes a closure (see [`MessageConsumer::subscribe`](crate::MessageConsumer::subscribe)).
            pub async fn subscribe<E, F, Fut, R>(&self, f: F) -> $crate::Result<()>
            where
                E: $crate::Event,
                F: Fn(E) -> Fut + Send + Sync + 'static,
                Fut: ::std::future::Future<Output = R> + Send + 'static,
                R: $crate::IntoHandlerResult + 'static,
            {
                $crate::MessageConsumer::subscribe(&self.0, f).await
            }

            /// Subscribes a handler type.
            pub async fn subscribe_handler<E, H>(&self, handler: H) -> $crate::Result<()>
            where
                E: $crate::Event,
                H: $crate::EventHandler<E>,
            {
                $crate::MessageConsumer::subscribe_handler::<E, H>(&self.0, handler).await
            }

            /// Stops the subscription for `E`.
            pub async fn unsubscribe<E: $crate::Event>(&self) -> $crate::Result<()> {
                $crate::MessageConsumer::unsubscribe::<E>(&self.0).await
            }

            /// Stops every subscription.
            pub async fn stop(&self) -> $crate::Result<()> {
                $crate::MessageConsumer::stop(&self.0).await
            }
        }

        impl $crate::MessageConsumer for $name {
            fn start(&self) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                $crate::MessageConsumer::start(&self.0)
            }
            fn subscribe<E, F, Fut, R>(&self, f: F) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send
            where
                E: $crate::Event,
                F: Fn(E) -> Fut + Send + Sync + 'static,
                Fut: ::std::future::Future<Output = R> + Send + 'static,
                R: $crate::IntoHandlerResult + 'static,
            {
                $crate::MessageConsumer::subscribe(&self.0, f)
            }
            fn subscribe_handler<E, H>(&self, handler: H) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send
            where
                E: $crate::Event,
                H: $crate::EventHandler<E>,
            {
                $crate::MessageConsumer::subscribe_handler::<E, H>(&self.0, handler)
            }
            fn unsubscribe<E: $crate::Event>(&self) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                $crate::MessageConsumer::unsubscribe::<E>(&self.0)
            }
            fn stop(&self) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send {
                $crate::MessageConsumer::stop(&self.0)
            }
        }
    };
}
pub(crate) use manual_consumer;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

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
            "Ping",
            vec![entry],
            Arc::new(StateMap::new()),
            RetryPolicy::default(),
            None,
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
