use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(topic = "order-events", partition_key = order_id, acks = "all")]
pub struct OrderCreated {
    pub order_id: String,
    pub amount: f64,
}

#[handler]
async fn on_order(event: OrderCreated, _ctx: Context) -> Result<(), HandlerError> {
    let _ = event;
    Ok(())
}

#[test]
fn smoke() {
    assert_eq!(OrderCreated::NAME, "OrderCreated");
    assert!(heytom_mq::handler::registered_handlers().any(|h| h.name == "on_order"));
}
