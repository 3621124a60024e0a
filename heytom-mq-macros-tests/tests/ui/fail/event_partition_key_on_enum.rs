use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", partition_key = order_id)]
enum OrderEvent {
    Created { order_id: String },
    Cancelled { order_id: String },
}

fn main() {}
