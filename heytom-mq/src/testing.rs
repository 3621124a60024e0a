//! A test harness for your handlers (feature `testing`): [`TestApp`] runs
//! an app's handlers on the in-memory broker, lets a test publish events,
//! wait until they are handled, and look at what the handlers published and
//! what was dead-lettered.
//!
//! Everything runs in the test's tokio runtime, on tokio's clock: the
//! retry backoff is a `tokio::time::sleep`, so under
//! `#[tokio::test(start_paused = true)]` a handler that fails five times
//! with minutes of backoff between attempts is retried and dead-lettered at
//! once (the paused clock jumps to the next timer whenever every task
//! waits). The timeouts of [`TestApp::wait_handled`] run on the same clock.
//! Work that runs outside tokio (a database driver's own thread, such as
//! sqlx's SQLite worker) does not hold the paused clock back: a test that
//! waits on it should keep the real clock.
//!
//! The semantics are the app's own: the same dispatcher, retry policies,
//! dead-letter decisions and unknown-event policy as `App::start` on the
//! in-memory broker, with every event (whatever its `#[kafka]` or
//! `#[rabbitmq]` attribute) travelling in-process.
//!
//! ```
//! use std::time::Duration;
//! use heytom_mq::prelude::*;
//! use heytom_mq::testing::TestApp;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! # pub struct OrderPlaced { pub order_id: String }
//! # #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! # pub struct OrderBilled { pub order_id: String }
//!
//! #[handler]
//! async fn bill(event: OrderPlaced, ctx: Context) -> Result<(), HandlerError> {
//!     ctx.publish(&OrderBilled { order_id: event.order_id }).await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), heytom_mq::Error> {
//! let app = TestApp::builder().discover_in(module_path!()).start().await?;
//! app.publish(&OrderPlaced { order_id: "A-1".into() }).await?;
//! app.wait_handled::<OrderPlaced>(1, Duration::from_secs(5)).await?;
//! let billed = app.published::<OrderBilled>();
//! assert_eq!(billed[0].order_id, "A-1");
//! app.shutdown().await
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, AppBuilder, RunningApp};
use crate::dispatch::UnknownEventPolicy;
use crate::error::{Error, Result};
use crate::event::{headers, Envelope, Event, EventId, Headers};
use crate::handler::{EventHandler, HandlerEntry};
use crate::producer::Producer;
use crate::retry::RetryPolicy;
use crate::transport::memory::{DeadLetteredMessage, InMemoryBroker, InMemoryTransport};
use crate::transport::Transport;

mod record;

pub use record::Handled;
use record::{Record, RecordingTransport};

/// Builds a [`TestApp`]: start with [`TestApp::builder`] (handlers
/// discovered as `App::builder()` does) or [`TestApp::from_builder`] (your
/// app's own `AppBuilder`, its transports replaced by the in-memory broker).
pub struct TestAppBuilder {
    app: AppBuilder,
    only: Option<Vec<String>>,
}

impl std::fmt::Debug for TestAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAppBuilder")
            .field("app", &self.app)
            .field("only", &self.only)
            .finish()
    }
}

