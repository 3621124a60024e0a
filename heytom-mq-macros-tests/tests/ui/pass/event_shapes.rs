#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Unit;

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "tuples")]
struct Tuple(pub String, pub u8);

#[derive(Event, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[rabbitmq(routing_key = "shipments")]
enum Shipment {
    Dispatched { parcel: String },
    Delivered,
}

#[derive(Event, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[event(name = "users.Renamed")]
#[kafka(topic = "users", partition_key = r#type)]
struct Renamed {
    #[serde(rename = "t")]
    pub r#type: u32,
}

fn main() {
    assert_eq!(Unit::NAME, "Unit");
    assert_eq!(Tuple::NAME, "Tuple");
    assert_eq!(Shipment::NAME, "Shipment");
    assert_eq!(Renamed::NAME, "users.Renamed");
    assert_eq!(Renamed { r#type: 5 }.partition_key().as_deref(), Some("5"));
    let _ = (Tuple(String::new(), 0).1, Shipment::Delivered, Shipment::Dispatched { parcel: String::new() });
}
