use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

// Every key RabbitMQ refuses on a stream, each reported at its value.
#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(
    routing_key = "order.created",
    queue_type = "stream",
    message_ttl = 60000,
    max_length = 10000,
    max_priority = 10,
    dead_letter_exchange = "order.dlx",
    dead_letter_routing_key = "order.dead",
    overflow = "reject-publish"
)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
