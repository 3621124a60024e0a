#![deny(warnings)]
//! `#[cfg]` below `#[handler]` applies to the generated shim and registration too.
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler]
#[cfg(any())]
async fn compiled_out(_event: Ping) {}

#[handler]
#[cfg(all())]
async fn compiled_in(_event: Ping) {}

fn main() {
    let names: Vec<&str> = heytom_mq::registered_handlers().map(|h| h.name).collect();
    assert_eq!(names, ["compiled_in"]);
}
