use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", num_partitions = "3")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
