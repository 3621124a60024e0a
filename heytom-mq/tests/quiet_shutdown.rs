#![cfg(all(feature = "rabbitmq", feature = "kafka", feature = "sqlite"))]
//! An orderly life (start, traffic, shutdown) logs no WARN or ERROR line, from
//! heytom-mq or from the clients under it (lapin, rdkafka/librdkafka, sqlx),
//! on every transport. Someone watching the logs of a deploy must not see a
//! failure where there was none.
//!
//! Every log event of the process goes through one global subscriber that
//! keeps the WARN and ERROR lines; each phase runs one transport and fails on
//! any such line logged during it. The phases run one after another in one
//! test so that no other test's lines mix in.
//!
//! RabbitMQ and Kafka are required when `HEYTOM_TEST_REQUIRE_SERVICES=1`;
//! otherwise a missing broker skips its phase with a notice.

mod kafka_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::sqlx;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter::LevelFilter, EnvFilter, Layer};

const COUNT: u32 = 20;
const WAIT: Duration = Duration::from_secs(60);
const QUEUE: &str = "heytom.quiet-shutdown.queue";
const EXCHANGE: &str = "heytom.quiet-shutdown";

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "quiet.MemoryPing")]
struct MemoryPing {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "quiet.RabbitPing")]
#[rabbitmq(routing_key = "quiet.ping", queue_name = "heytom.quiet-shutdown.queue")]
struct RabbitPing {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "quiet.KafkaPing")]
#[kafka(
    topic = "heytom-quiet-shutdown",
    auto_offset_reset = "earliest",
    session_timeout_ms = 6000
)]
struct KafkaPing {
    run: String,
    n: u32,
}

#[derive(Clone)]
struct Seen(mpsc::UnboundedSender<u32>);

#[handler(name = "quiet.memory")]
async fn on_memory(e: MemoryPing, State(seen): State<Seen>) -> bool {
    seen.0.send(e.n).is_ok()
}

#[handler(name = "quiet.rabbit")]
async fn on_rabbit(e: RabbitPing, State(seen): State<Seen>) -> bool {
    seen.0.send(e.n).is_ok()
}

#[derive(Clone)]
struct Run(String);

#[handler(name = "quiet.kafka")]
async fn on_kafka(e: KafkaPing, State(seen): State<Seen>, State(run): State<Run>) -> bool {
    // Earlier runs against the same broker left their records on the topic.
    e.run != run.0 || seen.0.send(e.n).is_ok()
}

/// Keeps every WARN and ERROR event, with its target and fields.
#[derive(Clone, Default)]
struct Alarms(Arc<Mutex<Vec<String>>>);

impl Alarms {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: Subscriber> Layer<S> for Alarms {
    fn on_event(&self, event: &TracingEvent<'_>, _: LayerContext<'_, S>) {
        let meta = event.metadata();
        if *meta.level() <= Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{} {}:{}", meta.level(), meta.target(), fields.0));
        }
    }
}

fn install() -> Alarms {
    let alarms = Alarms::default();
    tracing_subscriber::registry()
        .with(alarms.clone().with_filter(LevelFilter::WARN))
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::from_default_env()),
        )
        .init();
    alarms
}

async fn expect_all(rx: &mut mpsc::UnboundedReceiver<u32>, what: &str) {
    let mut got = std::collections::BTreeSet::new();
    while got.len() < COUNT as usize {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(n)) => {
                got.insert(n);
            }
            _ => panic!("{what}: {} of {COUNT} events arrived", got.len()),
        }
    }
}

fn assert_quiet(alarms: &Alarms, phase: &str) {
    let lines = alarms.take();
    assert!(
        lines.is_empty(),
        "{phase}: an orderly start, traffic and shutdown logged {} WARN/ERROR line(s):\n{}",
        lines.len(),
        lines.join("\n")
    );
    eprintln!("{phase}: start, {COUNT} events, shutdown: no WARN/ERROR line");
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
}

