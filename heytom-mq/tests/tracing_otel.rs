//! Traces end to end (feature `opentelemetry`), exported to the SDK's
//! in-memory span exporter: one request span → `send_with_transaction` →
//! the outbox relay → the broker → the first handler → its
//! `ctx.publish()` follow-up → the second handler, on each transport. Every
//! span belongs to the request's trace and has the right parent.
//!
//! Servers: in memory + SQLite; RabbitMQ + PostgreSQL; Kafka + SQLite (as
//! in `tests/kafka.rs`). With `HEYTOM_TEST_REQUIRE_SERVICES=1` a missing
//! one fails.
#![cfg(all(
    feature = "opentelemetry",
    feature = "sqlite",
    feature = "postgres",
    feature = "rabbitmq",
    feature = "kafka"
))]

mod kafka_support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{
    AppBuilder, HandlerEntry, KafkaRoute, LocalMessageRetryOptions, RabbitMqOptions, RabbitMqRoute,
    RunningApp,
};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

// ---------------------------------------------------------------- tracing

/// The exporter every test of this binary reads (one global subscriber:
/// handlers run on the runtime's worker threads).
fn exporter() -> &'static InMemorySpanExporter {
    static E: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    let (exporter, _) = E.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("heytom-mq-tests"));
        // A global filter: the subscriber's only consumer is the OpenTelemetry layer.
        let filter = Targets::new()
            .with_target("heytom_mq", tracing::Level::DEBUG)
            .with_target("tracing_otel", tracing::Level::INFO);
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init()
            .expect("the only subscriber of this test binary");
        (exporter, provider)
    });
    exporter
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// The spans of one trace, named by what they did.
struct Trace {
    spans: Vec<SpanData>,
}

