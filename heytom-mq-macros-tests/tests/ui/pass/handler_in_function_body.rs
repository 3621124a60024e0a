#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

fn main() {
    #[handler]
    async fn local(_event: Ping) -> bool {
        true
    }
    assert!(heytom_mq::registered_handlers().any(|h| h.name == "local"));
}
