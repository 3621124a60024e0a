use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", session_timeout_ms = -10)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
