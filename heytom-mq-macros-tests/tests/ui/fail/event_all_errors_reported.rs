use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "order events", compression_type = "brotli", num_partitions = 0, acks = "2", partition_key = missing)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
