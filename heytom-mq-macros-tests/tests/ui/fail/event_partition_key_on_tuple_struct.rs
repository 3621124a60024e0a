use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders", partition_key = order_id)]
struct OrderCreated(String);

fn main() {}