fn rabbitmq_url() -> String {
    std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Deletes the phase's queues and exchange (before, in case an earlier run
/// was killed, and after).
async fn rabbitmq_cleanup() -> Result<(), String> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn = lapin::Connection::connect(&rabbitmq_url(), Default::default())
        .await
        .map_err(|e| format!("RabbitMQ at {} is unreachable: {e}", rabbitmq_url()))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    for q in [QUEUE.to_owned(), format!("{QUEUE}.dlq")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(EXCHANGE.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = ch.close(200, "cleanup".into()).await;
    let _ = conn.close(200, "cleanup".into()).await;
    Ok(())
}

/// One app's life: start, `COUNT` events through the outbox or directly,
/// every one handled, shutdown.
async fn life(builder: heytom_mq::AppBuilder, send: impl AsyncSend, phase: &str) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let running = builder
        .state(Seen(tx))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{phase}: start: {e}"));
    let producer = running.producer();
    for n in 0..COUNT {
        send.send(&producer, n)
            .await
            .unwrap_or_else(|e| panic!("{phase}: send {n}: {e}"));
    }
    expect_all(&mut rx, phase).await;
    running
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("{phase}: shutdown: {e}"));
    // Lines a client logs from its own threads right after the close.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

trait AsyncSend {
    fn send<'a>(
        &'a self,
        producer: &'a Producer,
        n: u32,
    ) -> futures::future::BoxFuture<'a, Result<(), heytom_mq::Error>>;
}

struct Direct<F>(F);

impl<F> AsyncSend for Direct<F>
where
    F: Fn(&Producer, u32) -> futures::future::BoxFuture<'static, Result<(), heytom_mq::Error>>
        + Sync,
{
    fn send<'a>(
        &'a self,
        producer: &'a Producer,
        n: u32,
    ) -> futures::future::BoxFuture<'a, Result<(), heytom_mq::Error>> {
        (self.0)(producer, n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_shutdown_logs_no_warning_on_any_transport() {
    let alarms = install();

    // In-memory, through the outbox on SQLite (the embedded default).
    let pool = sqlx::SqlitePool::connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    life(
        App::builder()
            .in_memory()
            .outbox(Outbox::sqlite(pool.clone()))
            .discover_filter(|r| r.name == "quiet.memory"),
        Direct(move |p: &Producer, n| {
            let (p, pool) = (p.clone(), pool.clone());
            Box::pin(async move {
                p.send_with_transaction(&pool, move |_tx| {
                    Box::pin(async move { Ok(MemoryPing { n }) })
                })
                .await
                .map(drop)
            }) as futures::future::BoxFuture<'static, _>
        }),
        "in-memory",
    )
    .await;
    assert_quiet(&alarms, "in-memory");

    // RabbitMQ.
    match rabbitmq_cleanup().await {
        Ok(()) => {
            life(
                App::builder()
                    .rabbitmq(RabbitMqOptions::new(rabbitmq_url()).exchange(EXCHANGE))
                    .discover_filter(|r| r.name == "quiet.rabbit"),
                Direct(|p: &Producer, n| {
                    let p = p.clone();
                    Box::pin(async move { p.send(&RabbitPing { n }).await.map(drop) })
                        as futures::future::BoxFuture<'static, _>
                }),
                "RabbitMQ",
            )
            .await;
            assert_quiet(&alarms, "RabbitMQ");
            rabbitmq_cleanup().await.expect("cleanup");
            // The cleanup connection is the test's own; drop what it logged.
            alarms.take();
        }
        Err(e) if require_services() => panic!("HEYTOM_TEST_REQUIRE_SERVICES=1 but {e}"),
        Err(e) => eprintln!("NOTICE: skipping the RabbitMQ phase: {e}"),
    }

    // Kafka.
    if let Some(servers) = kafka_support::bootstrap() {
        alarms.take();
        let run = kafka_support::run_id().to_owned();
        let group = kafka_support::unique_group("quiet");
        let send_run = run.clone();
        life(
            App::builder()
                .kafka(kafka_support::options(&servers).group_id(group))
                .state(Run(run))
                .discover_filter(|r| r.name == "quiet.kafka"),
            Direct(move |p: &Producer, n| {
                let (p, run) = (p.clone(), send_run.clone());
                Box::pin(async move { p.send(&KafkaPing { run, n }).await.map(drop) })
                    as futures::future::BoxFuture<'static, _>
            }),
            "Kafka",
        )
        .await;
        assert_quiet(&alarms, "Kafka");
    }
}
