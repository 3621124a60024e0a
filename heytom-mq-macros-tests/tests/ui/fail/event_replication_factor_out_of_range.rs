use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", replication_factor = 40000)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
