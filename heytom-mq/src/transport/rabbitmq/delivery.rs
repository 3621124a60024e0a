//! What a delivery's AMQP properties say: the reserved metadata read
//! straight from the header table (no string made of an id or a time only
//! to be parsed again), the other headers as strings, and the AMQP
//! `message_id`, `type`, `timestamp` and `correlation_id` where no header
//! carries them.

use chrono::DateTime;
use lapin::types::AMQPValue;

use crate::dispatch::{Incoming, Wire};
use crate::event::{headers, Headers};
use crate::transport::wire::parse_rfc3339;

/// The delivery as the dispatcher takes it.
pub(crate) fn incoming(props: &lapin::BasicProperties, body: Vec<u8>) -> Incoming {
    let mut h = Headers::new();
    let (mut id, mut name, mut at, mut correlation) = (None, None, None, None);
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            // A value that does not parse stays a string header: the
            // dispatcher reports it (a malformed envelope).
            if let AMQPValue::LongString(s) = v {
                let text = std::str::from_utf8(s.as_bytes()).ok();
                match k.as_str() {
                    headers::EVENT_ID => {
                        if let Some(u) = text.and_then(|t| uuid::Uuid::try_parse(t).ok()) {
                            id = Some(u);
                            continue;
                        }
                    }
                    headers::EVENT_NAME => {
                        if let Some(t) = text {
                            name = Some(t);
                            continue;
                        }
                    }
                    headers::CORRELATION_ID if text.is_some() => {
                        correlation = Some(s.as_bytes());
                        continue;
                    }
                    headers::OCCURRED_AT => {
                        if let Some(t) = text.and_then(|t| parse_rfc3339(t.as_bytes())) {
                            at = Some(t);
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            if let Some(s) = value_string(v) {
                h.insert(k.as_str().to_owned(), s);
            }
        }
    }
    if id.is_none() && !h.contains_key(headers::EVENT_ID) {
        id = props
            .message_id()
            .as_ref()
            .map(|m| event_id_of_message_id(m.as_str()));
    }
    if name.is_none() && !h.contains_key(headers::EVENT_NAME) {
        name = props.kind().as_ref().map(|k| k.as_str());
    }
    if at.is_none() && !h.contains_key(headers::OCCURRED_AT) {
        at = props
            .timestamp()
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|ts| DateTime::from_timestamp(ts, 0));
    }
    if correlation.is_none() && !h.contains_key(headers::CORRELATION_ID) {
        // heytom-mq sends the default (the event id) as the property only.
        correlation = props
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().as_bytes());
    }
    let mut wire = Wire::new(h, body);
    wire.id = id;
    if let Some(v) = correlation {
        wire.correlation_id_bytes(v);
    }
    if let Some(name) = name {
        wire.name_bytes(name.as_bytes());
    }
    wire.occurred_at = at;
    wire.into()
}

fn value_string(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        _ => return None,
    })
}

/// The event id of a message from another producer, from its AMQP
/// `message_id`: the id itself when it is a UUID, else a UUID v5 in the URL
/// namespace of `amqp:message-id:<id>` (Python:
/// `uuid.uuid5(uuid.NAMESPACE_URL, "amqp:message-id:order-42")`), so every
/// delivery of the message has the same id and handlers can deduplicate.
pub(crate) fn event_id_of_message_id(message_id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(message_id).unwrap_or_else(|_| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("amqp:message-id:{message_id}").as_bytes(),
        )
    })
}

/// String headers of a delivery as the dispatcher reads them, reserved
/// ones included.
#[cfg(test)]
fn incoming_headers(props: &lapin::BasicProperties) -> Headers {
    incoming(props, Vec::new()).into_wire().0
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldTable;

    use super::*;

    #[test]
    fn foreign_properties_fill_reserved_headers() {
        let id = uuid::Uuid::now_v7().to_string();
        let mut table = FieldTable::default();
        table.insert("n".into(), AMQPValue::LongInt(5));
        table.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let props = lapin::BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_type("OrderPlaced".into())
            .with_timestamp(1_700_000_000)
            .with_headers(table);
        let h = incoming_headers(&props);
        assert_eq!(h.get(headers::EVENT_ID), Some(&id));
        assert_eq!(
            h.get(headers::EVENT_NAME).map(String::as_str),
            Some("OrderPlaced")
        );
        assert!(h
            .get(headers::OCCURRED_AT)
            .is_some_and(|t| t.starts_with("2023-11-14")));
        assert_eq!(h.get("n").map(String::as_str), Some("5"));
        assert!(!h.contains_key("nested"));

        // a message id that is not a UUID gives a UUID v5 of it, the same each time
        let props = lapin::BasicProperties::default().with_message_id("order-42".into());
        let id = incoming_headers(&props)[headers::EVENT_ID].clone();
        assert_eq!(id, incoming_headers(&props)[headers::EVENT_ID]);
        // uuid.uuid5(uuid.NAMESPACE_URL, "amqp:message-id:order-42")
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
        assert_eq!(parsed.to_string(), "3d31590f-7afe-5d20-8260-a479b965ae5d");
        assert_ne!(parsed, event_id_of_message_id("order-43"));
        // a correlation id equal to the event id is answered from the id;
        // another one is kept
        let mut table = FieldTable::default();
        table.insert(
            headers::EVENT_ID.into(),
            AMQPValue::LongString(id.as_str().into()),
        );
        table.insert(
            headers::CORRELATION_ID.into(),
            AMQPValue::LongString(id.as_str().into()),
        );
        let props = lapin::BasicProperties::default().with_headers(table.clone());
        let envelope = incoming(&props, Vec::new()).into_envelope("Ping").unwrap();
        assert!(!envelope.headers.contains_key(headers::CORRELATION_ID));
        assert_eq!(envelope.header(headers::CORRELATION_ID), Some(id.as_str()));
        assert_eq!(incoming_headers(&props)[headers::CORRELATION_ID], id);
        table.insert(
            headers::CORRELATION_ID.into(),
            AMQPValue::LongString("c".into()),
        );
        let props = lapin::BasicProperties::default().with_headers(table);
        let envelope = incoming(&props, Vec::new()).into_envelope("Ping").unwrap();
        assert_eq!(envelope.headers[headers::CORRELATION_ID], "c");
        // the AMQP correlation_id property when no header carries one
        let props = lapin::BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_correlation_id(id.as_str().into());
        let envelope = incoming(&props, Vec::new()).into_envelope("Ping").unwrap();
        assert!(!envelope.headers.contains_key(headers::CORRELATION_ID));
        assert_eq!(envelope.header(headers::CORRELATION_ID), Some(id.as_str()));
        let props = props.with_correlation_id("rpc-7".into());
        assert_eq!(incoming_headers(&props)[headers::CORRELATION_ID], "rpc-7");
        // no message id: nothing here (the dispatcher gives a fresh one)
        let props = lapin::BasicProperties::default();
        assert!(!incoming_headers(&props).contains_key(headers::EVENT_ID));
    }
}
