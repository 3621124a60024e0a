use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "order.created", message_ttl = 5000000000)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
