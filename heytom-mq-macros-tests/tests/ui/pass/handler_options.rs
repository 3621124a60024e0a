#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "invoices")]
struct InvoiceIssued;

#[handler(name = "billing.invoice", group = "billing", max_attempts = 5, concurrency = 8)]
async fn all_options(_event: InvoiceIssued) {}

#[handler(name = "only-name")]
async fn only_name(_event: InvoiceIssued) {}

#[handler(max_attempts = 1,)]
async fn trailing_comma(_event: InvoiceIssued) {}

fn main() {
    let find = |n: &str| heytom_mq::registered_handlers().find(|h| h.name == n).expect("registered");
    let h = find("billing.invoice");
    assert_eq!((h.group, h.max_attempts, h.concurrency), (Some("billing"), Some(5), Some(8)));
    assert!(h.function.ends_with("::all_options"));
    assert_eq!(find("only-name").group, None);
    assert_eq!(find("trailing_comma").max_attempts, Some(1));
}
