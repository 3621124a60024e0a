use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
