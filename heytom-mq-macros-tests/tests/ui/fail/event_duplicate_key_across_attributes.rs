use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders")]
#[kafka(topic = "orders-v2")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
