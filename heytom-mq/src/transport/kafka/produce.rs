//! Batches on Kafka: `send_batch` serialized up front, each message handed
//! to librdkafka straight from the shared payload buffer, with its headers
//! written from stack buffers, while earlier ones are in flight; and batches
//! of envelopes (`publish_batch`), handed over first, their deliveries
//! awaited after.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::{await_delivery, produce_error, topic_of, wire, ProducerKey, TransportInner};
use crate::error::{Error, Result};
use crate::event::headers::{EVENT_ID, EVENT_NAME, OCCURRED_AT};
use crate::event::Envelope;
use crate::transport::EncodedBatch;
use crate::transport::Outgoing;

/// A message handed to librdkafka, or refused at once.
enum Pending {
    Sent(DeliveryFuture),
    Failed(crate::Error),
}

async fn resolve(name: &str, p: Pending) -> Result<()> {
    match p {
        Pending::Sent(fut) => await_delivery(name, fut).await,
        Pending::Failed(e) => Err(e),
    }
}

/// Publishes an encoded batch; one result per message, in order (the
/// deliveries are awaited oldest first, so results are pushed in order).
pub(super) async fn publish_encoded(
    inner: &TransportInner,
    batch: &EncodedBatch<'_>,
) -> Vec<Result<()>> {
    let name = batch.name;
    let topic = topic_of(batch.route, name);
    inner.ensure_topic_for_publish(batch.route, name).await;
    let key = ProducerKey::of(batch.route);
    let producer = match inner.producer(key) {
        Ok(p) => p,
        Err(e) => {
            let mut out = vec![Err(e)];
            out.extend((1..batch.len()).map(|_| inner.producer(key).map(|_| ())));
            return out;
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(batch.len().min(1 << 16));
    for i in 0..batch.len() {
        let mut id = uuid::Uuid::encode_buffer();
        let id = batch.ids[i].hyphenated().encode_lower(&mut id).as_bytes();
        let now = chrono::Utc::now();
        let at = wire::Rfc3339::new(&now);
        // The same headers, in the same order, as an envelope's (the
        // default correlation id left out).
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: EVENT_ID,
                value: Some(id),
            })
            .insert(Header {
                key: EVENT_NAME,
                value: Some(name.as_bytes()),
            })
            .insert(Header {
                key: OCCURRED_AT,
                value: Some(at.as_bytes()),
            });
        let mut record = FutureRecord {
            topic,
            partition: None,
            payload: Some(batch.payload(i)),
            key: batch.keys[i].as_deref(),
            timestamp: Some(now.timestamp_millis()),
            headers: Some(headers),
        };
        loop {
            match producer.send_result(record) {
                Ok(fut) => {
                    pending.push_back(Pending::Sent(fut));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for the oldest delivery, then retry.
                    record = back;
                    match pending.pop_front() {
                        Some(p) => results.push(resolve(name, p).await),
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => {
                    pending.push_back(Pending::Failed(produce_error(name, &e)));
                    break;
                }
            }
        }
    }
    for p in pending {
        results.push(resolve(name, p).await);
    }
    results
}

/// A batch of envelopes handed to librdkafka, in order: the results known
/// already (refused at once, or delivered while the local queue was full),
/// and the deliveries to await.
pub(super) struct Queued {
    results: Vec<Option<Result<()>>>,
    pending: VecDeque<(usize, DeliveryFuture)>,
}

/// Hands every message of a batch to librdkafka, in order (one key keeps
/// its partition's order); returns once each is queued there or refused.
pub(super) async fn queue_batch(inner: &TransportInner, messages: &[Outgoing]) -> Queued {
    let mut results: Vec<Option<Result<()>>> = (0..messages.len()).map(|_| None).collect();
    let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::with_capacity(messages.len());
    let mut current: Option<(&crate::event::Route, FutureProducer<super::TracingContext>)> = None;
    let mut ensured: Option<&str> = None;
    for (i, m) in messages.iter().enumerate() {
        let envelope = &m.envelope;
        let topic = topic_of(m.route, &envelope.name);
        if ensured != Some(topic) {
            inner
                .ensure_topic_for_publish(m.route, &envelope.name)
                .await;
            ensured = Some(topic);
        }
        // Batches are usually one event type: look the producer up only when the route changes.
        if !current
            .as_ref()
            .is_some_and(|(r, _)| std::ptr::eq(*r, m.route))
        {
            match inner.producer(ProducerKey::of(m.route)) {
                Ok(p) => current = Some((m.route, p)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            }
        }
        let Some((_, producer)) = &current else {
            continue;
        };
        let mut rec = record(topic, envelope);
        loop {
            match producer.send_result(rec) {
                Ok(fut) => {
                    pending.push_back((i, fut));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for the oldest delivery, then retry.
                    rec = back;
                    match pending.pop_front() {
                        Some((j, fut)) => {
                            results[j] = Some(await_delivery(&messages[j].envelope.name, fut).await)
                        }
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => {
                    results[i] = Some(Err(produce_error(&envelope.name, &e)));
                    break;
                }
            }
        }
    }
    Queued { results, pending }
}

impl Queued {
    /// Awaits the deliveries; one result per message of `messages` (the
    /// batch given to [`queue_batch`]), in order.
    pub(super) async fn settle(self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let Queued {
            mut results,
            pending,
        } = self;
        for (i, fut) in pending {
            results[i] = Some(await_delivery(&messages[i].envelope.name, fut).await);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::publish("?", "message was not sent"))))
            .collect()
    }
}

/// Kafka headers for an envelope: the same set as [`Envelope::wire_headers`]
/// but for a correlation id equal to the event id (the default, which the
/// envelope does not store, or one carried over from an outbox row or a
/// consumed message: a consumer answers it from the event id), written
/// straight into librdkafka's header list without an intermediate map.
/// Every header costs librdkafka an allocation on both sides.
fn kafka_headers(envelope: &Envelope) -> OwnedHeaders {
    use crate::event::headers::{CORRELATION_ID, EVENT_ID, EVENT_NAME, OCCURRED_AT};
    let mut id = uuid::Uuid::encode_buffer();
    let id = envelope.id.hyphenated().encode_lower(&mut id);
    let mut h = OwnedHeaders::new_with_capacity(envelope.headers.len() + 3);
    for (k, v) in &envelope.headers {
        let default_correlation = k == CORRELATION_ID && v == id;
        if k != EVENT_ID && k != EVENT_NAME && k != OCCURRED_AT && !default_correlation {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
    }
    h.insert(Header {
        key: EVENT_ID,
        value: Some(id.as_bytes()),
    })
    .insert(Header {
        key: EVENT_NAME,
        value: Some(envelope.name.as_bytes()),
    })
    .insert(Header {
        key: OCCURRED_AT,
        value: Some(wire::Rfc3339::new(&envelope.occurred_at).as_bytes()),
    })
}

pub(super) fn record<'a>(topic: &'a str, envelope: &'a Envelope) -> FutureRecord<'a, str, [u8]> {
    FutureRecord {
        topic,
        partition: None,
        payload: Some(envelope.payload.as_slice()),
        key: envelope.partition_key.as_deref(),
        timestamp: Some(envelope.occurred_at.timestamp_millis()),
        headers: Some(kafka_headers(envelope)),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;
    use crate::event::headers::CORRELATION_ID;

    fn names_and_values(h: &OwnedHeaders) -> Vec<(String, String)> {
        (0..h.count())
            .map(|i| {
                let h = h.get(i);
                let v = String::from_utf8_lossy(h.value.unwrap_or_default());
                (h.key.to_owned(), v.into_owned())
            })
            .collect()
    }

    #[test]
    fn a_correlation_id_equal_to_the_event_id_is_not_a_header() {
        let mut e = Envelope {
            id: uuid::Uuid::now_v7(),
            name: "Ping".into(),
            occurred_at: chrono::Utc::now(),
            headers: crate::Headers::new(),
            partition_key: None,
            payload: b"{}".to_vec(),
        };
        let id = e.id.to_string();
        let keys = |e: &Envelope| -> Vec<String> {
            names_and_values(&kafka_headers(e))
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        // the default: not stored, not sent
        assert_eq!(keys(&e), [EVENT_ID, EVENT_NAME, OCCURRED_AT]);
        // carried in the headers (an outbox row, a consumed message): not sent
        e.headers.insert(CORRELATION_ID.into(), id.clone());
        e.headers.insert("tenant".into(), "acme".into());
        assert_eq!(keys(&e), ["tenant", EVENT_ID, EVENT_NAME, OCCURRED_AT]);
        // another one is sent
        e.headers.insert(CORRELATION_ID.into(), "conv-1".into());
        let sent = names_and_values(&kafka_headers(&e));
        assert!(sent.contains(&(CORRELATION_ID.to_owned(), "conv-1".to_owned())));
        assert!(sent.contains(&(EVENT_ID.to_owned(), id)));
    }
}
