//! The suite on RabbitMQ (`HEYTOM_RABBITMQ_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).
//!
//! Every fixture publishes to an exchange of its own (`heytom.conformance.<uuid>`;
//! the events name none, so they use the app's default exchange). Queue
//! names follow from the routing key and handler name, fixed at compile
//! time: a fixture deletes each queue (and its `.dlq`) the first time it
//! starts an app on it, so nothing an earlier run left behind is
//! delivered, and deletes queues and exchange when it is dropped.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use heytom_mq::PRIORITY_HEADER;
use heytom_mq::{
    App, AppBuilder, Event, HandlerEntry, Headers, RabbitMqOptions, Route, RunningApp,
};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::harness::{Features, Fixture, RawMessage, WAIT};

suite_events! {
    #[event(name = "conformance.rabbitmq.RoundTrip")]
    #[rabbitmq(routing_key = "conformance.round_trip")]
    RoundTrip;
    #[event(name = "conformance.rabbitmq.Batch")]
    #[rabbitmq(routing_key = "conformance.batch")]
    Batch;
    #[event(name = "conformance.rabbitmq.FanOut")]
    #[rabbitmq(routing_key = "conformance.fan_out", exchange_type = "topic")]
    FanOut;
    #[event(name = "conformance.rabbitmq.Job")]
    #[rabbitmq(routing_key = "conformance.job", durable = true)]
    Job;
    #[event(name = "conformance.rabbitmq.Flaky")]
    #[rabbitmq(routing_key = "conformance.flaky")]
    Flaky;
    #[event(name = "conformance.rabbitmq.Doomed")]
    #[rabbitmq(routing_key = "conformance.doomed")]
    Doomed;
    #[event(name = "conformance.rabbitmq.Strict")]
    #[rabbitmq(routing_key = "conformance.strict")]
    Strict;
    #[event(name = "conformance.rabbitmq.Posting")]
    #[rabbitmq(routing_key = "conformance.posting")]
    Posting;
    #[event(name = "conformance.rabbitmq.Slow")]
    #[rabbitmq(routing_key = "conformance.slow")]
    Slow;
    #[event(name = "conformance.rabbitmq.Placed")]
    #[rabbitmq(routing_key = "conformance.placed")]
    Placed;
    #[event(name = "conformance.rabbitmq.Shipped")]
    #[rabbitmq(routing_key = "conformance.shipped")]
    Shipped;
    #[event(name = "conformance.rabbitmq.Stored")]
    #[rabbitmq(routing_key = "conformance.stored")]
    Stored;
    #[event(name = "conformance.rabbitmq.Urgent")]
    #[rabbitmq(routing_key = "conformance.urgent", max_priority = 10)]
    Urgent;
    #[event(name = "conformance.rabbitmq.Stubborn")]
    #[rabbitmq(routing_key = "conformance.stubborn")]
    Stubborn;
    #[event(name = "conformance.rabbitmq.Explodes")]
    #[rabbitmq(routing_key = "conformance.explodes")]
    Explodes;
    #[event(name = "conformance.rabbitmq.Lenient")]
    #[rabbitmq(routing_key = "conformance.lenient")]
    Lenient;
    #[event(name = "conformance.rabbitmq.Yielding")]
    #[rabbitmq(routing_key = "conformance.yielding")]
    Yielding;
    #[event(name = "conformance.rabbitmq.Stuck")]
    #[rabbitmq(routing_key = "conformance.stuck")]
    Stuck;
}

