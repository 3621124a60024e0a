//! Validates the attributes of an event and turns them into the route model
//! `expand` generates code from. The rules are plain functions on values so
//! unit tests can call them directly.

use syn::{Ident, Type};

use crate::ctxt::Ctxt;
use crate::event::ast::{Container, Shape};
use crate::event::attr::{AcksValue, Attrs, KafkaAttr, RabbitMqAttr};
use crate::meta::{did_you_mean, one_of, Spanned};

/// A validated event: what `expand` needs.
pub struct EventModel {
    pub name: String,
    pub route: RouteModel,
    pub partition_key: Option<PartitionKey>,
}

/// The field whose value becomes the partition key.
pub struct PartitionKey {
    /// The field, spanned at the attribute value naming it.
    pub field: Ident,
    /// `Option<T>` fields give no key when `None`.
    pub optional: bool,
}

/// The route, with each enum value as its variant name in `heytom_mq`.
pub enum RouteModel {
    Kafka(KafkaModel),
    RabbitMq(RabbitMqModel),
    Default,
}

#[derive(Default)]
pub struct KafkaModel {
    pub topic: String,
    pub group_id: Option<String>,
    pub partition_key: Option<String>,
    pub num_partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub retention_ms: Option<u64>,
    pub compression_type: Option<&'static str>,
    pub enable_idempotence: Option<bool>,
    pub acks: Option<&'static str>,
    pub auto_offset_reset: Option<&'static str>,
    pub enable_auto_commit: Option<bool>,
    pub session_timeout_ms: Option<u32>,
    pub max_poll_records: Option<u32>,
}

#[derive(Default)]
pub struct RabbitMqModel {
    pub routing_key: String,
    pub exchange: Option<String>,
    pub exchange_type: Option<&'static str>,
    pub queue_name: Option<String>,
    pub durable: Option<bool>,
    pub message_ttl: Option<u32>,
    pub max_length: Option<u32>,
    pub max_priority: Option<u8>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub overflow: Option<&'static str>,
    pub queue_type: Option<&'static str>,
}

/// Validates everything, recording each problem in `cx`.
pub fn check(cx: &Ctxt, cont: &Container, attrs: &Attrs) -> EventModel {
    let name = match &attrs.name {
        Some(n) => {
            if let Err(msg) = event_name(&n.value) {
                n.error(cx, msg);
            }
            n.value.clone()
        }
        None => syn::ext::IdentExt::unraw(cont.ident).to_string(),
    };
    let mut partition_key = None;
    let route = if let Some(k) = &attrs.kafka {
        RouteModel::Kafka(check_kafka(cx, cont, k, &mut partition_key))
    } else if let Some(r) = &attrs.rabbitmq {
        RouteModel::RabbitMq(check_rabbitmq(cx, r))
    } else {
        RouteModel::Default
    };
    EventModel {
        name,
        route,
        partition_key,
    }
}

