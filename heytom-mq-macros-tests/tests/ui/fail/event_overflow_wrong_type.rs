use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "order.created", max_length = 100, overflow = reject_publish)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
