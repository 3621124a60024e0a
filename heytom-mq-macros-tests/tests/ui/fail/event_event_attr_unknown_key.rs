use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(nmae = "Orders.Created")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