impl Trace {
    fn find(&self, what: &str, pred: impl Fn(&SpanData) -> bool) -> &SpanData {
        let found: Vec<&SpanData> = self.spans.iter().filter(|s| pred(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "exactly one {what} span expected in the trace; spans: {:#?}",
            self.summary()
        );
        found[0]
    }

    fn summary(&self) -> Vec<String> {
        self.spans
            .iter()
            .map(|s| {
                format!(
                    "{} trace={} id={} parent={} event={:?} op={:?} source={:?}",
                    s.name,
                    s.span_context.trace_id(),
                    s.span_context.span_id(),
                    s.parent_span_id,
                    attr(s, "event_name"),
                    attr(s, "messaging.operation.name"),
                    attr(s, "heytom.outbox.source"),
                )
            })
            .collect()
    }
}

fn named(span: &SpanData, op: &str, event: &str) -> bool {
    attr(span, "messaging.operation.name").as_deref() == Some(op)
        && attr(span, "event_name").as_deref() == Some(event)
}

/// Waits until the trace holds every span of the run, then checks the
/// chain request → relay publish → consume → handler → follow-up publish
/// → consume → handler, and that no span of these events is elsewhere.
async fn check_trace(
    trace_id: TraceId,
    root_id: SpanId,
    first: &str,
    second: &str,
    system: &str,
    source: &str,
) {
    let exporter = exporter();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (trace, others) = loop {
        let all = exporter.get_finished_spans().expect("finished spans");
        let ours =
            |s: &SpanData| matches!(attr(s, "event_name"), Some(e) if e == first || e == second);
        let (trace, others): (Vec<SpanData>, Vec<SpanData>) = all
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id || ours(s))
            .partition(|s| s.span_context.trace_id() == trace_id);
        let handlers = trace
            .iter()
            .filter(|s| s.name == "handler" || s.name.starts_with("handler"))
            .count();
        // The request, the insert, the relay send, 2 consumes, 2 handlers, the follow-up.
        if (handlers >= 2 && trace.len() >= 8) || tokio::time::Instant::now() > deadline {
            break (Trace { spans: trace }, others);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !others.is_empty() {
        let foreign: Vec<TraceId> = others.iter().map(|s| s.span_context.trace_id()).collect();
        let all = exporter.get_finished_spans().expect("finished spans");
        let related: Vec<SpanData> = all
            .into_iter()
            .filter(|s| foreign.contains(&s.span_context.trace_id()))
            .collect();
        panic!(
            "spans of this run outside its trace: {:#?}\nthe trace: {:#?}\ntheir traces: {:#?}",
            Trace { spans: others }.summary(),
            trace.summary(),
            Trace { spans: related }.summary()
        );
    }
    let root = trace.find("request", |s| s.span_context.span_id() == root_id);
    assert_eq!(root.parent_span_id, SpanId::INVALID);

    let insert = trace.find("outbox insert", |s| named(s, "outbox insert", first));
    assert_eq!(
        insert.parent_span_id, root_id,
        "outbox insert under the request"
    );

    let relay = trace.find("relay publish", |s| {
        named(s, "publish", first) && attr(s, "heytom.outbox.source").is_some()
    });
    assert_eq!(
        relay.parent_span_id, root_id,
        "relay send continues the stored context"
    );
    assert_eq!(attr(relay, "heytom.outbox.source").as_deref(), Some(source));
    assert_eq!(attr(relay, "messaging.system").as_deref(), Some(system));
    assert_eq!(
        attr(relay, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert!(attr(relay, "messaging.destination.name").is_some());
    assert!(attr(relay, "messaging.message.id").is_some());
    match system {
        "kafka" => assert_eq!(
            attr(relay, "messaging.kafka.message.key").as_deref(),
            Some("key-1")
        ),
        "rabbitmq" => assert!(attr(relay, "messaging.rabbitmq.destination.routing_key")
            .is_some_and(|k| k.starts_with("heytom.otel.first."))),
        _ => {}
    }

    let consume1 = trace.find("first consume", |s| named(s, "consume", first));
    assert_eq!(consume1.parent_span_id, relay.span_context.span_id());
    assert_eq!(attr(consume1, "messaging.system").as_deref(), Some(system));
    assert_eq!(
        attr(consume1, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert!(attr(consume1, "messaging.consumer.group.name").is_some());
    assert!(attr(consume1, "messaging.destination.name").is_some_and(|d| !d.is_empty()));

    let handler1 = trace.find("first handler", |s| {
        attr(s, "handler").as_deref() == Some("first")
    });
    assert_eq!(handler1.parent_span_id, consume1.span_context.span_id());
    assert_eq!(
        attr(handler1, "heytom.message.delivery_attempt").as_deref(),
        Some("1")
    );

    let follow_up = trace.find("follow-up publish", |s| named(s, "publish", second));
    assert_eq!(follow_up.parent_span_id, handler1.span_context.span_id());

    let consume2 = trace.find("second consume", |s| named(s, "consume", second));
    assert_eq!(consume2.parent_span_id, follow_up.span_context.span_id());

    let handler2 = trace.find("second handler", |s| {
        attr(s, "handler").as_deref() == Some("second")
    });
    assert_eq!(handler2.parent_span_id, consume2.span_context.span_id());
}

// ---------------------------------------------------------------- the run

/// Publishes `S` from the first handler; counts the second's runs.
struct PublishFollowUp<S: Event + Clone>(S);

impl<E: Event, S: Event + Clone> EventHandler<E> for PublishFollowUp<S> {
    async fn handle(&self, _event: E, ctx: Context) -> Result<(), HandlerError> {
        ctx.publish(&self.0).await?;
        Ok(())
    }
}

struct CountRuns(Arc<AtomicU32>);

impl<E: Event> EventHandler<E> for CountRuns {
    async fn handle(&self, _event: E, _ctx: Context) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Starts `builder` with the two handlers, enqueues `first` in a
/// transaction under a request span, waits for the second handler and
/// checks the trace.
async fn run<DB, F, S>(
    builder: AppBuilder,
    pool: &sqlx::Pool<DB>,
    first: F,
    second: S,
    system: &str,
    scanner: bool,
) -> RunningApp
where
    DB: heytom_mq::OutboxDatabase,
    F: Event + Clone,
    S: Event + Clone,
{
    exporter();
    let runs = Arc::new(AtomicU32::new(0));
    let running = builder
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<F, _>(
            "first",
            PublishFollowUp(second.clone()),
        ))
        .handler_entry(HandlerEntry::from_type::<S, _>(
            "second",
            CountRuns(runs.clone()),
        ))
        .start()
        .await
        .expect("app starts");
    let producer = running.producer();
    let request = tracing::info_span!("request");
    let trace_id = request.context().span().span_context().trace_id();
    let root_id = request.context().span().span_context().span_id();
    assert_ne!(
        trace_id,
        TraceId::INVALID,
        "the OpenTelemetry layer is installed"
    );
    async {
        producer
            .send_with_transaction(pool, |_tx| Box::pin(async move { Ok(first) }))
            .await
            .expect("enqueued and committed")
    }
    .instrument(request.clone())
    .await;
    drop(request);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while runs.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second handler never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = if scanner { "scan" } else { "commit" };
    check_trace(trace_id, root_id, F::NAME, S::NAME, system, source).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    running
}

fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

async fn sqlite_pool() -> (sqlx::SqlitePool, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("heytom-otel-test-{}.db", unique()));
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
        .expect("SQLite file in the temp dir");
    (pool, path)
}

/// Declares an event type with a route made at run time (unique names).
macro_rules! event {
    ($ty:ident, $name:literal, $route:expr) => {
        #[derive(Serialize, Deserialize, Debug, Clone)]
        struct $ty {
            n: u32,
        }
        impl Event for $ty {
            const NAME: &'static str = $name;
            fn route() -> &'static Route {
                static R: OnceLock<Route> = OnceLock::new();
                R.get_or_init(|| $route)
            }
            fn partition_key(&self) -> Option<String> {
                Some(format!("key-{}", self.n))
            }
        }
        heytom_mq::__private::inventory::submit! {
            heytom_mq::__private::EventRegistration { name: $ty::NAME, route: $ty::route }
        }
    };
}

// ---------------------------------------------------------------- in memory

event!(MemFirst, "OtelMemFirst", Route::Default);
event!(MemSecond, "OtelMemSecond", Route::Default);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_trace_runs_from_the_request_to_the_follow_up_handler() {
    let (pool, path) = sqlite_pool().await;
    let table = format!("OtelMem{}", unique());
    let builder = App::builder()
        .in_memory()
        .outbox(Outbox::sqlite(pool.clone()).table_name(table));
    let running = run(
        builder,
        &pool,
        MemFirst { n: 1 },
        MemSecond { n: 2 },
        "heytom_in_memory",
        false,
    )
    .await;
    running.shutdown().await.expect("shutdown");
    pool.close().await;
    let _ = std::fs::remove_file(path);
}

event!(ScanFirst, "OtelScanFirst", Route::Default);
event!(ScanSecond, "OtelScanSecond", Route::Default);

/// Without dispatch after commit the retry scanner sends the row: the
/// context stored in the row still links it to the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scanner_continues_the_trace_stored_in_the_row() {
    let (pool, path) = sqlite_pool().await;
    let table = format!("OtelScan{}", unique());
    let builder = App::builder()
        .in_memory()
        .outbox(
            Outbox::sqlite(pool.clone())
                .table_name(&table)
                .dispatch_after_commit(false),
        )
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            table_name: table.clone(),
            ..LocalMessageRetryOptions::default()
        });
    let first = ScanFirst { n: 1 };
    let running = run(
        builder,
        &pool,
        first,
        ScanSecond { n: 2 },
        "heytom_in_memory",
        true,
    )
    .await;
    running.shutdown().await.expect("shutdown");
    pool.close().await;
    let _ = std::fs::remove_file(path);
}

// ---------------------------------------------------------------- RabbitMQ

fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(unique)
}

