use heytom_mq::prelude::*;

struct NotAnEvent;

#[handler]
async fn on_thing(event: NotAnEvent) {
    let _ = event;
}

fn main() {}
