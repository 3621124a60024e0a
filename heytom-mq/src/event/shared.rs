//! [`SharedEnvelope`]: a delivered envelope as the dispatcher and the
//! handlers' contexts hold it, cloned per handler and attempt without a copy.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use super::{headers, id_string, Envelope, Headers};

/// An envelope on its way to handlers. Either one envelope of its own, or
/// one message of a batch published together in-process: the batch is one
/// allocation. An envelope made here does not store the default
/// correlation id (its event id), which [`headers`](Self::headers) and
/// [`wire_headers`](Self::wire_headers) add when the headers carry none.
#[derive(Clone)]
pub(crate) struct SharedEnvelope(Repr);

#[derive(Clone)]
enum Repr {
    /// Headers complete as they are.
    One(Arc<Envelope>),
    /// Message `.1` of a batch.
    Batch(Arc<[Delivered]>, usize),
}

/// One message of a batch: its envelope, and its headers with the
/// correlation id, made the first time a handler asks for them.
struct Delivered {
    envelope: Envelope,
    headers: OnceLock<Headers>,
}

impl SharedEnvelope {
    /// One envelope made in this process: its correlation id is its event
    /// id unless its headers carry one (see [`Envelope::with_headers`]).
    pub(crate) fn new(envelope: Envelope) -> Self {
        if envelope.headers.contains_key(headers::CORRELATION_ID) {
            return SharedEnvelope(Repr::One(Arc::new(envelope)));
        }
        Self::with_id_as_correlation(envelope)
    }

    /// [`new`](Self::new) for an envelope already shared.
    pub(crate) fn from_arc(envelope: Arc<Envelope>) -> Self {
        if envelope.headers.contains_key(headers::CORRELATION_ID) {
            return SharedEnvelope(Repr::One(envelope));
        }
        Self::new(Arc::try_unwrap(envelope).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// An envelope read from the wire, its headers as they are: no
    /// correlation id unless the sender gave one.
    pub(crate) fn as_read(envelope: Envelope) -> Self {
        SharedEnvelope(Repr::One(Arc::new(envelope)))
    }

    /// The messages of a batch, whose correlation id is their event id
    /// unless their headers carry one: one allocation for all of them.
    pub(crate) fn batch(
        envelopes: impl IntoIterator<Item = Envelope>,
    ) -> impl ExactSizeIterator<Item = Self> {
        let all: Arc<[Delivered]> = envelopes
            .into_iter()
            .map(|envelope| Delivered {
                envelope,
                headers: OnceLock::new(),
            })
            .collect();
        (0..all.len()).map(move |i| SharedEnvelope(Repr::Batch(all.clone(), i)))
    }

    /// One envelope whose correlation id is its event id unless its
    /// headers carry one (a transport left the default out of them).
    pub(crate) fn with_id_as_correlation(envelope: Envelope) -> Self {
        let one: Arc<[Delivered]> = Arc::new([Delivered {
            envelope,
            headers: OnceLock::new(),
        }]);
        SharedEnvelope(Repr::Batch(one, 0))
    }

    /// Correlation id, causation id, `traceparent` and user headers.
    pub(crate) fn headers(&self) -> &Headers {
        match &self.0 {
            Repr::One(e) => &e.headers,
            Repr::Batch(all, i) => {
                let d = &all[*i];
                if d.envelope.headers.contains_key(headers::CORRELATION_ID) {
                    return &d.envelope.headers;
                }
                d.headers.get_or_init(|| {
                    let mut h = d.envelope.headers.clone();
                    h.insert(headers::CORRELATION_ID.to_owned(), id_string(d.envelope.id));
                    h
                })
            }
        }
    }

    /// One header by name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        match self.envelope().headers.get(name) {
            Some(v) => Some(v),
            None if name == headers::CORRELATION_ID => self.headers().get(name).map(String::as_str),
            None => None,
        }
    }

    /// All headers as they go on the wire: the reserved ones and the
    /// correlation id included.
    pub(crate) fn wire_headers(&self) -> Headers {
        let mut h = self.envelope().wire_headers();
        // Read from the wire without one (`as_read`): none is made up.
        if let Repr::One(e) = &self.0 {
            if !e.headers.contains_key(headers::CORRELATION_ID) {
                h.remove(headers::CORRELATION_ID);
            }
        }
        h
    }

    fn envelope(&self) -> &Envelope {
        match &self.0 {
            Repr::One(e) => e,
            Repr::Batch(all, i) => &all[*i].envelope,
        }
    }
}

impl Deref for SharedEnvelope {
    type Target = Envelope;

    fn deref(&self) -> &Envelope {
        self.envelope()
    }
}

impl std::fmt::Debug for SharedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEnvelope")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(headers: Headers) -> Envelope {
        Envelope {
            id: uuid::Uuid::now_v7(),
            name: "Ping".into(),
            occurred_at: chrono::Utc::now(),
            headers,
            partition_key: None,
            payload: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_batch_answers_the_event_id_as_correlation_id_unless_it_carries_one() {
        let own = Headers::from([(headers::CORRELATION_ID.to_owned(), "c".to_owned())]);
        let envelopes = vec![plain(Headers::new()), plain(own)];
        let ids: Vec<_> = envelopes.iter().map(|e| e.id).collect();
        let shared: Vec<_> = SharedEnvelope::batch(envelopes).collect();
        let first = id_string(ids[0]);
        assert_eq!(shared[0].header(headers::CORRELATION_ID), Some(&*first));
        assert_eq!(shared[0].headers()[headers::CORRELATION_ID], first);
        assert_eq!(shared[0].wire_headers()[headers::CORRELATION_ID], first);
        assert_eq!(shared[0].header("other"), None);
        assert_eq!(shared[1].header(headers::CORRELATION_ID), Some("c"));
        assert_eq!(shared[1].wire_headers()[headers::CORRELATION_ID], "c");
        assert_eq!(shared[1].id, ids[1]);

        // One envelope made here: the same default.
        let made = plain(Headers::new());
        let id = id_string(made.id);
        let one = SharedEnvelope::new(made);
        assert_eq!(one.header(headers::CORRELATION_ID), Some(&*id));
        assert_eq!(one.headers()[headers::CORRELATION_ID], id);
        assert_eq!(one.wire_headers()[headers::CORRELATION_ID], id);
        let own = SharedEnvelope::from_arc(Arc::new(plain(Headers::from([(
            headers::CORRELATION_ID.to_owned(),
            "c".to_owned(),
        )]))));
        assert_eq!(own.header(headers::CORRELATION_ID), Some("c"));

        // One read from the wire: its headers as they are (a foreign
        // message has none).
        let read = SharedEnvelope::as_read(plain(Headers::new()));
        assert_eq!(read.header(headers::CORRELATION_ID), None);
        assert!(read.headers().is_empty());
        assert!(!read.wire_headers().contains_key(headers::CORRELATION_ID));
    }
}
