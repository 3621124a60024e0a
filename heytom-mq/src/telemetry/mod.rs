//! Traces and metrics: the spans heytom-mq opens on publish, outbox insert,
//! outbox dispatch, consume and handler runs, the W3C trace context they
//! carry in message headers (feature `opentelemetry`), and the metrics it
//! records (feature `metrics`). See `docs/observability.md`.
//!
//! Spans follow the OpenTelemetry messaging semantic conventions
//! (`messaging.system`, `messaging.destination.name`,
//! `messaging.operation.type`, `messaging.message.id`, ...). They are cheap
//! when no subscriber enables them: a disabled span is one callsite check,
//! its fields are never computed, and no header is read or written.
//!
//! With the feature `opentelemetry` and a `tracing-opentelemetry` layer
//! installed, the context of the span publishing a message is written to
//! its `traceparent` / `tracestate` headers (also in the outbox row, so it
//! survives the commit and the relay), and the consume span of the message
//! takes the context in its headers as parent: a handler's span belongs to
//! the trace of the request that published the event, and its
//! `ctx.publish()` follow-ups continue that trace.

use tracing::field::Empty;
use tracing::Span;

use crate::event::{Envelope, Headers, Route, TransportKind};

pub(crate) mod metrics;
#[cfg(feature = "opentelemetry")]
mod otel;

pub use metrics::{metric_names, KAFKA_STATISTICS_INTERVAL_MS};

/// `messaging.system` of a transport.
pub(crate) fn system(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::InMemory => "heytom_in_memory",
        TransportKind::RabbitMq => "rabbitmq",
        TransportKind::Kafka => "kafka",
        TransportKind::Custom(name) => name,
    }
}

/// Where a consumer's deliveries come from: what its consume spans say.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    system: &'static str,
    destination: Box<str>,
    group: Box<str>,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            system: "",
            destination: "".into(),
            group: "".into(),
        }
    }
}

impl Source {
    pub(crate) fn new(kind: TransportKind, destination: &str, group: &str) -> Self {
        // RabbitMQ consumes a queue: the group is the whole address.
        let destination = if destination.is_empty() {
            group
        } else {
            destination
        };
        Source {
            system: system(kind),
            destination: destination.into(),
            group: group.into(),
        }
    }
}

/// Records the destination fields of a publish span (only called on an
/// enabled span: they allocate).
fn record_destination(span: &Span, route: &Route, name: &str, key: Option<&str>) {
    let (destination, routing_key) = route.address(name);
    let destination = if destination.is_empty() {
        "amq.default".to_owned()
    } else {
        destination
    };
    // The OpenTelemetry span name; nothing else reads it.
    #[cfg(feature = "opentelemetry")]
    span.record("otel.name", format!("publish {destination}"));
    span.record("messaging.destination.name", destination.as_str());
    if let Some(rk) = routing_key {
        span.record("messaging.rabbitmq.destination.routing_key", rk.as_str());
    }
    if let (Some(key), Route::Kafka(_)) = (key, route) {
        span.record("messaging.kafka.message.key", key);
    }
}

/// `fut` in `span`, unless the span is disabled (nobody listens): then
/// nothing is entered on every poll and on the drop.
pub(crate) fn in_span<F: std::future::Future>(
    fut: F,
    span: Span,
) -> futures::future::Either<F, tracing::instrument::Instrumented<F>> {
    use tracing::Instrument as _;
    if span.is_disabled() {
        futures::future::Either::Left(fut)
    } else {
        futures::future::Either::Right(fut.instrument(span))
    }
}

/// The span of one publish (`Producer::send*`, `ctx.publish()`); with the
/// feature `opentelemetry` its context goes into the envelope's headers.
pub(crate) fn publish(route: &Route, envelope: &mut Envelope, transport: TransportKind) -> Span {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        // As a disabled span: the current span's context, if any, goes on.
        let span = Span::none();
        inject(&span, &mut envelope.headers);
        return span;
    }
    let span = tracing::debug_span!(
        "publish",
        otel.name = Empty,
        otel.kind = "producer",
        messaging.system = system(transport),
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = Empty,
        messaging.message.id = %envelope.id,
        messaging.kafka.message.key = Empty,
        messaging.rabbitmq.destination.routing_key = Empty,
        event_id = %envelope.id,
        event_name = %envelope.name,
        transport = %transport,
    );
    if !span.is_disabled() {
        record_destination(
            &span,
            route,
            &envelope.name,
            envelope.partition_key.as_deref(),
        );
    }
    inject(&span, &mut envelope.headers);
    span
}

