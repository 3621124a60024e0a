//! `Context`: what a handler knows about the message it handles, and how
//! it publishes follow-up events.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::event::{Envelope, Event, EventId, Headers, SharedEnvelope};
use crate::handler::scope::TxScope;

/// What a handler knows about the message it is handling.
///
/// ```
/// # use heytom_mq::prelude::*;
/// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct Ping;
/// #[handler]
/// async fn on_ping(_event: Ping, ctx: Context) {
///     println!("{} #{} attempt {}", ctx.event_name(), ctx.event_id(), ctx.attempt());
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    // Shared with the dispatcher, so a delivery's headers are never copied per handler.
    envelope: SharedEnvelope,
    // Built once per handler: making a context allocates nothing.
    handler: Arc<HandlerInfo>,
    attempt: u32,
    // Set when the handler runs in the inbox's transaction (see `TxScope`).
    scope: Option<Arc<TxScope>>,
}

/// What a context knows of its handler, shared by all its deliveries.
pub(crate) struct HandlerInfo {
    name: Box<str>,
    producer: Option<Arc<dyn Publisher>>,
}

impl HandlerInfo {
    pub(crate) fn new(name: &str, producer: Option<Arc<dyn Publisher>>) -> Arc<Self> {
        Arc::new(HandlerInfo {
            name: name.into(),
            producer,
        })
    }
}

impl Context {
    /// Builds a context for a delivery; transports and tests use this.
    pub fn new(
        envelope: &Envelope,
        handler: impl Into<String>,
        producer: Option<Arc<dyn Publisher>>,
    ) -> Self {
        let handler: String = handler.into();
        Self::shared(
            SharedEnvelope::new(envelope.clone()),
            HandlerInfo::new(&handler, producer),
            1,
        )
    }

    pub(crate) fn shared(
        envelope: SharedEnvelope,
        handler: Arc<HandlerInfo>,
        attempt: u32,
    ) -> Self {
        Context {
            envelope,
            handler,
            attempt,
            scope: None,
        }
    }

    /// This context in the inbox's transaction `scope`.
    #[cfg_attr(not(feature = "_outbox"), allow(dead_code))]
    pub(crate) fn with_scope(mut self, scope: Arc<TxScope>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The inbox's transaction scope, when the handler runs in one.
    #[cfg_attr(not(feature = "_outbox"), allow(dead_code))]
    pub(crate) fn scope(&self) -> Option<&Arc<TxScope>> {
        self.scope.as_ref()
    }

    /// The envelope of the delivery, shared.
    #[cfg_attr(not(feature = "_outbox"), allow(dead_code))]
    pub(crate) fn envelope(&self) -> &SharedEnvelope {
        &self.envelope
    }

    /// The event's id (UUID v7).
    pub fn event_id(&self) -> EventId {
        self.envelope.id
    }

    /// The event's `NAME`.
    pub fn event_name(&self) -> &str {
        &self.envelope.name
    }

    /// When the event was created by its producer.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.envelope.occurred_at
    }

    /// Correlation id, causation id, `traceparent` and user headers.
    pub fn headers(&self) -> &Headers {
        self.envelope.headers()
    }

    /// One header by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope.header(name)
    }

    /// The correlation id of the conversation this event belongs to.
    pub fn correlation_id(&self) -> Option<&str> {
        self.header(crate::event::headers::CORRELATION_ID)
    }

    /// The delivery attempt: 1 for the first delivery, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The name of the handler running.
    pub fn handler_name(&self) -> &str {
        &self.handler.name
    }

    /// Headers for an event published in reaction to this one: same
    /// correlation id, `traceparent` and `tracestate`, causation id = this
    /// event's id. (With the feature `opentelemetry` the publish then writes
    /// the trace context of the handler's span instead, a child of this one.)
    pub fn follow_up_headers(&self) -> Headers {
        use crate::event::headers::*;
        let mut h = Headers::new();
        if let Some(c) = self.correlation_id() {
            h.insert(CORRELATION_ID.to_owned(), c.to_owned());
        }
        for key in [TRACEPARENT, TRACESTATE] {
            if let Some(t) = self.header(key) {
                h.insert(key.to_owned(), t.to_owned());
            }
        }
        h.insert(CAUSATION_ID.to_owned(), self.event_id().to_string());
        h
    }

    /// Publishes a follow-up event that carries this event's correlation id
    /// and has this event as its cause.
    ///
    /// In a handler that runs in the inbox's transaction (`Tx`, or
    /// `#[handler(idempotent)]`) with the outbox in the same database, the
    /// event is written into the outbox in that transaction and sent after
    /// it commits; a run that fails or panics sends nothing.
    pub async fn publish<E: Event>(&self, event: &E) -> crate::Result<EventId> {
        match &self.handler.producer {
            Some(p) => {
                let envelope = Envelope::with_headers(event, self.follow_up_headers())?;
                let id = envelope.id;
                if let Some(scope) = self.scope.as_ref().filter(|s| s.stages()) {
                    scope.stage(E::route(), envelope);
                    return Ok(id);
                }
                p.publish_envelope(E::route(), envelope).await?;
                Ok(id)
            }
            None => Err(crate::Error::config(
                "this consumer has no producer; publish through a Producer instead",
            )),
        }
    }
}

/// What [`Context::publish`] sends follow-up events through; the app's
/// [`Producer`](crate::Producer) implements it. A core trait, so that
/// handlers and the dispatcher know nothing of transports.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes a prepared envelope to `route`; resolves on the broker's confirm.
    fn publish_envelope(
        &self,
        route: &'static crate::Route,
        envelope: Envelope,
    ) -> futures::future::BoxFuture<'_, crate::Result<()>>;
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("event_id", &self.envelope.id)
            .field("event_name", &self.envelope.name)
            .field("attempt", &self.attempt)
            .field("headers", self.headers())
            .finish()
    }
}
