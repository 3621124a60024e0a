use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler]
async fn on_any<E: Event>(_event: E) {}

fn main() {}
