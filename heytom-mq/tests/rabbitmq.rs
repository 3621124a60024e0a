//! What is specific to the RabbitMQ transport, against a real broker:
//! topology declared on the broker (arguments, exchange types, conflicts),
//! AMQP message properties, shared queues, broker-side TTL and dead-letter
//! exchanges, unroutable messages, the manual consumer, password redaction,
//! and recovery from a broker restart or a dropped connection. Behaviour
//! every transport shares (round trip, batches, fan-out, competing
//! consumers, retry, dead-lettering, malformed payloads, ordering, shutdown,
//! restart, priority) is checked by the conformance suite
//! (`tests/conformance/`), which runs on RabbitMQ too.
//!
//! The broker is `HEYTOM_RABBITMQ_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). When it is unreachable the
//! tests print a notice and return, unless `HEYTOM_TEST_REQUIRE_SERVICES=1`,
//! in which case they fail. The topology and restart tests also use
//! `rabbitmqctl` for the broker under test.
//!
//! Every test names its exchanges and queues with a fresh uuid and deletes
//! them when it ends, passing or failing. The broker-restart test takes a
//! write lock the others hold for reading, so it never runs beside them.

#![cfg(feature = "rabbitmq")]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heytom_mq::{
    App, Context, Error, Event, EventHandler, EventId, ExchangeType, HandlerEntry, HandlerError,
    Headers, Overflow, QueueType, RabbitMqConsumer, RabbitMqOptions, RabbitMqProducer,
    RabbitMqRoute, RetryPolicy, Route, Transport, UnknownEventPolicy,
};
use heytom_mq::{RabbitMqTransport, PRIORITY_HEADER};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

// ---------------------------------------------------------------- harness

mod log_count;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(20);

fn url() -> String {
    std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Tests hold this for reading; the restart test holds it for writing.
static BROKER_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A raw lapin connection to inspect the broker, or `None` (with a notice)
/// when it is unreachable and services are not required.
async fn broker() -> Option<Connection> {
    match Connection::connect(&url(), ConnectionProperties::default()).await {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "RabbitMQ is required (HEYTOM_TEST_REQUIRE_SERVICES=1) but unreachable: {e}"
                );
            }
            eprintln!("RabbitMQ unreachable ({e}); skipping this test");
            None
        }
    }
}

fn uid() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A fresh id per test process, so every run gets its own topology.
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(uid)
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(max_attempts)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50))
}

fn options() -> RabbitMqOptions {
    RabbitMqOptions::new(url())
        .exchange(format!("heytom.test.{}", run_id()))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .publish_timeout(Duration::from_secs(5))
}

/// Deletes queues and exchanges when dropped, also when a test panics.
#[derive(Default)]
struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    fn queue(&mut self, q: impl Into<String>) -> &mut Self {
        self.queues.push(q.into());
        self
    }
    fn exchange(&mut self, e: impl Into<String>) -> &mut Self {
        self.exchanges.push(e.into());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let work = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(conn) = Connection::connect(&url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                for q in queues {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for e in exchanges {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = work.join();
    }
}

/// Runs `rabbitmqctl` with arguments and returns its stdout.
async fn rabbitmqctl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(&args)
            .output()
    })
    .await
    .expect("rabbitmqctl task")
    .expect("rabbitmqctl must be installed for the broker under test");
    assert!(
        out.status.success(),
        "rabbitmqctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn ctl_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["-q", "--formatter", "json"];
    full.extend_from_slice(args);
    let text = rabbitmqctl(&full).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rabbitmqctl json ({e}): {text}"))
}

fn find<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("`{name}` not found on the broker"))
}

/// Fetches one message from a queue, polling until `WAIT` runs out.
async fn get_one(conn: &Connection, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let ch = conn.create_channel().await.ok()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .ok()?
        {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The AMQP `message_id`: the event id of a message heytom-mq sent.
fn message_id(props: &BasicProperties) -> Option<String> {
    props.message_id().as_ref().map(|s| s.to_string())
}

/// Messages waiting in a queue and its consumers (passive declare).
async fn queue_counts(conn: &Connection, queue: &str) -> (u32, u32) {
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    (q.message_count(), q.consumer_count())
}

/// `E`'s queue, declared and bound by a consumer that then leaves it
/// without one; the queue, its dead-letter queue and the exchange go to
/// `cleanup`. The consumer's declarations are its own: a producer made
/// after this has declared nothing yet.
async fn queue_without_consumer<E: Event>(cleanup: &mut Cleanup) -> &'static str {
    let r = route_of::<E>();
    let queue = r.queue_name.expect("a queue_name");
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.expect("an exchange"));
    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    consumer.subscribe(|_: E| async { true }).await.unwrap();
    consumer.unsubscribe::<E>().await.unwrap();
    queue
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a delivery")
        .expect("channel closed")
}

/// Records every delivery with its context.
struct Rec<E>(mpsc::UnboundedSender<(E, Context)>);

impl<E: Event> EventHandler<E> for Rec<E> {
    async fn handle(&self, event: E, ctx: Context) -> Result<(), HandlerError> {
        let _ = self.0.send((event, ctx));
        Ok(())
    }
}

fn recorder<E: Event>(name: &str) -> (HandlerEntry, mpsc::UnboundedReceiver<(E, Context)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (HandlerEntry::from_type::<E, Rec<E>>(name, Rec(tx)), rx)
}

/// Declares an event type with a route built once per process.
macro_rules! event {
    ($name:ident, $route:expr) => {
        #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
        struct $name {
            n: u32,
        }
        impl Event for $name {
            const NAME: &'static str = stringify!($name);
            fn route() -> &'static Route {
                static R: OnceLock<Route> = OnceLock::new();
                R.get_or_init(|| $route)
            }
            fn partition_key(&self) -> Option<String> {
                None
            }
        }
    };
}

fn name(prefix: &str) -> &'static str {
    leak(format!("{prefix}.{}", run_id()))
}

fn rmq(r: RabbitMqRoute) -> Route {
    Route::RabbitMq(r)
}

fn route_of<E: Event>() -> &'static RabbitMqRoute {
    E::route().as_rabbitmq().expect("a RabbitMQ route")
}

/// `<routing key>.<handler>`: the queue of a handler on an event without `queue_name`.
fn derived_queue<E: Event>(handler: &str) -> String {
    format!("{}.{handler}", route_of::<E>().routing_key)
}

// ---------------------------------------------------------------- events

event!(
    FullTopology,
    rmq(RabbitMqRoute::new(name("full.created"))
        .exchange(name("full.exchange"))
        .exchange_type(ExchangeType::Direct)
        .queue_name(name("full.queue"))
        .durable(true)
        .message_ttl(60000)
        .max_length(10000)
        .max_priority(10)
        .dead_letter_exchange(name("full.dlx"))
        .dead_letter_routing_key(name("full.dead")))
);