/// Checks `#[kafka(..)]` key by key, in the documented key order, so errors
/// come out in the order a reader meets them.
fn check_kafka(
    cx: &Ctxt,
    cont: &Container,
    k: &KafkaAttr,
    partition_key: &mut Option<PartitionKey>,
) -> KafkaModel {
    let topic = match &k.topic {
        Some(t) => {
            if let Err(msg) = kafka_topic(&t.value) {
                t.error(cx, msg);
            }
            t.value.clone()
        }
        None if k.keys.iter().any(|key| key == "topic") => String::new(),
        None => {
            cx.error_spanned_by(
                &k.attr,
                "#[kafka(..)] needs a topic: add `topic = \"<name>\"`",
            );
            String::new()
        }
    };
    let group_id = k.group_id.as_ref().and_then(|g| {
        if g.value.is_empty() {
            g.error(
                cx,
                "`group_id` cannot be empty; leave the key out to use the application's group",
            );
            None
        } else {
            Some(g.value.clone())
        }
    });
    if let Some(pk) = &k.partition_key {
        *partition_key = find_partition_key(cx, cont, pk);
    }
    let num_partitions = int_key(cx, "num_partitions", &k.num_partitions, 1);
    let replication_factor = int_key(cx, "replication_factor", &k.replication_factor, 1);
    let retention_ms = int_key(cx, "retention_ms", &k.retention_ms, 0);
    let compression_type = k
        .compression_type
        .as_ref()
        .and_then(|c| apply(cx, c, |s: &String| compression_type(s)));
    let acks = k.acks.as_ref().and_then(|a| apply(cx, a, acks));
    if let (Some(idem), Some(a)) = (&k.enable_idempotence, &k.acks) {
        if idem.value && acks.is_some_and(|v| v != "All") {
            a.error(
                cx,
                "`enable_idempotence = true` requires `acks = \"all\"` (Kafka refuses idempotent producing with fewer acknowledgements); set `acks = \"all\"` or leave acks out",
            );
        }
    }
    let auto_offset_reset = k
        .auto_offset_reset
        .as_ref()
        .and_then(|c| apply(cx, c, |s: &String| auto_offset_reset(s)));
    KafkaModel {
        topic,
        group_id,
        partition_key: k.partition_key.as_ref().map(|p| p.value.clone()),
        num_partitions,
        replication_factor,
        retention_ms,
        compression_type,
        enable_idempotence: k.enable_idempotence.as_ref().map(|b| b.value),
        acks,
        auto_offset_reset,
        enable_auto_commit: k.enable_auto_commit.as_ref().map(|b| b.value),
        session_timeout_ms: int_key(cx, "session_timeout_ms", &k.session_timeout_ms, 1),
        max_poll_records: int_key(cx, "max_poll_records", &k.max_poll_records, 1),
    }
}

fn check_rabbitmq(cx: &Ctxt, r: &RabbitMqAttr) -> RabbitMqModel {
    let routing_key = match &r.routing_key {
        Some(rk) => {
            if rk.value.is_empty() {
                rk.error(cx, "`routing_key` cannot be empty");
            }
            rk.value.clone()
        }
        None if r.keys.iter().any(|key| key == "routing_key") => String::new(),
        None => {
            cx.error_spanned_by(
                &r.attr,
                "#[rabbitmq(..)] needs a routing key: add `routing_key = \"<key>\"`",
            );
            String::new()
        }
    };
    let string = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.value.clone());
    let overflow = r
        .overflow
        .as_ref()
        .and_then(|o| apply(cx, o, |s: &String| overflow(s)));
    let queue_type = r
        .queue_type
        .as_ref()
        .and_then(|q| apply(cx, q, |s: &String| queue_type(s)));
    check_queue_rules(cx, r, overflow, queue_type);
    RabbitMqModel {
        routing_key,
        exchange: string(&r.exchange),
        exchange_type: r
            .exchange_type
            .as_ref()
            .and_then(|c| apply(cx, c, |s: &String| exchange_type(s))),
        queue_name: string(&r.queue_name),
        durable: r.durable.as_ref().map(|b| b.value),
        message_ttl: int_key(cx, "message_ttl", &r.message_ttl, 0),
        max_length: int_key(cx, "max_length", &r.max_length, 0),
        max_priority: int_key(cx, "max_priority", &r.max_priority, 1),
        dead_letter_exchange: string(&r.dead_letter_exchange),
        dead_letter_routing_key: string(&r.dead_letter_routing_key),
        overflow,
        queue_type,
    }
}

/// The arguments RabbitMQ refuses on a stream queue, by attribute key: a
/// stream keeps every message until its size or age limit.
const STREAM_REFUSES: &[(&str, &str)] = &[
    ("message_ttl", "x-message-ttl"),
    ("max_length", "x-max-length"),
    ("max_priority", "x-max-priority"),
    ("dead_letter_exchange", "x-dead-letter-exchange"),
    ("dead_letter_routing_key", "x-dead-letter-routing-key"),
    ("overflow", "x-overflow"),
];

