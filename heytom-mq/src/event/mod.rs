//! Events, their routes and the envelope that carries them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

mod id;
mod name;
mod route;
mod shared;

pub(crate) use id::{event_id_at, new_event_id};
pub use name::EventName;
pub use route::{
    Acks, AutoOffsetReset, CompressionType, ExchangeType, KafkaRoute, Overflow, QueueType,
    RabbitMqRoute, Route, TransportKind,
};
pub(crate) use shared::SharedEnvelope;

/// The id of one published event: a UUID v7, so ids sort by creation time.
pub type EventId = Uuid;

/// String headers carried next to every event (correlation id, causation id,
/// `traceparent` and whatever the user adds).
pub type Headers = BTreeMap<String, String>;

/// A message type that can be published and handled.
///
/// Implemented by `#[derive(Event)]`; the attributes `#[kafka(...)]`,
/// `#[rabbitmq(...)]` and `#[event(name = "...")]` configure it.
///
/// ```
/// use heytom_mq::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug, Clone)]
/// #[kafka(topic = "user-events", partition_key = user_id)]
/// pub struct UserCreated { pub user_id: i32, pub name: String }
///
/// assert_eq!(UserCreated::NAME, "UserCreated");
/// assert_eq!(UserCreated { user_id: 7, name: "a".into() }.partition_key().as_deref(), Some("7"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "derive it: `#[derive(Event, Serialize, Deserialize)]` (with `use heytom_mq::prelude::*;`)"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable message type name written on the wire and in the local message table.
    const NAME: &'static str;
    /// Where this event travels, as configured by its attribute.
    fn route() -> &'static Route;
    /// The value of the `partition_key` field, if the event names one.
    fn partition_key(&self) -> Option<String>;
}

/// Reserved header names written by heytom-mq.
pub mod headers {
    /// The event id (UUID v7).
    pub const EVENT_ID: &str = "heytom-event-id";
    /// The event's `NAME`.
    pub const EVENT_NAME: &str = "heytom-event-name";
    /// RFC 3339 time the event occurred.
    pub const OCCURRED_AT: &str = "heytom-occurred-at";
    /// Correlation id: the id of the first event of a conversation.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// Causation id: the id of the event whose handler published this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state (vendor data travelling with `traceparent`).
    pub const TRACESTATE: &str = "tracestate";
    /// Why a message was dead-lettered.
    pub const DEAD_LETTER_REASON: &str = "heytom-dead-letter-reason";
    /// How many delivery attempts were made before dead-lettering.
    pub const DEAD_LETTER_ATTEMPTS: &str = "heytom-dead-letter-attempts";
    /// Which handler gave up on the message.
    pub const DEAD_LETTER_HANDLER: &str = "heytom-dead-letter-handler";
    /// The topic (Kafka, in-memory) a dead-lettered message came from.
    pub const DEAD_LETTER_TOPIC: &str = "heytom-dead-letter-topic";
    /// The partition (Kafka) a dead-lettered message came from.
    pub const DEAD_LETTER_PARTITION: &str = "heytom-dead-letter-partition";
    /// The offset (Kafka) a dead-lettered message had.
    pub const DEAD_LETTER_OFFSET: &str = "heytom-dead-letter-offset";
    /// The consumer group that gave up on a message (Kafka, in-memory).
    pub const DEAD_LETTER_GROUP: &str = "heytom-dead-letter-group";
    /// The queue (RabbitMQ) a dead-lettered message came from.
    pub const DEAD_LETTER_QUEUE: &str = "heytom-dead-letter-queue";

    /// Whether a header name is one heytom-mq writes itself (`heytom-*`).
    pub fn is_reserved(name: &str) -> bool {
        name.starts_with("heytom-")
    }
}