// Same queue as FullTopology, another TTL.
event!(
    ConflictingTopology,
    rmq(RabbitMqRoute::new(name("full.created"))
        .exchange(name("full.exchange"))
        .exchange_type(ExchangeType::Direct)
        .queue_name(name("full.queue"))
        .message_ttl(1000))
);

event!(
    MinimalTopology,
    rmq(RabbitMqRoute::new(name("minimal.created")).exchange(name("minimal.exchange")))
);

event!(
    DirectEvent,
    rmq(RabbitMqRoute::new(name("rt.direct.key"))
        .exchange(name("rt.direct"))
        .exchange_type(ExchangeType::Direct))
);

event!(
    TopicEvent,
    rmq(RabbitMqRoute::new(name("rt.topic.key"))
        .exchange(name("rt.topic"))
        .exchange_type(ExchangeType::Topic))
);

event!(
    FanoutEvent,
    rmq(RabbitMqRoute::new(name("rt.fanout.key"))
        .exchange(name("rt.fanout"))
        .exchange_type(ExchangeType::Fanout))
);

// No attribute: the default exchange, routing key = NAME.
event!(PlainEvent, Route::Default);

event!(
    SharedQueueEvent,
    rmq(RabbitMqRoute::new(name("shared.key"))
        .exchange(name("shared.exchange"))
        .queue_name(name("shared.queue")))
);

event!(
    CompetingEvent,
    rmq(RabbitMqRoute::new(name("compete.key"))
        .exchange(name("compete.exchange"))
        .queue_name(name("compete.queue")))
);

event!(
    DeadEvent,
    rmq(RabbitMqRoute::new(name("dead.key")).exchange(name("dead.exchange")))
);

event!(
    DeadToDlxEvent,
    rmq(RabbitMqRoute::new(name("deaddlx.key"))
        .exchange(name("deaddlx.exchange"))
        .dead_letter_exchange(name("deaddlx.dlx"))
        .dead_letter_routing_key(name("deaddlx.dead")))
);

event!(
    MalformedEvent,
    rmq(RabbitMqRoute::new(name("malformed.key")).exchange(name("malformed.exchange")))
);

event!(
    TtlEvent,
    rmq(RabbitMqRoute::new(name("ttl.key"))
        .exchange(name("ttl.exchange"))
        .queue_name(name("ttl.queue"))
        .message_ttl(100)
        .dead_letter_exchange(name("ttl.dlx"))
        .dead_letter_routing_key(name("ttl.expired")))
);

event!(
    UnsubscribeEvent,
    rmq(RabbitMqRoute::new(name("unsub.key"))
        .exchange(name("unsub.exchange"))
        .queue_name(name("unsub.queue")))
);

event!(
    BurstEvent,
    rmq(RabbitMqRoute::new(name("burst.key"))
        .exchange(name("burst.exchange"))
        .queue_name(name("burst.queue")))
);

event!(
    UnroutableEvent,
    rmq(RabbitMqRoute::new(name("unroutable.key")).exchange(name("unroutable.exchange")))
);

event!(
    MultiA,
    rmq(RabbitMqRoute::new(name("multi.a"))
        .exchange(name("multi.exchange"))
        .queue_name(name("multi.queue")))
);

event!(
    MultiB,
    rmq(RabbitMqRoute::new(name("multi.b"))
        .exchange(name("multi.exchange"))
        .queue_name(name("multi.queue")))
);

event!(
    DroppedEvent,
    rmq(RabbitMqRoute::new(name("dropped.key"))
        .exchange(name("dropped.exchange"))
        .queue_name(name("dropped.queue")))
);

event!(
    RestartEvent,
    rmq(RabbitMqRoute::new(name("restart.key"))
        .exchange(name("restart.exchange"))
        .queue_name(name("restart.queue")))
);

event!(
    QuorumEvent,
    rmq(RabbitMqRoute::new(name("quorum.key"))
        .exchange(name("quorum.exchange"))
        .queue_name(name("quorum.queue"))
        .queue_type(QueueType::Quorum)
        .max_length(100))
);

event!(
    StreamEvent,
    rmq(RabbitMqRoute::new(name("stream.key"))
        .exchange(name("stream.exchange"))
        .queue_name(name("stream.queue"))
        .queue_type(QueueType::Stream))
);

event!(
    LimitedEvent,
    rmq(RabbitMqRoute::new(name("limited.key"))
        .exchange(name("limited.exchange"))
        .queue_name(name("limited.queue"))
        .max_length(5))
);

event!(
    BusyEvent,
    rmq(RabbitMqRoute::new(name("busy.key"))
        .exchange(name("busy.exchange"))
        .queue_name(name("busy.queue"))
        .max_length(5))
);

event!(
    SlowFirstEvent,
    rmq(RabbitMqRoute::new(name("slowfirst.key"))
        .exchange(name("slowfirst.exchange"))
        .queue_name(name("slowfirst.queue")))
);

event!(
    DropHeadEvent,
    rmq(RabbitMqRoute::new(name("drophead.key"))
        .exchange(name("drophead.exchange"))
        .queue_name(name("drophead.queue"))
        .max_length(5)
        .overflow(Overflow::DropHead))
);

event!(
    ForeignEvent,
    rmq(RabbitMqRoute::new(name("foreign.key"))
        .exchange(name("foreign.exchange"))
        .queue_name(name("foreign.queue")))
);

event!(
    DlxGoneEvent,
    rmq(RabbitMqRoute::new(name("dlxgone.key"))
        .exchange(name("dlxgone.exchange"))
        .queue_name(name("dlxgone.queue"))
        .dead_letter_exchange(name("dlxgone.dlx")))
);

event!(
    StuckA,
    rmq(RabbitMqRoute::new(name("stuck.a"))
        .exchange(name("stuck.exchange"))
        .queue_name(name("stuck.queue")))
);

