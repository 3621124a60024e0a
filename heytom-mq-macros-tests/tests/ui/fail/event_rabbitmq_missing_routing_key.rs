use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(exchange = "order.exchange")]
struct OrderCreated {
    order_id: String,
}

fn main() {}
