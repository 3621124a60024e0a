use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "order.created", max_priority = 256)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