event!(
    StuckB,
    rmq(RabbitMqRoute::new(name("stuck.b"))
        .exchange(name("stuck.exchange"))
        .queue_name(name("stuck.queue")))
);

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn every_rabbitmq_key_is_declared_on_the_broker() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let r = route_of::<FullTopology>();
    let queue = r.queue_name.unwrap();
    let dlx = r.dead_letter_exchange.unwrap();
    let minimal = route_of::<MinimalTopology>();
    let minimal_queue = derived_queue::<MinimalTopology>("minimal");
    let mut cleanup = Cleanup::default();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .queue(format!("{dlx}.dlq"))
        .queue(&minimal_queue)
        .queue(format!("{minimal_queue}.dlq"))
        .exchange(r.exchange.unwrap())
        .exchange(dlx)
        .exchange(minimal.exchange.unwrap());

    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    consumer
        .subscribe(|_: FullTopology| async { true })
        .await
        .unwrap();
    let minimal_consumer = RabbitMqConsumer::connect(options())
        .await
        .unwrap()
        .with_group(&minimal_queue);
    minimal_consumer.start().await.unwrap();
    minimal_consumer
        .subscribe(|_: MinimalTopology| async { true })
        .await
        .unwrap();

    let queues = ctl_json(&["list_queues", "name", "durable", "auto_delete", "arguments"]).await;
    let q = find(&queues, queue);
    assert_eq!(q["durable"], true, "{q}");
    // rabbitmqctl lists arguments as [name, type, value]
    let arg = |name: &str| {
        q["arguments"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x[0] == name))
            .map(|x| (x[1].as_str().unwrap_or("").to_owned(), x[2].clone()))
            .unwrap_or_else(|| panic!("argument {name} missing: {q}"))
    };
    assert_eq!(arg("x-message-ttl"), ("signedint".into(), 60000.into()));
    assert_eq!(arg("x-max-length"), ("signedint".into(), 10000.into()));
    // A length limit refuses new messages rather than dropping old ones.
    assert_eq!(
        arg("x-overflow"),
        ("longstr".into(), "reject-publish".into())
    );
    assert_eq!(arg("x-max-priority"), ("signedint".into(), 10.into()));
    assert_eq!(
        arg("x-dead-letter-exchange"),
        ("longstr".into(), dlx.into())
    );
    assert_eq!(
        arg("x-dead-letter-routing-key"),
        ("longstr".into(), r.dead_letter_routing_key.unwrap().into())
    );
    let mq = find(&queues, &minimal_queue);
    assert_eq!(mq["durable"], true, "{mq}");
    assert!(
        mq["arguments"].as_object().is_none_or(|a| a.is_empty())
            && mq["arguments"].as_array().is_none_or(|a| a.is_empty()),
        "{mq}"
    );
    find(&queues, &format!("{minimal_queue}.dlq"));
    find(&queues, &format!("{dlx}.dlq"));

    let exchanges = ctl_json(&["list_exchanges", "name", "type", "durable"]).await;
    let ex = find(&exchanges, r.exchange.unwrap());
    assert_eq!(
        (ex["type"].as_str(), ex["durable"].as_bool()),
        (Some("direct"), Some(true)),
        "{ex}"
    );
    let ex = find(&exchanges, dlx);
    assert_eq!(ex["type"], "direct", "{ex}");
    let ex = find(&exchanges, minimal.exchange.unwrap());
    assert_eq!(
        (ex["type"].as_str(), ex["durable"].as_bool()),
        (Some("topic"), Some(true)),
        "{ex}"
    );

    let bindings = ctl_json(&[
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
    ])
    .await;
    let bound = |src: &str, dst: &str, key: &str| {
        bindings.iter().any(|b| {
            b["source_name"] == src && b["destination_name"] == dst && b["routing_key"] == key
        })
    };
    assert!(bound(r.exchange.unwrap(), queue, r.routing_key));
    assert!(bound(
        dlx,
        &format!("{dlx}.dlq"),
        r.dead_letter_routing_key.unwrap()
    ));
    assert!(bound(
        minimal.exchange.unwrap(),
        &minimal_queue,
        minimal.routing_key
    ));

    // The same queue with another TTL: a topology error naming the argument.
    let other = RabbitMqConsumer::connect(options()).await.unwrap();
    other.start().await.unwrap();
    let err = other
        .subscribe(|_: ConflictingTopology| async { true })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Topology { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("x-message-ttl") && text.contains(queue),
        "{text}"
    );

    // Producer-side declare creates the exchange alone.
    let transport = RabbitMqTransport::connect(options()).await.unwrap();
    let declared = name("declared.exchange");
    cleanup.exchange(declared);
    static DECLARED: OnceLock<Route> = OnceLock::new();
    let route = DECLARED.get_or_init(|| {
        rmq(RabbitMqRoute::new("declared")
            .exchange(name("declared.exchange"))
            .exchange_type(ExchangeType::Fanout)
            .durable(false))
    });
    transport.declare(route, "Declared").await.unwrap();
    let exchanges = ctl_json(&["list_exchanges", "name", "type", "durable"]).await;
    let ex = find(&exchanges, declared);
    assert_eq!(
        (ex["type"].as_str(), ex["durable"].as_bool()),
        (Some("fanout"), Some(false)),
        "{ex}"
    );
    transport.close().await.unwrap();

    consumer.stop().await.unwrap();
    minimal_consumer.stop().await.unwrap();
    drop(conn);
}

#[tokio::test]
async fn round_trip_on_direct_topic_fanout_and_default_exchanges() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let (direct, mut direct_rx) = recorder::<DirectEvent>("direct");
    let (topic, mut topic_rx) = recorder::<TopicEvent>("topic");
    let (fanout, mut fanout_rx) = recorder::<FanoutEvent>("fanout");
    let plain_handler = format!("plain_{}", run_id());
    let (plain, mut plain_rx) = recorder::<PlainEvent>(&plain_handler);
    for q in [
        derived_queue::<DirectEvent>("direct"),
        derived_queue::<TopicEvent>("topic"),
        derived_queue::<FanoutEvent>("fanout"),
        format!("PlainEvent.{plain_handler}"),
    ] {
        cleanup.queue(format!("{q}.dlq")).queue(q);
    }
    for e in [
        route_of::<DirectEvent>().exchange,
        route_of::<TopicEvent>().exchange,
        route_of::<FanoutEvent>().exchange,
    ] {
        cleanup.exchange(e.unwrap());
    }
    cleanup.exchange(format!("heytom.test.{}", run_id()));

    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(direct)
        .handler_entry(topic)
        .handler_entry(fanout)
        .handler_entry(plain)
        .start()
        .await
        .unwrap();
    let producer = app.producer();

    let mut h = Headers::new();
    h.insert("tenant".into(), "acme".into());
    let id = producer
        .send_with_headers(&DirectEvent { n: 1 }, h)
        .await
        .unwrap();
    let (e, ctx) = recv(&mut direct_rx).await;
    assert_eq!(e, DirectEvent { n: 1 });
    assert_eq!(ctx.event_id(), id);
    assert_eq!(ctx.event_name(), "DirectEvent");
    assert_eq!(ctx.header("tenant"), Some("acme"));
    assert_eq!(ctx.correlation_id(), Some(id.to_string().as_str()));
    assert_eq!(ctx.attempt(), 1);

    let id = producer.send(&TopicEvent { n: 2 }).await.unwrap();
    let (e, ctx) = recv(&mut topic_rx).await;
    assert_eq!((e.n, ctx.event_id()), (2, id));

    let id = producer.send(&FanoutEvent { n: 3 }).await.unwrap();
    let (e, ctx) = recv(&mut fanout_rx).await;
    assert_eq!((e.n, ctx.event_id()), (3, id));

    let id = producer.send(&PlainEvent { n: 4 }).await.unwrap();
    let (e, ctx) = recv(&mut plain_rx).await;
    assert_eq!((e.n, ctx.event_id()), (4, id));

    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn message_properties_on_the_wire() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    // A plain queue bound by hand shows what a foreign consumer sees.
    let exchange = name("wire.exchange");
    let queue = name("wire.queue");
    cleanup.queue(queue).exchange(exchange);
    let transport = Arc::new(
        RabbitMqTransport::connect(options().exchange(exchange))
            .await
            .unwrap(),
    );
    // Producer-side declare: the default exchange, for an event without attribute.
    transport
        .declare(&Route::Default, PlainEvent::NAME)
        .await
        .unwrap();
    let producer = heytom_mq::Producer::on(transport.clone());
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        "PlainEvent".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut h = Headers::new();
    h.insert(PRIORITY_HEADER.into(), "7".into());
    let id = producer
        .send_with_headers(&PlainEvent { n: 9 }, h)
        .await
        .unwrap();
    let m = get_one(&conn, queue).await.expect("message on the queue");
    let p = &m.delivery.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.to_string()),
        Some(id.to_string())
    );
    assert_eq!(
        p.kind().as_ref().map(|s| s.to_string()).as_deref(),
        Some("PlainEvent")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.to_string()).as_deref(),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(*p.priority(), Some(7));
    assert!(p.timestamp().is_some());
    // the id and name travel once, as message_id and type, not as headers too
    assert_eq!(header(p, "heytom-event-id"), None);
    assert_eq!(header(p, "heytom-event-name"), None);
    assert!(header(p, "heytom-occurred-at").is_some());
    // the default correlation id (the event id): as the property only
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.to_string()),
        Some(id.to_string())
    );
    assert_eq!(header(p, "correlation-id"), None);
    assert_eq!(m.delivery.data, br#"{"n":9}"#);

    let mut bad = Headers::new();
    bad.insert(PRIORITY_HEADER.into(), "high".into());
    let err = producer
        .send_with_headers(&PlainEvent { n: 10 }, bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("priority"), "{err}");
    transport.close().await.unwrap();
}

