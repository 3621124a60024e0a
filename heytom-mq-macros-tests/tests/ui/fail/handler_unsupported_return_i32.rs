use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler]
async fn on_ping(_event: Ping) -> i32 {
    1
}

fn main() {}
