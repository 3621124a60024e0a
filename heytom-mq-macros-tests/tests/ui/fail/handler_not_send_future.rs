use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};
use std::rc::Rc;

#[derive(Event, Serialize, Deserialize)]
struct Ping;

async fn yield_now() {}

#[handler]
async fn on_ping(_event: Ping) {
    let counter = Rc::new(1);
    yield_now().await;
    let _ = counter;
}

fn main() {}
