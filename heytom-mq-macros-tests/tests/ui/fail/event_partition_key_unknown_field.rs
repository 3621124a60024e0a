use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", partition_key = orderid)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
