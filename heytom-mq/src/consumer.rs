//! Manual consumers: [`MessageConsumer`] and the [`Consumer`] behind
//! `InMemoryConsumer`, `RabbitMqConsumer` and `KafkaConsumer`.
//!
//! Subscribing goes through the same core path as an app: events that land
//! on one destination (Kafka topic and group, RabbitMQ queue) share one
//! transport subscription, whose [`Dispatcher`] routes each delivery by
//! event name. Unsubscribing one of them takes it out of the routing (its
//! in-flight deliveries finish first); the last one stops the subscription.
//! Stopping and unsubscribing have a deadline
//! ([`Consumer::with_stop_timeout`]): a handler still running then is
//! abandoned and its message handed back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::dispatch::{
    stop_by, Dispatcher, EventHandlers, StopSignal, Stopping, UnknownEventPolicy,
};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::handler::{EventHandler, HandlerEntry, IntoHandlerResult, StateMap};
use crate::retry::RetryPolicy;
use crate::transport::{Subscription, SubscriptionHandle, Transport};

/// How long stopping or unsubscribing may take unless set otherwise.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Stops the subscription for `E`, finishing in-flight messages (a
    /// handler still running at the stop timeout is abandoned and its
    /// message handed back; the result is then [`Error::Shutdown`]).
    fn unsubscribe<E: Event>(&self) -> impl Future<Output = Result<()>> + Send;
    /// Stops every subscription, finishing in-flight messages (a handler
    /// still running at the stop timeout is abandoned and its message
    /// handed back; the result is then [`Error::Shutdown`]).
    fn stop(&self) -> impl Future<Output = Result<()>> + Send;
}

/// A consumer over any transport; the manual consumers wrap it.
pub struct Consumer {
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
    state: Arc<StateMap>,
    group: Option<String>,
    unknown: UnknownEventPolicy,
    stop_timeout: Duration,
    stop: StopSignal,
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
        Consumer {
            transport,
            retry: RetryPolicy::default(),
            state: Arc::new(StateMap::new()),
            group: None,
            unknown: UnknownEventPolicy::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            stop: StopSignal::default(),
            inner: Mutex::new(ConsumerState::default()),
        }
    }

    /// What to do with a message of an event type none of this consumer's
    /// subscriptions on its topic or queue handles (default: dead-letter it).
    pub fn with_unknown_event_policy(mut self, policy: UnknownEventPolicy) -> Self {
        self.unknown = policy;
        self
    }

    /// How long `stop` and `unsubscribe` may take (default 30 s): handlers
    /// still running near the end are abandoned and their messages handed
    /// back.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
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
            self.stop.subscribe(),
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
            let dispatcher = Arc::new(
                Dispatcher::new(
                    vec![self.handlers(entry.clone())],
                    self.stop.subscribe(),
                    self.unknown,
                )
                .describe(self.transport.kind(), &key.0, &key.1),
            );
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
        self.stop.set(Stopping::No);
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
        let deadline = Instant::now() + self.stop_timeout;
        let events = removed.as_ref();
        // Its retries waiting are handed back; running handlers may finish.
        if let Some(e) = events {
            e.stop(Stopping::Draining);
        }
        let abandon = || {
            if let Some(e) = events {
                e.stop(Stopping::Abandoning);
            }
        };
        let bounded = if remaining == 0 {
            let Some(running) = st.running.remove(&key) else {
                return Ok(());
            };
            drop(st);
            stop_by(deadline, abandon, running.handle.stop()).await
        } else {
            drop(st);
            // Other events go on here; wait for this one's deliveries in
            // flight (each holds a reference). Its later messages are of an
            // unknown type here and follow the unknown-event policy.
            let drained = async {
                while events.is_some_and(|e| Arc::strong_count(e) > 1) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(())
            };
            stop_by(deadline, abandon, drained).await
        };
        if bounded.abandoned {
            tracing::warn!(event = E::NAME, timeout = ?self.stop_timeout, "unsubscribing timed out; a handler still running was abandoned and its message handed back");
            return Err(Error::Shutdown);
        }
        bounded.output.unwrap_or(Err(Error::Shutdown))
    }

    async fn stop(&self) -> Result<()> {
        self.stop.set(Stopping::Draining);
        let deadline = Instant::now() + self.stop_timeout;
        let mut st = self.inner.lock().await;
        let running: Vec<_> = st.running.drain().map(|(_, r)| r).collect();
        st.events.clear();
        st.started = false;
        drop(st);
        let stops = futures::future::join_all(running.into_iter().map(|r| r.handle.stop()));
        let stopped = stop_by(deadline, || self.stop.set(Stopping::Abandoning), stops).await;
        if stopped.abandoned {
            tracing::warn!(timeout = ?self.stop_timeout, "consumer stop timed out; handlers still running were abandoned and their messages handed back");
            return Err(Error::Shutdown);
        }
        let mut first_err = None;
        for r in stopped.output.into_iter().flatten() {
            if let Err(e) = r {
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

            /// What to do with a message of an event type this consumer
            /// does not handle (default: dead-letter it); see
            /// [`UnknownEventPolicy`]($crate::UnknownEventPolicy).
            pub fn with_unknown_event_policy(self, policy: $crate::UnknownEventPolicy) -> Self {
                Self(self.0.with_unknown_event_policy(policy))
            }

            /// How long `stop` and `unsubscribe` may take (default 30 s).
            pub fn with_stop_timeout(self, timeout: ::std::time::Duration) -> Self {
                Self(self.0.with_stop_timeout(timeout))
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
