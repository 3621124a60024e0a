use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(name = "")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