suite_handlers!();

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn url() -> String {
    std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// The queue a handler of `route` consumes from (the transport's rule:
/// group, else `queue_name`, else `<routing key>.<handler>`).
fn queue_of(route: &Route, event_name: &str, group: Option<&str>, handler: &str) -> String {
    if let Some(g) = group {
        return g.to_owned();
    }
    match route.as_rabbitmq() {
        Some(r) => r
            .queue_name
            .map_or_else(|| format!("{}.{handler}", r.routing_key), str::to_owned),
        None => format!("{event_name}.{handler}"),
    }
}

fn queue_of_entry(h: &HandlerEntry) -> String {
    queue_of(h.route(), h.event_name(), h.group_override(), h.name())
}

fn header_string(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// A RabbitMQ connection for inspection, and the topology of one test.
pub struct Rabbit {
    conn: Connection,
    exchange: String,
    /// Queues this fixture started apps on (deleted on first use and on drop).
    queues: Mutex<HashSet<String>>,
}

impl Rabbit {
    fn options(&self) -> RabbitMqOptions {
        RabbitMqOptions::new(url())
            .exchange(self.exchange.clone())
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .publish_timeout(Duration::from_secs(10))
    }

    async fn delete_queue(&self, queue: &str) {
        let ch = self.conn.create_channel().await.expect("channel");
        for q in [queue.to_owned(), format!("{queue}.dlq")] {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap_or_else(|e| panic!("deleting stale queue `{q}`: {e}"));
        }
        let _ = ch.close(200, "done".into()).await;
    }
}

impl Fixture for Rabbit {
    type Events = Events;

    async fn setup() -> Option<Self> {
        let conn = match Connection::connect(&url(), ConnectionProperties::default()).await {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                    panic!(
                        "RabbitMQ is required (HEYTOM_TEST_REQUIRE_SERVICES=1) but unreachable: {e}"
                    );
                }
                eprintln!("NOTICE: RabbitMQ unreachable ({e}); skipping this conformance check");
                return None;
            }
        };
        Some(Rabbit {
            conn,
            exchange: format!("heytom.conformance.{}", uuid::Uuid::now_v7().simple()),
            queues: Mutex::new(HashSet::new()),
        })
    }

    fn features(&self) -> Features {
        Features {
            // One queue: concurrent handlers may finish out of order.
            per_key_ordering: false,
            persistent: true,
            priority_header: Some(PRIORITY_HEADER),
        }
    }

    fn builder(&self) -> AppBuilder {
        App::builder().rabbitmq(self.options())
    }

    async fn start(&self, builder: AppBuilder) -> RunningApp {
        let app = builder.build().await.expect("RabbitMQ app builds");
        for h in app.handlers() {
            let queue = queue_of_entry(h);
            let first_use = self
                .queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(queue.clone());
            if first_use {
                self.delete_queue(&queue).await;
            }
        }
        app.start().await.expect("RabbitMQ app starts")
    }

    async fn publish_raw<E: Event>(&self, headers: Headers, body: Vec<u8>) {
        let route = E::route().as_rabbitmq().expect("a #[rabbitmq] event");
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
        }
        let ch = self.conn.create_channel().await.expect("channel");
        ch.basic_publish(
            self.exchange.as_str().into(),
            route.routing_key.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_type(ShortString::from(E::NAME))
                .with_content_type(ShortString::from("application/json"))
                .with_headers(table),
        )
        .await
        .expect("raw publish")
        .await
        .expect("raw publish confirm");
        let _ = ch.close(200, "done".into()).await;
    }

    async fn dead_letters<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        let dlq = format!("{}.dlq", queue_of(E::route(), E::NAME, None, handler));
        let ch = self.conn.create_channel().await.expect("channel");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut found = Vec::new();
        loop {
            let got = ch
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap_or_else(|e| panic!("basic_get on `{dlq}`: {e}"));
            match got {
                Some(m) => {
                    let props = &m.delivery.properties;
                    let mut headers: BTreeMap<String, String> = props
                        .headers()
                        .as_ref()
                        .map(|t| {
                            t.inner()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), header_string(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    // The id and name travel as the AMQP message_id and
                    // type: seen here under the names the other
                    // transports' headers have.
                    for (name, value) in [
                        (heytom_mq::headers::EVENT_ID, props.message_id()),
                        (heytom_mq::headers::EVENT_NAME, props.kind()),
                    ] {
                        if let Some(v) = value {
                            headers.insert(name.to_owned(), v.to_string());
                        }
                    }
                    // Where it came from: the queue the handler consumed.
                    assert_eq!(
                        headers
                            .get(heytom_mq::headers::DEAD_LETTER_QUEUE)
                            .map(String::as_str),
                        dlq.strip_suffix(".dlq"),
                        "{headers:?}"
                    );
                    let raw = RawMessage {
                        headers,
                        body: m.delivery.data,
                    };
                    if matches(&raw) {
                        found.push(raw);
                    }
                }
                None if found.len() >= want => break,
                None => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "timed out waiting for {want} dead letters in `{dlq}`; have {found:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let _ = ch.close(200, "done".into()).await;
        found
    }
}

impl Drop for Rabbit {
    /// Deletes the test's queues and exchange, also when a check panicked.
    fn drop(&mut self) {
        let queues: Vec<String> =
            std::mem::take(&mut *self.queues.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        let exchange = self.exchange.clone();
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
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                for q in queues {
                    for q in [format!("{q}.dlq"), q] {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                let _ = ch
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = work.join();
    }
}

suite_tests!(
    Rabbit;
    restart_resumes_where_it_left_off,
    shutdown_mid_retry_hands_the_message_back,
    unknown_event_is_skipped_when_asked,
    unknown_event_is_handed_back_when_asked,
    a_stuck_handler_is_abandoned_at_the_shutdown_deadline,
    priority_is_honoured,
);