/// What RabbitMQ refuses, or quietly does otherwise, for the queue the
/// attribute describes (`overflow` and `queue_type` against the other
/// keys), reported at the key that cannot stay.
fn check_queue_rules(
    cx: &Ctxt,
    r: &RabbitMqAttr,
    overflow: Option<&'static str>,
    queue_type: Option<&'static str>,
) {
    let given = |key: &str| r.keys.iter().any(|k| k == key);
    if let (Some(kind @ ("Quorum" | "Stream")), Some(durable)) = (queue_type, &r.durable) {
        if !durable.value {
            durable.error(
                cx,
                format!(
                    "a {} queue is always durable (RabbitMQ refuses `durable = false` for it): remove `durable = false`",
                    kind.to_ascii_lowercase()
                ),
            );
        }
    }
    if queue_type == Some("Stream") {
        for (key, argument) in STREAM_REFUSES {
            if let Some(tokens) = r.value_tokens(key) {
                cx.error_spanned_by(
                    tokens,
                    format!(
                        "RabbitMQ refuses `{argument}` on a stream queue (a stream keeps every message until its size or age limit; it does not expire, limit, prioritise or dead-letter single messages): remove `{key}`"
                    ),
                );
            }
        }
        return;
    }
    if queue_type == Some("Quorum") {
        if let Some(p) = &r.max_priority {
            p.error(
                cx,
                "RabbitMQ refuses `max_priority` (`x-max-priority`) on a quorum queue: remove it, or use `queue_type = \"classic\"` for a priority queue",
            );
        }
    }
    let Some(o) = &r.overflow else { return };
    if !given("max_length") {
        o.error(
            cx,
            "`overflow` says what happens when the queue is full, and it has no length limit: add `max_length = <n>` or remove `overflow`",
        );
        return;
    }
    if overflow == Some("RejectPublishDlx") {
        if queue_type == Some("Quorum") {
            o.error(
                cx,
                "quorum queues do not support `overflow = \"reject-publish-dlx\"` (RabbitMQ drops the oldest message instead): use `overflow = \"reject-publish\"`",
            );
        } else if !given("dead_letter_exchange") {
            o.error(
                cx,
                "`overflow = \"reject-publish-dlx\"` dead-letters refused messages through the queue's dead-letter exchange, and this queue has none: add `dead_letter_exchange = \"<exchange>\"` or use `overflow = \"reject-publish\"`",
            );
        }
    }
}

/// Runs a rule on a spanned value, recording its error at the value.
fn apply<T, U>(cx: &Ctxt, v: &Spanned<T>, rule: impl Fn(&T) -> Result<U, String>) -> Option<U> {
    match rule(&v.value) {
        Ok(u) => Some(u),
        Err(msg) => {
            v.error(cx, msg);
            None
        }
    }
}

fn int_key<T>(cx: &Ctxt, key: &str, v: &Option<Spanned<i128>>, min: i128) -> Option<T>
where
    T: TryFrom<i128> + Bounded,
{
    v.as_ref()
        .and_then(|v| apply(cx, v, |n| int_in_range::<T>(key, *n, min)))
}

fn find_partition_key(cx: &Ctxt, cont: &Container, pk: &Spanned<String>) -> Option<PartitionKey> {
    let ident = cont.ident;
    match &cont.shape {
        Shape::Named(fields) => {
            let field = fields.iter().find(|f| {
                f.ident == pk.value.as_str()
                    || syn::ext::IdentExt::unraw(f.ident) == pk.value.as_str()
            });
            match field {
                Some(f) => Some(PartitionKey {
                    field: {
                        let mut ident = f.ident.clone();
                        if let Some(tt) = pk.tokens.clone().into_iter().next() {
                            ident.set_span(tt.span());
                        }
                        ident
                    },
                    optional: is_option(f.ty),
                }),
                None => {
                    let names: Vec<String> = fields.iter().map(|f| f.ident.to_string()).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let known = if names.is_empty() {
                        format!("`{ident}` has no fields")
                    } else {
                        format!("its fields are {}", one_of(&names))
                    };
                    pk.error(
                        cx,
                        format!(
                            "`partition_key = {}` names no field of `{ident}`; {known}",
                            pk.value
                        ),
                    );
                    None
                }
            }
        }
        Shape::Tuple | Shape::Unit => {
            pk.error(
                cx,
                format!("`partition_key` must name a field, and `{ident}` has no named fields"),
            );
            None
        }
        Shape::Enum => {
            pk.error(
                cx,
                format!("`partition_key` is not supported on enums (`{ident}` is an enum): it must name a field of a struct"),
            );
            None
        }
    }
}

/// Whether a field type is written `Option<..>`.
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Option" && !s.arguments.is_empty()),
        Type::Group(g) => is_option(&g.elem),
        Type::Paren(p) => is_option(&p.elem),
        _ => false,
    }
}

