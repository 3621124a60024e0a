//! An [AsyncAPI 3.0](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! document of the app's messaging, built from the derives: every event
//! type linked into the binary (`#[derive(Event)]`) and every handler
//! (`#[handler]`, and those you pass to [`document_with_handlers`]).
//!
//! - **Channels**: a Kafka topic (with the Kafka binding: partitions,
//!   replicas, `retention.ms`, `compression.type`); a RabbitMQ exchange and
//!   routing key (AMQP binding `is: routingKey`: exchange name, type,
//!   durability); a RabbitMQ queue (AMQP binding `is: queue`, with its
//!   arguments (`x-message-ttl`, `x-max-length`, `x-overflow`,
//!   `x-max-priority`, dead-letter exchange and routing key, queue type), the
//!   exchange and routing key it is bound to, and where its dead letters go,
//!   in `x-heytom-*` extensions); an event without a transport attribute
//!   travels on the default transport under its name.
//! - **Messages**: one per event, named by its `NAME`, `application/json`;
//!   its payload is the event's JSON Schema when the type also derives
//!   `schemars::JsonSchema` and the `schemars` feature is on (definitions
//!   of nested types go to `components.schemas`), else the message has no
//!   payload schema.
//! - **Operations**: `send` for every event (this app may publish any of
//!   them), `receive` for every handler, on its queue (RabbitMQ) or topic
//!   with its consumer group (Kafka).
//!
//! Kafka producer and consumer settings the bindings have no field for
//! (`acks`, idempotence, offset reset, auto commit, session timeout, max
//! poll records) are in the channel's `x-heytom-kafka-settings`.
//!
//! ```
//! use heytom_mq::asyncapi::{document, AsyncApiInfo};
//!
//! let doc = document(AsyncApiInfo::new("Orders service", "1.4.0")
//!     .description("Takes orders, bills them.")
//!     .server("rabbit", "rabbitmq.internal:5672", "amqp"));
//! assert_eq!(doc["asyncapi"], "3.0.0");
//! let json = serde_json::to_string_pretty(&doc).unwrap();
//! # let _ = json;
//! ```

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::event::{EventRegistration, Route};
use crate::handler::{registered_handlers, HandlerEntry};

mod bindings;
#[doc(hidden)]
pub mod schema;

/// The AsyncAPI version of the documents made here.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The document's `info` and `servers`, and the defaults the app's
/// transports are configured with (which the routes leave out).
#[derive(Debug, Clone)]
pub struct AsyncApiInfo {
    title: String,
    version: String,
    description: Option<String>,
    servers: Vec<(String, Value)>,
    rabbitmq_exchange: String,
    kafka_group: String,
}

/// `RabbitMqOptions`' default exchange (`DEFAULT_EXCHANGE`).
const DEFAULT_EXCHANGE: &str = "heytom.exchange";
/// `KafkaOptions`' default group (`DEFAULT_GROUP_ID`).
const DEFAULT_GROUP: &str = "heytom-mq";

impl Default for AsyncApiInfo {
    /// Titled after this crate's package, version `0.0.0`.
    fn default() -> Self {
        AsyncApiInfo::new("heytom-mq service", "0.0.0")
    }
}

impl AsyncApiInfo {
    /// A document titled `title`, API version `version`.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        AsyncApiInfo {
            title: title.into(),
            version: version.into(),
            description: None,
            servers: Vec::new(),
            rabbitmq_exchange: DEFAULT_EXCHANGE.to_owned(),
            kafka_group: DEFAULT_GROUP.to_owned(),
        }
    }

    /// A longer description (CommonMark).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// A server: `host` (`host:port`) and `protocol` (`amqp`, `kafka`, ...).
    pub fn server(
        mut self,
        name: impl Into<String>,
        host: impl Into<String>,
        protocol: impl Into<String>,
    ) -> Self {
        self.servers.push((
            component_key(&name.into()),
            json!({ "host": host.into(), "protocol": protocol.into() }),
        ));
        self
    }

    /// The exchange of RabbitMQ events without one (`RabbitMqOptions::exchange`;
    /// default `heytom.exchange`).
    pub fn rabbitmq_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.rabbitmq_exchange = exchange.into();
        self
    }

    /// The consumer group of Kafka handlers without one (`KafkaOptions::group_id`;
    /// default `heytom-mq`).
    pub fn kafka_group(mut self, group: impl Into<String>) -> Self {
        self.kafka_group = group.into();
        self
    }
}

/// The AsyncAPI 3.0 document of every registered event and `#[handler]`.
pub fn document(info: AsyncApiInfo) -> Value {
    let handlers: Vec<HandlerEntry> = registered_handlers()
        .map(HandlerEntry::from_registration)
        .collect();
    document_with_handlers(info, &handlers)
}

