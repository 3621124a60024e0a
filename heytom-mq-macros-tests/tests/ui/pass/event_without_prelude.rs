#![deny(warnings)]
//! Only absolute paths in the generated code: no `use` needed but the derive.

#[derive(heytom_mq::Event, serde::Serialize, serde::Deserialize)]
#[kafka(topic = "bare", partition_key = id, compression_type = "zstd", acks = 1)]
pub struct Bare {
    pub id: u64,
}

// Names the generated code must not clash with.
#[allow(dead_code, non_camel_case_types)]
struct ROUTE;
#[allow(dead_code, non_camel_case_types)]
struct route;
#[allow(dead_code)]
struct Option;
#[allow(dead_code)]
struct Some;
#[allow(dead_code)]
struct String;

fn main() {
    use heytom_mq::Event as _;
    assert_eq!(Bare::NAME, "Bare");
    assert_eq!(Bare { id: 1 }.partition_key().as_deref(), ::core::option::Option::Some("1"));
}
