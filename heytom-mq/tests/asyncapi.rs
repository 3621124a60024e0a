//! `heytom_mq::asyncapi::document` against the official AsyncAPI 3.0.0
//! JSON Schema (`tests/asyncapi_schema/`, checked offline with the
//! `jsonschema` crate), with events that use every route attribute; and a
//! broken document that must fail the same check, so that it cannot pass
//! vacuously.

use heytom_mq::asyncapi::{document, document_with_handlers, AsyncApiInfo};
use heytom_mq::prelude::*;
use heytom_mq::HandlerEntry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Every `#[kafka]` key; also derives `JsonSchema`, with a nested type.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[kafka(
    topic = "asyncapi-orders",
    group_id = "asyncapi-billing",
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
struct ApiOrderCreated {
    order_id: String,
    amount: f64,
    customer: ApiCustomer,
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
struct ApiCustomer {
    id: u64,
    email: Option<String>,
}

/// Every `#[rabbitmq]` key; no `JsonSchema`: a message without a payload schema.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "asyncapi.order.placed",
    exchange = "asyncapi.orders",
    exchange_type = "topic",
    queue_name = "asyncapi.order.placed.queue",
    durable = true,
    message_ttl = 60000,
    max_length = 10000,
    max_priority = 10,
    dead_letter_exchange = "asyncapi.dlx",
    dead_letter_routing_key = "asyncapi.dead",
    overflow = "reject-publish-dlx",
    queue_type = "classic"
)]
struct ApiOrderPlaced {
    order_id: String,
}

/// Only the required key: default exchange, queue from routing key and handler.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[rabbitmq(routing_key = "asyncapi.user.signed-up")]
#[event(name = "asyncapi.UserSignedUp")]
struct ApiUserSignedUp {
    user_id: i64,
}

/// No transport attribute: the default transport.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
struct ApiPing {
    n: u32,
}

#[handler]
async fn api_bill(_event: ApiOrderCreated) {}

#[handler(group = "asyncapi-audit")]
async fn api_audit(_event: ApiOrderCreated) {}

#[handler]
async fn api_ship(_event: ApiOrderPlaced) {}

#[handler]
async fn api_welcome(_event: ApiUserSignedUp) {}

#[handler]
async fn api_pong(_event: ApiPing) {}

fn official_schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/asyncapi_schema/asyncapi-3.0.0.json"
    );
    let text = std::fs::read_to_string(path).expect("the AsyncAPI 3.0.0 schema file");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the AsyncAPI schema compiles")
}

/// Every validation error, one line each.
fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn doc() -> Value {
    document(
        AsyncApiInfo::new("heytom-mq AsyncAPI test", "1.2.3")
            .description("Every route attribute.")
            .server("rabbit", "localhost:5672", "amqp")
            .server("kafka", "localhost:9092", "kafka"),
    )
}

/// Follows a local `$ref` (`#/a/b`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_valid_asyncapi_3() {
    let doc = doc();
    let validator = official_schema();
    let found = errors(&validator, &doc);
    assert!(
        found.is_empty(),
        "the document is not valid AsyncAPI 3.0.0:\n{}\n{doc:#}",
        found.join("\n")
    );
    assert!(validator.is_valid(&doc));
}

#[test]
fn every_reference_resolves_in_the_document() {
    let doc = doc();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 10, "{doc:#}");
    for r in &all {
        assert!(resolve(&doc, r).is_some(), "unresolved $ref {r} in {doc:#}");
    }
}