/// An event on its way: the serialized payload plus its metadata.
///
/// Every transport carries the same envelope; on the wire the payload is the
/// event's JSON and the metadata travels in headers (see [`headers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// UUID v7 id.
    pub id: EventId,
    /// The event's `NAME` (borrowed when it is a registered event's).
    pub name: EventName,
    /// When the event was created.
    pub occurred_at: DateTime<Utc>,
    /// Correlation id (absent when it is the event id), causation id,
    /// `traceparent` and user headers.
    pub headers: Headers,
    /// The partition key (Kafka message key), if any.
    pub partition_key: Option<String>,
    /// The event as JSON.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Serializes an event into a new envelope with a fresh id.
    pub fn new<E: Event>(event: &E) -> Result<Self, crate::Error> {
        Self::with_headers(event, Headers::new())
    }

    /// Serializes an event into a new envelope carrying extra headers.
    ///
    /// The correlation id defaults to the event id when the headers carry
    /// none: it is then not stored in `headers` (no allocation for it), and
    /// every transport writes it on the wire and hands it to handlers
    /// ([`wire_headers`](Self::wire_headers) includes it).
    pub fn with_headers<E: Event>(event: &E, headers: Headers) -> Result<Self, crate::Error> {
        // Serialized into this thread's buffer, then copied into a payload
        // of exactly its size: one allocation, instead of a guess grown
        // (and copied) once or more while serializing.
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let payload = BUFFER.with(|buffer| {
            let Ok(mut buffer) = buffer.try_borrow_mut() else {
                // Serializing an event that builds an envelope itself.
                return to_json(event, Vec::with_capacity(128));
            };
            buffer.clear();
            let json = serde_json::to_writer(&mut *buffer, event)
                .map(|()| buffer.as_slice().to_vec())
                .map_err(serialization_error::<E>);
            // A rare large event does not pin its buffer to the thread.
            if buffer.capacity() > 64 * 1024 {
                *buffer = Vec::new();
            }
            json
        })?;
        Ok(Self::around(
            E::NAME,
            event.partition_key(),
            headers,
            payload,
        ))
    }

    /// [`Envelope::with_headers`] with a buffer of `*size` bytes to start
    /// with, grown to what this payload took: a batch of one event type
    /// serializes every event into a buffer of the right size at once.
    pub(crate) fn sized<E: Event>(
        event: &E,
        headers: Headers,
        size: &mut usize,
    ) -> Result<Self, crate::Error> {
        let payload = to_json(event, Vec::with_capacity(*size))?;
        // A little room, so that a slightly longer next event fits too.
        *size = (*size).max(payload.len() + payload.len() / 16);
        Ok(Self::around(
            E::NAME,
            event.partition_key(),
            headers,
            payload,
        ))
    }

    /// A new envelope (fresh id, now) around a serialized event. The
    /// default correlation id (the event id) is not stored: transports
    /// write it, and handlers see it, when the headers carry none.
    fn around(
        name: &'static str,
        partition_key: Option<String>,
        headers: Headers,
        payload: Vec<u8>,
    ) -> Self {
        // One clock read for the time and the id's millisecond.
        let occurred_at = Utc::now();
        Envelope {
            id: event_id_at(occurred_at.timestamp_millis()),
            name: EventName::from(name),
            occurred_at,
            headers,
            partition_key,
            payload,
        }
    }

    /// All headers as they go on the wire: the user's plus the reserved
    /// ones, and the correlation id (the event id unless the headers carry
    /// one).
    pub fn wire_headers(&self) -> Headers {
        let mut h = self.headers.clone();
        h.entry(headers::CORRELATION_ID.to_owned())
            .or_insert_with(|| id_string(self.id));
        h.insert(headers::EVENT_ID.to_owned(), id_string(self.id));
        h.insert(headers::EVENT_NAME.to_owned(), self.name.to_string());
        h.insert(
            headers::OCCURRED_AT.to_owned(),
            self.occurred_at.to_rfc3339(),
        );
        h
    }

    /// Rebuilds an envelope from wire headers and body.
    ///
    /// Fails when the id or name header is missing or malformed; the payload
    /// itself is only decoded later, by the handler that knows its type.
    pub fn from_wire(mut wire: Headers, payload: Vec<u8>) -> Result<Self, EnvelopeError> {
        let id = wire
            .remove(headers::EVENT_ID)
            .ok_or(EnvelopeError::Missing(headers::EVENT_ID))?;
        let id = Uuid::parse_str(&id).map_err(|_| EnvelopeError::Invalid(headers::EVENT_ID, id))?;
        let name = wire
            .remove(headers::EVENT_NAME)
            .ok_or(EnvelopeError::Missing(headers::EVENT_NAME))?;
        let occurred_at = match wire.remove(headers::OCCURRED_AT) {
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map_err(|_| EnvelopeError::Invalid(headers::OCCURRED_AT, s))?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        Ok(Envelope {
            id,
            name: EventName::from(name),
            occurred_at,
            headers: wire,
            partition_key: None,
            payload,
        })
    }

    /// Decodes the payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// An id as text (hyphenated, lower case), without going through `fmt`.
pub(crate) fn id_string(id: Uuid) -> String {
    let mut buf = Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

/// Why wire headers could not be turned into an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing header `{0}`")]
    Missing(&'static str),
    /// A header has a value that does not parse.
    #[error("header `{0}` has an invalid value `{1}`")]
    Invalid(&'static str, String),
}

/// An event type compiled into this binary, registered by `#[derive(Event)]`.
///
/// The outbox relay uses this registry to know which `MessageType` values it
/// may send and where they go.
#[derive(Debug)]
pub struct EventRegistration {
    /// `Event::NAME`
    pub name: &'static str,
    /// `Event::route`
    pub route: fn() -> &'static Route,
}

inventory::collect!(EventRegistration);

/// The payload schema of an event type, registered by `#[derive(Event)]`
/// next to its [`EventRegistration`] (for the AsyncAPI document).
#[derive(Debug)]
pub struct EventSchemaRegistration {
    /// `Event::NAME`
    pub name: &'static str,
    /// The JSON Schema of the payload when the type also derives
    /// `schemars::JsonSchema` and the `schemars` feature is on; `None`
    /// otherwise.
    pub schema: fn() -> Option<serde_json::Value>,
}

inventory::collect!(EventSchemaRegistration);

/// The payload schema of a registered event type, if it has one.
pub(crate) fn event_schema(name: &str) -> Option<serde_json::Value> {
    inventory::iter::<EventSchemaRegistration>
        .into_iter()
        .find(|r| r.name == name)
        .and_then(|r| (r.schema)())
}

/// An event as JSON, written into `buffer`.
fn to_json<E: Event>(event: &E, mut buffer: Vec<u8>) -> Result<Vec<u8>, crate::Error> {
    serde_json::to_writer(&mut buffer, event).map_err(serialization_error::<E>)?;
    Ok(buffer)
}

fn serialization_error<E: Event>(source: serde_json::Error) -> crate::Error {
    crate::Error::Serialization {
        event: E::NAME.to_owned(),
        source,
    }
}

/// The registered `NAME` equal to `name`, if an event type has it: a
/// transport's name read off the wire, without a copy (the name found
/// last is not even checked for UTF-8 first).
pub(crate) fn registered_name(name: &[u8]) -> Option<&'static str> {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    // The name found last on this thread: a consumer's deliveries mostly
    // carry one name, and a compare is cheaper than hashing it each time.
    thread_local! {
        static LAST: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
    }
    if let Some(last) = LAST
        .with(std::cell::Cell::get)
        .filter(|last| last.as_bytes() == name)
    {
        return Some(last);
    }
    let name = std::str::from_utf8(name).ok()?;
    let found = NAMES
        .get_or_init(|| {
            inventory::iter::<EventRegistration>
                .into_iter()
                .map(|r| r.name)
                .collect()
        })
        .get(name)
        .copied();
    if found.is_some() {
        LAST.with(|last| last.set(found));
    }
    found
}

/// Looks up a registered event type by its `NAME`.
pub fn registered_event(name: &str) -> Option<&'static EventRegistration> {
    inventory::iter::<EventRegistration>
        .into_iter()
        .find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }

    inventory::submit! {
        EventRegistration { name: "RegisteredNameTestA", route: default_route }
    }
    inventory::submit! {
        EventRegistration { name: "RegisteredNameTestB", route: default_route }
    }

    /// An event whose serialization builds an envelope of another event.
    #[derive(Debug)]
    struct Nested(usize);

    impl serde::Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner =
                Envelope::new(&Plain("x".repeat(self.0))).map_err(serde::ser::Error::custom)?;
            s.serialize_str(std::str::from_utf8(&inner.payload).map_err(serde::ser::Error::custom)?)
        }
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Plain(String);

    impl Event for Plain {
        const NAME: &'static str = "EnvelopeTestPlain";
        fn route() -> &'static Route {
            default_route()
        }
        fn partition_key(&self) -> Option<String> {
            None
        }
    }

    impl<'de> serde::Deserialize<'de> for Nested {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Nested(0))
        }
    }

    impl Event for Nested {
        const NAME: &'static str = "EnvelopeTestNested";
        fn route() -> &'static Route {
            default_route()
        }
        fn partition_key(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn a_payload_is_the_events_json_whatever_was_serialized_before() {
        for len in [0, 300, 100_000, 5, 70_000, 1] {
            let event = Plain("y".repeat(len));
            let e = Envelope::new(&event).unwrap();
            assert_eq!(e.payload, serde_json::to_vec(&event).unwrap());
            assert_eq!(e.payload.capacity(), e.payload.len(), "an exact allocation");
            assert_eq!(&*e.name, "EnvelopeTestPlain");
            assert!(!e.headers.contains_key(headers::CORRELATION_ID));
            assert_eq!(e.wire_headers()[headers::CORRELATION_ID], e.id.to_string());
        }
        // serializing an event may build another envelope on the same thread
        let e = Envelope::new(&Nested(3)).unwrap();
        assert_eq!(e.payload, serde_json::to_vec(&Nested(3)).unwrap());
    }

    #[test]
    fn a_registered_name_is_found_whatever_came_before_it() {
        let a = "RegisteredNameTestA".to_owned();
        let b = "RegisteredNameTestB".to_owned();
        for _ in 0..2 {
            // The last name found is remembered per thread: each answer
            // must still be the name asked for, registered or not.
            assert_eq!(registered_name(a.as_bytes()), Some("RegisteredNameTestA"));
            assert_eq!(registered_name(a.as_bytes()), Some("RegisteredNameTestA"));
            assert_eq!(registered_name("RegisteredNameTest".as_bytes()), None);
            assert_eq!(registered_name(b.as_bytes()), Some("RegisteredNameTestB"));
            assert_eq!(registered_name("RegisteredNameTestAB".as_bytes()), None);
            assert_eq!(registered_name("".as_bytes()), None);
            assert_eq!(registered_name(b"\xffRegisteredNameTestA"), None);
        }
    }
}
