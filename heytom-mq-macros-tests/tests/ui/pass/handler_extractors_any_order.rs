#![deny(warnings)]
use std::sync::{Arc, Mutex};

use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "orders")]
struct OrderCreated {
    id: String,
}

#[derive(Clone)]
struct Pool;

#[handler]
async fn context_then_state(event: OrderCreated, ctx: Context, State(_pool): State<Pool>) {
    let _ = (event.id, ctx.event_id());
}

#[handler]
async fn state_then_context(_event: OrderCreated, State(_pool): State<Pool>, _ctx: Context) {}

#[handler]
async fn only_state(_event: OrderCreated, pool: State<Pool>, State(log): State<Arc<Mutex<Vec<String>>>>) {
    let _ = pool.0;
    log.lock().unwrap().push("seen".into());
}

#[handler]
async fn two_contexts(_event: OrderCreated, _a: Context, _b: Context) {}

#[handler]
async fn only_event(_event: OrderCreated) {}

fn main() {
    let requires: Vec<usize> = ["context_then_state", "state_then_context", "only_state", "two_contexts", "only_event"]
        .iter()
        .map(|n| {
            heytom_mq::registered_handlers()
                .find(|h| h.name == *n)
                .expect("registered")
                .requires
                .len()
        })
        .collect();
    assert_eq!(requires, [2, 2, 2, 2, 0]);
}