/// The span of the outbox relay sending one row (post-commit or scanner):
/// a child of the context stored in the row's headers (the publisher's),
/// whose own context replaces it in the message. `None` when disabled.
#[cfg(feature = "_outbox")]
pub(crate) fn relay_publish(
    route: &Route,
    envelope: &mut Envelope,
    mq_type: &str,
    source: &'static str,
) -> Option<Span> {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let span = tracing::debug_span!(
        "publish",
        otel.name = Empty,
        otel.kind = "producer",
        messaging.system = Empty,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = Empty,
        messaging.message.id = %envelope.id,
        messaging.kafka.message.key = Empty,
        messaging.rabbitmq.destination.routing_key = Empty,
        heytom.outbox.source = source,
        event_id = %envelope.id,
        event_name = %envelope.name,
        transport = mq_type,
    );
    if span.is_disabled() {
        return None;
    }
    if let Some(kind) = TransportKind::parse(mq_type) {
        span.record("messaging.system", system(kind));
    }
    record_destination(
        &span,
        route,
        &envelope.name,
        envelope.partition_key.as_deref(),
    );
    set_parent(&span, &envelope.headers);
    inject(&span, &mut envelope.headers);
    Some(span)
}

/// The span of enqueueing rows in the local message table.
#[cfg(feature = "_outbox")]
pub(crate) fn outbox_insert(first_id: &uuid::Uuid, event_name: &str, count: usize) -> Span {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return Span::none();
    }
    tracing::debug_span!(
        "outbox.enqueue",
        otel.kind = "producer",
        messaging.operation.type = "create",
        messaging.operation.name = "outbox insert",
        messaging.message.id = %first_id,
        messaging.batch.message_count = count,
        event_id = %first_id,
        event_name = %event_name,
        count
    )
}

/// The span of consuming one message: a child of the context in its
/// headers (the publisher's) with the feature `opentelemetry`.
pub(crate) fn consume(source: &Source, envelope: &Envelope) -> Span {
    // Here and in the other span constructors: what the span macro checks
    // first, before its disabled path (which, with no subscriber set,
    // still builds the fields for `log`), so a process without a
    // subscriber at that level pays nothing per message.
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "consume",
        otel.name = Empty,
        otel.kind = "consumer",
        messaging.system = source.system,
        messaging.operation.type = "process",
        messaging.operation.name = "consume",
        messaging.destination.name = &*source.destination,
        messaging.consumer.group.name = &*source.group,
        messaging.message.id = %envelope.id,
        event_id = %envelope.id,
        event_name = %envelope.name,
    );
    if !span.is_disabled() {
        #[cfg(feature = "opentelemetry")]
        span.record("otel.name", format!("process {}", source.destination));
        set_parent(&span, &envelope.headers);
    }
    span
}

/// The span of one handler attempt (a child of the consume span).
pub(crate) fn handler(name: &str, attempt: u32) -> Span {
    if !tracing::level_enabled!(tracing::Level::DEBUG) {
        return Span::none();
    }
    tracing::debug_span!(
        "handler",
        handler = %name,
        attempt,
        heytom.message.delivery_attempt = attempt,
    )
}

/// Whether publishing from the current span writes a trace context into
/// the message (feature `opentelemetry`, a layer installed, a valid span):
/// then a batch takes the path that builds an envelope per message.
pub(crate) fn carries_trace_context() -> bool {
    #[cfg(feature = "opentelemetry")]
    {
        otel::has_context(&Span::current())
    }
    #[cfg(not(feature = "opentelemetry"))]
    false
}

/// Writes the W3C trace context of `span` (or, when it is disabled, of the
/// current span) into `headers` (feature `opentelemetry`).
pub(crate) fn inject(span: &Span, headers: &mut Headers) {
    #[cfg(feature = "opentelemetry")]
    {
        if span.is_disabled() {
            otel::inject(&Span::current(), headers);
        } else {
            otel::inject(span, headers);
        }
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}

/// Writes the current span's trace context into `headers`.
pub(crate) fn inject_current(headers: &mut Headers) {
    inject(&Span::none(), headers);
}

/// Makes the context in `headers` the parent of `span` (feature `opentelemetry`).
fn set_parent(span: &Span, headers: &Headers) {
    #[cfg(feature = "opentelemetry")]
    otel::set_parent(span, headers);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, headers);
}
