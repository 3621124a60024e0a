#![deny(warnings)]
#[derive(heytom_mq::Event, serde::Serialize, serde::Deserialize)]
struct Ping;

#[heytom_mq::handler]
async fn on_ping(_event: Ping, _ctx: heytom_mq::Context, heytom_mq::State(_n): heytom_mq::State<u32>) -> bool {
    true
}

// Names the generated code must not clash with.
#[allow(dead_code)]
struct Result;
#[allow(dead_code)]
struct Ok;
#[allow(dead_code)]
struct Box;

fn main() {
    assert_eq!(heytom_mq::registered_handlers().count(), 1);
}
