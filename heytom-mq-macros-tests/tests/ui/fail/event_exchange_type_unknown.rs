use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "order.created", exchange_type = "x-delayed-message")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