#[tokio::test]
async fn fan_out_to_two_handlers() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let (a, mut a_rx) = recorder::<FanoutEvent>("fan_a");
    let (b, mut b_rx) = recorder::<FanoutEvent>("fan_b");
    let (c, mut c_rx) = recorder::<SharedQueueEvent>("shared_c");
    let (d, mut d_rx) = recorder::<SharedQueueEvent>("shared_d");
    for q in [
        derived_queue::<FanoutEvent>("fan_a"),
        derived_queue::<FanoutEvent>("fan_b"),
        route_of::<SharedQueueEvent>()
            .queue_name
            .unwrap()
            .to_owned(),
    ] {
        cleanup.queue(format!("{q}.dlq")).queue(q);
    }
    cleanup
        .exchange(route_of::<FanoutEvent>().exchange.unwrap())
        .exchange(route_of::<SharedQueueEvent>().exchange.unwrap());

    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(a)
        .handler_entry(b)
        .handler_entry(c)
        .handler_entry(d)
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    // Two queues on a fanout exchange: each handler gets every message.
    let ids = producer
        .send_batch(&[FanoutEvent { n: 1 }, FanoutEvent { n: 2 }])
        .await
        .unwrap();
    for rx in [&mut a_rx, &mut b_rx] {
        let got: HashSet<EventId> =
            [recv(rx).await.1.event_id(), recv(rx).await.1.event_id()].into();
        assert_eq!(got, ids.iter().copied().collect());
    }
    // One shared queue: one consumer, each message runs through both handlers.
    let id = producer.send(&SharedQueueEvent { n: 5 }).await.unwrap();
    assert_eq!(recv(&mut c_rx).await.1.event_id(), id);
    assert_eq!(recv(&mut d_rx).await.1.event_id(), id);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_events_share_one_queue() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = route_of::<MultiA>().queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(route_of::<MultiA>().exchange.unwrap());
    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    consumer
        .subscribe(move |e: MultiA| {
            let tx = tx_a.clone();
            async move { tx.send(e.n).is_ok() }
        })
        .await
        .unwrap();
    consumer
        .subscribe(move |e: MultiB| {
            let tx = tx_b.clone();
            async move { tx.send(e.n).is_ok() }
        })
        .await
        .unwrap();
    assert_eq!(
        queue_counts(&conn, queue).await.1,
        1,
        "one consumer for both events"
    );
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    producer.send(&MultiA { n: 1 }).await.unwrap();
    producer.send(&MultiB { n: 2 }).await.unwrap();
    assert_eq!(recv(&mut rx_a).await, 1);
    assert_eq!(recv(&mut rx_b).await, 2);

    // Without a subscriber for A, its messages are dead-lettered as unknown.
    consumer.unsubscribe::<MultiA>().await.unwrap();
    producer.send(&MultiB { n: 3 }).await.unwrap();
    assert_eq!(recv(&mut rx_b).await, 3);
    producer.send(&MultiA { n: 4 }).await.unwrap();
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("dead-lettered");
    let reason = header(&m.delivery.properties, "heytom-dead-letter-reason").unwrap();
    assert!(reason.contains("unknown message type `MultiA`"), "{reason}");
    consumer.unsubscribe::<MultiB>().await.unwrap();
    assert_eq!(
        queue_counts(&conn, queue).await.1,
        0,
        "consumer gone with the last event"
    );
    assert!(rx_a.try_recv().is_err());
}

#[tokio::test]
async fn competing_consumers_share_one_queue() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = route_of::<CompetingEvent>().queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(route_of::<CompetingEvent>().exchange.unwrap());

    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u32)>();
    let mut consumers = Vec::new();
    for who in 0..2 {
        let c = RabbitMqConsumer::connect(options().prefetch(1).concurrency(1))
            .await
            .unwrap();
        c.start().await.unwrap();
        let tx = tx.clone();
        c.subscribe(move |e: CompetingEvent| {
            let tx = tx.clone();
            async move {
                // Slow enough that the other consumer gets its share.
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send((who, e.n)).is_ok()
            }
        })
        .await
        .unwrap();
        consumers.push(c);
    }
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    let events: Vec<CompetingEvent> = (0..100).map(|n| CompetingEvent { n }).collect();
    producer.send_batch(&events).await.unwrap();
    let mut seen = BTreeMap::new();
    let mut per_consumer = [0usize; 2];
    for _ in 0..100 {
        let (who, n) = recv(&mut rx).await;
        per_consumer[who] += 1;
        assert!(seen.insert(n, who).is_none(), "message {n} delivered twice");
    }
    assert_eq!(seen.len(), 100);
    assert!(
        per_consumer[0] > 0 && per_consumer[1] > 0,
        "{per_consumer:?}"
    );
    for c in &consumers {
        c.stop().await.unwrap();
    }
    // Each message was acknowledged exactly once: nothing is left.
    let (waiting, _) = queue_counts(&_conn, queue).await;
    assert_eq!(waiting, 0);
}

