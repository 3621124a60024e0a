//! Fetched Kafka messages packed into one buffer.
//!
//! The poll thread copies each message out of librdkafka once, appending it
//! to the buffer of its partition's batch (one allocation per batch, not per
//! message); the lane that handles it unpacks headers and body on its own
//! thread, and a dead letter is built from the original bytes, header
//! values included.

use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};

use crate::dispatch::{Incoming, Wire};
use crate::event::headers;

/// The event id of a Kafka message that carries no `heytom-event-id` (a
/// foreign producer's): a UUID v5 in the URL namespace of
/// `kafka://<topic>/<partition>/<offset>`, so every delivery of that record
/// (a redelivery, another group, a replay) has the same id and handlers can
/// deduplicate on [`Context::event_id`](crate::Context::event_id). The same
/// value from Python: `uuid.uuid5(uuid.NAMESPACE_URL, "kafka://orders/0/42")`.
pub(crate) fn foreign_event_id(topic: &str, partition: i32, offset: i64) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("kafka://{topic}/{partition}/{offset}").as_bytes(),
    )
}

/// One packed message, `[key][payload][header count]([name][value])*`,
/// each part length-prefixed (`u32` little endian; `u32::MAX` for an absent
/// key or header value).
#[derive(Clone, Copy)]
pub(crate) struct RawMessage<'a> {
    buf: &'a [u8],
}

const ABSENT: u32 = u32::MAX;

#[inline]
fn put(buf: &mut Vec<u8>, part: Option<&[u8]>) {
    match part {
        Some(p) => {
            // Kafka caps messages far below 4 GiB; clamp instead of failing.
            let n = p.len().min(ABSENT as usize - 1);
            buf.extend_from_slice(&(n as u32).to_le_bytes());
            buf.extend_from_slice(&p[..n]);
        }
        None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// Reads packed parts back; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn len(&mut self) -> Option<u32> {
        let bytes = self.buf.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn part(&mut self) -> Option<Option<&'a [u8]>> {
        let n = self.len()?;
        if n == ABSENT {
            return Some(None);
        }
        let p = self.buf.get(self.at..self.at + n as usize)?;
        self.at += n as usize;
        Some(Some(p))
    }
}

/// Appends a fetched message to `out`; where it lies there.
pub(crate) fn pack_message(out: &mut Vec<u8>, m: &BorrowedMessage<'_>) -> std::ops::Range<usize> {
    let start = out.len();
    match m.headers() {
        Some(hs) => pack(
            out,
            m.key(),
            m.payload(),
            (0..hs.count())
                .filter_map(move |i| hs.try_get(i))
                .map(|h| (h.key, h.value)),
        ),
        None => pack(out, m.key(), m.payload(), std::iter::empty()),
    }
    start..out.len()
}

fn pack<'a>(
    buf: &mut Vec<u8>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) {
    // Room for the usual few headers too; one walk over them (librdkafka's
    // header lookups are not free), the count patched in after.
    buf.reserve(12 + key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len) + 256);
    put(buf, key);
    put(buf, payload);
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (k, v) in headers {
        put(buf, Some(k.as_bytes()));
        put(buf, v);
        count += 1;
    }
    buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
}