#[test]
fn kafka_channels_carry_the_topic_attributes() {
    let doc = doc();
    let channel = &doc["channels"]["kafka.asyncapi-orders"];
    assert_eq!(channel["address"], "asyncapi-orders");
    let kafka = &channel["bindings"]["kafka"];
    assert_eq!(kafka["topic"], "asyncapi-orders");
    assert_eq!(kafka["partitions"], 3);
    assert_eq!(kafka["replicas"], 2);
    assert_eq!(kafka["topicConfiguration"]["retention.ms"], 86400000);
    assert_eq!(kafka["topicConfiguration"]["compression.type"], "gzip");
    let settings = &channel["x-heytom-kafka-settings"];
    assert_eq!(settings["acks"], "all");
    assert_eq!(settings["enable.idempotence"], true);
    assert_eq!(settings["auto.offset.reset"], "earliest");
    assert_eq!(settings["enable.auto.commit"], false);
    assert_eq!(settings["session.timeout.ms"], 10000);
    assert_eq!(settings["max.poll.records"], 500);
    // The message key is the partition key field.
    let message = &doc["components"]["messages"]["ApiOrderCreated"];
    assert!(message["bindings"]["kafka"]["key"]["description"]
        .as_str()
        .unwrap()
        .contains("order_id"));
    // One receive operation per handler, with its group.
    let bill = &doc["operations"]["receive.api_bill"];
    assert_eq!(bill["action"], "receive");
    assert_eq!(bill["channel"]["$ref"], "#/channels/kafka.asyncapi-orders");
    assert_eq!(
        bill["bindings"]["kafka"]["groupId"]["enum"],
        json!(["asyncapi-billing"])
    );
    let audit = &doc["operations"]["receive.api_audit"];
    assert_eq!(
        audit["bindings"]["kafka"]["groupId"]["enum"],
        json!(["asyncapi-audit"])
    );
    assert_eq!(doc["operations"]["send.ApiOrderCreated"]["action"], "send");
}

#[test]
fn rabbitmq_channels_carry_exchange_routing_key_and_queue_attributes() {
    let doc = doc();
    let exchange = &doc["channels"]["rabbitmq.asyncapi.orders.asyncapi.order.placed"];
    assert_eq!(exchange["address"], "asyncapi.order.placed");
    let amqp = &exchange["bindings"]["amqp"];
    assert_eq!(amqp["is"], "routingKey");
    assert_eq!(amqp["exchange"]["name"], "asyncapi.orders");
    assert_eq!(amqp["exchange"]["type"], "topic");
    assert_eq!(amqp["exchange"]["durable"], true);

    let queue = &doc["channels"]["rabbitmq.queue.asyncapi.order.placed.queue"];
    assert_eq!(queue["address"], "asyncapi.order.placed.queue");
    let amqp = &queue["bindings"]["amqp"];
    assert_eq!(amqp["is"], "queue");
    assert_eq!(amqp["queue"]["name"], "asyncapi.order.placed.queue");
    assert_eq!(amqp["queue"]["durable"], true);
    let args = &amqp["x-heytom-arguments"];
    assert_eq!(args["x-message-ttl"], 60000);
    assert_eq!(args["x-max-length"], 10000);
    assert_eq!(args["x-max-priority"], 10);
    assert_eq!(args["x-overflow"], "reject-publish-dlx");
    assert_eq!(args["x-queue-type"], "classic");
    assert_eq!(args["x-dead-letter-exchange"], "asyncapi.dlx");
    assert_eq!(args["x-dead-letter-routing-key"], "asyncapi.dead");
    assert_eq!(
        amqp["x-heytom-bindings"],
        json!([{ "exchange": "asyncapi.orders", "routingKey": "asyncapi.order.placed" }])
    );
    assert_eq!(amqp["x-heytom-dead-letters"]["queue"], "asyncapi.dlx.dlq");

    let ship = &doc["operations"]["receive.api_ship"];
    assert_eq!(
        ship["channel"]["$ref"],
        "#/channels/rabbitmq.queue.asyncapi.order.placed.queue"
    );
    assert_eq!(ship["bindings"]["amqp"]["ack"], true);
    let send = &doc["operations"]["send.ApiOrderPlaced"];
    assert_eq!(
        send["channel"]["$ref"],
        "#/channels/rabbitmq.asyncapi.orders.asyncapi.order.placed"
    );
    assert_eq!(send["bindings"]["amqp"]["deliveryMode"], 2);

    // Defaults: the transport's exchange, `<routing key>.<handler>` queue.
    assert!(doc["channels"]["rabbitmq.heytom.exchange.asyncapi.user.signed-up"].is_object());
    let welcome = &doc["channels"]["rabbitmq.queue.asyncapi.user.signed-up.api_welcome"];
    assert_eq!(
        welcome["bindings"]["amqp"]["x-heytom-dead-letters"]["queue"],
        "asyncapi.user.signed-up.api_welcome.dlq"
    );
}

