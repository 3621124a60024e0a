//! Reads `#[kafka(..)]`, `#[rabbitmq(..)]` and `#[event(..)]` into typed,
//! still unvalidated settings: unknown keys, duplicate keys and values of the
//! wrong literal type are reported here; ranges and sets in `check`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Attribute, Expr, Ident};

use crate::ctxt::Ctxt;
use crate::meta::{self, did_you_mean, list, KeyValue, Spanned};

/// Keys of `#[kafka(..)]`.
pub const KAFKA_KEYS: &[&str] = &[
    "topic",
    "group_id",
    "partition_key",
    "num_partitions",
    "replication_factor",
    "retention_ms",
    "compression_type",
    "enable_idempotence",
    "acks",
    "auto_offset_reset",
    "enable_auto_commit",
    "session_timeout_ms",
    "max_poll_records",
];

/// Keys of `#[rabbitmq(..)]`.
pub const RABBITMQ_KEYS: &[&str] = &[
    "routing_key",
    "exchange",
    "exchange_type",
    "queue_name",
    "durable",
    "message_ttl",
    "max_length",
    "max_priority",
    "dead_letter_exchange",
    "dead_letter_routing_key",
    "overflow",
    "queue_type",
];

/// Keys of `#[event(..)]`.
pub const EVENT_KEYS: &[&str] = &["name"];

/// `acks` as written: `"all"` or `-1`.
#[derive(Clone, Debug, PartialEq)]
pub enum AcksValue {
    Str(String),
    Int(i128),
}

/// `#[kafka(..)]` as written.
#[derive(Default)]
pub struct KafkaAttr {
    /// The whole attribute, for "missing key" errors.
    pub attr: TokenStream,
    /// Keys given, even those whose value was rejected.
    pub keys: Vec<String>,
    pub topic: Option<Spanned<String>>,
    pub group_id: Option<Spanned<String>>,
    pub partition_key: Option<Spanned<String>>,
    pub num_partitions: Option<Spanned<i128>>,
    pub replication_factor: Option<Spanned<i128>>,
    pub retention_ms: Option<Spanned<i128>>,
    pub compression_type: Option<Spanned<String>>,
    pub enable_idempotence: Option<Spanned<bool>>,
    pub acks: Option<Spanned<AcksValue>>,
    pub auto_offset_reset: Option<Spanned<String>>,
    pub enable_auto_commit: Option<Spanned<bool>>,
    pub session_timeout_ms: Option<Spanned<i128>>,
    pub max_poll_records: Option<Spanned<i128>>,
}

/// `#[rabbitmq(..)]` as written.
#[derive(Default)]
pub struct RabbitMqAttr {
    /// The whole attribute, for "missing key" errors.
    pub attr: TokenStream,
    /// Keys given, even those whose value was rejected.
    pub keys: Vec<String>,
    pub routing_key: Option<Spanned<String>>,
    pub exchange: Option<Spanned<String>>,
    pub exchange_type: Option<Spanned<String>>,
    pub queue_name: Option<Spanned<String>>,
    pub durable: Option<Spanned<bool>>,
    pub message_ttl: Option<Spanned<i128>>,
    pub max_length: Option<Spanned<i128>>,
    pub max_priority: Option<Spanned<i128>>,
    pub dead_letter_exchange: Option<Spanned<String>>,
    pub dead_letter_routing_key: Option<Spanned<String>>,
    pub overflow: Option<Spanned<String>>,
    pub queue_type: Option<Spanned<String>>,
}

impl RabbitMqAttr {
    /// The tokens of a key's value, when the key was given with a value of
    /// the right type: where an error about the key belongs.
    pub fn value_tokens(&self, key: &str) -> Option<&TokenStream> {
        fn t<T>(v: &Option<Spanned<T>>) -> Option<&TokenStream> {
            v.as_ref().map(|v| &v.tokens)
        }
        match key {
            "routing_key" => t(&self.routing_key),
            "exchange" => t(&self.exchange),
            "exchange_type" => t(&self.exchange_type),
            "queue_name" => t(&self.queue_name),
            "durable" => t(&self.durable),
            "message_ttl" => t(&self.message_ttl),
            "max_length" => t(&self.max_length),
            "max_priority" => t(&self.max_priority),
            "dead_letter_exchange" => t(&self.dead_letter_exchange),
            "dead_letter_routing_key" => t(&self.dead_letter_routing_key),
            "overflow" => t(&self.overflow),
            "queue_type" => t(&self.queue_type),
            _ => None,
        }
    }
}

/// Everything the attributes of one event say.
#[derive(Default)]
pub struct Attrs {
    pub kafka: Option<KafkaAttr>,
    pub rabbitmq: Option<RabbitMqAttr>,
    /// `#[event(name = "..")]`
    pub name: Option<Spanned<String>>,
}

