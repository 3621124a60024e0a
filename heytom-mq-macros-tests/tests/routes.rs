//! `#[derive(Event)]` read back at run time: every attribute key lands in the
//! route, `NAME` and `partition_key()` behave, and the event is registered.

use heytom_mq::prelude::*;
use heytom_mq::registered_event;
use heytom_mq::{
    Acks, AutoOffsetReset, CompressionType, EventId, ExchangeType, KafkaRoute, Overflow, QueueType,
    RabbitMqRoute,
};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(
    topic = "order-events",
    group_id = "order-service-group",
    partition_key = order_id,
    num_partitions = 3,
    replication_factor = 2,
    retention_ms = 86400000,
    compression_type = "gzip",
    enable_idempotence = true,
    acks = "all",
    auto_offset_reset = "earliest",
    enable_auto_commit = false,
    session_timeout_ms = 10000,
    max_poll_records = 500
)]
pub struct OrderCreated {
    pub order_id: String,
    pub amount: f64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "order.created",
    exchange = "order.exchange",
    exchange_type = "topic",
    queue_name = "order.created.queue",
    durable = true,
    message_ttl = 60000,
    max_length = 10000,
    max_priority = 10,
    dead_letter_exchange = "order.dlx",
    dead_letter_routing_key = "order.dead",
    overflow = "drop-head",
    queue_type = "classic"
)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount: f64,
}

#[test]
fn every_kafka_key_reaches_the_route() {
    let r = OrderCreated::route().as_kafka().expect("a Kafka route");
    assert_eq!(r.topic, "order-events");
    assert_eq!(r.group_id, Some("order-service-group"));
    assert_eq!(r.partition_key, Some("order_id"));
    assert_eq!(r.num_partitions, Some(3));
    assert_eq!(r.replication_factor, Some(2));
    assert_eq!(r.retention_ms, Some(86_400_000));
    assert_eq!(r.compression_type, Some(CompressionType::Gzip));
    assert_eq!(r.enable_idempotence, Some(true));
    assert_eq!(r.acks, Some(Acks::All));
    assert_eq!(r.auto_offset_reset, Some(AutoOffsetReset::Earliest));
    assert_eq!(r.enable_auto_commit, Some(false));
    assert_eq!(r.session_timeout_ms, Some(10_000));
    assert_eq!(r.max_poll_records, Some(500));
    assert_eq!(OrderCreated::NAME, "OrderCreated");
}

#[test]
fn every_rabbitmq_key_reaches_the_route() {
    let r = OrderPlaced::route()
        .as_rabbitmq()
        .expect("a RabbitMq route");
    assert_eq!(r.routing_key, "order.created");
    assert_eq!(r.exchange, Some("order.exchange"));
    assert_eq!(r.exchange_type, Some(ExchangeType::Topic));
    assert_eq!(r.queue_name, Some("order.created.queue"));
    assert_eq!(r.durable, Some(true));
    assert_eq!(r.message_ttl, Some(60_000));
    assert_eq!(r.max_length, Some(10_000));
    assert_eq!(r.max_priority, Some(10));
    assert_eq!(r.dead_letter_exchange, Some("order.dlx"));
    assert_eq!(r.dead_letter_routing_key, Some("order.dead"));
    assert_eq!(r.overflow, Some(Overflow::DropHead));
    assert_eq!(r.queue_type, Some(QueueType::Classic));
    assert_eq!(
        OrderPlaced {
            order_id: "o".into(),
            amount: 1.0
        }
        .partition_key(),
        None
    );
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "minimal")]
struct KafkaMinimal;

#[derive(Event, Serialize, Deserialize)]
#[rabbitmq(routing_key = "minimal")]
struct RabbitMinimal;

#[test]
fn keys_left_out_are_none() {
    assert_eq!(
        KafkaMinimal::route(),
        &Route::Kafka(KafkaRoute::new("minimal"))
    );
    assert_eq!(
        RabbitMinimal::route(),
        &Route::RabbitMq(RabbitMqRoute::new("minimal"))
    );
}

#[derive(Event, Serialize, Deserialize)]
struct Plain;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "billing.InvoiceIssued.v2")]
#[kafka(topic = "invoices")]
struct InvoiceIssued {
    id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "Renamed")]
struct RenamedDefault(u32);

#[test]
fn names_and_default_route() {
    assert_eq!(Plain::NAME, "Plain");
    assert_eq!(Plain::route(), &Route::Default);
    assert_eq!(InvoiceIssued::NAME, "billing.InvoiceIssued.v2");
    assert_eq!(
        InvoiceIssued::route().as_kafka().map(|k| k.topic),
        Some("invoices")
    );
    assert_eq!(RenamedDefault::NAME, "Renamed");
    assert_eq!(RenamedDefault::route(), &Route::Default);
    assert_eq!(InvoiceIssued { id: 1 }.partition_key(), None);
    assert_eq!(RenamedDefault(1).partition_key(), None);
}

