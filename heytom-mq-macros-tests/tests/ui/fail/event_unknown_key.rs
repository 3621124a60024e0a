use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", retention = 1000)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