impl<'a> RawMessage<'a> {
    /// The message packed in `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        RawMessage { buf }
    }

    fn reader(&self) -> Reader<'a> {
        Reader {
            buf: self.buf,
            at: 0,
        }
    }

    /// The message key.
    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        self.reader().part().flatten()
    }

    /// The payload (empty for a tombstone).
    pub(crate) fn payload(&self) -> &'a [u8] {
        let mut r = self.reader();
        let _ = r.part();
        r.part().flatten().unwrap_or_default()
    }

    /// The headers as (name, value) byte slices, in wire order.
    pub(crate) fn headers(&self) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
        self.header_iter().collect()
    }

    fn header_iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let mut r = self.reader();
        let (_, _) = (r.part(), r.part());
        let count = r.len().unwrap_or(0);
        (0..count).map_while(move |_| match (r.part(), r.part()) {
            (Some(Some(k)), Some(v)) => Some((k, v)),
            _ => None,
        })
    }

    /// What the dispatcher takes: the event id, name and time read here
    /// (no string made of them only to be parsed again), the other headers
    /// as strings (lossy UTF-8; headers without a value are left out) and
    /// the body. A reserved header that does not parse is passed on as
    /// text, for the dispatcher to reject. A message without an event id
    /// gets [`foreign_event_id`] of where it was read from.
    pub(crate) fn to_incoming(self, topic: &str, partition: i32, offset: i64) -> Incoming {
        let mut wire = Wire::default();
        // The last of each, as a map would keep.
        let (mut id, mut name, mut at, mut correlation) = (None, None, None, None);
        for (k, v) in self.header_iter() {
            let Some(v) = v else {
                continue;
            };
            let slot = match k {
                k if k == headers::EVENT_ID.as_bytes() => &mut id,
                k if k == headers::EVENT_NAME.as_bytes() => &mut name,
                k if k == headers::OCCURRED_AT.as_bytes() => &mut at,
                k if k == headers::CORRELATION_ID.as_bytes() => &mut correlation,
                _ => {
                    wire.headers.insert(text(k), text(v));
                    continue;
                }
            };
            *slot = Some(v);
        }
        wire.id = match id {
            None => Some(foreign_event_id(topic, partition, offset)),
            Some(v) => match uuid::Uuid::try_parse_ascii(v) {
                Ok(id) => Some(id),
                Err(_) => {
                    wire.headers.insert(headers::EVENT_ID.to_owned(), text(v));
                    None
                }
            },
        };
        wire.occurred_at = at.and_then(|v| {
            let parsed = crate::transport::wire::parse_rfc3339(v);
            if parsed.is_none() {
                wire.headers
                    .insert(headers::OCCURRED_AT.to_owned(), text(v));
            }
            parsed
        });
        match correlation {
            Some(v) => wire.correlation_id_bytes(v),
            // heytom-mq leaves out a correlation id equal to the event id:
            // a message with its own id and no correlation id correlates
            // with it.
            None => wire.correlation_is_id = id.is_some(),
        }
        if let Some(name) = name {
            wire.name_bytes(name);
        }
        wire.body = self.payload().to_vec();
        wire.into()
    }
}

