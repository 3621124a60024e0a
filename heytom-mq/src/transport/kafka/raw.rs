//! A fetched Kafka message packed into one buffer.
//!
//! The poll thread copies each message out of librdkafka once, into a single
//! allocation; the lane that handles it unpacks headers and body on its own
//! thread (allocations made and freed on one thread are cheap), and a dead
//! letter is built from the original bytes, header values included.

use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};

use crate::consumer::Incoming;
use crate::event::Headers;

/// `[key][payload][header count]([name][value])*`, each part length-prefixed
/// (`u32` little endian; `u32::MAX` for an absent key or header value).
pub(crate) struct RawMessage {
    buf: Vec<u8>,
}

const ABSENT: u32 = u32::MAX;

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

impl RawMessage {
    pub(crate) fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let key = m.key();
        let payload = m.payload();
        let headers = m.headers();
        let mut size = 12 + key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len);
        if let Some(hs) = headers {
            for h in hs.iter() {
                size += 8 + h.key.len() + h.value.map_or(0, <[u8]>::len);
            }
        }
        let mut buf = Vec::with_capacity(size);
        put(&mut buf, key);
        put(&mut buf, payload);
        let count = headers.map_or(0, |h| h.count());
        buf.extend_from_slice(&(count as u32).to_le_bytes());
        if let Some(hs) = headers {
            for h in hs.iter() {
                put(&mut buf, Some(h.key.as_bytes()));
                put(&mut buf, h.value);
            }
        }
        RawMessage { buf }
    }

    fn reader(&self) -> Reader<'_> {
        Reader {
            buf: &self.buf,
            at: 0,
        }
    }

    /// The message key.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.reader().part().flatten()
    }

    /// The payload (empty for a tombstone).
    pub(crate) fn payload(&self) -> &[u8] {
        let mut r = self.reader();
        let _ = r.part();
        r.part().flatten().unwrap_or_default()
    }

    /// The headers as (name, value) byte slices, in wire order.
    pub(crate) fn headers(&self) -> Vec<(&[u8], Option<&[u8]>)> {
        let mut r = self.reader();
        let (_, _) = (r.part(), r.part());
        let count = r.len().unwrap_or(0);
        let mut out = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            match (r.part(), r.part()) {
                (Some(Some(k)), Some(v)) => out.push((k, v)),
                _ => break,
            }
        }
        out
    }

    /// What the dispatcher takes: headers as strings (lossy UTF-8; headers
    /// without a value are left out) and the body.
    pub(crate) fn to_incoming(&self) -> Incoming {
        let mut headers = Headers::new();
        for (k, v) in self.headers() {
            if let Some(v) = v {
                headers.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
        }
        Incoming {
            headers,
            body: self.payload().to_vec(),
        }
    }
}