/// The AsyncAPI 3.0 document of every registered event and the given
/// handlers (e.g. `App::handlers()`, which includes those registered with
/// `AppBuilder::handler`).
pub fn document_with_handlers(info: AsyncApiInfo, handlers: &[HandlerEntry]) -> Value {
    let mut events: BTreeMap<&'static str, &'static EventRegistration> = BTreeMap::new();
    for e in inventory::iter::<EventRegistration> {
        events.entry(e.name).or_insert(e);
    }
    let mut doc = Document::default();
    for e in events.values() {
        doc.event(e, &info);
    }
    for h in handlers {
        doc.handler(h, &info);
    }
    doc.finish(info)
}

/// The document being built.
#[derive(Default)]
struct Document {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    schemas: Map<String, Value>,
}

/// A key of `components` (and the ids here): `[A-Za-z0-9._-]` only.
fn component_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

impl Document {
    /// The channel `id`, made by `make` if new; adds `message` to it.
    fn channel(&mut self, id: &str, message: &str, make: impl FnOnce() -> Value) {
        let channel = self.channels.entry(id.to_owned()).or_insert_with(make);
        if let Some(messages) = channel.get_mut("messages").and_then(Value::as_object_mut) {
            messages.insert(
                message.to_owned(),
                reference(&format!("#/components/messages/{message}")),
            );
        }
    }

    /// The message and send operation of an event, and its channel.
    fn event(&mut self, e: &EventRegistration, info: &AsyncApiInfo) {
        let route = (e.route)();
        let key = component_key(e.name);
        let mut message = Map::new();
        message.insert("name".into(), e.name.into());
        message.insert("title".into(), e.name.into());
        message.insert("contentType".into(), "application/json".into());
        if let Some(mut payload) = crate::event::event_schema(e.name) {
            self.take_definitions(&mut payload);
            message.insert("payload".into(), payload);
        }
        let (channel, bindings) = match route {
            Route::Kafka(k) => {
                if let Some(b) = bindings::kafka_message(k) {
                    message.insert("bindings".into(), b);
                }
                let id = format!("kafka.{}", component_key(k.topic));
                self.channel(&id, &key, || {
                    let mut c = json!({
                        "address": k.topic,
                        "title": format!("Kafka topic {}", k.topic),
                        "messages": {},
                        "bindings": bindings::kafka_channel(k),
                        "x-heytom-transport": "Kafka",
                    });
                    if let Some(s) = bindings::kafka_settings(k) {
                        c["x-heytom-kafka-settings"] = s;
                    }
                    c
                });
                (id, None)
            }
            Route::RabbitMq(r) => {
                message.insert("bindings".into(), bindings::amqp_message(e.name));
                let exchange = r.exchange.unwrap_or(&info.rabbitmq_exchange);
                let id = format!(
                    "rabbitmq.{}.{}",
                    component_key(exchange),
                    component_key(r.routing_key)
                );
                self.channel(&id, &key, || {
                    json!({
                        "address": r.routing_key,
                        "title": format!("RabbitMQ exchange {exchange}, routing key {}", r.routing_key),
                        "messages": {},
                        "bindings": bindings::amqp_exchange(r, exchange),
                        "x-heytom-transport": "RabbitMQ",
                    })
                });
                // A queue the attribute names exists whether or not a
                // handler here consumes it.
                if let Some(queue) = r.queue_name {
                    self.queue(queue, r, exchange, &key);
                }
                (id, Some(bindings::amqp_send()))
            }
            Route::Default => {
                let id = format!("default.{key}");
                self.channel(&id, &key, || {
                    json!({
                        "address": e.name,
                        "title": format!("{} on the default transport", e.name),
                        "description": "An event without a transport attribute: it travels on the app's default transport (the in-memory broker unless configured otherwise) under its name.",
                        "messages": {},
                        "x-heytom-transport": "default",
                    })
                });
                (id, None)
            }
        };
        self.messages.insert(key.clone(), Value::Object(message));
        let mut op = json!({
            "action": "send",
            "title": format!("Publish {}", e.name),
            "channel": reference(&format!("#/channels/{channel}")),
            "messages": [reference(&format!("#/channels/{channel}/messages/{key}"))],
        });
        if let Some(b) = bindings {
            op["bindings"] = b;
        }
        self.operations.insert(format!("send.{key}"), op);
    }