fn rabbit_name(prefix: &str) -> &'static str {
    leak(format!("heytom.otel.{prefix}.{}", run_id()))
}

event!(
    RabbitFirst,
    "OtelRabbitFirst",
    Route::RabbitMq(
        RabbitMqRoute::new(rabbit_name("first"))
            .exchange(rabbit_name("exchange"))
            .queue_name(rabbit_name("first.queue"))
    )
);
event!(
    RabbitSecond,
    "OtelRabbitSecond",
    Route::RabbitMq(
        RabbitMqRoute::new(rabbit_name("second"))
            .exchange(rabbit_name("exchange"))
            .queue_name(rabbit_name("second.queue"))
    )
);

fn rabbit_url() -> String {
    std::env::var("HEYTOM_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn pg_url() -> String {
    std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Deletes the test's queues and exchange when dropped, also on a panic.
struct RabbitCleanup;

impl Drop for RabbitCleanup {
    fn drop(&mut self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let work = std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let props = lapin::ConnectionProperties::default();
                let Ok(conn) = lapin::Connection::connect(&rabbit_url(), props).await else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in [rabbit_name("first.queue"), rabbit_name("second.queue")] {
                        let _ = ch
                            .queue_delete(q.into(), QueueDeleteOptions::default())
                            .await;
                    }
                    let e = rabbit_name("exchange");
                    let _ = ch
                        .exchange_delete(e.into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = work.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_trace_runs_from_the_request_to_the_follow_up_handler() {
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&pg_url()),
    )
    .await;
    let pool = match connected {
        Ok(Ok(pool)) => pool,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            assert!(!require_services(), "PostgreSQL unreachable: {why}");
            eprintln!("NOTICE: PostgreSQL unreachable; skipping");
            return;
        }
    };
    let _cleanup = RabbitCleanup;
    let table = format!("OtelRabbit{}", unique());
    let builder = App::builder()
        .rabbitmq(
            RabbitMqOptions::new(rabbit_url())
                .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
                .publish_timeout(Duration::from_secs(30)),
        )
        .outbox(Outbox::postgres(pool.clone()).table_name(&table));
    let running = run(
        builder,
        &pool,
        RabbitFirst { n: 1 },
        RabbitSecond { n: 2 },
        "rabbitmq",
        false,
    )
    .await;
    running.shutdown().await.expect("shutdown");
    let drop_table = format!("DROP TABLE IF EXISTS \"{table}\"");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop_table))
        .execute(&pool)
        .await;
    pool.close().await;
}

// ---------------------------------------------------------------- Kafka

fn kafka_route(base: &str) -> Route {
    let mut r = KafkaRoute::new(kafka_support::unique_topic(base));
    r.session_timeout_ms = Some(6000);
    Route::Kafka(r)
}

event!(KafkaFirst, "OtelKafkaFirst", kafka_route("otel-first"));
event!(KafkaSecond, "OtelKafkaSecond", kafka_route("otel-second"));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_trace_runs_from_the_request_to_the_follow_up_handler() {
    exporter();
    let Some(servers) = kafka_support::bootstrap() else {
        return;
    };
    let (pool, path) = sqlite_pool().await;
    let table = format!("OtelKafka{}", unique());
    let builder = App::builder()
        .kafka(
            kafka_support::options(&servers)
                .group_id(kafka_support::unique_group("otel"))
                .commit_interval(Duration::from_millis(100)),
        )
        .outbox(Outbox::sqlite(pool.clone()).table_name(table));
    let running = run(
        builder,
        &pool,
        KafkaFirst { n: 1 },
        KafkaSecond { n: 2 },
        "kafka",
        false,
    )
    .await;
    running.shutdown().await.expect("shutdown");
    pool.close().await;
    let _ = std::fs::remove_file(path);
}
