use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", enable_idempotence = true, acks = "1")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
