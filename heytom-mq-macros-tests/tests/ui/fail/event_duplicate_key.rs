use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", acks = "all", topic = "orders-v2")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