#[test]
fn derived_events_are_registered_by_name() {
    let reg = registered_event("billing.InvoiceIssued.v2").expect("registered");
    assert_eq!((reg.route)(), InvoiceIssued::route());
    let reg = registered_event("OrderPlaced").expect("registered");
    assert_eq!((reg.route)(), OrderPlaced::route());
    assert!(registered_event("Plain").is_some());
    assert!(registered_event("Renamed").is_some());
    // The type name is not registered when NAME overrides it.
    assert!(registered_event("InvoiceIssued").is_none());
}

macro_rules! acks_case {
    ($name:ident, $acks:expr) => {
        #[derive(Event, Serialize, Deserialize)]
        #[kafka(topic = "acks", acks = $acks)]
        struct $name;
    };
}
acks_case!(AcksStrZero, "0");
acks_case!(AcksStrOne, "1");
acks_case!(AcksStrAll, "all");
acks_case!(AcksStrMinusOne, "-1");
acks_case!(AcksIntZero, 0);
acks_case!(AcksIntOne, 1);
acks_case!(AcksIntMinusOne, -1);

fn acks<E: Event>() -> Option<Acks> {
    E::route().as_kafka().and_then(|k| k.acks)
}

#[test]
fn acks_accepts_strings_and_integers() {
    assert_eq!(acks::<AcksStrZero>(), Some(Acks::None));
    assert_eq!(acks::<AcksStrOne>(), Some(Acks::Leader));
    assert_eq!(acks::<AcksStrAll>(), Some(Acks::All));
    assert_eq!(acks::<AcksStrMinusOne>(), Some(Acks::All));
    assert_eq!(acks::<AcksIntZero>(), Some(Acks::None));
    assert_eq!(acks::<AcksIntOne>(), Some(Acks::Leader));
    assert_eq!(acks::<AcksIntMinusOne>(), Some(Acks::All));
}

macro_rules! kafka_case {
    ($name:ident, $key:ident = $value:expr) => {
        #[derive(Event, Serialize, Deserialize)]
        #[kafka(topic = "values", $key = $value)]
        struct $name;
    };
}
kafka_case!(CompressionNone, compression_type = "none");
kafka_case!(CompressionSnappy, compression_type = "snappy");
kafka_case!(CompressionLz4, compression_type = "lz4");
kafka_case!(CompressionZstd, compression_type = "zstd");
kafka_case!(OffsetLatest, auto_offset_reset = "latest");
kafka_case!(BigRetention, retention_ms = 18446744073709551615);
kafka_case!(ZeroRetention, retention_ms = 0);
kafka_case!(MaxPartitions, num_partitions = 2147483647);
kafka_case!(SuffixedLiteral, max_poll_records = 100u32);

#[test]
fn kafka_value_sets_and_bounds() {
    let k = |r: &'static Route| r.as_kafka().cloned().expect("kafka");
    assert_eq!(
        k(CompressionNone::route()).compression_type,
        Some(CompressionType::None)
    );
    assert_eq!(
        k(CompressionSnappy::route()).compression_type,
        Some(CompressionType::Snappy)
    );
    assert_eq!(
        k(CompressionLz4::route()).compression_type,
        Some(CompressionType::Lz4)
    );
    assert_eq!(
        k(CompressionZstd::route()).compression_type,
        Some(CompressionType::Zstd)
    );
    assert_eq!(
        k(OffsetLatest::route()).auto_offset_reset,
        Some(AutoOffsetReset::Latest)
    );
    assert_eq!(k(BigRetention::route()).retention_ms, Some(u64::MAX));
    assert_eq!(k(ZeroRetention::route()).retention_ms, Some(0));
    assert_eq!(k(MaxPartitions::route()).num_partitions, Some(i32::MAX));
    assert_eq!(k(SuffixedLiteral::route()).max_poll_records, Some(100));
}

macro_rules! exchange_case {
    ($name:ident, $ty:expr) => {
        #[derive(Event, Serialize, Deserialize)]
        #[rabbitmq(routing_key = "x", exchange_type = $ty, max_priority = 255)]
        struct $name;
    };
}
exchange_case!(ExchangeDirect, "direct");
exchange_case!(ExchangeFanout, "fanout");
exchange_case!(ExchangeHeaders, "headers");

