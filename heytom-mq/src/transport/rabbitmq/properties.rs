//! An envelope as AMQP properties: persistent JSON with id, type,
//! timestamp, correlation id, priority and the wire headers, encoded
//! without a `to_string` round-trip per field.

use chrono::{DateTime, Datelike, Timelike, Utc};
use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::error::{Error, Result};
use crate::event::{headers, Envelope};

use super::publish::PRIORITY_HEADER;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// `occurred_at` as [`DateTime::to_rfc3339`] writes it (seconds with
/// 0, 3, 6 or 9 fraction digits, `+00:00`), into a stack buffer.
fn rfc3339(t: &DateTime<Utc>, buf: &mut [u8; 35]) -> Option<usize> {
    let year = t.year();
    let nano = t.nanosecond();
    // Leap seconds and years beyond four digits: chrono's own writer.
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    fn two(buf: &mut [u8], at: usize, v: u32) {
        buf[at] = b'0' + (v / 10 % 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    }
    let year = year as u32;
    two(buf, 0, year / 100);
    two(buf, 2, year % 100);
    buf[4] = b'-';
    two(buf, 5, t.month());
    buf[7] = b'-';
    two(buf, 8, t.day());
    buf[10] = b'T';
    two(buf, 11, t.hour());
    buf[13] = b':';
    two(buf, 14, t.minute());
    buf[16] = b':';
    two(buf, 17, t.second());
    let mut at = 19;
    let (digits, mut frac) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        buf[at] = b'.';
        for i in (0..digits).rev() {
            buf[at + 1 + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        at += 1 + digits;
    }
    buf[at..at + 6].copy_from_slice(b"+00:00");
    Some(at + 6)
}

/// AMQP properties of an envelope: persistent JSON with id, type,
/// timestamp and the wire headers.
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties> {
    let mut table = FieldTable::default();
    let mut priority = None;
    for (k, v) in &envelope.headers {
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
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id: &str = envelope.id.hyphenated().encode_lower(&mut id);
    table.insert(ShortString::from(headers::EVENT_ID), long(id));
    table.insert(ShortString::from(headers::EVENT_NAME), long(&envelope.name));
    let mut at = [0u8; 35];
    let occurred = match rfc3339(&envelope.occurred_at, &mut at) {
        Some(n) => LongString::from(&at[..n]),
        None => LongString::from(envelope.occurred_at.to_rfc3339()),
    };
    table.insert(
        ShortString::from(headers::OCCURRED_AT),
        AMQPValue::LongString(occurred),
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
    if let Some(c) = envelope.headers.get(headers::CORRELATION_ID) {
        if c.len() <= 255 {
            props = props.with_correlation_id(ShortString::from(c.as_str()));
        }
    }
    if let Some(p) = priority {
        props = props.with_priority(p);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        // a user header cannot override a reserved one
        h.insert(headers::EVENT_NAME.into(), "Spoofed".into());
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
        assert_eq!(header(&p, headers::EVENT_ID), Some(id));
        assert_eq!(
            header(&p, headers::EVENT_NAME).as_deref(),
            Some("OrderPlaced")
        );
        assert!(header(&p, headers::OCCURRED_AT).is_some());
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
        let base = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let mut times = vec![
            base,
            Utc::now(),
            Utc.with_ymd_and_hms(1, 12, 31, 23, 59, 59).unwrap(),
        ];
        for nanos in [1, 7_000, 120_000_000, 999_999_999, 123_456_789, 10_000] {
            times.push(base + chrono::Duration::nanoseconds(nanos));
        }
        for t in times {
            let mut buf = [0u8; 35];
            let n = rfc3339(&t, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), t.to_rfc3339());
        }
        let far = Utc.with_ymd_and_hms(12000, 1, 1, 0, 0, 0).unwrap();
        assert!(rfc3339(&far, &mut [0u8; 35]).is_none());
        let e = Envelope {
            occurred_at: far,
            ..envelope(crate::Headers::new())
        };
        assert_eq!(
            header(&properties(&e).unwrap(), headers::OCCURRED_AT),
            Some(far.to_rfc3339())
        );
    }
}
