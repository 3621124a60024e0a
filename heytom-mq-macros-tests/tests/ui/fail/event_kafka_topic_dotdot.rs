use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "..")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