#[test]
fn exchange_types() {
    let r = |r: &'static Route| r.as_rabbitmq().cloned().expect("rabbitmq");
    assert_eq!(
        r(ExchangeDirect::route()).exchange_type,
        Some(ExchangeType::Direct)
    );
    assert_eq!(
        r(ExchangeFanout::route()).exchange_type,
        Some(ExchangeType::Fanout)
    );
    assert_eq!(
        r(ExchangeHeaders::route()).exchange_type,
        Some(ExchangeType::Headers)
    );
    assert_eq!(r(ExchangeHeaders::route()).max_priority, Some(255));
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "keys", partition_key = customer_id)]
struct ByInteger {
    customer_id: i64,
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "keys", partition_key = "id")]
struct ByStringLiteralKey {
    id: EventId,
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "keys", partition_key = tenant)]
struct ByOptional {
    tenant: Option<String>,
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "keys", partition_key = r#type)]
struct ByRawIdentifier {
    r#type: char,
}

#[derive(Event, Serialize, Deserialize)]
#[kafka(topic = "keys", partition_key = "type")]
struct ByRawIdentifierNamedAsString {
    r#type: bool,
}

#[test]
fn partition_key_values() {
    assert_eq!(
        ByInteger { customer_id: -42 }.partition_key().as_deref(),
        Some("-42")
    );
    let id = EventId::now_v7();
    assert_eq!(
        ByStringLiteralKey { id }.partition_key(),
        Some(id.to_string())
    );
    assert_eq!(
        ByOptional {
            tenant: Some("acme".into())
        }
        .partition_key()
        .as_deref(),
        Some("acme")
    );
    assert_eq!(ByOptional { tenant: None }.partition_key(), None);
    assert_eq!(
        ByRawIdentifier { r#type: 'x' }.partition_key().as_deref(),
        Some("x")
    );
    assert_eq!(
        ByRawIdentifier::route()
            .as_kafka()
            .and_then(|k| k.partition_key),
        Some("type")
    );
    assert_eq!(
        ByRawIdentifierNamedAsString { r#type: true }
            .partition_key()
            .as_deref(),
        Some("true")
    );
    let order = OrderCreated {
        order_id: "ord-7".into(),
        amount: 3.5,
    };
    assert_eq!(order.partition_key().as_deref(), Some("ord-7"));
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[kafka(topic = "users")]
struct UserRenamed {
    user_id: i32,
    #[serde(rename = "displayName")]
    name: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "kind")]
#[rabbitmq(routing_key = "shipment")]
enum ShipmentEvent {
    Dispatched { parcel: String },
    Delivered { parcel: String, signed_by: String },
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
struct Tuple(String, u8);

#[test]
fn serde_attributes_and_shapes_are_untouched() {
    let user = UserRenamed {
        user_id: 1,
        name: "Ann".into(),
    };
    let env = heytom_mq::Envelope::new(&user).expect("serializes");
    assert_eq!(
        std::str::from_utf8(&env.payload).expect("utf-8"),
        r#"{"userId":1,"displayName":"Ann"}"#
    );
    assert_eq!(env.decode::<UserRenamed>().expect("decodes"), user);
    assert_eq!(env.name, "UserRenamed");

    let shipment = ShipmentEvent::Delivered {
        parcel: "p1".into(),
        signed_by: "Bo".into(),
    };
    let env = heytom_mq::Envelope::new(&shipment).expect("serializes");
    assert_eq!(env.decode::<ShipmentEvent>().expect("decodes"), shipment);
    assert_eq!(ShipmentEvent::NAME, "ShipmentEvent");
    assert_eq!(shipment.partition_key(), None);
    let _ = ShipmentEvent::Dispatched {
        parcel: String::new(),
    };

    assert_eq!(Tuple::NAME, "Tuple");
    let env = heytom_mq::Envelope::new(&Tuple("a".into(), 2)).expect("serializes");
    assert_eq!(
        env.decode::<Tuple>().expect("decodes"),
        Tuple("a".into(), 2)
    );
}

mod nested {
    use heytom_mq::Event;

    /// Derives without the prelude: generated code uses absolute paths only.
    #[derive(heytom_mq::Event, serde::Serialize, serde::Deserialize)]
    #[kafka(topic = "nested", partition_key = id)]
    pub struct Nested {
        pub id: u8,
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(Nested { id: 9 }.partition_key().as_deref(), Some("9"));
    }
}

mod declared_by_macro_rules {
    use heytom_mq::Event;

    /// Events declared through a `macro_rules!` that passes the attributes
    /// on: the partition key field token comes from the macro's input.
    macro_rules! keyed_event {
        ($(#[$attr:meta])* $name:ident) => {
            #[derive(heytom_mq::Event, serde::Serialize, serde::Deserialize)]
            $(#[$attr])*
            pub struct $name {
                pub key: String,
            }
        };
    }

    keyed_event!(
        #[kafka(topic = "by-macro", partition_key = key)]
        ByMacro
    );
    keyed_event!(
        #[kafka(topic = "by-macro-str", partition_key = "key")]
        ByMacroStr
    );

    #[test]
    fn partition_key_resolves_self() {
        let k = ByMacro { key: "a".into() };
        assert_eq!(k.partition_key().as_deref(), Some("a"));
        let k = ByMacroStr { key: "b".into() };
        assert_eq!(k.partition_key().as_deref(), Some("b"));
    }
}