#[tokio::test]
async fn dead_letter_after_max_attempts_with_reason_headers() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = derived_queue::<DeadEvent>("doomed");
    let r = route_of::<DeadToDlxEvent>();
    let dlx = r.dead_letter_exchange.unwrap();
    let dlx_queue = derived_queue::<DeadToDlxEvent>("doomed_dlx");
    cleanup
        .queue(&queue)
        .queue(format!("{queue}.dlq"))
        .queue(&dlx_queue)
        .queue(format!("{dlx}.dlq"))
        .exchange(route_of::<DeadEvent>().exchange.unwrap())
        .exchange(r.exchange.unwrap())
        .exchange(dlx);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let doomed = HandlerEntry::from_closure("doomed", move |_: DeadEvent| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("database is down") }
    })
    .retry(fast_retry(3));
    let doomed_dlx = HandlerEntry::from_closure("doomed_dlx", |_: DeadToDlxEvent| async { false })
        .retry(fast_retry(2));
    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(doomed)
        .handler_entry(doomed_dlx)
        .start()
        .await
        .unwrap();
    let id = app.producer().send(&DeadEvent { n: 1 }).await.unwrap();
    // No dead-letter exchange: `<queue>.dlq`.
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("dead-lettered");
    let p = &m.delivery.properties;
    assert_eq!(
        header(p, "heytom-dead-letter-reason").as_deref(),
        Some("database is down")
    );
    assert_eq!(
        header(p, "heytom-dead-letter-attempts").as_deref(),
        Some("3")
    );
    assert_eq!(
        header(p, "heytom-dead-letter-handler").as_deref(),
        Some("doomed")
    );
    assert_eq!(message_id(p), Some(id.to_string()));
    assert_eq!(m.delivery.data, br#"{"n":1}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // With one: to that exchange with its routing key.
    let id = app.producer().send(&DeadToDlxEvent { n: 2 }).await.unwrap();
    let m = get_one(&conn, &format!("{dlx}.dlq"))
        .await
        .expect("dead-lettered to the DLX");
    assert_eq!(
        m.delivery.routing_key.as_str(),
        r.dead_letter_routing_key.unwrap()
    );
    let p = &m.delivery.properties;
    assert_eq!(
        header(p, "heytom-dead-letter-attempts").as_deref(),
        Some("2")
    );
    assert!(
        header(p, "heytom-dead-letter-reason").is_some_and(|r| r.contains("false")),
        "{p:?}"
    );
    assert_eq!(message_id(p), Some(id.to_string()));
    app.shutdown().await.unwrap();
    assert_eq!(
        queue_counts(&conn, &queue).await.0,
        0,
        "original acknowledged"
    );
}

