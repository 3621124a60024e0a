#![deny(warnings)]
use heytom_mq::prelude::*;
use heytom_mq::ExchangeType;
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
    dead_letter_routing_key = "order.dead"
)]
pub struct OrderPlaced {
    pub order_id: String,
}

fn main() {
    let r = OrderPlaced::route().as_rabbitmq().expect("rabbitmq route");
    assert_eq!(r.routing_key, "order.created");
    assert_eq!(r.exchange_type, Some(ExchangeType::Topic));
    assert_eq!(r.max_priority, Some(10));
    assert_eq!(r.dead_letter_routing_key, Some("order.dead"));
}
