//! `send_batch` on Kafka: a batch serialized up front, each message handed
//! to librdkafka straight from the shared payload buffer, with its headers
//! written from stack buffers, while earlier ones are in flight.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::{await_delivery, produce_error, topic_of, wire, ProducerKey, TransportInner};
use crate::error::Result;
use crate::event::headers::{CORRELATION_ID, EVENT_ID, EVENT_NAME, OCCURRED_AT};
use crate::transport::EncodedBatch;

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
        // The same headers, in the same order, as an envelope's.
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: CORRELATION_ID,
                value: Some(id),
            })
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
