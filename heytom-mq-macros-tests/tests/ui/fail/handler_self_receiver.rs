use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

struct Service;

impl Service {
    #[handler]
    async fn on_ping(&self, _event: Ping) {}
}

fn main() {}
