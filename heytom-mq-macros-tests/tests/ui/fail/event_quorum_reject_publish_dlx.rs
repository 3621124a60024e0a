use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(
    routing_key = "order.created",
    queue_type = "quorum",
    max_length = 100,
    overflow = "reject-publish-dlx",
    dead_letter_exchange = "order.dlx"
)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
