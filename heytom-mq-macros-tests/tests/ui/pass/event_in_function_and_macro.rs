#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

macro_rules! event {
    ($name:ident, $topic:expr, $partitions:expr) => {
        #[derive(Event, Serialize, Deserialize)]
        #[kafka(topic = $topic, num_partitions = $partitions, acks = -1)]
        pub struct $name {
            pub id: u32,
        }
    };
}

event!(FromMacro, "from-macro", 6);

fn main() {
    #[derive(Event, Serialize, Deserialize)]
    #[kafka(topic = "local", partition_key = id)]
    struct Local {
        id: u32,
    }
    assert_eq!(Local { id: 3 }.partition_key().as_deref(), Some("3"));
    assert_eq!(FromMacro::route().as_kafka().and_then(|k| k.num_partitions), Some(6));
    assert_eq!(FromMacro { id: 1 }.id, 1);
}
