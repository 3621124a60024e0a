//! Manual consumers: [`MessageConsumer`] and the [`Consumer`] behind
//! `InMemoryConsumer`, `RabbitMqConsumer` and `KafkaConsumer`.
//!
//! Subscribing goes through the same core path as an app: events that land
//! on one destination (Kafka topic and group, RabbitMQ queue) share one
//! transport subscription, whose [`Dispatcher`] routes each delivery by
//! event name. Unsubscribing one of them takes it out of the routing (its
//! in-flight deliveries finish first); the last one stops the subscription.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use crate::dispatch::{Dispatcher, EventHandlers};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handler::{EventHandler, HandlerEntry, IntoHandlerResult, StateMap};
use crate::retry::RetryPolicy;
use crate::transport::{Subscription, SubscriptionHandle, Transport};

/// How long unsubscribing one event of a shared destination waits for its
/// deliveries in flight.
const UNSUBSCRIBE_DRAIN: Duration = Duration::from_secs(30);

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
    /// Running subscriptions by (destination, group).
    running: HashMap<(String, String), Running>,
    /// Which subscription each subscribed event is on.
    events: HashMap<&'static str, (String, String)>,
}

struct Running {
    dispatcher: Arc<Dispatcher>,
    handle: Box<dyn SubscriptionHandle>,
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

    /// Sets the retry policy for handlers subscribed afterwards; `start`
    /// and `subscribe` refuse one that [`RetryPolicy::validate`] refuses.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the consumer group / queue every subscription of this consumer uses.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    fn check_retry(&self) -> Result<()> {
        self.retry.validate().map_err(|e| match e {
            Error::Configuration(m) => Error::Configuration(format!("with_retry: {m}")),
            other => other,
        })
    }

    /// The transport underneath.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    async fn add(&self, mut entry: HandlerEntry) -> Result<()> {
        self.check_retry()?;
        if entry.group.is_none() {
            entry.group = self.group.clone();
        }
        let mut st = self.inner.lock().await;
        if st.events.contains_key(entry.event_name)
            || st.pending.iter().any(|e| e.event_name == entry.event_name)
        {
            return Err(Error::AlreadySubscribed(entry.event_name.to_owned()));
        }
        if st.started {
            self.open(&mut st, entry).await
        } else {
            st.pending.push(entry);
            Ok(())
        }
    }

    fn handlers(&self, entry: HandlerEntry) -> EventHandlers {
        EventHandlers::new(
            entry.event_name,
            vec![entry],
            self.state.clone(),
            self.retry,
            None,
            self.shutdown_tx.subscribe(),
        )
    }

    /// Starts consuming `entry`'s event: on the running subscription of its
    /// destination, or on a new one.
    async fn open(&self, st: &mut ConsumerState, entry: HandlerEntry) -> Result<()> {
        let key = (
            self.transport.destination_of(entry.route, entry.event_name),
            self.transport.group_for(&entry),
        );
        let event_name = entry.event_name;
        if let Some(running) = st.running.get(&key) {
            running.handle.add_event(event_name, entry.route).await?;
            running.dispatcher.add(self.handlers(entry));
        } else {
            let dispatcher = Arc::new(Dispatcher::new(
                vec![self.handlers(entry.clone())],
                self.shutdown_tx.subscribe(),
            ));
            let handle = self
                .transport
                .subscribe(Subscription {
                    destination: key.0.clone(),
                    group: key.1.clone(),
                    events: vec![(event_name, entry.route)],
                    concurrency: entry.concurrency,
                    dispatcher: dispatcher.clone(),
                })
                .await?;
            st.running
                .insert(key.clone(), Running { dispatcher, handle });
        }
        st.events.insert(event_name, key);
        Ok(())
    }
}

impl MessageConsumer for Consumer {
    async fn start(&self) -> Result<()> {
        self.check_retry()?;
        let mut st = self.inner.lock().await;
        if st.started {
            return Ok(());
        }
        let _ = self.shutdown_tx.send(false);
        let pending = std::mem::take(&mut st.pending);
        for entry in pending {
            self.open(&mut st, entry).await?;
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
        let Some(key) = st.events.remove(E::NAME) else {
            return Ok(());
        };
        let Some(running) = st.running.get(&key) else {
            return Ok(());
        };
        let (removed, remaining) = running.dispatcher.remove(E::NAME);
        if remaining == 0 {
            if let Some(running) = st.running.remove(&key) {
                drop(st);
                return running.handle.stop().await;
            }
            return Ok(());
        }
        drop(st);
        // Other events go on here; wait for this one's deliveries in flight
        // (each holds a reference). Its later messages are of an unknown
        // type for this subscription and are dead-lettered as such.
        if let Some(events) = removed {
            let deadline = tokio::time::Instant::now() + UNSUBSCRIBE_DRAIN;
            while Arc::strong_count(&events) > 1 {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(event = E::NAME, "a message of the unsubscribed event is still in flight; it finishes on its own");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let _ = self.shutdown_tx.send(true);
        let mut st = self.inner.lock().await;
        let running: Vec<_> = st.running.drain().map(|(_, r)| r).collect();
        st.events.clear();
        st.started = false;
        drop(st);
        let mut first_err = None;
        for r in running {
            if let Err(e) = r.handle.stop().await {
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