impl TestAppBuilder {
    /// Registers state that handlers take as `State<T>`.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.app = self.app.state(value);
        self
    }

    /// Registers a handler type for `E`, like `AppBuilder::handler`.
    pub fn handler<E: Event, H: EventHandler<E>>(mut self, handler: H) -> Self {
        self.app = self.app.handler::<E, H>(handler);
        self
    }

    /// Registers a prepared handler entry (a closure, a name, a retry policy).
    ///
    /// ```
    /// # use heytom_mq::prelude::*;
    /// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct Ping;
    /// use heytom_mq::{HandlerEntry, testing::TestApp};
    /// let builder = TestApp::builder()
    ///     .discover(false)
    ///     .handler_entry(HandlerEntry::from_closure("ping", |_: Ping| async { true }));
    /// # let _ = builder;
    /// ```
    pub fn handler_entry(mut self, entry: HandlerEntry) -> Self {
        self.app = self.app.handler_entry(entry);
        self
    }

    /// Turns `#[handler]` discovery on (default) or off.
    pub fn discover(mut self, on: bool) -> Self {
        self.app = self.app.discover(on);
        self
    }

    /// Discovers only `#[handler]` functions defined under a module path
    /// (`module_path!()`: the test's own module).
    pub fn discover_in(mut self, module_prefix: impl Into<String>) -> Self {
        self.app = self.app.discover_in(module_prefix);
        self
    }

    /// Discovers only the `#[handler]` functions with these names (the
    /// function's name, or its `#[handler(name = "...")]`); handlers added
    /// with [`handler`](Self::handler) or
    /// [`handler_entry`](Self::handler_entry) are kept. A name that matches
    /// no handler of the app fails [`start`](Self::start) with a
    /// configuration error naming it.
    pub fn only_handlers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only
            .get_or_insert_with(Vec::new)
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// The retry policy of every handler without its own.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.app = self.app.retry_policy(policy);
        self
    }

    /// The retry policy of one handler, by name.
    pub fn handler_retry_policy(mut self, handler: impl Into<String>, policy: RetryPolicy) -> Self {
        self.app = self.app.handler_retry_policy(handler, policy);
        self
    }

    /// What the handlers do with a message of an event type they do not know.
    pub fn unknown_event_policy(mut self, policy: UnknownEventPolicy) -> Self {
        self.app = self.app.unknown_event_policy(policy);
        self
    }

    /// Builds the app on a fresh in-memory broker and starts its handlers.
    ///
    /// Fails as `AppBuilder::build` does (a handler's missing state, two
    /// handlers with one name, ...), and with a configuration error for a
    /// name given to [`only_handlers`](Self::only_handlers) that no handler has.
    pub async fn start(self) -> Result<TestApp> {
        let broker = InMemoryBroker::new();
        let record = Arc::new(Record::default());
        let transport = Arc::new(RecordingTransport::new(
            InMemoryTransport::new(broker.clone()),
            record.clone(),
        ));
        let mut builder = self.app;
        if let Some(only) = self.only.clone() {
            builder = builder.narrow_discovery(move |r| only.iter().any(|n| n == r.name));
        }
        let app: App = builder.only_transport(transport.clone()).build().await?;
        if let Some(only) = &self.only {
            let names: Vec<&str> = app.handlers().iter().map(HandlerEntry::name).collect();
            let unknown: Vec<&String> = only
                .iter()
                .filter(|n| !names.contains(&n.as_str()))
                .collect();
            if !unknown.is_empty() {
                return Err(Error::config(format!(
                    "TestAppBuilder::only_handlers: no handler named {} (the app's handlers: {})",
                    quoted(unknown.iter().map(|s| s.as_str())),
                    quoted(names.iter().copied()),
                )));
            }
        }
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for h in app.handlers() {
            let groups = expected
                .entry(transport.destination_of(h.route(), h.event_name()))
                .or_default();
            let group = transport.group_for(h);
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        record.expect(expected);
        let observer = record.clone();
        // A fresh broker: nothing observes it yet.
        broker.observe_settled(Arc::new(move |topic, group, message, outcome| {
            observer.settled(topic, group, message, outcome)
        }));
        let running = app.start().await?;
        Ok(TestApp {
            running,
            injector: Producer::on(Arc::new(InMemoryTransport::new(broker.clone()))),
            broker,
            record,
        })
    }
}

impl From<AppBuilder> for TestAppBuilder {
    fn from(app: AppBuilder) -> Self {
        TestAppBuilder { app, only: None }
    }
}

