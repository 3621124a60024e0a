//! [`Incoming`]: a delivery as a transport hands it to the dispatcher.
//!
//! Three shapes, the cheapest the transport can give:
//! - [`Incoming::new`]: string wire headers and the body, the reserved
//!   `heytom-*` headers among them (a custom transport, a foreign message);
//! - the same with the reserved metadata already read by the transport
//!   ([`Incoming::event_id`], [`Incoming::event_name`],
//!   [`Incoming::occurred_at`]), so no string is made of an id only to be
//!   parsed again;
//! - [`Incoming::from_envelope`]: a ready envelope (the in-process broker),
//!   shared, never copied or re-parsed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{
    headers, id_string, registered_name, Envelope, EnvelopeError, EventId, EventName, Headers,
    SharedEnvelope,
};

/// A message as a transport received it, handed to
/// [`Dispatcher::dispatch`](crate::Dispatcher::dispatch).
///
/// ```
/// use heytom_mq::{headers, Headers, Incoming};
/// let wire = Headers::from([(headers::EVENT_NAME.to_owned(), "Ping".to_owned())]);
/// let incoming = Incoming::new(wire, b"{}".to_vec());
/// assert_eq!(incoming.name(), Some("Ping"));
/// ```
#[derive(Debug, Clone)]
pub struct Incoming {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Wire(Wire),
    Ready(SharedEnvelope),
}

/// A delivery as a broker transport read it: the transport fills it in
/// place and makes it an [`Incoming`] with one move (each builder method
/// of `Incoming` moves the whole value, measurable per Kafka message).
#[derive(Debug, Clone, Default)]
pub(crate) struct Wire {
    pub(crate) id: Option<EventId>,
    pub(crate) name: Option<EventName>,
    pub(crate) occurred_at: Option<DateTime<Utc>>,
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    /// The correlation id is the event id: left out of `headers` by the
    /// transport, answered from the id when asked.
    pub(crate) correlation_is_id: bool,
}

impl Wire {
    /// The wire headers (reserved ones among them, for the dispatcher to
    /// parse) and the body.
    pub(crate) fn new(headers: Headers, body: Vec<u8>) -> Self {
        Wire {
            headers,
            body,
            ..Wire::default()
        }
    }

    /// The `correlation-id` header as the transport read it, after the id
    /// is set: the usual one, the event id itself, is not stored as
    /// strings (the envelope answers it from the id, and a dead-lettered
    /// copy carries it); any other is kept as a header.
    #[cfg(any(feature = "rabbitmq", feature = "kafka"))]
    pub(crate) fn correlation_id_bytes(&mut self, value: &[u8]) {
        let mut buf = Uuid::encode_buffer();
        match self.id {
            Some(id) if id.hyphenated().encode_lower(&mut buf).as_bytes() == value => {
                self.correlation_is_id = true;
            }
            _ => {
                self.headers.insert(
                    headers::CORRELATION_ID.to_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }

    /// The event name from text read in place: no copy is made when it is
    /// a registered event's `NAME`; other bytes become (lossy UTF-8) text.
    pub(crate) fn name_bytes(&mut self, name: &[u8]) {
        self.name = Some(match registered_name(name) {
            Some(registered) => registered.into(),
            None => String::from_utf8_lossy(name).into_owned().into(),
        });
    }
}

impl From<Wire> for Incoming {
    fn from(wire: Wire) -> Self {
        Incoming {
            repr: Repr::Wire(wire),
        }
    }
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            repr: Repr::Wire(Wire::default()),
        }
    }
}

impl Incoming {
    /// Wire headers (reserved `heytom-*` ones included, parsed by the
    /// dispatcher) and the body (the event's JSON).
    pub fn new(headers: Headers, body: Vec<u8>) -> Self {
        Wire::new(headers, body).into()
    }

    /// A ready envelope (an in-process delivery): nothing is parsed.
    pub fn from_envelope(envelope: impl Into<Arc<Envelope>>) -> Self {
        Self::shared(SharedEnvelope::from_arc(envelope.into()))
    }