/// An event's `NAME`.
pub fn event_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(
            "the event name cannot be empty: it is the stable message type written on the wire"
                .into(),
        );
    }
    if name.chars().any(char::is_control) {
        return Err("the event name cannot contain control characters".into());
    }
    Ok(())
}

/// A topic name Kafka accepts.
pub fn kafka_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("the Kafka topic cannot be empty".into());
    }
    if topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a valid Kafka topic name"));
    }
    if topic.len() > 249 {
        return Err(format!(
            "a Kafka topic name has at most 249 characters; this one has {}",
            topic.len()
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {c:?} in Kafka topic `{topic}`: only ASCII letters, digits, `.`, `_` and `-` are allowed"
        ));
    }
    Ok(())
}

/// `compression_type`: the `CompressionType` variant.
pub fn compression_type(s: &str) -> Result<&'static str, String> {
    Ok(match s {
        "none" => "None",
        "gzip" => "Gzip",
        "snappy" => "Snappy",
        "lz4" => "Lz4",
        "zstd" => "Zstd",
        _ => {
            return Err(format!(
                "unknown compression_type `{s}`: expected {}",
                one_of(&["none", "gzip", "snappy", "lz4", "zstd"])
            ))
        }
    })
}

/// `acks`: the `Acks` variant.
pub fn acks(v: &AcksValue) -> Result<&'static str, String> {
    let variant = match v {
        AcksValue::Str(s) => match s.as_str() {
            "0" => Some("None"),
            "1" => Some("Leader"),
            "all" | "-1" => Some("All"),
            _ => None,
        },
        AcksValue::Int(0) => Some("None"),
        AcksValue::Int(1) => Some("Leader"),
        AcksValue::Int(-1) => Some("All"),
        AcksValue::Int(_) => None,
    };
    variant.ok_or_else(|| {
        let shown = match v {
            AcksValue::Str(s) => format!("\"{s}\""),
            AcksValue::Int(i) => i.to_string(),
        };
        format!("invalid acks {shown}: expected \"0\", \"1\", \"all\" or \"-1\"")
    })
}

/// `auto_offset_reset`: the `AutoOffsetReset` variant.
pub fn auto_offset_reset(s: &str) -> Result<&'static str, String> {
    match s {
        "earliest" => Ok("Earliest"),
        "latest" => Ok("Latest"),
        _ => Err(format!(
            "unknown auto_offset_reset `{s}`: expected `earliest` or `latest`"
        )),
    }
}

/// `exchange_type`: the `ExchangeType` variant.
pub fn exchange_type(s: &str) -> Result<&'static str, String> {
    Ok(match s {
        "direct" => "Direct",
        "topic" => "Topic",
        "fanout" => "Fanout",
        "headers" => "Headers",
        _ => {
            return Err(format!(
                "unknown exchange_type `{s}`: expected {}",
                one_of(&["direct", "topic", "fanout", "headers"])
            ))
        }
    })
}