/// Lossy UTF-8 text of a header part (valid UTF-8, the usual case, is copied as is).
fn text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(v).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed<'a>(
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Vec<u8> {
        let mut buf = b"before".to_vec();
        pack(&mut buf, key, payload, headers);
        buf.split_off(6)
    }

    #[test]
    fn round_trip_keeps_key_payload_and_headers() {
        let headers = [
            ("a", Some(&b"1"[..])),
            ("empty", None),
            ("bin", Some(&[0xff, 0xfe][..])),
        ];
        let buf = packed(Some(b"k"), Some(b"{}"), headers.iter().copied());
        let m = RawMessage::new(&buf);
        assert_eq!(m.key(), Some(&b"k"[..]));
        assert_eq!(m.payload(), b"{}");
        assert_eq!(
            m.headers(),
            vec![
                (&b"a"[..], Some(&b"1"[..])),
                (&b"empty"[..], None),
                (&b"bin"[..], Some(&[0xff, 0xfe][..]))
            ]
        );
        let (inc_headers, inc_body) = m.to_incoming("t", 0, 0).into_wire();
        assert_eq!(inc_body, b"{}");
        assert_eq!(inc_headers.get("a").map(String::as_str), Some("1"));
        assert!(!inc_headers.contains_key("empty"));
        assert_eq!(
            inc_headers.get("bin").map(String::as_str),
            Some("\u{fffd}\u{fffd}")
        );
    }

    #[test]
    fn a_foreign_message_gets_a_stable_id_from_where_it_was_read() {
        let buf = packed(None, Some(b"{}"), std::iter::empty());
        let m = RawMessage::new(&buf);
        let id = |topic, partition, offset| {
            m.to_incoming(topic, partition, offset).into_wire().0[headers::EVENT_ID].clone()
        };
        let first = id("orders", 2, 42);
        assert_eq!(first, id("orders", 2, 42), "a redelivery has the same id");
        // The documented recipe: UUID v5 of the URL kafka://topic/partition/offset
        // (Python's uuid.uuid5(uuid.NAMESPACE_URL, "kafka://orders/2/42")).
        assert_eq!(first, "2be47057-12f3-53b8-90e5-2dbe70725462");
        let parsed = uuid::Uuid::parse_str(&first).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 5);
        assert_ne!(first, id("orders", 2, 43));
        assert_ne!(first, id("orders", 3, 42));
        assert_ne!(first, id("orders-2", 2, 42));
        // Its own id wins.
        let own = uuid::Uuid::now_v7().to_string();
        let buf = packed(
            None,
            Some(b"{}"),
            [(headers::EVENT_ID, Some(own.as_bytes()))].into_iter(),
        );
        let m = RawMessage::new(&buf);
        assert_eq!(
            m.to_incoming("orders", 2, 42).into_wire().0[headers::EVENT_ID],
            own
        );
    }

    #[test]
    fn reserved_headers_are_parsed_or_passed_on_for_the_dispatcher_to_reject() {
        let id = uuid::Uuid::now_v7().to_string();
        let at = "2026-01-02T03:04:05.123456789+00:00";
        let buf = packed(
            None,
            Some(b"{}"),
            [
                (headers::EVENT_ID, Some(id.as_bytes())),
                (headers::EVENT_NAME, Some(&b"Ping"[..])),
                (headers::OCCURRED_AT, Some(at.as_bytes())),
                ("correlation-id", Some(&b"c"[..])),
            ]
            .into_iter(),
        );
        let incoming = RawMessage::new(&buf).to_incoming("t", 0, 0);
        assert_eq!(incoming.name(), Some("Ping"));
        let (wire, _) = incoming.into_wire();
        assert_eq!(wire[headers::EVENT_ID], id);
        assert_eq!(wire[headers::EVENT_NAME], "Ping");
        assert_eq!(wire[headers::OCCURRED_AT], at);
        assert_eq!(wire["correlation-id"], "c");
        // Not parsable: passed on as text.
        let buf = packed(
            None,
            Some(b"{}"),
            [
                (headers::EVENT_ID, Some(&b"not-a-uuid"[..])),
                (headers::OCCURRED_AT, Some(&b"yesterday"[..])),
            ]
            .into_iter(),
        );
        let (wire, _) = RawMessage::new(&buf).to_incoming("t", 0, 0).into_wire();
        assert_eq!(wire[headers::EVENT_ID], "not-a-uuid");
        assert_eq!(wire[headers::OCCURRED_AT], "yesterday");
    }

    /// A `Ping` message with this event id and, if given, correlation id.
    fn ping(id: &str, correlation: Option<&str>) -> Vec<u8> {
        let own = [
            (headers::EVENT_ID, Some(id.as_bytes())),
            (headers::EVENT_NAME, Some(&b"Ping"[..])),
        ];
        let correlation = correlation.map(|c| (headers::CORRELATION_ID, Some(c.as_bytes())));
        packed(None, Some(b"{}"), own.into_iter().chain(correlation))
    }

    #[test]
    fn a_correlation_id_equal_to_the_event_id_is_answered_from_the_id() {
        let id = uuid::Uuid::now_v7();
        let text = id.to_string();
        let buf = ping(&text, Some(&text));
        let incoming = RawMessage::new(&buf).to_incoming("t", 0, 0);
        // A dead-lettered copy carries it.
        let (wire, _) = incoming.clone().into_wire();
        assert_eq!(wire[headers::CORRELATION_ID], text);
        // The handler's context sees it.
        let envelope = incoming.into_envelope("Ping").expect("envelope");
        assert!(!envelope.headers.contains_key(headers::CORRELATION_ID));
        assert_eq!(envelope.headers()[headers::CORRELATION_ID], text);
        assert_eq!(
            envelope.header(headers::CORRELATION_ID),
            Some(text.as_str())
        );
        assert_eq!(envelope.wire_headers()[headers::CORRELATION_ID], text);
        // Another id's: kept as it is.
        let other = uuid::Uuid::now_v7().to_string();
        let buf = ping(&text, Some(&other));
        let envelope = RawMessage::new(&buf)
            .to_incoming("t", 0, 0)
            .into_envelope("Ping")
            .expect("envelope");
        assert_eq!(envelope.headers[headers::CORRELATION_ID], other);
    }

    #[test]
    fn without_a_correlation_id_a_message_with_its_own_id_correlates_with_it() {
        let text = uuid::Uuid::now_v7().to_string();
        let buf = ping(&text, None);
        let envelope = RawMessage::new(&buf)
            .to_incoming("t", 0, 0)
            .into_envelope("Ping")
            .expect("envelope");
        assert_eq!(
            envelope.header(headers::CORRELATION_ID),
            Some(text.as_str())
        );
        // A foreign message (no event id header) gets no made-up correlation.
        let buf = packed(None, Some(b"{}"), std::iter::empty());
        let envelope = RawMessage::new(&buf)
            .to_incoming("t", 0, 7)
            .into_envelope("Ping")
            .expect("envelope");
        assert_eq!(envelope.header(headers::CORRELATION_ID), None);
    }

    #[test]
    fn absent_key_and_tombstone() {
        let buf = packed(None, None, std::iter::empty());
        let m = RawMessage::new(&buf);
        assert_eq!(m.key(), None);
        assert_eq!(m.payload(), b"");
        assert!(m.headers().is_empty());
    }

    #[test]
    fn truncated_buffer_reads_as_missing_not_panic() {
        let buf = packed(
            Some(b"key"),
            Some(b"payload"),
            [("h", Some(&b"v"[..]))].into_iter(),
        );
        for cut in 0..buf.len() {
            let m = RawMessage::new(&buf[..cut]);
            let _ = (m.key(), m.payload(), m.headers(), m.to_incoming("t", 0, 0));
        }
    }
}
