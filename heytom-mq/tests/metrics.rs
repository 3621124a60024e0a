//! The metrics (feature `metrics`), read back through `metrics-util`'s
//! debugging recorder after scripted runs: publishes that succeed and
//! fail, handlers that ack, retry and dead-letter, the outbox gauges after
//! a scan, and a Kafka consumer's lag while its handler is held.
//!
//! Servers: SQLite files in the temp dir; Kafka as in `tests/kafka.rs`
//! (`HEYTOM_KAFKA_BOOTSTRAP_SERVERS`, or a tansu broker started by the
//! script). With `HEYTOM_TEST_REQUIRE_SERVICES=1` a missing one fails.
#![cfg(all(feature = "metrics", feature = "sqlite", feature = "kafka"))]

mod kafka_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use heytom_mq::prelude::*;
use heytom_mq::{
    metric_names as m, Error, HandlerEntry, KafkaRoute, LocalMessage, LocalMessageRepository,
    LocalMessageRetryOptions, MessageStatus, Outgoing, Subscription, SubscriptionHandle, Transport,
    TransportKind,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- recorder

type Labels = Vec<(String, String)>;

/// Everything recorded so far. The debugging recorder hands counters and
/// histograms out once (a snapshot drains them), so every test reads
/// through this one accumulator.
#[derive(Default)]
struct Recorded {
    counters: HashMap<(String, Labels), u64>,
    gauges: HashMap<(String, Labels), f64>,
    histograms: HashMap<(String, Labels), Vec<f64>>,
}

fn recorder() -> &'static (Snapshotter, Mutex<Recorded>) {
    static R: OnceLock<(Snapshotter, Mutex<Recorded>)> = OnceLock::new();
    R.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        (snapshotter, Mutex::new(Recorded::default()))
    })
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    let mut l: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    (name.to_owned(), l)
}

/// Reads what was recorded since the last read into the accumulator.
fn read() -> std::sync::MutexGuard<'static, Recorded> {
    let (snapshotter, recorded) = recorder();
    let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
    for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
        let mut labels: Labels = ck
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let k = (ck.key().name().to_owned(), labels);
        match value {
            DebugValue::Counter(n) => *r.counters.entry(k).or_default() += n,
            DebugValue::Gauge(g) => {
                r.gauges.insert(k, g.into_inner());
            }
            DebugValue::Histogram(xs) => r
                .histograms
                .entry(k)
                .or_default()
                .extend(xs.into_iter().map(|x| x.into_inner())),
        }
    }
    r
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    read()
        .counters
        .get(&key(name, labels))
        .copied()
        .unwrap_or(0)
}

fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    read()
        .histograms
        .get(&key(name, labels))
        .cloned()
        .unwrap_or_default()
}

/// Gauges' values as last set, read at once. (A snapshot resets the
/// debugging recorder's gauges to 0, so callers read again only after the
/// code under test had time to set them again.)
fn gauges(wanted: &[(&str, &[(&str, &str)])]) -> Vec<Option<f64>> {
    let r = read();
    wanted
        .iter()
        .map(|(name, labels)| r.gauges.get(&key(name, labels)).copied())
        .collect()
}

async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- events

macro_rules! default_event {
    ($ty:ident, $name:literal) => {
        #[derive(Serialize, Deserialize, Debug, Clone)]
        struct $ty {
            n: u32,
        }
        impl Event for $ty {
            const NAME: &'static str = $name;
            fn route() -> &'static Route {
                static R: Route = Route::Default;
                &R
            }
            fn partition_key(&self) -> Option<String> {
                None
            }
        }
        heytom_mq::__private::inventory::submit! {
            heytom_mq::__private::EventRegistration { name: $ty::NAME, route: $ty::route }
        }
    };
}

default_event!(MetricsOk, "MetricsOk");
default_event!(MetricsFlaky, "MetricsFlaky");
default_event!(MetricsDead, "MetricsDead");
default_event!(MetricsOutbox, "MetricsOutbox");

#[derive(Serialize, Deserialize, Debug, Clone)]
struct MetricsLag {
    n: u32,
}

fn lag_topic() -> &'static str {
    static T: OnceLock<&'static str> = OnceLock::new();
    T.get_or_init(|| kafka_support::unique_topic("metrics-lag"))
}

