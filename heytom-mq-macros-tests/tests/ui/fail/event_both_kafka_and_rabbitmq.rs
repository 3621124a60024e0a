use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders")]
#[rabbitmq(routing_key = "order.created")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