#[tokio::test]
async fn malformed_payload_goes_to_dead_letter_and_consuming_goes_on() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<MalformedEvent>();
    let queue = derived_queue::<MalformedEvent>("strict");
    cleanup
        .queue(&queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let (entry, mut rx) = recorder::<MalformedEvent>("strict");
    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(entry.retry(fast_retry(3)))
        .start()
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let publish = |body: &'static [u8], kind: &'static str| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                r.exchange.unwrap().into(),
                r.routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_type(kind.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // Not JSON, then JSON of another shape, then a message of another type.
    publish(b"not json at all", "MalformedEvent").await;
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("dead-lettered");
    let reason = header(&m.delivery.properties, "heytom-dead-letter-reason").unwrap();
    assert!(reason.contains("does not decode"), "{reason}");
    assert_eq!(
        header(&m.delivery.properties, "heytom-dead-letter-attempts").as_deref(),
        Some("0")
    );
    assert_eq!(m.delivery.data, b"not json at all");

    publish(br#"{"n":"seven"}"#, "MalformedEvent").await;
    assert!(get_one(&conn, &format!("{queue}.dlq")).await.is_some());

    publish(br#"{"n":1}"#, "SomethingElse").await;
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("unknown type dead-lettered");
    let reason = header(&m.delivery.properties, "heytom-dead-letter-reason").unwrap();
    assert!(reason.contains("unknown message type"), "{reason}");

    // A foreign producer's valid message (no heytom headers) is handled.
    publish(br#"{"n":8}"#, "MalformedEvent").await;
    assert_eq!(recv(&mut rx).await.0, MalformedEvent { n: 8 });
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn ttl_expiry_goes_to_the_dead_letter_exchange() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<TtlEvent>();
    let queue = r.queue_name.unwrap();
    let dlx = r.dead_letter_exchange.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{dlx}.dlq"))
        .exchange(r.exchange.unwrap())
        .exchange(dlx);
    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    consumer
        .subscribe(|_: TtlEvent| async { true })
        .await
        .unwrap();
    consumer.unsubscribe::<TtlEvent>().await.unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    let id = producer.send(&TtlEvent { n: 1 }).await.unwrap();
    // Nobody consumes: after 100 ms the broker moves it to the DLX.
    let m = get_one(&conn, &format!("{dlx}.dlq"))
        .await
        .expect("expired into the DLX");
    assert_eq!(message_id(&m.delivery.properties), Some(id.to_string()));
    assert_eq!(
        m.delivery.routing_key.as_str(),
        r.dead_letter_routing_key.unwrap()
    );
    assert!(
        header(&m.delivery.properties, "x-death").is_some(),
        "broker-side dead-lettering"
    );
    assert_eq!(queue_counts(&conn, queue).await.0, 0);
}

#[tokio::test]
async fn unsubscribe_stops_consuming() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<UnsubscribeEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = move |e: UnsubscribeEvent| {
        let tx = tx.clone();
        async move { tx.send(e.n).is_ok() }
    };
    consumer.subscribe(sub.clone()).await.unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    producer.send(&UnsubscribeEvent { n: 1 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 1);
    assert_eq!(queue_counts(&conn, queue).await.1, 1, "one consumer");
    consumer.unsubscribe::<UnsubscribeEvent>().await.unwrap();
    assert_eq!(queue_counts(&conn, queue).await, (0, 0), "consumer gone");
    producer.send(&UnsubscribeEvent { n: 2 }).await.unwrap();
    assert_eq!(
        queue_counts(&conn, queue).await,
        (1, 0),
        "the message waits in the queue"
    );
    assert!(rx.try_recv().is_err());
    // Subscribing again on the running consumer takes up the waiting message.
    consumer.subscribe(sub).await.unwrap();
    assert_eq!(recv(&mut rx).await, 2);
    assert_eq!(queue_counts(&conn, queue).await, (0, 1));
    consumer.stop().await.unwrap();
}

/// A new producer's first burst of concurrent sends declares the exchange
/// once: the sends that meet it undeclared wait for that declaration
/// instead of each sending its own `exchange.declare` (one per send before,
/// 20,000 for a burst of 20,000).
#[tokio::test]
async fn a_burst_of_first_sends_declares_the_exchange_once() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = queue_without_consumer::<BurstEvent>(&mut cleanup).await;
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    let declarations = log_count::LogCount::of("declaring RabbitMQ exchange");
    let events: Vec<BurstEvent> = (0..50).map(|n| BurstEvent { n }).collect();
    let ids = futures::future::try_join_all(events.iter().map(|e| producer.send(e)))
        .await
        .unwrap();
    assert_eq!(ids.len(), 50);
    assert_eq!(declarations.count(), 1, "one declaration for the burst");
    producer.send(&BurstEvent { n: 50 }).await.unwrap();
    assert_eq!(declarations.count(), 1, "none once declared");
    assert_eq!(queue_counts(&conn, queue).await.0, 51, "every send arrived");
}

#[tokio::test]
async fn unroutable_message_is_an_error() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    cleanup.exchange(route_of::<UnroutableEvent>().exchange.unwrap());
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    // The exchange exists (declared on first use) but no queue is bound.
    let err = producer.send(&UnroutableEvent { n: 1 }).await.unwrap_err();
    assert!(matches!(err, Error::Publish { .. }), "{err:?}");
    assert!(err.to_string().contains("unroutable"), "{err}");
    let err = producer
        .send_batch(&[UnroutableEvent { n: 1 }, UnroutableEvent { n: 2 }])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2 of 2 failed"), "{err}");
}

#[tokio::test]
async fn connection_errors_hide_the_password() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    // Wrong password on the real broker, then a port nobody listens on.
    let wrong = url().replacen(":guest@", ":s3cret-pw@", 1);
    for u in [wrong, "amqp://guest:s3cret-pw@127.0.0.1:1/%2f".to_owned()] {
        let opts = RabbitMqOptions::new(u).connect_timeout(Duration::from_secs(5));
        assert!(!format!("{opts:?}").contains("s3cret-pw"));
        let err = RabbitMqProducer::connect(opts).await.unwrap_err();
        assert!(matches!(err, Error::Connection { .. }), "{err:?}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
        assert!(!format!("{err:?}").contains("s3cret-pw"), "{err:?}");
    }
}

/// Starts the RabbitMQ app again when dropped, whatever happened.
struct StartAppGuard;

impl Drop for StartAppGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

async fn wait_for_broker() {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = Connection::connect(&url(), ConnectionProperties::default()).await {
            let _ = c.close(200, "probe".into()).await;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "RabbitMQ did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn broker_restart_mid_stream_loses_nothing() {
    let _exclusive = BROKER_LOCK.write().await;
    let Some(conn) = broker().await else { return };
    drop(conn);
    let mut cleanup = Cleanup::default();
    let r = route_of::<RestartEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());

    let received = Arc::new(Mutex::new(HashSet::<EventId>::new()));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let rec = received.clone();
    let entry = HandlerEntry::from_type::<RestartEvent, _>("restart", {
        struct Collect(Arc<Mutex<HashSet<EventId>>>, mpsc::UnboundedSender<()>);
        impl EventHandler<RestartEvent> for Collect {
            async fn handle(&self, _e: RestartEvent, ctx: Context) -> Result<(), HandlerError> {
                self.0.lock().unwrap().insert(ctx.event_id());
                let _ = self.1.send(());
                Ok(())
            }
        }
        Collect(rec, tx)
    });
    let opts = options().publish_timeout(Duration::from_secs(2));
    let app = App::builder()
        .rabbitmq(opts)
        .discover(false)
        .handler_entry(entry)
        .start()
        .await
        .unwrap();
    let producer = app.producer();

    // Publish 1,000 messages one by one; a failed publish is retried, so
    // every message is confirmed exactly when the broker has it.
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let publisher = tokio::spawn(async move {
        let mut confirmed = Vec::new();
        let mut failures = Vec::new();
        for n in 0..1000u32 {
            let envelope = heytom_mq::Envelope::new(&RestartEvent { n }).unwrap();
            let id = envelope.id;
            loop {
                match producer
                    .send_envelope(RestartEvent::route(), envelope.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        failures.push(e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            confirmed.push(id);
            let _ = progress_tx.send(confirmed.len());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (confirmed, failures)
    });

    progress_rx.wait_for(|n| *n >= 300).await.unwrap();
    {
        let _guard = StartAppGuard;
        rabbitmqctl(&["stop_app"]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rabbitmqctl(&["start_app"]).await;
    }
    wait_for_broker().await;

    let (confirmed, failures) = tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished")
        .unwrap();
    eprintln!(
        "{} publish attempts failed during the restart; first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(confirmed.len(), 1000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let got = received.lock().unwrap();
            confirmed.iter().filter(|id| !got.contains(id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} confirmed messages never arrived"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn producer_and_consumer_recover_from_a_dropped_connection() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<DroppedEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let conn_name = name("dropped.conn");
    let (entry, mut rx) = recorder::<DroppedEvent>("dropped");
    let app = App::builder()
        .rabbitmq(options().connection_name(conn_name))
        .discover(false)
        .handler_entry(entry)
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    producer.send(&DroppedEvent { n: 1 }).await.unwrap();
    assert_eq!(recv(&mut rx).await.0.n, 1);

    // The broker closes exactly this app's connections (publish and consume).
    let connections = rabbitmqctl(&["list_connections", "-q", "pid", "client_properties"]).await;
    let ours: Vec<String> = connections
        .lines()
        .filter(|l| l.contains(conn_name))
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect();
    assert_eq!(ours.len(), 2, "{connections:?}");
    for pid in &ours {
        rabbitmqctl(&["close_connection", pid, "test drops the connection"]).await;
    }

    // Publishing reconnects (a publish racing the drop may fail: retry it).
    let mut sent = None;
    for _ in 0..50 {
        match producer.send(&DroppedEvent { n: 2 }).await {
            Ok(id) => {
                sent = Some(id);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let id = sent.expect("publishing recovered");
    let (e, ctx) = recv(&mut rx).await;
    assert_eq!((e.n, ctx.event_id()), (2, id), "consuming recovered");
    app.shutdown().await.unwrap();
}

/// The queue's row in `rabbitmqctl list_queues` (name, type, durable, arguments).
async fn queue_row(queue: &str) -> serde_json::Value {
    let rows = ctl_json(&["list_queues", "name", "type", "durable", "arguments"]).await;
    find(&rows, queue).clone()
}

/// A queue argument as rabbitmqctl lists it: `[name, type, value]`.
fn queue_arg(row: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    row["arguments"]
        .as_array()?
        .iter()
        .find(|x| x[0] == name)
        .map(|x| x[2].clone())
}

#[tokio::test]
async fn a_quorum_queue_is_declared_and_carries_messages() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<QuorumEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // #2 fails: dead-lettered.
    let entry = HandlerEntry::from_closure("quorum", move |e: QuorumEvent| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e.n);
            e.n != 2
        }
    })
    .retry(fast_retry(1));
    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(entry)
        .start()
        .await
        .unwrap();
    let q = queue_row(queue).await;
    assert_eq!(
        (q["type"].as_str(), q["durable"].as_bool()),
        (Some("quorum"), Some(true)),
        "{q}"
    );
    assert_eq!(queue_arg(&q, "x-queue-type"), Some("quorum".into()), "{q}");
    assert_eq!(
        queue_arg(&q, "x-overflow"),
        Some("reject-publish".into()),
        "{q}"
    );
    // Its dead letters are replicated too.
    let dlq = queue_row(&format!("{queue}.dlq")).await;
    assert_eq!(dlq["type"], "quorum", "{dlq}");

    app.producer().send(&QuorumEvent { n: 1 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 1);
    let id = app.producer().send(&QuorumEvent { n: 2 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 2);
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("dead-lettered into the quorum dead-letter queue");
    assert_eq!(message_id(&m.delivery.properties), Some(id.to_string()));
    app.shutdown().await.unwrap();
    assert_eq!(queue_counts(&conn, queue).await.0, 0, "acknowledged");
}

/// The pids of the connections named `name` (`rabbitmqctl list_connections`).
async fn connections_named(name: &str) -> Vec<String> {
    let connections = rabbitmqctl(&["list_connections", "-q", "pid", "client_properties"]).await;
    connections
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_stream_queue_is_declared_and_read_from_the_next_message() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<StreamEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let conn_name = name("stream.conn");
    let consumer = RabbitMqConsumer::connect(options().connection_name(conn_name))
        .await
        .unwrap()
        .with_unknown_event_policy(UnknownEventPolicy::HandBack);
    consumer.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = move |e: StreamEvent| {
        let tx = tx.clone();
        async move { tx.send(e.n).is_ok() }
    };
    consumer.subscribe(sub.clone()).await.unwrap();
    let q = queue_row(queue).await;
    assert_eq!(
        (q["type"].as_str(), q["durable"].as_bool()),
        (Some("stream"), Some(true)),
        "{q}"
    );
    assert_eq!(queue_row(&format!("{queue}.dlq")).await["type"], "quorum");
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    producer.send(&StreamEvent { n: 1 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 1);

    // A stream takes nothing back: a message handed back is acked (a
    // nack would make RabbitMQ close the consumer's whole connection).
    let before = connections_named(conn_name).await;
    assert_eq!(before.len(), 1, "the consumer's connection");
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        r.exchange.unwrap().into(),
        r.routing_key.into(),
        BasicPublishOptions::default(),
        br#"{"n":0}"#,
        BasicProperties::default().with_type("StreamEventV2".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tokio::time::sleep(UnknownEventPolicy::HAND_BACK_PAUSE * 2).await;
    producer.send(&StreamEvent { n: 2 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 2);
    assert_eq!(
        connections_named(conn_name).await,
        before,
        "the connection was not closed"
    );

    // A stream is a log: a consumer starts at the next message, so what
    // was published while none ran is not delivered to the next one.
    consumer.unsubscribe::<StreamEvent>().await.unwrap();
    producer.send(&StreamEvent { n: 3 }).await.unwrap();
    consumer.subscribe(sub).await.unwrap();
    producer.send(&StreamEvent { n: 4 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 4);
    assert!(rx.try_recv().is_err());
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_refuses_the_send_instead_of_dropping_a_message() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = queue_without_consumer::<LimitedEvent>(&mut cleanup).await;
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    for n in 0..5 {
        producer.send(&LimitedEvent { n }).await.unwrap();
    }
    // Full: the broker nacks, and the producer says so.
    let err = producer.send(&LimitedEvent { n: 5 }).await.unwrap_err();
    assert!(matches!(err, Error::Publish { .. }), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    let events: Vec<LimitedEvent> = (6..9).map(|n| LimitedEvent { n }).collect();
    let err = producer.send_batch(&events).await.unwrap_err();
    assert!(err.to_string().contains("3 of 3 failed"), "{err}");
    // Nothing confirmed was dropped: the first five wait, in order.
    assert_eq!(queue_counts(&conn, queue).await.0, 5);
    for n in 0..5 {
        let m = get_one(&conn, queue).await.expect("message kept");
        assert_eq!(m.delivery.data, format!(r#"{{"n":{n}}}"#).into_bytes());
    }
}

/// The issue's reproduction: `max_length = 5` behind a busy consumer, 30
/// sends. Every send that returned `Ok` is handled; the others failed
/// (before: all 30 confirmed, 24 dropped without a word).
#[tokio::test]
async fn behind_a_busy_consumer_every_confirmed_message_is_handled() {
    let _shared = BROKER_LOCK.read().await;
    let Some(_conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<BusyEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let (busy_tx, busy_rx) = tokio::sync::watch::channel(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RabbitMqConsumer::connect(options().prefetch(1).concurrency(1))
        .await
        .unwrap();
    consumer.start().await.unwrap();
    consumer
        .subscribe(move |e: BusyEvent| {
            let tx = tx.clone();
            let mut busy = busy_rx.clone();
            async move {
                let _ = busy.wait_for(|b| !*b).await;
                tx.send(e.n).is_ok()
            }
        })
        .await
        .unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    let mut confirmed = Vec::new();
    let mut refused = 0;
    for n in 0..30 {
        match producer.send(&BusyEvent { n }).await {
            Ok(_) => confirmed.push(n),
            Err(e) => {
                assert!(e.to_string().contains("full"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full queue refused nothing");
    assert_eq!(confirmed.len() + refused, 30);
    busy_tx.send(false).unwrap();
    let mut handled = Vec::new();
    for _ in 0..confirmed.len() {
        handled.push(recv(&mut rx).await);
    }
    handled.sort_unstable();
    assert_eq!(handled, confirmed, "every confirmed message is handled");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err());
    consumer.stop().await.unwrap();
}

/// Acks of consecutive handled deliveries go out together (one `multiple`
/// ack); one handler stuck on the first delivery neither stalls the others
/// (those held behind it are acked one by one past half the prefetch) nor
/// gets its message acked by a later `multiple` ack: abandoned at the stop,
/// it is the one message handed back.
#[tokio::test]
async fn a_stuck_first_delivery_holds_back_neither_the_others_nor_its_own_ack() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<SlowFirstEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = RabbitMqConsumer::connect(options().prefetch(4).concurrency(4))
        .await
        .unwrap()
        .with_stop_timeout(Duration::from_secs(1));
    consumer.start().await.unwrap();
    consumer
        .subscribe(move |e: SlowFirstEvent| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.n);
                if e.n == 0 {
                    std::future::pending::<()>().await;
                }
                true
            }
        })
        .await
        .unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    producer.send(&SlowFirstEvent { n: 0 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 0);
    // Far more than the prefetch behind the stuck one: handled all the same.
    let rest: Vec<_> = (1..40).map(|n| SlowFirstEvent { n }).collect();
    producer.send_batch(&rest).await.unwrap();
    let mut handled = Vec::new();
    for _ in 1..40 {
        handled.push(recv(&mut rx).await);
    }
    handled.sort_unstable();
    assert_eq!(handled, (1..40).collect::<Vec<_>>());
    let err = consumer.stop().await.unwrap_err();
    assert!(matches!(err, Error::Shutdown), "{err:?}");
    // Only the abandoned one is back on the queue (the others were each
    // acknowledged, it never was).
    let m = get_one(&conn, queue)
        .await
        .expect("the stuck message handed back");
    let back: SlowFirstEvent = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(back.n, 0);
    assert_eq!(queue_counts(&conn, queue).await, (0, 0));
}

#[tokio::test]
async fn drop_head_is_an_opt_in_that_keeps_the_newest() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<DropHeadEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let consumer = RabbitMqConsumer::connect(options()).await.unwrap();
    consumer.start().await.unwrap();
    consumer
        .subscribe(|_: DropHeadEvent| async { true })
        .await
        .unwrap();
    consumer.unsubscribe::<DropHeadEvent>().await.unwrap();
    assert_eq!(
        queue_arg(&queue_row(queue).await, "x-overflow"),
        Some("drop-head".into())
    );
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    // Every send is confirmed; the oldest three make room.
    for n in 0..8 {
        producer.send(&DropHeadEvent { n }).await.unwrap();
    }
    assert_eq!(queue_counts(&conn, queue).await.0, 5);
    let m = get_one(&conn, queue).await.expect("message");
    assert_eq!(m.delivery.data, br#"{"n":3}"#);
}

#[tokio::test]
async fn a_foreign_message_id_gives_a_stable_event_id() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<ForeignEvent>();
    let queue = r.queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(r.exchange.unwrap());
    let (entry, mut rx) = recorder::<ForeignEvent>("foreign");
    let app = App::builder()
        .rabbitmq(options())
        .discover(false)
        .handler_entry(entry)
        .start()
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // A plain lapin publish, as another service would send it.
    let publish = |n: u32, message_id: Option<&'static str>| {
        let ch = ch.clone();
        async move {
            let mut props = BasicProperties::default();
            if let Some(id) = message_id {
                props = props.with_message_id(id.into());
            }
            ch.basic_publish(
                r.exchange.unwrap().into(),
                r.routing_key.into(),
                BasicPublishOptions::default(),
                format!(r#"{{"n":{n}}}"#).as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // The same message id twice (a producer's retry, a redelivery): one event id,
    // uuid.uuid5(uuid.NAMESPACE_URL, "amqp:message-id:order-42").
    publish(1, Some("order-42")).await;
    publish(2, Some("order-42")).await;
    let (a, a_ctx) = recv(&mut rx).await;
    let (b, b_ctx) = recv(&mut rx).await;
    assert_eq!((a.n, b.n), (1, 2));
    assert_eq!(a_ctx.event_id(), b_ctx.event_id());
    assert_eq!(
        a_ctx.event_id().to_string(),
        "3d31590f-7afe-5d20-8260-a479b965ae5d"
    );
    // A message id that is a UUID is the event id.
    let uuid = "0b7e6a4c-2f1d-4c3a-9a51-3c1e2d4f5a6b";
    publish(3, Some(uuid)).await;
    let (_, ctx) = recv(&mut rx).await;
    assert_eq!(ctx.event_id().to_string(), uuid);
    // Without one, each delivery gets a fresh id.
    publish(4, None).await;
    publish(5, None).await;
    let (_, c) = recv(&mut rx).await;
    let (_, d) = recv(&mut rx).await;
    assert_ne!(c.event_id(), d.event_id());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_dead_letter_publish_hands_the_message_back() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let r = route_of::<DlxGoneEvent>();
    let queue = r.queue_name.unwrap();
    let dlx = r.dead_letter_exchange.unwrap();
    let dlq = format!("{dlx}.dlq");
    cleanup
        .queue(queue)
        .queue(&dlq)
        .exchange(r.exchange.unwrap())
        .exchange(dlx);
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let consumer = RabbitMqConsumer::connect(options())
        .await
        .unwrap()
        .with_retry(fast_retry(1));
    consumer.start().await.unwrap();
    consumer
        .subscribe(move |_: DlxGoneEvent| {
            c.fetch_add(1, Ordering::SeqCst);
            async { false }
        })
        .await
        .unwrap();
    // The dead-letter exchange has no queue now: dead-letter publishes are
    // unroutable, so they fail.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(dlq.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();
    producer.send(&DlxGoneEvent { n: 1 }).await.unwrap();
    // Handed back, delivered again, failing again: never acknowledged.
    let deadline = tokio::time::Instant::now() + WAIT;
    while calls.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the dead-letter queue is back, the message lands there.
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        dlq.as_str().into(),
        dlx.into(),
        r.routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let m = get_one(&conn, &dlq)
        .await
        .expect("dead-lettered in the end");
    assert_eq!(m.delivery.data, br#"{"n":1}"#);
    consumer.stop().await.unwrap();
    assert_eq!(queue_counts(&conn, queue).await.0, 0);
}

#[tokio::test]
async fn unsubscribe_and_stop_abandon_a_stuck_handler_at_their_deadline() {
    let _shared = BROKER_LOCK.read().await;
    let Some(conn) = broker().await else { return };
    let mut cleanup = Cleanup::default();
    let queue = route_of::<StuckA>().queue_name.unwrap();
    cleanup
        .queue(queue)
        .queue(format!("{queue}.dlq"))
        .exchange(route_of::<StuckA>().exchange.unwrap());
    const TIMEOUT: Duration = Duration::from_secs(2);
    let consumer = RabbitMqConsumer::connect(options())
        .await
        .unwrap()
        .with_stop_timeout(TIMEOUT);
    consumer.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hang = move |n: u32| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(n);
            std::future::pending::<bool>().await
        }
    };
    let hang_a = hang.clone();
    consumer
        .subscribe(move |e: StuckA| hang_a(e.n))
        .await
        .unwrap();
    let hang_b = hang.clone();
    consumer
        .subscribe(move |e: StuckB| hang_b(e.n))
        .await
        .unwrap();
    let producer = RabbitMqProducer::connect(options()).await.unwrap();

    // Unsubscribing A from the shared queue: its stuck handler is
    // abandoned in time and the message handed back, not acknowledged;
    // back on the queue it is of a type nobody here handles any more, so
    // it is dead-lettered as such.
    producer.send(&StuckA { n: 1 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 1);
    let started = tokio::time::Instant::now();
    let err = consumer.unsubscribe::<StuckA>().await.unwrap_err();
    assert!(matches!(err, Error::Shutdown), "{err:?}");
    assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
    let m = get_one(&conn, &format!("{queue}.dlq"))
        .await
        .expect("handed back, then dead-lettered as unknown");
    let reason = header(&m.delivery.properties, "heytom-dead-letter-reason").unwrap();
    assert!(reason.contains("unknown message type `StuckA`"), "{reason}");

    // Stopping with B stuck: in time, an error, the message waits for the next consumer.
    producer.send(&StuckB { n: 2 }).await.unwrap();
    assert_eq!(recv(&mut rx).await, 2);
    let started = tokio::time::Instant::now();
    let err = consumer.stop().await.unwrap_err();
    assert!(matches!(err, Error::Shutdown), "{err:?}");
    assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
    let next = RabbitMqConsumer::connect(options()).await.unwrap();
    next.start().await.unwrap();
    let (tx, mut again) = mpsc::unbounded_channel();
    next.subscribe(move |e: StuckB| {
        let tx = tx.clone();
        async move { tx.send(e.n).is_ok() }
    })
    .await
    .unwrap();
    assert_eq!(recv(&mut again).await, 2, "delivered again");
    next.stop().await.unwrap();
}
