//! An envelope as AMQP properties: persistent JSON with id, type,
//! timestamp, correlation id, priority and the wire headers, encoded
//! without a `to_string` round-trip per field.
//!
//! The event id and name travel as the AMQP `message_id` and `type` only,
//! not again as `heytom-event-id` / `heytom-event-name` headers (fewer
//! bytes for the broker to store and for every consumer to parse), and the
//! default correlation id (the event id) as the `correlation_id` property
//! only; the consumer still reads those headers from producers that send
//! them.

use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::error::{Error, Result};
use crate::event::{headers, Envelope};

use super::publish::PRIORITY_HEADER;
use crate::transport::wire::Rfc3339;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// AMQP properties of an envelope: persistent JSON with id, type,
/// timestamp and the wire headers.
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties> {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id: &str = envelope.id.hyphenated().encode_lower(&mut id);
    let mut table = FieldTable::default();
    let mut priority = None;
    for (k, v) in &envelope.headers {
        // The id and name are the message's own: a header of that name
        // would be read in their place by a consumer, so it is not sent.
        // A correlation id equal to the event id goes as the property only.
        if k == headers::EVENT_ID
            || k == headers::EVENT_NAME
            || (k == headers::CORRELATION_ID && v == id)
        {
            continue;
        }
        if k.len() > 255 {
            return Err(Error::publish(
                &envelope.name,
                format!("header name longer than 255 bytes: `{k}`"),
            ));
        }
        if k == PRIORITY_HEADER {
            priority = Some(v.trim().parse::<u8>().map_err(|_| {
                Error::publish(
                    &envelope.name,
                    format!("header `{PRIORITY_HEADER}` must be a number from 0 to 255, not `{v}`"),
                )
            })?);
        }
        table.insert(ShortString::from(k.as_str()), long(v));
    }
    // The default correlation id (the event id), not stored in the
    // envelope, goes on the wire as the AMQP property only (a consumer
    // reads the property when there is no header); another one is a
    // header too (it may be longer than a property holds).
    let correlation = envelope.headers.get(headers::CORRELATION_ID);
    // The time to the nanosecond (the AMQP timestamp has whole seconds).
    table.insert(
        ShortString::from(headers::OCCURRED_AT),
        AMQPValue::LongString(LongString::from(
            Rfc3339::new(&envelope.occurred_at).as_bytes(),
        )),
    );
    let mut props = BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_type(ShortString::from(envelope.name.as_str()))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(table);
    if let Ok(ts) = u64::try_from(envelope.occurred_at.timestamp()) {
        props = props.with_timestamp(ts);
    }
    match correlation {
        Some(c) if c.len() <= 255 => {
            props = props.with_correlation_id(ShortString::from(c.as_str()));
        }
        Some(_) => {}
        None => props = props.with_correlation_id(ShortString::from(id)),
    }
    if let Some(p) = priority {
        props = props.with_priority(p);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn envelope(headers: crate::Headers) -> Envelope {
        Envelope {
            id: uuid::Uuid::now_v7(),
            name: "OrderPlaced".into(),
            occurred_at: chrono::Utc::now(),
            headers,
            partition_key: None,
            payload: b"{}".to_vec(),
        }
    }

    fn header(p: &BasicProperties, k: &str) -> Option<String> {
        match p.headers().as_ref()?.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn properties_carry_id_type_headers_and_priority() {
        let mut h = crate::Headers::new();
        h.insert(headers::CORRELATION_ID.into(), "corr-1".into());
        h.insert(PRIORITY_HEADER.into(), " 7 ".into());
        // a user header cannot stand in for the id or the name
        h.insert(headers::EVENT_NAME.into(), "Spoofed".into());
        h.insert(headers::EVENT_ID.into(), "spoofed-id".into());
        let e = envelope(h);
        let p = properties(&e).unwrap();
        let id = e.id.to_string();
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(id.as_str())
        );
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("OrderPlaced"));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some("corr-1")
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(7));
        // the id and name go once, as message_id and type
        assert_eq!(header(&p, headers::EVENT_ID), None);
        assert_eq!(header(&p, headers::EVENT_NAME), None);
        assert!(header(&p, headers::OCCURRED_AT).is_some());
        assert_eq!(
            header(&p, headers::CORRELATION_ID).as_deref(),
            Some("corr-1")
        );
        // what a consumer reads back: the message's own id and name
        let incoming = super::super::delivery::incoming(&p, b"{}".to_vec());
        let (wire, _) = incoming.into_wire();
        assert_eq!(wire[headers::EVENT_ID], id);
        assert_eq!(wire[headers::EVENT_NAME], "OrderPlaced");
    }

    #[test]
    fn the_default_correlation_id_is_the_property_only() {
        let e = envelope(crate::Headers::new());
        let p = properties(&e).unwrap();
        let id = e.id.to_string();
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some(id.as_str())
        );
        assert_eq!(header(&p, headers::CORRELATION_ID), None);
        // also when the headers carry it (an outbox row, a consumed message)
        let mut carried = envelope(crate::Headers::new());
        carried
            .headers
            .insert(headers::CORRELATION_ID.into(), carried.id.to_string());
        let c = properties(&carried).unwrap();
        assert_eq!(header(&c, headers::CORRELATION_ID), None);
        assert_eq!(
            c.correlation_id().as_ref().map(|s| s.to_string()),
            Some(carried.id.to_string())
        );
        // what a consumer reads back: correlated with its own id
        let envelope = super::super::delivery::incoming(&p, b"{}".to_vec())
            .into_envelope("OrderPlaced")
            .unwrap();
        assert_eq!(envelope.header(headers::CORRELATION_ID), Some(id.as_str()));
    }

    #[test]
    fn bad_priority_and_long_header_names_are_errors() {
        let mut h = crate::Headers::new();
        h.insert(PRIORITY_HEADER.into(), "256".into());
        let err = properties(&envelope(h)).unwrap_err().to_string();
        assert!(err.contains("0 to 255"), "{err}");
        let mut h = crate::Headers::new();
        h.insert("x".repeat(300), "v".into());
        assert!(properties(&envelope(h)).is_err());
    }

    #[test]
    fn occurred_at_is_written_as_chrono_writes_it() {
        let far = Utc.with_ymd_and_hms(12000, 1, 1, 0, 0, 0).unwrap();
        let exact = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        for t in [Utc::now(), exact, far] {
            let e = Envelope {
                occurred_at: t,
                ..envelope(crate::Headers::new())
            };
            assert_eq!(
                header(&properties(&e).unwrap(), headers::OCCURRED_AT),
                Some(t.to_rfc3339())
            );
        }
    }
}