impl Event for MetricsLag {
    const NAME: &'static str = "MetricsLag";
    fn route() -> &'static Route {
        static R: OnceLock<Route> = OnceLock::new();
        R.get_or_init(|| {
            let mut r = KafkaRoute::new(lag_topic());
            r.session_timeout_ms = Some(6000);
            Route::Kafka(r)
        })
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

/// A transport whose broker refuses every message.
struct Refusing;

#[async_trait]
impl Transport for Refusing {
    fn kind(&self) -> TransportKind {
        TransportKind::Custom("refusing")
    }
    fn group_for(&self, _: &HandlerEntry) -> String {
        "refusing".to_owned()
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        Err(Error::publish(&message.envelope.name, "refused on purpose"))
    }
    async fn subscribe(&self, _: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        Err(Error::config("the refusing transport consumes nothing"))
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(max_attempts)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(20))
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_outcomes_are_counted() {
    recorder();
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let calls = flaky_calls.clone();
    let running = App::builder()
        .in_memory()
        .discover(false)
        .handler_entry(HandlerEntry::from_closure("ok", |_: MetricsOk| async {}))
        .handler_entry(
            HandlerEntry::from_closure("flaky", move |_: MetricsFlaky| {
                // The first attempt fails, the retry succeeds.
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move { !first }
            })
            .retry(quick_retry(3)),
        )
        .handler_entry(
            HandlerEntry::from_closure("dead", |_: MetricsDead| async {
                Err::<(), _>(HandlerError::from("always fails"))
            })
            .retry(quick_retry(2)),
        )
        .start()
        .await
        .expect("app starts");
    let producer = running.producer();
    producer.send(&MetricsOk { n: 1 }).await.expect("sent");
    producer.send(&MetricsOk { n: 2 }).await.expect("sent");
    producer.send(&MetricsFlaky { n: 1 }).await.expect("sent");
    producer.send(&MetricsDead { n: 1 }).await.expect("sent");
    let refused = Producer::on(Arc::new(Refusing))
        .send(&MetricsOk { n: 3 })
        .await;
    assert!(refused.is_err(), "the refusing transport refused");

    let consumed = |event: &str, handler: &str, outcome: &str| {
        counter(
            m::MESSAGES_CONSUMED_TOTAL,
            &[("event", event), ("handler", handler), ("outcome", outcome)],
        )
    };
    let timeout = Duration::from_secs(30);
    eventually("every handler outcome", timeout, || {
        consumed("MetricsOk", "ok", "ack") == 2
            && consumed("MetricsFlaky", "flaky", "ack") == 1
            && consumed("MetricsDead", "dead", "dead_letter") == 1
    })
    .await;
    running.shutdown().await.expect("shutdown");

    let published = |event: &str, transport: &str, outcome: &str| {
        counter(
            m::MESSAGES_PUBLISHED_TOTAL,
            &[
                ("event", event),
                ("transport", transport),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(published("MetricsOk", "InMemory", "ok"), 2);
    assert_eq!(published("MetricsFlaky", "InMemory", "ok"), 1);
    assert_eq!(published("MetricsDead", "InMemory", "ok"), 1);
    assert_eq!(published("MetricsOk", "refusing", "error"), 1);
    assert_eq!(published("MetricsOk", "refusing", "ok"), 0);
    assert_eq!(published("MetricsOk", "InMemory", "error"), 0);

    assert_eq!(consumed("MetricsOk", "ok", "ack"), 2);
    assert_eq!(consumed("MetricsOk", "ok", "retry"), 0);
    assert_eq!(consumed("MetricsFlaky", "flaky", "retry"), 1);
    assert_eq!(consumed("MetricsFlaky", "flaky", "ack"), 1);
    assert_eq!(consumed("MetricsDead", "dead", "retry"), 1);
    assert_eq!(consumed("MetricsDead", "dead", "dead_letter"), 1);
    assert_eq!(consumed("MetricsDead", "dead", "ack"), 0);

    // One observation per handler attempt, one per publish call.
    let durations = |event: &str, handler: &str| {
        histogram(
            m::HANDLER_DURATION_SECONDS,
            &[("event", event), ("handler", handler)],
        )
    };
    assert_eq!(durations("MetricsOk", "ok").len(), 2);
    assert_eq!(durations("MetricsFlaky", "flaky").len(), 2);
    let dead = durations("MetricsDead", "dead");
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|s| (0.0..30.0).contains(s)), "{dead:?}");
    let refusing = histogram(m::PUBLISH_DURATION_SECONDS, &[("transport", "refusing")]);
    assert_eq!(refusing.len(), 1);
    let in_memory = histogram(m::PUBLISH_DURATION_SECONDS, &[("transport", "InMemory")]);
    // The other tests of this binary publish in memory too.
    assert!(in_memory.len() >= 4, "{in_memory:?}");
}

fn sqlite_path() -> std::path::PathBuf {
    let id = uuid::Uuid::now_v7().simple().to_string();
    std::env::temp_dir().join(format!("heytom-metrics-test-{id}.db"))
}

async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
        .expect("SQLite file in the temp dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_gauges_follow_the_table_after_a_scan() {
    recorder();
    let path = sqlite_path();
    let pool = sqlite_pool(&path).await;
    let table = format!(
        "MetricsMessages{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let running = App::builder()
        .in_memory()
        .discover(false)
        .outbox(Outbox::sqlite(pool.clone()).table_name(&table))
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            table_name: table.clone(),
            ..LocalMessageRetryOptions::default()
        })
        .handler_entry(HandlerEntry::from_closure(
            "outbox",
            move |_: MetricsOutbox| {
                h.fetch_add(1, Ordering::SeqCst);
                async {}
            },
        ))
        .start()
        .await
        .expect("app starts");
    let producer = running.producer();
    producer
        .send_with_transaction(&pool, |_tx| {
            Box::pin(async move { Ok(MetricsOutbox { n: 1 }) })
        })
        .await
        .expect("enqueued and committed");
    let timeout = Duration::from_secs(60);
    eventually("the relayed event handled", timeout, || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("commit-to-sent observed", timeout, || {
        !histogram(m::OUTBOX_COMMIT_TO_SENT_SECONDS, &[]).is_empty()
    })
    .await;

    // A row that waits two minutes already and is not due for an hour
    // (Pending, never claimed), and one that used up its retries (Failed).
    let outbox = Outbox::sqlite(pool.clone()).table_name(&table);
    let mut waiting = LocalMessage::pending(MetricsOutbox::NAME, r#"{"n":2}"#);
    waiting.created_at = chrono::Utc::now() - chrono::TimeDelta::seconds(120);
    waiting.next_attempt_at = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let mut failed = LocalMessage::pending(MetricsOutbox::NAME, r#"{"n":3}"#);
    failed.status = MessageStatus::Failed;
    failed.retry_count = 5;
    failed.error_message = Some("broker said no".to_owned());
    outbox
        .save_batch(&[waiting, failed])
        .await
        .expect("rows saved");

    let mut last = Vec::new();
    eventually("the gauges after a scan", timeout, || {
        // Read again only after the scanner had time to set them.
        std::thread::sleep(Duration::from_millis(500));
        last = gauges(&[
            (m::OUTBOX_ROWS, &[("status", "pending")]),
            (m::OUTBOX_ROWS, &[("status", "sent")]),
            (m::OUTBOX_ROWS, &[("status", "failed")]),
            (m::OUTBOX_OLDEST_PENDING_SECONDS, &[]),
        ]);
        last[..3] == [Some(1.0), Some(1.0), Some(1.0)]
    })
    .await;
    let oldest = last[3].expect("oldest pending gauge");
    assert!(
        (120.0..120.0 + timeout.as_secs_f64()).contains(&oldest),
        "oldest pending {oldest} s"
    );
    let relayed = [
        ("event", MetricsOutbox::NAME),
        ("transport", "InMemory"),
        ("outcome", "ok"),
    ];
    assert_eq!(
        counter(m::MESSAGES_PUBLISHED_TOTAL, &relayed),
        1,
        "the relay's send"
    );
    let sent = histogram(m::OUTBOX_COMMIT_TO_SENT_SECONDS, &[]);
    assert!(sent.iter().all(|s| (0.0..60.0).contains(s)), "{sent:?}");
    running.shutdown().await.expect("shutdown");
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_lag_rises_while_the_handler_is_held_and_falls_after() {
    recorder();
    let Some(servers) = kafka_support::bootstrap() else {
        return;
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(AtomicU32::new(0));
    let (g, h) = (gate.clone(), handled.clone());
    let opts = kafka_support::options(&servers)
        .group_id(kafka_support::unique_group("metrics-lag"))
        .commit_interval(Duration::from_millis(100))
        .consumer_property("statistics.interval.ms", "300");
    let running = App::builder()
        .kafka(opts)
        .discover(false)
        .handler_entry(
            HandlerEntry::from_closure("held", move |e: MetricsLag| {
                let (g, h) = (g.clone(), h.clone());
                async move {
                    // The first message passes; the others wait for the gate.
                    if e.n > 0 {
                        if let Ok(permit) = g.acquire().await {
                            permit.forget();
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                }
            })
            .concurrency(1),
        )
        .start()
        .await
        .expect("app starts");
    let producer = running.producer();
    let timeout = Duration::from_secs(120);
    producer.send(&MetricsLag { n: 0 }).await.expect("sent");
    eventually("the first message handled", timeout, || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    for n in 1..=6 {
        producer.send(&MetricsLag { n }).await.expect("sent");
    }
    let lag = || {
        gauges(&[(
            m::KAFKA_CONSUMER_LAG,
            &[("topic", lag_topic()), ("partition", "0")],
        )])[0]
    };
    // Committed after the first, six more on the partition.
    eventually("the lag of the held messages", timeout, || {
        std::thread::sleep(Duration::from_millis(400));
        lag() == Some(6.0)
    })
    .await;
    gate.add_permits(6);
    eventually("all handled", timeout, || {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    eventually("the lag back to 0", timeout, || {
        std::thread::sleep(Duration::from_millis(400));
        lag() == Some(0.0)
    })
    .await;
    running.shutdown().await.expect("shutdown");
}
