#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler]
async fn unit(_event: Ping) {}

#[handler]
async fn explicit_unit(_event: Ping) -> () {}

#[handler]
async fn boolean(_event: Ping) -> bool {
    true
}

#[handler]
async fn handler_error(_event: Ping) -> Result<(), HandlerError> {
    Ok(())
}

#[handler]
async fn box_error(_event: Ping) -> Result<(), BoxError> {
    Ok(())
}

#[handler]
async fn anyhow_result(_event: Ping) -> anyhow::Result<()> {
    Ok(())
}

#[handler]
async fn io_error(_event: Ping) -> Result<(), std::io::Error> {
    Ok(())
}

#[handler]
async fn string_error(_event: Ping) -> std::result::Result<(), String> {
    Ok(())
}

fn main() {
    assert_eq!(heytom_mq::registered_handlers().count(), 8);
}
