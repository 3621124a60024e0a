//! The AsyncAPI channel, operation and message bindings of a route: what
//! `#[kafka(...)]` and `#[rabbitmq(...)]` say, in the Kafka (0.5.0) and
//! AMQP (0.3.0) binding objects; what those objects have no field for
//! (queue arguments, producer settings) in `x-heytom-*` extensions.

use serde_json::{json, Map, Value};

use crate::event::{KafkaRoute, RabbitMqRoute};

pub(super) const KAFKA_BINDING: &str = "0.5.0";
pub(super) const AMQP_BINDING: &str = "0.3.0";

/// Inserts `key: value` when `value` is `Some`.
fn put<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

/// The Kafka channel binding of a topic: partitions, replicas, topic
/// configuration (`retention.ms`, `compression.type`).
pub(super) fn kafka_channel(k: &KafkaRoute) -> Value {
    let mut b = Map::new();
    b.insert("topic".into(), k.topic.into());
    put(&mut b, "partitions", k.num_partitions.filter(|n| *n >= 1));
    put(&mut b, "replicas", k.replication_factor.filter(|n| *n >= 1));
    let mut config = Map::new();
    put(
        &mut config,
        "retention.ms",
        k.retention_ms.and_then(|ms| i64::try_from(ms).ok()),
    );
    put(
        &mut config,
        "compression.type",
        k.compression_type.map(|c| c.as_str()),
    );
    if !config.is_empty() {
        b.insert("topicConfiguration".into(), Value::Object(config));
    }
    b.insert("bindingVersion".into(), KAFKA_BINDING.into());
    json!({ "kafka": b })
}

/// The producer and consumer settings of a Kafka route that the binding
/// objects have no field for.
pub(super) fn kafka_settings(k: &KafkaRoute) -> Option<Value> {
    let mut s = Map::new();
    put(&mut s, "acks", k.acks.map(|a| a.as_str()));
    put(&mut s, "enable.idempotence", k.enable_idempotence);
    put(
        &mut s,
        "auto.offset.reset",
        k.auto_offset_reset.map(|a| a.as_str()),
    );
    put(&mut s, "enable.auto.commit", k.enable_auto_commit);
    put(&mut s, "session.timeout.ms", k.session_timeout_ms);
    put(&mut s, "max.poll.records", k.max_poll_records);
    (!s.is_empty()).then_some(Value::Object(s))
}

/// The Kafka operation binding of a consumer group.
pub(super) fn kafka_receive(group: &str) -> Value {
    json!({ "kafka": {
        "groupId": { "type": "string", "enum": [group] },
        "bindingVersion": KAFKA_BINDING,
    }})
}

/// The Kafka message binding: the key, when the event has a partition key.
pub(super) fn kafka_message(k: &KafkaRoute) -> Option<Value> {
    let field = k.partition_key?;
    Some(json!({ "kafka": {
        "key": {
            "type": "string",
            "description": format!("the event's `{field}` field"),
        },
        "bindingVersion": KAFKA_BINDING,
    }}))
}

/// The AMQP channel binding of an exchange and routing key (`is: routingKey`).
pub(super) fn amqp_exchange(r: &RabbitMqRoute, exchange: &str) -> Value {
    json!({ "amqp": {
        "is": "routingKey",
        "exchange": {
            "name": exchange,
            "type": r.exchange_type.map_or("topic", |t| t.as_str()),
            "durable": r.durable.unwrap_or(true),
            "autoDelete": false,
            "vhost": "/",
        },
        "bindingVersion": AMQP_BINDING,
    }})
}

/// The queue arguments (`x-*`) heytom-mq declares a route's queue with.
pub(super) fn amqp_queue_arguments(r: &RabbitMqRoute) -> Map<String, Value> {
    let mut a = Map::new();
    put(&mut a, "x-queue-type", r.queue_type.map(|t| t.as_str()));
    put(&mut a, "x-message-ttl", r.message_ttl);
    put(&mut a, "x-max-length", r.max_length);
    if r.max_length.is_some() {
        let overflow = r.overflow.unwrap_or(crate::event::Overflow::RejectPublish);
        a.insert("x-overflow".into(), overflow.as_str().into());
    }
    put(&mut a, "x-max-priority", r.max_priority);
    put(&mut a, "x-dead-letter-exchange", r.dead_letter_exchange);
    put(
        &mut a,
        "x-dead-letter-routing-key",
        r.dead_letter_routing_key,
    );
    a
}

/// The AMQP channel binding of a queue (`is: queue`), with its arguments
/// and where it is bound in `x-heytom-*` extensions.
pub(super) fn amqp_queue(
    queue: &str,
    durable: bool,
    arguments: Map<String, Value>,
    bound_to: Vec<Value>,
    dead_letters: Value,
) -> Value {
    json!({ "amqp": {
        "is": "queue",
        "queue": {
            "name": queue,
            "durable": durable,
            "exclusive": false,
            "autoDelete": false,
            "vhost": "/",
        },
        "x-heytom-arguments": arguments,
        "x-heytom-bindings": bound_to,
        "x-heytom-dead-letters": dead_letters,
        "bindingVersion": AMQP_BINDING,
    }})
}

/// Where a queue's dead letters go: its dead-letter exchange (with the
/// routing key), or `<queue>.dlq`.
pub(super) fn amqp_dead_letters(r: &RabbitMqRoute, queue: &str) -> Value {
    match r.dead_letter_exchange {
        Some(dlx) => json!({
            "exchange": dlx,
            "routingKey": r.dead_letter_routing_key,
            "queue": format!("{dlx}.dlq"),
        }),
        None => json!({ "queue": format!("{queue}.dlq") }),
    }
}

/// The AMQP operation binding of a publish: persistent, mandatory, with a timestamp.
pub(super) fn amqp_send() -> Value {
    json!({ "amqp": {
        "deliveryMode": 2,
        "mandatory": true,
        "timestamp": true,
        "bindingVersion": AMQP_BINDING,
    }})
}

/// The AMQP operation binding of a consumer: manual acknowledgements.
pub(super) fn amqp_receive() -> Value {
    json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING } })
}

/// The AMQP message binding: the `type` property is the event name.
pub(super) fn amqp_message(name: &str) -> Value {
    json!({ "amqp": {
        "messageType": name,
        "bindingVersion": AMQP_BINDING,
    }})
}
