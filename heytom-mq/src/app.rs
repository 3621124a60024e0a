//! The application: [`AppBuilder`], [`App`] and [`RunningApp`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{Dispatcher, EventHandlers, StopSignal, UnknownEventPolicy};
use crate::error::{Error, Result};
use crate::event::{Event, Route, TransportKind};
use crate::handler::{
    registered_handlers, EventHandler, HandlerEntry, HandlerRegistration, StateMap,
};
use crate::producer::{Producer, Router};
use crate::retry::RetryPolicy;
use crate::transport::memory::{InMemoryBroker, InMemoryTransport};
use crate::transport::{Subscription, SubscriptionHandle, Transport, TransportConfig};

mod checks;
mod env;
mod running;
mod subscriptions;
#[cfg(feature = "testing")]
mod testing;

pub use running::RunningApp;
pub use subscriptions::SubscriptionInfo;

type HandlerFilter = Box<dyn Fn(&HandlerRegistration) -> bool + Send + Sync>;

/// Builds an [`App`]; start with [`App::builder`] or [`App::from_env`].
pub struct AppBuilder {
    /// The embedded broker (the default when no transport is configured).
    in_memory: Option<InMemoryBroker>,
    /// Every other transport, in the order given.
    transports: Vec<Box<dyn TransportConfig>>,
    #[cfg(feature = "_outbox")]
    outbox: Option<crate::outbox::Outbox>,
    #[cfg(feature = "_outbox")]
    local_message_retry: Option<crate::outbox::LocalMessageRetryOptions>,
    #[cfg(feature = "_outbox")]
    inbox: Option<crate::inbox::Inbox>,
    state: StateMap,
    explicit: Vec<HandlerEntry>,
    discover: bool,
    filter: Option<HandlerFilter>,
    retry: RetryPolicy,
    handler_retry: HashMap<String, RetryPolicy>,
    unknown_event_policy: UnknownEventPolicy,
    shutdown_timeout: Duration,
    deferred_error: Option<Error>,
}

