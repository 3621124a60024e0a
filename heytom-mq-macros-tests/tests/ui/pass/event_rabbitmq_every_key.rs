#![deny(warnings)]
use heytom_mq::prelude::*;
use heytom_mq::{ExchangeType, Overflow, QueueType};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "order.created",
    exchange = "order.exchange",
    exchange_type = "topic",
    queue_name = "order.created.queue",
    durable = true,
    message_ttl = 60000,
    max_length = 10000,
    max_priority = 10,
    dead_letter_exchange = "order.dlx",
    dead_letter_routing_key = "order.dead",
    overflow = "reject-publish-dlx",
    queue_type = "classic"
)]
pub struct OrderPlaced {
    pub order_id: String,
}

// What a quorum queue accepts.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "payment.taken",
    queue_type = "quorum",
    durable = true,
    message_ttl = 60000,
    max_length = 10000,
    overflow = "drop-head",
    dead_letter_exchange = "payment.dlx"
)]
pub struct PaymentTaken {
    pub payment_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(routing_key = "audit.logged", queue_type = "stream", queue_name = "audit")]
pub struct AuditLogged {
    pub line: String,
}

fn main() {
    let r = OrderPlaced::route().as_rabbitmq().expect("rabbitmq route");
    assert_eq!(r.routing_key, "order.created");
    assert_eq!(r.exchange_type, Some(ExchangeType::Topic));
    assert_eq!(r.max_priority, Some(10));
    assert_eq!(r.dead_letter_routing_key, Some("order.dead"));
    assert_eq!(r.overflow, Some(Overflow::RejectPublishDlx));
    assert_eq!(r.queue_type, Some(QueueType::Classic));
    let r = PaymentTaken::route().as_rabbitmq().expect("rabbitmq route");
    assert_eq!(r.queue_type, Some(QueueType::Quorum));
    assert_eq!(r.overflow, Some(Overflow::DropHead));
    let r = AuditLogged::route().as_rabbitmq().expect("rabbitmq route");
    assert_eq!(r.queue_type, Some(QueueType::Stream));
}
