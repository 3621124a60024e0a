use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", partition_key = lines)]
struct OrderCreated {
    order_id: String,
    lines: Vec<String>,
}

fn main() {}