impl Default for AppBuilder {
    fn default() -> Self {
        AppBuilder {
            in_memory: None,
            transports: Vec::new(),
            #[cfg(feature = "_outbox")]
            outbox: None,
            #[cfg(feature = "_outbox")]
            local_message_retry: None,
            #[cfg(feature = "_outbox")]
            inbox: None,
            state: StateMap::new(),
            explicit: Vec::new(),
            discover: true,
            filter: None,
            retry: RetryPolicy::default(),
            handler_retry: HashMap::new(),
            unknown_event_policy: UnknownEventPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            deferred_error: None,
        }
    }
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("in_memory", &self.in_memory.is_some())
            .field("explicit_handlers", &self.explicit)
            .field("discover", &self.discover)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl AppBuilder {
    /// Uses the embedded in-process broker (the default when nothing else is configured).
    pub fn in_memory(self) -> Self {
        self.in_memory_broker(InMemoryBroker::new())
    }

    /// Uses a given in-process broker, shared with other apps or manual
    /// producers/consumers built on the same broker.
    pub fn in_memory_broker(mut self, broker: InMemoryBroker) -> Self {
        self.in_memory = Some(broker);
        self
    }

    /// Uses RabbitMQ for events with `#[rabbitmq(...)]`.
    #[cfg(feature = "rabbitmq")]
    pub fn rabbitmq(self, options: crate::RabbitMqOptions) -> Self {
        self.transport_config(options)
    }

    /// Uses Kafka for events with `#[kafka(...)]`.
    #[cfg(feature = "kafka")]
    pub fn kafka(self, options: crate::KafkaOptions) -> Self {
        self.transport_config(options)
    }

    /// Adds a transport you made yourself. Its [`Transport::kind`] is its
    /// identity: a [`TransportKind::Custom`] one carries the events without
    /// a transport attribute when no built-in transport is configured; one
    /// with a built-in kind replaces that transport.
    pub fn transport(self, transport: Arc<dyn Transport>) -> Self {
        self.transport_config(transport)
    }

    /// Adds a transport's configuration, connected by [`AppBuilder::build`];
    /// a later one of the same kind replaces an earlier one.
    pub fn transport_config(mut self, config: impl TransportConfig) -> Self {
        self.transports.push(Box::new(config));
        self
    }

    /// Uses a local message table (transactional outbox).
    #[cfg(feature = "_outbox")]
    pub fn outbox(mut self, outbox: crate::outbox::Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Configures the outbox retry scanner.
    #[cfg(feature = "_outbox")]
    pub fn local_message_retry(mut self, options: crate::outbox::LocalMessageRetryOptions) -> Self {
        self.local_message_retry = Some(options);
        self
    }

    /// Uses an inbox: `#[handler(idempotent)]` handlers and handlers taking
    /// `Tx<DB>` (every handler, with [`Inbox::for_all_handlers`](crate::Inbox::for_all_handlers))
    /// run in its transaction, once per message id. See [`Inbox`](crate::Inbox).
    #[cfg(feature = "_outbox")]
    pub fn inbox(mut self, inbox: crate::inbox::Inbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Registers state that handlers take as `State<T>`.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Registers a handler type for `E`, like `AddEventHandler<E, H>`.
    pub fn handler<E: Event, H: EventHandler<E>>(mut self, handler: H) -> Self {
        let name = crate::consumer::short_type_name::<H>().to_owned();
        self.explicit
            .push(HandlerEntry::from_type::<E, H>(name, handler));
        self
    }

    /// Registers a prepared handler entry (name, group, retry overrides).
    pub fn handler_entry(mut self, entry: HandlerEntry) -> Self {
        self.explicit.push(entry);
        self
    }

    /// Turns `#[handler]` discovery on (default) or off.
    pub fn discover(mut self, on: bool) -> Self {
        self.discover = on;
        self
    }

    /// Discovers only the `#[handler]` functions this predicate accepts.
    pub fn discover_filter(
        mut self,
        filter: impl Fn(&HandlerRegistration) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// Discovers only `#[handler]` functions defined under a module path
    /// (e.g. `module_path!()`); handy when one binary holds several apps.
    pub fn discover_in(self, module_prefix: impl Into<String>) -> Self {
        let prefix = module_prefix.into();
        self.discover_filter(move |r| {
            r.function
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with("::"))
        })
    }

    /// The retry policy of every handler without its own.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The retry policy of one handler, by name.
    pub fn handler_retry_policy(mut self, handler: impl Into<String>, policy: RetryPolicy) -> Self {
        self.handler_retry.insert(handler.into(), policy);
        self
    }

    /// What the app's consumers do with a message of an event type no
    /// handler here handles, arriving on a topic or queue they consume
    /// (another service's event, or a newer version's during a rolling
    /// deploy): dead-letter it (the default), skip it, or hand it back.
    pub fn unknown_event_policy(mut self, policy: UnknownEventPolicy) -> Self {
        self.unknown_event_policy = policy;
        self
    }

    /// How long [`RunningApp::shutdown`] may take (default 30 s). Handlers
    /// running when it begins may finish until a fifth of it (at most 5 s)
    /// before the end; those still running then are abandoned and their
    /// messages handed back unacknowledged, to be delivered again. The rest
    /// of the time stops the outbox relay and closes the connections.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    pub(crate) fn defer_error(mut self, error: Error) -> Self {
        self.deferred_error.get_or_insert(error);
        self
    }

    fn collect_handlers(&mut self) -> Result<Vec<HandlerEntry>> {
        let mut handlers: Vec<HandlerEntry> = Vec::new();
        if self.discover {
            for reg in registered_handlers() {
                if self.filter.as_ref().is_none_or(|f| f(reg)) {
                    handlers.push(HandlerEntry::from_registration(reg));
                }
            }
        }
        handlers.append(&mut self.explicit);
        handlers.sort_by(|a, b| a.name.cmp(&b.name).then(a.function.cmp(&b.function)));
        for pair in handlers.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(Error::DuplicateHandler {
                    name: pair[0].name.clone(),
                    first: pair[0].function.clone(),
                    second: pair[1].function.clone(),
                });
            }
        }
        for h in &mut handlers {
            if let Some(p) = self.handler_retry.get(&h.name) {
                h.retry = Some(*p);
            }
            for req in &h.requires {
                if !self.state.contains(req.type_id) {
                    return Err(Error::MissingState {
                        handler: h.name.clone(),
                        state: req.type_name,
                    });
                }
            }
        }
        Ok(handlers)
    }