/// An app's handlers running on the in-memory broker, for tests.
///
/// - [`publish`](Self::publish) sends an event into the app, as another
///   service would;
/// - [`wait_handled`](Self::wait_handled) waits until the app's handlers
///   are done with a number of messages of one event type (succeeded, or
///   given up on after their retries);
/// - [`published`](Self::published) lists what the app published: the
///   follow-ups its handlers sent through `ctx.publish()`, and what went
///   through [`producer`](Self::producer);
/// - [`dead_letters`](Self::dead_letters) lists what was dead-lettered.
///
/// See the [module documentation](self) for an example and for the paused
/// clock.
pub struct TestApp {
    running: RunningApp,
    /// Publishes what the test sends in, past the recording.
    injector: Producer,
    broker: InMemoryBroker,
    record: Arc<Record>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("running", &self.running)
            .field("topics", &self.record.topics())
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// A builder that discovers every `#[handler]` linked into the test
    /// binary, like `App::builder()`; narrow it with
    /// [`discover_in`](TestAppBuilder::discover_in) or
    /// [`only_handlers`](TestAppBuilder::only_handlers).
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::from(App::builder())
    }

    /// A builder from your app's own configuration (state, handlers, retry
    /// policies, an outbox), with every transport it names replaced by the
    /// in-memory broker.
    ///
    /// ```
    /// use heytom_mq::{App, AppBuilder, testing::TestApp};
    ///
    /// // The service's own wiring, shared by main() and the tests.
    /// fn app(greeting: String) -> AppBuilder {
    ///     App::from_env().state(greeting)
    /// }
    ///
    /// let test = TestApp::from_builder(app("hello".into()));
    /// # let _ = test;
    /// ```
    pub fn from_builder(builder: AppBuilder) -> TestAppBuilder {
        TestAppBuilder::from(builder)
    }

    /// Starts every discovered `#[handler]` (`TestApp::builder().start()`).
    pub async fn new() -> Result<TestApp> {
        Self::builder().start().await
    }

    /// Sends an event into the app, as another service would. It is not
    /// recorded as published by the app.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<EventId> {
        self.injector.send(event).await
    }

    /// [`publish`](Self::publish) with headers (a correlation id, your own).
    pub async fn publish_with_headers<E: Event>(
        &self,
        event: &E,
        headers: Headers,
    ) -> Result<EventId> {
        self.injector.send_with_headers(event, headers).await
    }

    /// Sends raw wire headers and body to an event's topic (its name), as a
    /// foreign producer would: for malformed payloads and unknown types.
    /// Without a `heytom-event-id` header it gets a new id, which is
    /// returned (so [`Handled::event_id`] tells it apart).
    pub fn publish_raw(
        &self,
        topic: &str,
        mut headers: Headers,
        body: impl Into<Vec<u8>>,
    ) -> EventId {
        let id = match headers.get(headers::EVENT_ID) {
            Some(text) => EventId::parse_str(text).unwrap_or_default(),
            None => {
                let id = EventId::now_v7();
                headers.insert(headers::EVENT_ID.to_owned(), id.to_string());
                id
            }
        };
        self.broker.publish_raw(topic, headers, body.into(), None);
        id
    }

    /// Waits until the app's handlers are done with at least `count`
    /// messages of `E` since the app started, and returns those done so far
    /// (in the order they finished).
    ///
    /// A message is done when every handler of `E` (every consumer group)
    /// acknowledged it or gave up on it after its retries, so it is in
    /// [`dead_letters`](Self::dead_letters). A message a handler still
    /// retries is not done. Messages with a body that does not decode as
    /// `E`, or of an unknown type, sent to `E`'s topic, count too (they are
    /// dead-lettered, or skipped under `UnknownEventPolicy::Skip`).
    ///
    /// Fails with [`Error::Timeout`] (saying how many were done and how many
    /// were in progress) when `timeout` passes first, and at once with a
    /// configuration error when no handler of the app handles `E`.
    pub async fn wait_handled<E: Event>(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Handled>> {
        let topic = self.topic_of::<E>();
        if self.record.groups_of(&topic).is_empty() {
            return Err(Error::config(format!(
                "TestApp::wait_handled::<{}>: no handler of this app handles `{}` (it handles {})",
                short_name::<E>(),
                E::NAME,
                quoted(self.record.topics().iter().map(String::as_str)),
            )));
        }
        let waited = self
            .wait_for(timeout, || {
                let done = self.record.handled(&topic);
                (done.len() >= count).then_some(done)
            })
            .await;
        waited.ok_or_else(|| {
            let done = self.record.handled(&topic);
            let dead = done.iter().filter(|h| !h.succeeded()).count();
            let queued: usize = self
                .record
                .groups_of(&topic)
                .iter()
                .map(|g| self.broker.pending(&topic, g))
                .sum();
            Error::Timeout {
                what: format!(
                    "{count} `{}` messages handled: {} handled ({dead} dead-lettered), {} partly handled, {queued} deliveries not yet taken",
                    E::NAME,
                    done.len(),
                    self.record.partly_handled(&topic),
                ),
                waited: timeout,
            }
        })
    }

    /// The messages of `E` the handlers are done with so far (see
    /// [`wait_handled`](Self::wait_handled)).
    pub fn handled<E: Event>(&self) -> Vec<Handled> {
        self.record.handled(&self.topic_of::<E>())
    }

    /// The events of type `E` the app published, in order: follow-ups its
    /// handlers sent with `ctx.publish()`, and what went through
    /// [`producer`](Self::producer) (or the outbox). Not those sent in with
    /// [`publish`](Self::publish).
    pub fn published<E: Event>(&self) -> Vec<E> {
        self.record
            .published_named(Some(E::NAME))
            .iter()
            .filter_map(|e| e.decode::<E>().ok())
            .collect()
    }

    /// Every envelope the app published, in order, with its headers (a
    /// follow-up's `causation-id` is the id of the event that caused it).
    pub fn published_envelopes(&self) -> Vec<Envelope> {
        self.record.published_named(None)
    }

    /// Waits until the app published at least `count` events of type `E`,
    /// and returns them; fails with [`Error::Timeout`] when `timeout` passes first.
    pub async fn wait_published<E: Event>(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<E>> {
        let waited = self
            .wait_for(timeout, || {
                let published = self.published::<E>();
                (published.len() >= count).then_some(published)
            })
            .await;
        waited.ok_or_else(|| Error::Timeout {
            what: format!(
                "{count} `{}` events published by the app: {} published",
                E::NAME,
                self.published::<E>().len()
            ),
            waited: timeout,
        })
    }

    /// Every message dead-lettered so far, with why
    /// ([`DeadLetteredMessage::dead_letter`]: reason, attempts, handler).
    pub fn dead_letters(&self) -> Vec<DeadLetteredMessage> {
        self.broker.dead_letters()
    }

    /// The app's producer: what goes through it is recorded as published.
    pub fn producer(&self) -> Producer {
        self.running.producer()
    }

    /// The in-memory broker the app runs on.
    pub fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }

    /// The running app underneath.
    pub fn running(&self) -> &RunningApp {
        &self.running
    }

    /// Shuts the app down as `RunningApp::shutdown` does.
    pub async fn shutdown(self) -> Result<()> {
        self.running.shutdown().await
    }

    fn topic_of<E: Event>(&self) -> String {
        // In memory, an event's topic is its name, whatever its route.
        E::NAME.to_owned()
    }

    /// Checks `ready` on every change until it answers, or `timeout` passes.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.record.subscribe();
        let waiting = async {
            loop {
                if let Some(out) = ready() {
                    return out;
                }
                if changes.changed().await.is_err() {
                    // The record outlives this wait (self holds it): never here.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, waiting).await.ok()
    }
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if list.is_empty() {
        "nothing".to_owned()
    } else {
        list.join(", ")
    }
}

fn short_name<E>() -> &'static str {
    crate::handler::readable_type_name::<E>()
}
