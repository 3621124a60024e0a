use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

struct Pool;

#[handler]
async fn on_ping(_event: Ping, State(_pool): State<Pool>) {}

fn main() {}