    /// Checks the configuration, connects the transports and returns the app.
    pub async fn build(mut self) -> Result<App> {
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
        let handlers = self.collect_handlers()?;
        checks::settings(&self.retry, self.shutdown_timeout, &handlers)?;
        #[cfg(feature = "_outbox")]
        crate::inbox::require_inbox(&handlers, self.inbox.as_ref())?;
        #[cfg(not(feature = "_outbox"))]
        crate::handler::require_no_inbox(&handlers)?;

        #[cfg(feature = "_outbox")]
        let outbox_config =
            crate::outbox::resolve_config(self.outbox.take(), self.local_message_retry.take())?;

        // A later configuration of a kind replaces an earlier one.
        let mut configs: Vec<Box<dyn TransportConfig>> = Vec::new();
        for c in self.transports.drain(..) {
            configs.retain(|earlier| earlier.kind() != c.kind());
            configs.push(c);
        }
        // Check every handled event has a transport before connecting anything.
        let mut kinds: Vec<TransportKind> = configs.iter().map(|c| c.kind()).collect();
        // A transport of your own with the in-memory kind replaces the broker's.
        let own_in_memory = kinds.contains(&TransportKind::InMemory);
        let broker = match self.in_memory.take() {
            Some(b) => Some(b),
            None if kinds.is_empty() => Some(InMemoryBroker::new()),
            None => None,
        };
        if broker.is_some() && !own_in_memory {
            kinds.push(TransportKind::InMemory);
        }
        let mut missing: Vec<(String, TransportKind)> = Vec::new();
        for h in &handlers {
            if crate::producer::resolve_kind(kinds.iter().copied(), h.route).is_none() {
                let item = (h.event_name.to_owned(), h.route.kind());
                if !missing.contains(&item) {
                    missing.push(item);
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::TransportNotConfigured(missing));
        }
        #[cfg(feature = "_outbox")]
        if let Some(cfg) = &outbox_config {
            if !cfg.outbox.allow_unconfirmed_transport {
                checks::confirmed_delivery(&configs, &kinds, &handlers)?;
            }
        }

        let mut router = Router::default();
        if let Some(b) = broker.as_ref().filter(|_| !own_in_memory) {
            router.insert(Arc::new(InMemoryTransport::new(b.clone())));
        }
        for config in configs {
            router.insert(config.connect().await?);
        }

        #[allow(unused_mut)]
        let mut producer = Producer::from_router(router.clone());
        #[cfg(feature = "_outbox")]
        let mut outbox = None;
        #[cfg(feature = "_outbox")]
        if let Some(cfg) = outbox_config {
            let runtime = crate::outbox::OutboxRuntime::build(cfg, producer.clone()).await?;
            producer = Producer {
                inner: Arc::new(crate::producer::ProducerInner {
                    router: router.clone(),
                    attachment: Some(runtime.clone()),
                }),
            };
            outbox = Some(runtime);
        }
        #[cfg(feature = "_outbox")]
        let (inbox, handlers) =
            crate::inbox::InboxRuntime::attach(self.inbox.take(), handlers, &producer).await?;

        Ok(App {
            router,
            producer,
            #[cfg(feature = "_outbox")]
            outbox,
            #[cfg(feature = "_outbox")]
            inbox,
            handlers,
            state: Arc::new(self.state),
            retry: self.retry,
            unknown_event_policy: self.unknown_event_policy,
            broker,
            shutdown_timeout: self.shutdown_timeout,
        })
    }

    /// Builds the app, runs it until SIGINT/SIGTERM, then shuts it down.
    pub async fn run(self) -> Result<()> {
        self.build().await?.run().await
    }

    /// Builds and starts the app.
    pub async fn start(self) -> Result<RunningApp> {
        self.build().await?.start().await
    }
}

/// A configured application: transports connected, handlers collected.
pub struct App {
    router: Router,
    producer: Producer,
    /// The outbox relay and scanner, started and stopped with the app.
    #[cfg(feature = "_outbox")]
    outbox: Option<Arc<crate::outbox::OutboxRuntime>>,
    /// The inbox's cleanup task, started and stopped with the app.
    #[cfg(feature = "_outbox")]
    inbox: Option<Arc<crate::inbox::InboxRuntime>>,
    handlers: Vec<HandlerEntry>,
    state: Arc<StateMap>,
    retry: RetryPolicy,
    unknown_event_policy: UnknownEventPolicy,
    broker: Option<InMemoryBroker>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("transports", &self.router.kinds().collect::<Vec<_>>())
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A builder with nothing configured (the in-memory broker by default).
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The producer (cloneable).
    pub fn producer(&self) -> Producer {
        self.producer.clone()
    }