    /// The channel of a RabbitMQ queue; adds the event's binding to it.
    fn queue(
        &mut self,
        queue: &str,
        r: &crate::event::RabbitMqRoute,
        exchange: &str,
        message: &str,
    ) -> String {
        let id = format!("rabbitmq.queue.{}", component_key(queue));
        self.channel(&id, message, || {
            json!({
                "address": queue,
                "title": format!("RabbitMQ queue {queue}"),
                "messages": {},
                "bindings": bindings::amqp_queue(
                    queue,
                    r.durable.unwrap_or(true),
                    bindings::amqp_queue_arguments(r),
                    Vec::new(),
                    bindings::amqp_dead_letters(r, queue),
                ),
                "x-heytom-transport": "RabbitMQ",
            })
        });
        let bound = json!({ "exchange": exchange, "routingKey": r.routing_key });
        if let Some(list) = self.channels[&id]
            .pointer_mut("/bindings/amqp/x-heytom-bindings")
            .and_then(Value::as_array_mut)
        {
            if !list.contains(&bound) {
                list.push(bound);
            }
        }
        id
    }

    /// The receive operation of a handler.
    fn handler(&mut self, h: &HandlerEntry, info: &AsyncApiInfo) {
        let key = component_key(h.event_name);
        if !self.messages.contains_key(&key) {
            // An event type not registered by the derive (a hand-written
            // `Event` impl): named only.
            self.messages.insert(
                key.clone(),
                json!({ "name": h.event_name, "title": h.event_name, "contentType": "application/json" }),
            );
        }
        let (channel, bindings) = match h.route {
            Route::Kafka(k) => {
                let id = format!("kafka.{}", component_key(k.topic));
                let group = h
                    .group
                    .clone()
                    .or_else(|| k.group_id.map(str::to_owned))
                    .unwrap_or_else(|| info.kafka_group.clone());
                if !self.channels.contains_key(&id) {
                    self.channel(&id, &key, || {
                        json!({ "address": k.topic, "messages": {}, "bindings": bindings::kafka_channel(k) })
                    });
                }
                (id, bindings::kafka_receive(&group))
            }
            Route::RabbitMq(r) => {
                // The RabbitMQ transport's rule: the handler's group, else
                // the event's queue_name, else `<routing key>.<handler>`.
                let queue = h.group.clone().unwrap_or_else(|| {
                    r.queue_name
                        .map_or_else(|| format!("{}.{}", r.routing_key, h.name), str::to_owned)
                });
                let exchange = r.exchange.unwrap_or(&info.rabbitmq_exchange);
                (
                    self.queue(&queue, r, exchange, &key),
                    bindings::amqp_receive(),
                )
            }
            Route::Default => {
                let id = format!("default.{key}");
                if !self.channels.contains_key(&id) {
                    self.channel(
                        &id,
                        &key,
                        || json!({ "address": h.event_name, "messages": {} }),
                    );
                }
                let group = h.group.clone().unwrap_or_else(|| h.name.clone());
                (id, json!({ "x-heytom-group": group }))
            }
        };
        let op = json!({
            "action": "receive",
            "title": format!("{} handles {}", h.name, h.event_name),
            "channel": reference(&format!("#/channels/{channel}")),
            "messages": [reference(&format!("#/channels/{channel}/messages/{key}"))],
            "bindings": bindings,
            "x-heytom-handler": h.function,
        });
        self.operations
            .insert(format!("receive.{}", component_key(&h.name)), op);
    }

    /// Moves a payload schema's definitions to `components.schemas` (its
    /// `$ref`s point there already); the first definition of a name wins.
    fn take_definitions(&mut self, payload: &mut Value) {
        let Some(obj) = payload.as_object_mut() else {
            return;
        };
        let Some(Value::Object(mut components)) = obj.remove("components") else {
            return;
        };
        if let Some(Value::Object(defs)) = components.remove("schemas") {
            for (name, schema) in defs {
                self.schemas.entry(name).or_insert(schema);
            }
        }
    }

    fn finish(self, info: AsyncApiInfo) -> Value {
        let mut i = Map::new();
        i.insert("title".into(), info.title.into());
        i.insert("version".into(), info.version.into());
        if let Some(d) = info.description {
            i.insert("description".into(), d.into());
        }
        let mut components = Map::new();
        components.insert("messages".into(), Value::Object(self.messages));
        if !self.schemas.is_empty() {
            components.insert("schemas".into(), Value::Object(self.schemas));
        }
        let mut doc = json!({
            "asyncapi": ASYNCAPI_VERSION,
            "info": i,
            "defaultContentType": "application/json",
            "channels": self.channels,
            "operations": self.operations,
            "components": components,
        });
        if !info.servers.is_empty() {
            doc["servers"] = Value::Object(info.servers.into_iter().collect());
        }
        doc
    }
}