#[test]
fn payload_schemas_come_from_json_schema_derives_only() {
    let doc = doc();
    let messages = &doc["components"]["messages"];
    let created = &messages["ApiOrderCreated"];
    assert_eq!(created["name"], "ApiOrderCreated");
    assert_eq!(created["contentType"], "application/json");
    let payload = &created["payload"];
    assert_eq!(payload["type"], "object");
    assert!(payload["properties"]["order_id"].is_object(), "{payload:#}");
    // The nested type is a component the payload refers to.
    let customer_ref = payload["properties"]["customer"]["$ref"].as_str().unwrap();
    assert_eq!(customer_ref, "#/components/schemas/ApiCustomer");
    assert!(resolve(&doc, customer_ref).unwrap()["properties"]["email"].is_object());
    // Not deriving JsonSchema: a named message without a payload.
    let placed = &messages["ApiOrderPlaced"];
    assert_eq!(placed["name"], "ApiOrderPlaced");
    assert!(placed.get("payload").is_none(), "{placed:#}");
    // `#[event(name)]` names the message; the key is made safe for components.
    let signed_up = &messages["asyncapi.UserSignedUp"];
    assert_eq!(signed_up["name"], "asyncapi.UserSignedUp");
    assert!(signed_up["payload"]["properties"]["user_id"].is_object());
    // The default transport.
    assert_eq!(doc["channels"]["default.ApiPing"]["address"], "ApiPing");
    assert!(messages["ApiPing"]["payload"].is_object());
}

#[test]
fn explicit_handlers_are_documented_too() {
    let handlers = vec![
        HandlerEntry::from_closure("explicit_ping", |_: ApiPing| async {}).group("ping-group"),
    ];
    let doc = document_with_handlers(AsyncApiInfo::default(), &handlers);
    let op = &doc["operations"]["receive.explicit_ping"];
    assert_eq!(op["channel"]["$ref"], "#/channels/default.ApiPing");
    assert_eq!(op["bindings"]["x-heytom-group"], "ping-group");
    assert!(doc["operations"].get("receive.api_pong").is_none());
    assert!(errors(&official_schema(), &doc).is_empty());
}

#[test]
fn a_broken_document_fails_the_same_check() {
    let validator = official_schema();
    let good = doc();
    assert!(validator.is_valid(&good));

    let mut no_info = good.clone();
    no_info.as_object_mut().unwrap().remove("info");
    assert!(
        !validator.is_valid(&no_info),
        "a document without info passed"
    );

    let mut bad_action = good.clone();
    bad_action["operations"]["send.ApiOrderCreated"]["action"] = json!("publish");
    assert!(
        !errors(&validator, &bad_action).is_empty(),
        "action `publish` passed"
    );

    let mut bad_binding = good.clone();
    bad_binding["channels"]["kafka.asyncapi-orders"]["bindings"]["kafka"]["partitions"] = json!(0);
    assert!(!validator.is_valid(&bad_binding), "0 partitions passed");

    let mut both = good;
    both["channels"]["rabbitmq.asyncapi.orders.asyncapi.order.placed"]["bindings"]["amqp"]
        ["queue"] = json!({ "name": "q" });
    assert!(
        !validator.is_valid(&both),
        "an AMQP routingKey binding with a queue passed"
    );
}