    /// The handlers this app runs.
    pub fn handlers(&self) -> &[HandlerEntry] {
        &self.handlers
    }

    /// The in-memory broker, when the app uses one.
    pub fn in_memory_broker(&self) -> Option<&InMemoryBroker> {
        self.broker.as_ref()
    }

    /// Declares topology, starts every consumer and the outbox relay.
    pub async fn start(self) -> Result<RunningApp> {
        let stop = StopSignal::default();
        // (transport, destination, group) -> handlers sharing one subscription
        let mut groups: BTreeMap<(TransportKind, String, String), Vec<HandlerEntry>> =
            BTreeMap::new();
        for h in &self.handlers {
            let Some(t) = self.router.resolve(h.route) else {
                return Err(Error::TransportNotConfigured(vec![(
                    h.event_name.to_owned(),
                    h.route.kind(),
                )]));
            };
            groups
                .entry((
                    t.kind(),
                    t.destination_of(h.route, h.event_name),
                    t.group_for(h),
                ))
                .or_default()
                .push(h.clone());
        }
        let mut declared = Vec::new();
        for h in &self.handlers {
            if declared.contains(&h.event_name) {
                continue;
            }
            declared.push(h.event_name);
            if let Some(t) = self.router.resolve(h.route) {
                t.declare(h.route, h.event_name).await?;
            }
        }
        let mut subscriptions: Vec<Box<dyn SubscriptionHandle>> = Vec::new();
        let mut topology = Vec::new();
        let mut monitored = Vec::new();
        for ((kind, destination, group), handlers) in groups {
            topology.push(SubscriptionInfo::new(kind, &destination, &group, &handlers));
            let transport = self.router.resolve(handlers[0].route).cloned();
            let Some(transport) = transport else { continue };
            let concurrency = handlers.iter().filter_map(|h| h.concurrency).min();
            tracing::info!(transport = %kind, %destination, %group, handlers = ?handlers.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), "subscribing");
            // One dispatcher for the destination, routing to each event's handlers.
            let mut by_event: Vec<(&'static str, &'static Route, Vec<HandlerEntry>)> = Vec::new();
            for h in handlers {
                match by_event
                    .iter_mut()
                    .find(|(name, _, _)| *name == h.event_name)
                {
                    Some((_, _, hs)) => hs.push(h),
                    None => by_event.push((h.event_name, h.route, vec![h])),
                }
            }
            let events = by_event.iter().map(|(n, r, _)| (*n, *r)).collect();
            let dispatcher = Dispatcher::new(
                by_event
                    .into_iter()
                    .map(|(name, _, hs)| {
                        EventHandlers::new(
                            name,
                            hs,
                            self.state.clone(),
                            self.retry,
                            Some(Arc::new(self.producer.clone())),
                            stop.subscribe(),
                        )
                    })
                    .collect(),
                stop.subscribe(),
                self.unknown_event_policy,
            )
            .describe(kind, &destination, &group);
            let sub = transport
                .subscribe(Subscription {
                    destination,
                    group,
                    events,
                    concurrency,
                    dispatcher: Arc::new(dispatcher),
                })
                .await;
            match sub {
                Ok(s) => {
                    monitored.extend(topology.last().map(|i| (i.clone(), s.monitor())));
                    subscriptions.push(s);
                }
                Err(e) => {
                    for s in subscriptions {
                        let _ = s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        #[cfg(feature = "_outbox")]
        if let Some(outbox) = &self.outbox {
            outbox.start();
        }
        #[cfg(feature = "_outbox")]
        if let Some(inbox) = &self.inbox {
            inbox.start();
        }
        let health = crate::health::HealthCheck::new(
            self.router.clone(),
            monitored,
            #[cfg(feature = "_outbox")]
            self.outbox.clone(),
        );
        Ok(RunningApp {
            app: self,
            subscriptions,
            topology,
            stop,
            health,
        })
    }

    /// Starts, waits for SIGINT/SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<()> {
        let running = self.start().await?;
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        running.shutdown().await
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
