use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler(name)]
async fn on_ping(_event: Ping) {}

fn main() {}