/// A value from a fixed set, or an error listing the set (with the closest
/// one when the value looks like a typo).
fn one_of_set(key: &str, s: &str, set: &[(&str, &'static str)]) -> Result<&'static str, String> {
    if let Some((_, variant)) = set.iter().find(|(v, _)| *v == s) {
        return Ok(variant);
    }
    let values: Vec<&str> = set.iter().map(|(v, _)| *v).collect();
    let mut msg = format!("unknown {key} `{s}`: expected {}", one_of(&values));
    if let Some(close) = did_you_mean(s, &values) {
        msg.push_str(&format!("; did you mean `{close}`?"));
    }
    Err(msg)
}

/// `overflow`: the `Overflow` variant.
pub fn overflow(s: &str) -> Result<&'static str, String> {
    one_of_set(
        "overflow",
        s,
        &[
            ("drop-head", "DropHead"),
            ("reject-publish", "RejectPublish"),
            ("reject-publish-dlx", "RejectPublishDlx"),
        ],
    )
}

/// `queue_type`: the `QueueType` variant.
pub fn queue_type(s: &str) -> Result<&'static str, String> {
    one_of_set(
        "queue_type",
        s,
        &[
            ("classic", "Classic"),
            ("quorum", "Quorum"),
            ("stream", "Stream"),
        ],
    )
}

/// The largest value of an integer field type.
pub trait Bounded {
    const MAX: i128;
}
macro_rules! bounded {
    ($($t:ty),*) => { $(impl Bounded for $t { const MAX: i128 = <$t>::MAX as i128; })* };
}
bounded!(u8, i16, i32, u32, u64);

/// An integer in `min..=T::MAX`.
pub fn int_in_range<T: TryFrom<i128> + Bounded>(
    key: &str,
    v: i128,
    min: i128,
) -> Result<T, String> {
    let max = T::MAX;
    if v < min {
        return Err(if min == 0 {
            format!("`{key}` cannot be negative (found {v})")
        } else {
            format!("`{key}` must be between {min} and {max}, found {v}")
        });
    }
    T::try_from(v).map_err(|_| format!("`{key}` must be between {min} and {max}, found {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_rules() {
        assert!(kafka_topic("order-events.v1_x").is_ok());
        assert!(kafka_topic(&"a".repeat(249)).is_ok());
        assert!(kafka_topic(&"a".repeat(250)).unwrap_err().contains("249"));
        assert!(kafka_topic("").is_err());
        assert!(kafka_topic(".").is_err());
        assert!(kafka_topic("..").is_err());
        assert!(kafka_topic("...").is_ok());
        let err = kafka_topic("order events").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(kafka_topic("caf\u{e9}").is_err());
    }

    #[test]
    fn value_sets() {
        assert_eq!(compression_type("zstd"), Ok("Zstd"));
        assert!(compression_type("brotli").unwrap_err().contains("`gzip`"));
        assert_eq!(auto_offset_reset("earliest"), Ok("Earliest"));
        assert!(auto_offset_reset("smallest").is_err());
        assert_eq!(exchange_type("headers"), Ok("Headers"));
        assert!(exchange_type("x-delayed").is_err());
        assert_eq!(overflow("reject-publish-dlx"), Ok("RejectPublishDlx"));
        assert_eq!(queue_type("quorum"), Ok("Quorum"));
        let err = overflow("reject_publish").unwrap_err();
        assert!(err.contains("did you mean `reject-publish`?"), "{err}");
        let err = queue_type("quorom").unwrap_err();
        assert!(err.contains("did you mean `quorum`?"), "{err}");
        assert!(!queue_type("lazy").unwrap_err().contains("did you mean"));
    }

    #[test]
    fn acks_forms() {
        assert_eq!(acks(&AcksValue::Str("all".into())), Ok("All"));
        assert_eq!(acks(&AcksValue::Str("-1".into())), Ok("All"));
        assert_eq!(acks(&AcksValue::Int(-1)), Ok("All"));
        assert_eq!(acks(&AcksValue::Str("1".into())), Ok("Leader"));
        assert_eq!(acks(&AcksValue::Int(0)), Ok("None"));
        assert!(acks(&AcksValue::Int(2)).is_err());
        assert!(acks(&AcksValue::Str("leader".into())).is_err());
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(int_in_range::<i32>("num_partitions", 3, 1), Ok(3));
        assert!(int_in_range::<i32>("num_partitions", 0, 1).is_err());
        assert!(int_in_range::<i16>("replication_factor", 40_000, 1).is_err());
        assert!(int_in_range::<u64>("retention_ms", -1, 0)
            .unwrap_err()
            .contains("negative"));
        assert_eq!(int_in_range::<u64>("retention_ms", 0, 0), Ok(0));
        assert!(int_in_range::<u32>("message_ttl", 1 << 32, 0).is_err());
        assert_eq!(int_in_range::<u8>("max_priority", 255, 1), Ok(255));
        assert!(int_in_range::<u8>("max_priority", 256, 1).is_err());
        assert!(int_in_range::<u8>("max_priority", 0, 1).is_err());
    }

    #[test]
    fn event_names() {
        assert!(event_name("OrderCreated.v2").is_ok());
        assert!(event_name("").is_err());
        assert!(event_name("  ").is_err());
    }

    #[test]
    fn option_fields_are_recognised() {
        assert!(is_option(&syn::parse_quote!(Option<String>)));
        assert!(is_option(&syn::parse_quote!(std::option::Option<u32>)));
        assert!(!is_option(&syn::parse_quote!(String)));
    }
}
