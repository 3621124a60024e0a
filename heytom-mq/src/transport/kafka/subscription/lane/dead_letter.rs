//! A dead letter produced with its origin, tried a few times, else the
//! message is handed back (its offset never stored past it).

use super::*;
use crate::event::headers::{
    DEAD_LETTER_GROUP, DEAD_LETTER_OFFSET, DEAD_LETTER_PARTITION, DEAD_LETTER_TOPIC,
};

/// Tries of a dead letter before the message is handed back.
const DEAD_LETTER_TRIES: u32 = 3;

/// Produces a dead letter and waits for the broker's acknowledgement (at
/// most `operation_timeout` per try); true once it is safely written. When
/// it cannot be written ([`DEAD_LETTER_TRIES`] tries, or the subscription
/// stops or loses the partition meanwhile) the message is handed back like
/// a requeue: its offset is not stored, nor any after it, and it comes again.
pub(super) async fn dead_letter(
    shared: &Arc<Shared>,
    lane: &Lane,
    partition: i32,
    d: &Current<'_>,
    dead: &DeadLetter,
) -> bool {
    // The original headers byte for byte, then why and where from.
    let original = d.message.headers();
    let origin = [
        (DEAD_LETTER_TOPIC, shared.topic.clone()),
        (DEAD_LETTER_PARTITION, partition.to_string()),
        (DEAD_LETTER_OFFSET, d.offset.to_string()),
        (DEAD_LETTER_GROUP, shared.group.clone()),
    ];
    let added = dead.headers_from(&origin);
    let event_id = original
        .iter()
        .find(|(k, _)| *k == headers::EVENT_ID.as_bytes())
        .and_then(|(_, v)| *v)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    dead.log(&origin, &event_id, &shared.dead_letter_topic);
    let timeout = shared.transport.options.operation_timeout;
    let mut backoff = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match shared.transport.dead_letter_producer() {
            Ok(producer) => {
                let mut kh = OwnedHeaders::new_with_capacity(original.len() + added.len());
                for (k, v) in &original {
                    // A dead-letter header from an earlier trip is replaced, not repeated.
                    let Ok(k) = std::str::from_utf8(k) else {
                        continue;
                    };
                    if added.contains_key(k) {
                        continue;
                    }
                    kh = kh.insert(Header { key: k, value: *v });
                }
                for (k, v) in &added {
                    kh = kh.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                let record = FutureRecord {
                    topic: shared.dead_letter_topic.as_str(),
                    partition: None,
                    payload: Some(d.message.payload()),
                    key: d.message.key(),
                    timestamp: None,
                    headers: Some(kh),
                };
                // Bounded: librdkafka may keep a message queued for minutes.
                match tokio::time::timeout(timeout, producer.send(record, Timeout::After(timeout)))
                    .await
                {
                    Ok(sent) => sent.map(|_| ()).map_err(|(e, _)| e.to_string()),
                    Err(_) => Err(format!("no acknowledgement within {timeout:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let error = match result {
            Ok(()) => return true,
            Err(e) => e,
        };
        let gone = shared.stopping() || lane.generation() != d.generation;
        if gone || tries >= DEAD_LETTER_TRIES {
            tracing::warn!(dead_letter_topic = %shared.dead_letter_topic, topic = %shared.topic, partition, offset = d.offset, %error, tries, "producing the dead letter failed; handing the message back");
            return hand_back(shared, lane, partition, d).await;
        }
        tracing::warn!(dead_letter_topic = %shared.dead_letter_topic, %error, ?backoff, "producing dead letter failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
