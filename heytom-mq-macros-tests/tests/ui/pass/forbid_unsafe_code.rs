#![forbid(unsafe_code)]
#![deny(warnings)]
//! Crates that forbid `unsafe` can still derive events and register handlers.
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "safe")]
struct Safe;

#[handler]
async fn on_safe(_event: Safe) {}

fn main() {
    assert!(heytom_mq::registered_event("Safe").is_some());
    assert_eq!(heytom_mq::registered_handlers().count(), 1);
}