/// Reads the heytom attributes of an event type; other attributes are ignored.
pub fn read(cx: &Ctxt, attrs: &[Attribute]) -> Attrs {
    let mut out = Attrs::default();
    // The first transport attribute seen, to report "both" at the second one.
    let mut transport: Option<&'static str> = None;
    let mut kafka_seen = Vec::new();
    let mut rabbit_seen = Vec::new();
    let mut event_seen = Vec::new();
    for attr in attrs {
        let kind = if attr.path().is_ident("kafka") {
            "kafka"
        } else if attr.path().is_ident("rabbitmq") {
            "rabbitmq"
        } else if attr.path().is_ident("event") {
            "event"
        } else {
            continue;
        };
        if kind != "event" {
            match transport {
                Some(first) if first != kind => cx.error_spanned_by(
                    attr,
                    format!(
                        "an event travels on one transport: it has #[{first}(..)] already, so #[{kind}(..)] is not allowed here; remove one of them"
                    ),
                ),
                _ => transport = Some(kind),
            }
        }
        let entries = match attr.parse_args_with(meta::parse_list) {
            Ok(entries) => entries,
            Err(err) => {
                cx.syn_error(err);
                continue;
            }
        };
        match kind {
            "kafka" => {
                let k = out.kafka.get_or_insert_with(|| KafkaAttr {
                    attr: attr.to_token_stream(),
                    ..KafkaAttr::default()
                });
                for kv in entries {
                    if accept(
                        cx,
                        "kafka",
                        KAFKA_KEYS,
                        RABBITMQ_KEYS,
                        &kv.key,
                        &mut kafka_seen,
                    ) {
                        k.keys.push(kv.key.to_string());
                        read_kafka_key(cx, k, &kv);
                    }
                }
            }
            "rabbitmq" => {
                let r = out.rabbitmq.get_or_insert_with(|| RabbitMqAttr {
                    attr: attr.to_token_stream(),
                    ..RabbitMqAttr::default()
                });
                for kv in entries {
                    if accept(
                        cx,
                        "rabbitmq",
                        RABBITMQ_KEYS,
                        KAFKA_KEYS,
                        &kv.key,
                        &mut rabbit_seen,
                    ) {
                        r.keys.push(kv.key.to_string());
                        read_rabbitmq_key(cx, r, &kv);
                    }
                }
            }
            _ => {
                for kv in entries {
                    if accept(cx, "event", EVENT_KEYS, &[], &kv.key, &mut event_seen) {
                        out.name = meta::expect_str(cx, &kv.key, &kv.value, "\"OrderCreated\"");
                    }
                }
            }
        }
    }
    out
}

/// Checks a key is known and not repeated; records the error otherwise.
fn accept(
    cx: &Ctxt,
    attr: &str,
    allowed: &[&str],
    other: &[&str],
    key: &Ident,
    seen: &mut Vec<String>,
) -> bool {
    let name = key.to_string();
    if !allowed.contains(&name.as_str()) {
        let mut msg = format!("unknown key `{name}` in #[{attr}(..)]");
        if other.contains(&name.as_str()) {
            let other_attr = if attr == "kafka" { "rabbitmq" } else { "kafka" };
            msg.push_str(&format!(" (`{name}` belongs to #[{other_attr}(..)])"));
        } else if let Some(close) = did_you_mean(&name, allowed) {
            msg.push_str(&format!("; did you mean `{close}`?"));
        }
        msg.push_str(&format!("\nallowed keys: {}", list(allowed)));
        cx.error_spanned_by(key, msg);
        return false;
    }
    if seen.contains(&name) {
        cx.error_spanned_by(
            key,
            format!("duplicate key `{name}` in #[{attr}(..)]; give each key once"),
        );
        return false;
    }
    seen.push(name);
    true
}

fn read_kafka_key(cx: &Ctxt, k: &mut KafkaAttr, kv: &KeyValue) {
    let (key, v) = (&kv.key, &kv.value);
    match key.to_string().as_str() {
        "topic" => k.topic = meta::expect_str(cx, key, v, "\"order-events\""),
        "group_id" => k.group_id = meta::expect_str(cx, key, v, "\"order-service\""),
        "partition_key" => k.partition_key = meta::expect_ident_or_str(cx, key, v, "order_id"),
        "num_partitions" => k.num_partitions = meta::expect_int(cx, key, v, "3"),
        "replication_factor" => k.replication_factor = meta::expect_int(cx, key, v, "2"),
        "retention_ms" => k.retention_ms = meta::expect_int(cx, key, v, "86400000"),
        "compression_type" => k.compression_type = meta::expect_str(cx, key, v, "\"gzip\""),
        "enable_idempotence" => k.enable_idempotence = meta::expect_bool(cx, key, v),
        "acks" => k.acks = read_acks(cx, key, v),
        "auto_offset_reset" => k.auto_offset_reset = meta::expect_str(cx, key, v, "\"earliest\""),
        "enable_auto_commit" => k.enable_auto_commit = meta::expect_bool(cx, key, v),
        "session_timeout_ms" => k.session_timeout_ms = meta::expect_int(cx, key, v, "10000"),
        "max_poll_records" => k.max_poll_records = meta::expect_int(cx, key, v, "500"),
        _ => {}
    }
}