    /// A ready envelope, shared (one of an in-process batch).
    pub(crate) fn shared(envelope: SharedEnvelope) -> Self {
        Incoming {
            repr: Repr::Ready(envelope),
        }
    }

    fn wire(&mut self) -> &mut Wire {
        if let Repr::Ready(e) = &self.repr {
            let (headers, body) = wire_of(e);
            self.repr = Repr::Wire(Wire {
                headers,
                body,
                ..Wire::default()
            });
        }
        match &mut self.repr {
            Repr::Wire(w) => w,
            Repr::Ready(_) => unreachable!("made wire above"),
        }
    }

    /// Sets the event id the transport read itself (instead of the
    /// `heytom-event-id` header).
    pub fn event_id(mut self, id: EventId) -> Self {
        self.wire().id = Some(id);
        self
    }

    /// Sets the event name the transport read itself (instead of the
    /// `heytom-event-name` header).
    pub fn event_name(mut self, name: impl Into<String>) -> Self {
        self.wire().name = Some(EventName::from(name.into()));
        self
    }

    /// [`event_name`](Self::event_name) from text the transport reads in
    /// place: no copy is made when it is a registered event's `NAME`.
    pub fn event_name_str(mut self, name: &str) -> Self {
        self.wire().name_bytes(name.as_bytes());
        self
    }

    /// Sets the time the event occurred, read by the transport itself
    /// (instead of the `heytom-occurred-at` header).
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.wire().occurred_at = Some(at);
        self
    }

    /// The event name it carries, if any: what the dispatcher routes by.
    pub fn name(&self) -> Option<&str> {
        match &self.repr {
            Repr::Ready(e) => Some(e.name.as_str()),
            Repr::Wire(w) => w
                .name
                .as_deref()
                .or_else(|| w.headers.get(headers::EVENT_NAME).map(String::as_str)),
        }
    }

    /// The event id as text, for logs ("" when it has none).
    pub(crate) fn id_text(&self) -> String {
        match &self.repr {
            Repr::Ready(e) => id_string(e.id),
            Repr::Wire(w) => match w.id {
                Some(id) => id_string(id),
                None => w
                    .headers
                    .get(headers::EVENT_ID)
                    .cloned()
                    .unwrap_or_default(),
            },
        }
    }

    /// All headers as on the wire (reserved ones included) and the body:
    /// what a dead-lettered copy carries.
    pub fn into_wire(self) -> (Headers, Vec<u8>) {
        match self.repr {
            Repr::Ready(e) => wire_of(&e),
            Repr::Wire(mut w) => {
                if let Some(id) = w.id {
                    w.headers
                        .insert(headers::EVENT_ID.to_owned(), id_string(id));
                    if w.correlation_is_id {
                        w.headers
                            .entry(headers::CORRELATION_ID.to_owned())
                            .or_insert_with(|| id_string(id));
                    }
                }
                if let Some(name) = w.name {
                    w.headers
                        .insert(headers::EVENT_NAME.to_owned(), name.into());
                }
                if let Some(at) = w.occurred_at {
                    w.headers
                        .insert(headers::OCCURRED_AT.to_owned(), at.to_rfc3339());
                }
                (w.headers, w.body)
            }
        }
    }

