#![deny(warnings)]
use heytom_mq::prelude::*;
use heytom_mq::{Acks, AutoOffsetReset, CompressionType};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(
    topic = "order-events",
    group_id = "order-service-group",
    partition_key = order_id,
    num_partitions = 3,
    replication_factor = 2,
    retention_ms = 86400000,
    compression_type = "gzip",
    enable_idempotence = true,
    acks = "all",
    auto_offset_reset = "earliest",
    enable_auto_commit = false,
    session_timeout_ms = 10000,
    max_poll_records = 500
)]
pub struct OrderCreated {
    pub order_id: String,
    pub amount: f64,
}

fn main() {
    let k = OrderCreated::route().as_kafka().expect("kafka route");
    assert_eq!(k.topic, "order-events");
    assert_eq!(k.compression_type, Some(CompressionType::Gzip));
    assert_eq!(k.acks, Some(Acks::All));
    assert_eq!(k.auto_offset_reset, Some(AutoOffsetReset::Earliest));
    let e = OrderCreated { order_id: "o-1".into(), amount: 2.0 };
    assert_eq!(e.partition_key().as_deref(), Some("o-1"));
    assert_eq!(e.amount, 2.0);
}
