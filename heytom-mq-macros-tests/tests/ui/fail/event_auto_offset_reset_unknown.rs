use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", auto_offset_reset = "smallest")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