    /// The envelope of the delivery. A message without an event name is
    /// of `event_name` (a foreign producer's, on this destination); one
    /// without an id gets a fresh one; one without a time occurred now.
    /// `event_name` is the event the dispatcher routed it to by its name, so
    /// the envelope borrows that registered name instead of keeping a copy.
    pub(crate) fn into_envelope(
        self,
        event_name: &'static str,
    ) -> Result<SharedEnvelope, EnvelopeError> {
        let mut w = match self.repr {
            Repr::Ready(e) => return Ok(e),
            Repr::Wire(w) => w,
        };
        // Transports that read the metadata themselves leave the map
        // empty, usually: nothing to look up then.
        let mut take = |name: &str| {
            if w.headers.is_empty() {
                None
            } else {
                w.headers.remove(name)
            }
        };
        let (id_header, name_header, at_header) = (
            take(headers::EVENT_ID),
            take(headers::EVENT_NAME),
            take(headers::OCCURRED_AT),
        );
        let id = match (w.id, id_header) {
            (Some(id), _) => id,
            (None, Some(s)) => {
                Uuid::parse_str(&s).map_err(|_| EnvelopeError::Invalid(headers::EVENT_ID, s))?
            }
            (None, None) => crate::event::new_event_id(),
        };
        // Routed by this name: it is `event_name` whenever it is there.
        let name = match (w.name, name_header) {
            (Some(name), _) if name != event_name => name,
            (None, Some(name)) if name != event_name => name.into(),
            _ => event_name.into(),
        };
        let occurred_at = match (w.occurred_at, at_header) {
            (Some(at), _) => at,
            (None, Some(s)) => DateTime::parse_from_rfc3339(&s)
                .map_err(|_| EnvelopeError::Invalid(headers::OCCURRED_AT, s))?
                .with_timezone(&Utc),
            (None, None) => Utc::now(),
        };
        let envelope = Envelope {
            id,
            name,
            occurred_at,
            headers: w.headers,
            partition_key: None,
            payload: w.body,
        };
        Ok(match (w.correlation_is_id, w.id) {
            // Only for the id the transport read: one it made up, or one
            // parsed from a header here, is not what the sender correlated.
            (true, Some(read)) if read == id => SharedEnvelope::with_id_as_correlation(envelope),
            _ => SharedEnvelope::as_read(envelope),
        })
    }
}

fn wire_of(e: &SharedEnvelope) -> (Headers, Vec<u8>) {
    (e.wire_headers(), e.payload.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_off_the_wire_borrows_the_registered_one_or_is_lossy_text() {
        let registered = crate::event::registered_name(b"RegisteredNameTestA").expect("registered");
        let mut w = Wire::default();
        w.name_bytes(b"RegisteredNameTestA");
        let name = w.name.take().expect("a name");
        assert_eq!(name.as_str().as_ptr(), registered.as_ptr(), "not a copy");
        w.name_bytes(b"Unregistered");
        assert_eq!(w.name.take().expect("a name").as_str(), "Unregistered");
        w.name_bytes(b"Bad\xffName");
        assert_eq!(w.name.take().expect("a name").as_str(), "Bad\u{fffd}Name");
    }

    #[test]
    fn every_shape_gives_the_same_envelope() {
        let mut sent = Envelope {
            id: Uuid::now_v7(),
            name: "Ping".into(),
            occurred_at: Utc::now(),
            headers: Headers::from([("correlation-id".to_owned(), "c".to_owned())]),
            partition_key: None,
            payload: b"{}".to_vec(),
        };
        let from_strings = Incoming::new(sent.wire_headers(), sent.payload.clone())
            .into_envelope("Other")
            .unwrap();
        let parsed = Incoming::new(sent.headers.clone(), sent.payload.clone())
            .event_id(sent.id)
            .event_name("Ping")
            .occurred_at(sent.occurred_at)
            .into_envelope("Other")
            .unwrap();
        let ready = Incoming::from_envelope(sent.clone())
            .into_envelope("Other")
            .unwrap();
        // rfc3339 keeps nanoseconds
        assert_eq!(*from_strings, sent);
        assert_eq!(*parsed, sent);
        assert_eq!(*ready, sent);
        let (wire, body) = Incoming::from_envelope(sent.clone()).into_wire();
        assert_eq!(wire, sent.wire_headers());
        assert_eq!(body, sent.payload);
        let (wire2, _) = Incoming::new(sent.headers.clone(), vec![])
            .event_id(sent.id)
            .event_name("Ping")
            .occurred_at(sent.occurred_at)
            .into_wire();
        assert_eq!(wire2, wire);

        // a foreign message: the destination's event, a fresh id, now
        sent.headers.clear();
        let foreign = Incoming::new(Headers::new(), b"{}".to_vec())
            .into_envelope("Other")
            .unwrap();
        assert_eq!(foreign.name, "Other");
        let bad = Headers::from([(headers::EVENT_ID.to_owned(), "x".to_owned())]);
        assert!(Incoming::new(bad, vec![]).into_envelope("Other").is_err());
    }
}
