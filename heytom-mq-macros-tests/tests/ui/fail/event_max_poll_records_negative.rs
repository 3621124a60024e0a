use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", max_poll_records = -5)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
