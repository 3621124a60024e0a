#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Ping;

#[handler(idempotent)]
async fn flag(_event: Ping) {}

#[handler(idempotent = true, name = "spelled-out")]
async fn spelled_out(_event: Ping, _ctx: Context) {}

#[handler(idempotent = false)]
async fn turned_off(_event: Ping) {}

#[handler]
async fn plain(_event: Ping) {}

fn main() {
    let find = |n: &str| heytom_mq::registered_handlers().find(|h| h.name == n).expect("registered");
    assert!(find("flag").idempotent);
    assert!(find("spelled-out").idempotent);
    assert!(!find("turned_off").idempotent);
    assert!(!find("plain").idempotent);
    assert!(find("plain").transactions.iter().all(|t| t().is_none()));
}