fn read_acks(cx: &Ctxt, key: &Ident, v: &Expr) -> Option<Spanned<AcksValue>> {
    if let Some(s) = meta::as_str(v) {
        return Some(Spanned::new(AcksValue::Str(s.value), s.tokens));
    }
    match meta::as_int(v) {
        Some(Ok(i)) => Some(Spanned::new(AcksValue::Int(i.value), i.tokens)),
        _ => {
            cx.error_spanned_by(
                v,
                format!("`{key}` expects \"0\", \"1\", \"all\" or \"-1\" (or the integers 0, 1, -1): write `acks = \"all\"`"),
            );
            None
        }
    }
}

fn read_rabbitmq_key(cx: &Ctxt, r: &mut RabbitMqAttr, kv: &KeyValue) {
    let (key, v) = (&kv.key, &kv.value);
    match key.to_string().as_str() {
        "routing_key" => r.routing_key = meta::expect_str(cx, key, v, "\"order.created\""),
        "exchange" => r.exchange = meta::expect_str(cx, key, v, "\"order.exchange\""),
        "exchange_type" => r.exchange_type = meta::expect_str(cx, key, v, "\"topic\""),
        "queue_name" => r.queue_name = meta::expect_str(cx, key, v, "\"order.created.queue\""),
        "durable" => r.durable = meta::expect_bool(cx, key, v),
        "message_ttl" => r.message_ttl = meta::expect_int(cx, key, v, "60000"),
        "max_length" => r.max_length = meta::expect_int(cx, key, v, "10000"),
        "max_priority" => r.max_priority = meta::expect_int(cx, key, v, "10"),
        "dead_letter_exchange" => {
            r.dead_letter_exchange = meta::expect_str(cx, key, v, "\"order.dlx\"")
        }
        "dead_letter_routing_key" => {
            r.dead_letter_routing_key = meta::expect_str(cx, key, v, "\"order.dead\"")
        }
        "overflow" => r.overflow = meta::expect_str(cx, key, v, "\"reject-publish\""),
        "queue_type" => r.queue_type = meta::expect_str(cx, key, v, "\"quorum\""),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn read_attrs(attrs: Vec<Attribute>) -> (Attrs, Vec<String>) {
        let cx = Ctxt::new();
        let a = read(&cx, &attrs);
        (a, cx.messages())
    }

    #[test]
    fn reads_every_kafka_key() {
        let (a, errs) = read_attrs(vec![parse_quote!(#[kafka(
            topic = "t", group_id = "g", partition_key = id, num_partitions = 3,
            replication_factor = 2, retention_ms = 100, compression_type = "lz4",
            enable_idempotence = true, acks = -1, auto_offset_reset = "latest",
            enable_auto_commit = false, session_timeout_ms = 10, max_poll_records = 5
        )])]);
        assert!(errs.is_empty(), "{errs:?}");
        let k = a.kafka.unwrap();
        assert_eq!(k.topic.unwrap().value, "t");
        assert_eq!(k.partition_key.unwrap().value, "id");
        assert_eq!(k.acks.unwrap().value, AcksValue::Int(-1));
        assert_eq!(k.max_poll_records.unwrap().value, 5);
    }

    #[test]
    fn reports_unknown_duplicate_and_mistyped_keys_together() {
        let (_, errs) = read_attrs(vec![parse_quote!(#[kafka(
            topic = "t", topc = "x", topic = "u", num_partitions = "3", routing_key = "r"
        )])]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("unknown key `topc`") && errs[0].contains("did you mean `topic`"));
        assert!(errs[1].contains("duplicate key `topic`"));
        assert!(errs[2].contains("expects an integer literal, found a string"));
        assert!(errs[3].contains("belongs to #[rabbitmq(..)]"));
    }

    #[test]
    fn rejects_both_transports() {
        let (_, errs) = read_attrs(vec![
            parse_quote!(#[kafka(topic = "t")]),
            parse_quote!(#[rabbitmq(routing_key = "r")]),
        ]);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("one transport"));
    }

    #[test]
    fn ignores_foreign_attributes() {
        let (a, errs) = read_attrs(vec![
            parse_quote!(#[serde(rename_all = "camelCase")]),
            parse_quote!(#[event(name = "X")]),
        ]);
        assert!(errs.is_empty());
        assert_eq!(a.name.unwrap().value, "X");
    }
}
