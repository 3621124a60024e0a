use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(group_id = "orders-service")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
