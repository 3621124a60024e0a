//! Benchmark of the local message table on PostgreSQL, MariaDB/MySQL and
//! SQLite, each through the in-memory transport and through RabbitMQ.
//!
//! ```text
//! cargo run -p heytom-mq --release --example bench_outbox
//! ```
//!
//! Per database and transport:
//! (a) enqueue throughput: business insert + outbox insert + commit, at 1 and
//!     8 concurrent writers, against the same loop with the business insert
//!     alone (raw sqlx), as a ratio;
//! (b) end-to-end latency from `commit()` to the transport's confirm (for
//!     RabbitMQ, the broker's publisher confirm), p50 / p99;
//! (c) time and peak RSS growth to drain a backlog of 100,000 Pending rows.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL`, `HEYTOM_TEST_MYSQL_URL` (same defaults
//! as the tests); SQLite a file in the temp dir, removed at the end;
//! `HEYTOM_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! Each RabbitMQ run
//! publishes to an exchange of its own with a durable queue bound to it
//! (publishes are `mandatory`), both deleted afterwards.
//!
//! Knobs: `HEYTOM_BENCH_DB` (`postgres`, `mysql`, `sqlite`; default all),
//! `HEYTOM_BENCH_TRANSPORT` (`memory`, `rabbitmq`; default both),
//! `HEYTOM_BENCH_TX` (transactions per writer count and kind of run, split
//! over the rounds; default 3000), `HEYTOM_BENCH_ROUNDS` (pairs of
//! business-only and outbox runs, default 5),
//! `HEYTOM_BENCH_BACKLOG` (default 100000).
//!
//! Every transport is wrapped in a `TimingTransport` that records when each
//! message was confirmed; the RabbitMQ one inside it is the transport
//! `AppBuilder::rabbitmq(RabbitMqOptions::new(url))` connects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use heytom_mq::prelude::*;
use heytom_mq::RabbitMqTransport;
use heytom_mq::{
    BoxError, HandlerEntry, InMemoryTransport, LocalMessage, LocalMessageRepository, Outgoing,
    Subscription, SubscriptionHandle, Transport, TransportKind,
};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

#[derive(Serialize, Deserialize, Debug, Clone)]
struct BenchOrderPlaced {
    id: i64,
    note: String,
}

/// No attribute: the event goes to whichever transport the app has; on
/// RabbitMQ to the options' exchange with its `NAME` as routing key.
impl Event for BenchOrderPlaced {
    const NAME: &'static str = "BenchOrderPlaced";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration { name: BenchOrderPlaced::NAME, route: BenchOrderPlaced::route }
}

/// Which transport a run goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    InMemory,
    RabbitMq,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::InMemory => "in-memory",
            Via::RabbitMq => "RabbitMQ",
        }
    }
}

/// A transport, recording when each message was confirmed.
struct TimingTransport {
    inner: Arc<dyn Transport>,
    confirmed: Mutex<HashMap<uuid::Uuid, Instant>>,
    count: AtomicUsize,
    /// Time spent in publish calls (sending and awaiting confirms), in µs.
    busy_us: AtomicU64,
    record: bool,
}

#[async_trait]
impl Transport for TimingTransport {
    fn kind(&self) -> TransportKind {
        self.inner.kind()
    }
    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.inner.group_for(handler)
    }
    async fn declare(
        &self,
        route: &'static Route,
        event_name: &'static str,
    ) -> heytom_mq::Result<()> {
        self.inner.declare(route, event_name).await
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        let start = Instant::now();
        let r = self.inner.publish(message).await;
        self.busy(start);
        self.done(std::slice::from_ref(message), std::slice::from_ref(&r));
        r
    }
    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<heytom_mq::Result<()>> {
        let start = Instant::now();
        let r = self.inner.publish_batch(messages).await;
        self.busy(start);
        self.done(messages, &r);
        r
    }
    async fn subscribe(&self, sub: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        self.inner.subscribe(sub).await
    }
    async fn close(&self) -> heytom_mq::Result<()> {
        self.inner.close().await
    }
}

impl TimingTransport {
    fn new(inner: Arc<dyn Transport>, record: bool) -> Arc<Self> {
        Arc::new(TimingTransport {
            inner,
            confirmed: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            busy_us: AtomicU64::new(0),
            record,
        })
    }

    fn busy(&self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.busy_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts (and with `record`, timestamps) the confirmed messages.
    fn done(&self, messages: &[Outgoing], results: &[heytom_mq::Result<()>]) {
        let now = Instant::now();
        let ok = messages.iter().zip(results).filter(|(_, r)| r.is_ok());
        if self.record {
            let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            for (m, _) in ok {
                c.insert(m.envelope.id, now);
                n += 1;
            }
            self.count.fetch_add(n, Ordering::Relaxed);
        } else {
            self.count.fetch_add(ok.count(), Ordering::Relaxed);
        }
    }

    /// Waits (untimed) until `n` messages were confirmed; false on timeout.
    async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.count.load(Ordering::Relaxed) < n {
            if start.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

fn rabbitmq_url() -> String {
    std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The RabbitMQ topology of one run.
struct RabbitTopology {
    url: String,
    exchange: String,
    queue: String,
}

/// The broker side of one run: makes its transports and, for RabbitMQ, owns
/// an exchange and a durable queue bound to it for the event's routing key,
/// unique to the run and deleted by [`Broker::cleanup`].
struct Broker {
    rabbit: Option<RabbitTopology>,
}

impl Broker {
    async fn setup(via: Via, id: &str) -> Result<Self, BoxError> {
        let rabbit = match via {
            Via::InMemory => None,
            Via::RabbitMq => {
                let url = rabbitmq_url();
                let connection =
                    lapin::Connection::connect(&url, ConnectionProperties::default()).await?;
                let ch = connection.create_channel().await?;
                let exchange = format!("bench.outbox.{id}");
                let queue = format!("bench.outbox.{id}");
                // What the transport declares for an event without attribute.
                ch.exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
                ch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    BenchOrderPlaced::NAME.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
                ch.close(200, "ok".into()).await?;
                connection.close(200, "ok".into()).await?;
                Some(RabbitTopology {
                    url,
                    exchange,
                    queue,
                })
            }
        };
        Ok(Broker { rabbit })
    }

    /// A fresh transport for one phase.
    async fn transport(&self, record: bool) -> Result<Arc<TimingTransport>, BoxError> {
        let inner: Arc<dyn Transport> = match &self.rabbit {
            None => Arc::new(InMemoryTransport::new(InMemoryBroker::new())),
            Some(r) => Arc::new(
                RabbitMqTransport::connect(
                    RabbitMqOptions::new(&r.url)
                        .exchange(&r.exchange)
                        .connection_name("heytom-bench-outbox"),
                )
                .await?,
            ),
        };
        Ok(TimingTransport::new(inner, record))
    }

    /// Deletes the run's queue and exchange, on a connection of its own
    /// (the broker may have restarted meanwhile); says so when it cannot.
    async fn cleanup(self) {
        let Some(r) = self.rabbit else { return };
        let deleted: Result<(), lapin::Error> = async {
            let connection =
                lapin::Connection::connect(&r.url, ConnectionProperties::default()).await?;
            let ch = connection.create_channel().await?;
            ch.queue_delete(r.queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
            ch.exchange_delete(r.exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
            connection.close(200, "done".into()).await
        }
        .await;
        if let Err(e) = deleted {
            eprintln!(
                "WARNING: could not delete queue / exchange `{}`: {e}",
                r.queue
            );
        }
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Samples the process RSS every 20 ms and keeps the peak.
struct RssSampler {
    before: u64,
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> Self {
        let before = rss_kib("VmRSS:");
        let peak = Arc::new(AtomicU64::new(before));
        let running = Arc::new(AtomicBool::new(true));
        let task = {
            let (peak, running) = (peak.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        RssSampler {
            before,
            peak,
            running,
            task,
        }
    }

    /// Stops sampling; the peak growth in MiB.
    async fn stop(self) -> f64 {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak
            .load(Ordering::Relaxed)
            .saturating_sub(self.before) as f64
            / 1024.0
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn suffix() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

/// Enqueue rates at one number of writers.
struct Throughput {
    writers: usize,
    /// Business insert + commit, tx/s (median).
    business: f64,
    /// Business insert + outbox insert + commit, tx/s (median).
    outbox: f64,
    /// Median of outbox / business over adjacent pairs of runs.
    ratio: f64,
}

#[derive(Default)]
struct Results {
    db: &'static str,
    transport: &'static str,
    throughput: Vec<Throughput>,
    /// From calling `commit()` (includes the database commit).
    p50_ms: f64,
    p99_ms: f64,
    /// From `commit()` returning (0 when the relay confirmed first).
    p50_after_ms: f64,
    p99_after_ms: f64,
    confirmed: usize,
    backlog: usize,
    drain_s: f64,
    drain_rows_per_s: f64,
    /// Of `drain_s`, the time the relay spent in the transport's publish.
    drain_publish_s: f64,
    peak_rss_growth_mib: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Commits in the latency run.
const LATENCY_COMMITS: usize = 1000;
/// Longest wait for the relay to catch up (untimed) before going on.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One function per database (the pool and outbox types differ), taking the
/// transport as a parameter.
macro_rules! bench_db {
    ($fn_name:ident, $label:literal, $db:ty, $pool:expr, $outbox:path, $ph:expr, $q:literal) => {
        async fn $fn_name(via: Via) -> Result<Results, BoxError> {
            let pool: sqlx::Pool<$db> = $pool.await?;
            let id = suffix();
            let broker = Broker::setup(via, &id).await?;
            let table = format!("LocalMessages_bench_{id}");
            let drain_table = format!("LocalMessages_drain_{id}");
            let biz = format!("bench_biz_{id}");
            let result: Result<Results, BoxError> = async {
                let tx_count = env_usize("HEYTOM_BENCH_TX", 3000);
                let backlog = env_usize("HEYTOM_BENCH_BACKLOG", 100_000);
                let mut res = Results {
                    db: $label,
                    transport: via.label(),
                    backlog,
                    ..Default::default()
                };
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TABLE {biz} (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL)"
                )))
                .execute(&pool)
                .await?;
                let insert = format!("INSERT INTO {biz} (id, note) VALUES ({}, {})", $ph.0, $ph.1);
                let next_id = Arc::new(AtomicI64::new(0));

                // (a) throughput
                let transport = broker.transport(false).await?;
                let app = App::builder()
                    .discover(false)
                    .transport(transport.clone())
                    .outbox($outbox(pool.clone()).table_name(&table))
                    .start()
                    .await?;
                let producer = app.producer();
                let mut outbox_sent = 0;
                // The first round warms both paths (connections, caches) and is not
                // reported; then `rounds` pairs of a business-only and an outbox run
                // follow each other (the machine is shared: its disk and cores swing)
                // and the median rate of each, and the median of the pairs' ratios,
                // are reported. After an outbox run the relay is let catch up,
                // untimed, so that no run pays for the previous one's sends.
                let rounds = env_usize("HEYTOM_BENCH_ROUNDS", 5).max(1);
                for (writers, rounds) in [(1usize, 0usize), (1, rounds), (8, rounds)] {
                    let per_writer = if rounds > 0 {
                        (tx_count / writers / rounds).max(1)
                    } else {
                        tx_count / 10
                    };
                    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
                    let plan: Vec<(usize, bool)> = if rounds == 0 {
                        vec![(0, false), (1, true)]
                    } else {
                        (0..rounds).flat_map(|_| [(0, false), (1, true)]).collect()
                    };
                    for (k, with_outbox) in plan {
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for _ in 0..writers {
                            let (pool, producer, insert, next_id) = (
                                pool.clone(),
                                producer.clone(),
                                insert.clone(),
                                next_id.clone(),
                            );
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..per_writer {
                                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                                    let note = format!("order {id}");
                                    if with_outbox {
                                        let insert = insert.clone();
                                        producer
                                            .send_with_transaction(&pool, move |tx| {
                                                Box::pin(async move {
                                                    sqlx::query(AssertSqlSafe(insert.clone()))
                                                        .bind(id)
                                                        .bind(&note)
                                                        .execute(&mut **tx)
                                                        .await?;
                                                    Ok(BenchOrderPlaced { id, note })
                                                })
                                            })
                                            .await?;
                                    } else {
                                        let mut tx = pool.begin().await?;
                                        sqlx::query(AssertSqlSafe(insert.clone()))
                                            .bind(id)
                                            .bind(&note)
                                            .execute(&mut *tx)
                                            .await?;
                                        tx.commit().await?;
                                    }
                                }
                                Ok::<(), BoxError>(())
                            }));
                        }
                        for t in tasks {
                            t.await??;
                        }
                        let n = per_writer * writers;
                        samples[k].push(n as f64 / start.elapsed().as_secs_f64());
                        if with_outbox {
                            outbox_sent += n;
                            if !transport.wait_for(outbox_sent, SETTLE_TIMEOUT).await {
                                eprintln!("{} / {}: relay did not catch up", $label, via.label());
                            }
                        }
                    }
                    if rounds > 0 {
                        let mut ratios: Vec<f64> = samples[1]
                            .iter()
                            .zip(&samples[0])
                            .map(|(o, b)| o / b)
                            .collect();
                        res.throughput.push(Throughput {
                            writers,
                            business: median(&mut samples[0]),
                            outbox: median(&mut samples[1]),
                            ratio: median(&mut ratios),
                        });
                    }
                }
                app.shutdown().await?;

                // (b) latency commit -> transport confirm
                let transport = broker.transport(true).await?;
                let app = App::builder()
                    .discover(false)
                    .transport(transport.clone())
                    .outbox($outbox(pool.clone()).table_name(&table))
                    .start()
                    .await?;
                let producer = app.producer();
                let mut committed = Vec::with_capacity(LATENCY_COMMITS);
                for _ in 0..LATENCY_COMMITS {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let mut tx = producer.begin(&pool).await?;
                    sqlx::query(AssertSqlSafe(insert.clone()))
                        .bind(id)
                        .bind("latency")
                        .execute(&mut **tx)
                        .await?;
                    let event_id = tx
                        .publish(&BenchOrderPlaced {
                            id,
                            note: "latency".into(),
                        })
                        .await?;
                    let before = Instant::now();
                    tx.commit().await?;
                    committed.push((event_id, before, Instant::now()));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                transport.wait_for(LATENCY_COMMITS, SETTLE_TIMEOUT).await;
                let (mut from_call, mut from_return): (Vec<Duration>, Vec<Duration>) = {
                    let c = transport
                        .confirmed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    committed
                        .iter()
                        .filter_map(|(id, before, after)| {
                            c.get(id).map(|d| {
                                (
                                    d.saturating_duration_since(*before),
                                    d.saturating_duration_since(*after),
                                )
                            })
                        })
                        .unzip()
                };
                from_call.sort();
                from_return.sort();
                res.confirmed = from_call.len();
                res.p50_ms = percentile(&from_call, 0.5);
                res.p99_ms = percentile(&from_call, 0.99);
                res.p50_after_ms = percentile(&from_return, 0.5);
                res.p99_after_ms = percentile(&from_return, 0.99);
                app.shutdown().await?;

                // (c) drain a backlog
                let outbox = $outbox(pool.clone()).table_name(&drain_table);
                outbox.ensure_table().await?;
                for chunk_start in (0..backlog).step_by(10_000) {
                    let rows: Vec<LocalMessage> = (chunk_start
                        ..(chunk_start + 10_000).min(backlog))
                        .map(|i| {
                            LocalMessage::pending(
                                BenchOrderPlaced::NAME,
                                format!(r#"{{"id":{i},"note":"backlog"}}"#),
                            )
                        })
                        .collect();
                    outbox.save_batch(&rows).await?;
                }
                let transport = broker.transport(false).await?;
                let rss = RssSampler::start();
                let start = Instant::now();
                let app = App::builder()
                    .discover(false)
                    .transport(transport.clone())
                    .outbox(outbox.clone().create_table(false))
                    .local_message_retry(LocalMessageRetryOptions {
                        batch_size: 1000,
                        scan_interval: Duration::from_millis(200),
                        ..Default::default()
                    })
                    .start()
                    .await?;
                loop {
                    let counts = outbox.status_counts().await?;
                    if counts.sent as usize >= backlog {
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(600) {
                        eprintln!(
                            "{} / {}: drain timed out at {counts:?}",
                            $label,
                            via.label()
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                res.drain_s = start.elapsed().as_secs_f64();
                res.drain_rows_per_s = backlog as f64 / res.drain_s;
                res.drain_publish_s = transport.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
                res.peak_rss_growth_mib = rss.stop().await;
                app.shutdown().await?;
                Ok(res)
            }
            .await;

            for t in [&biz, &table, &drain_table] {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS {q}{t}{q}",
                    q = $q
                )))
                .execute(&pool)
                .await;
            }
            broker.cleanup().await;
            pool.close().await;
            result
        }
    };
}

bench_db!(
    bench_postgres,
    "PostgreSQL",
    sqlx::Postgres,
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(
            &std::env::var("HEYTOM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
        ),
    Outbox::postgres,
    ("$1", "$2"),
    ""
);
bench_db!(
    bench_mysql,
    "MariaDB",
    sqlx::MySql,
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(16)
        .connect(
            &std::env::var("HEYTOM_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
        ),
    Outbox::mysql,
    ("?", "?"),
    "`"
);
bench_db!(
    bench_sqlite,
    "SQLite",
    sqlx::Sqlite,
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(16)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(sqlite_path())
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(60))
        ),
    Outbox::sqlite,
    ("?", "?"),
    "\""
);

/// The SQLite file of this process's runs, removed at the end.
fn sqlite_path() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("heytom-bench-{}.db", suffix())))
        .clone()
}

#[derive(Clone, Copy, Debug)]
enum Db {
    Postgres,
    MySql,
    Sqlite,
}

impl Db {
    async fn bench(self, via: Via) -> Result<Results, BoxError> {
        match self {
            Db::Postgres => bench_postgres(via).await,
            Db::MySql => bench_mysql(via).await,
            Db::Sqlite => bench_sqlite(via).await,
        }
    }
}

/// `HEYTOM_BENCH_<name>` lowercased: a run is selected when it is empty or
/// mentions one of `keys`.
fn selected(var: &str, keys: &[&str]) -> bool {
    let only = std::env::var(var).unwrap_or_default().to_ascii_lowercase();
    only.is_empty() || keys.iter().any(|k| only.contains(k))
}

/// Prints one markdown table, a row per database and transport.
fn print_table(all: &[Results]) {
    let header = [
        "database",
        "transport",
        "1w business tx/s",
        "1w outbox tx/s",
        "1w ratio",
        "8w business tx/s",
        "8w outbox tx/s",
        "8w ratio",
        "confirmed",
        "p50 ms",
        "p99 ms",
        "p50 ms after",
        "p99 ms after",
        "backlog",
        "drain s",
        "drain rows/s",
        "in publish s",
        "drain RSS MiB",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in all {
        let mut row = vec![r.db.to_owned(), r.transport.to_owned()];
        for writers in [1, 8] {
            match r.throughput.iter().find(|t| t.writers == writers) {
                Some(t) => row.extend([
                    format!("{:.0}", t.business),
                    format!("{:.0}", t.outbox),
                    format!("{:.2}", t.ratio),
                ]),
                None => row.extend(["-".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
        }
        row.extend([
            format!("{}/{LATENCY_COMMITS}", r.confirmed),
            format!("{:.2}", r.p50_ms),
            format!("{:.2}", r.p99_ms),
            format!("{:.2}", r.p50_after_ms),
            format!("{:.2}", r.p99_after_ms),
            r.backlog.to_string(),
            format!("{:.1}", r.drain_s),
            format!("{:.0}", r.drain_rows_per_s),
            format!("{:.1}", r.drain_publish_s),
            format!("{:.1}", r.peak_rss_growth_mib),
        ]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    // The first two columns are text, the others numbers.
    let line = |row: &[String]| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, &w))| {
                if c < 2 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    println!("{}", line(&rows[0]));
    // Markdown rules (`---:` right-aligns), one per cell with its padding.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            if c < 2 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    println!("|{}|", rule.join("|"));
    for row in &rows[1..] {
        println!("{}", line(row));
    }
}

#[tokio::main]
async fn main() {
    let dbs = [
        (Db::Postgres, &["postgres"][..]),
        (Db::MySql, &["mysql", "maria"][..]),
        (Db::Sqlite, &["sqlite"][..]),
    ];
    let vias = [
        (Via::InMemory, &["mem"][..]),
        (Via::RabbitMq, &["rabbit"][..]),
    ];
    let mut all = Vec::new();
    for (db, db_keys) in dbs {
        if !selected("HEYTOM_BENCH_DB", db_keys) {
            continue;
        }
        for (via, via_keys) in vias {
            if !selected("HEYTOM_BENCH_TRANSPORT", via_keys) {
                continue;
            }
            let start = Instant::now();
            match db.bench(via).await {
                Ok(r) => {
                    eprintln!(
                        "{db:?} / {}: done in {:.0} s",
                        via.label(),
                        start.elapsed().as_secs_f64()
                    );
                    all.push(r);
                }
                Err(e) => eprintln!("NOTICE: {db:?} / {} skipped: {e}", via.label()),
            }
        }
    }

    println!();
    print_table(&all);
    let rounds = env_usize("HEYTOM_BENCH_ROUNDS", 5).max(1);
    println!(
        "\n1w / 8w: 1 or 8 concurrent writers; business = business insert + commit (raw sqlx), \
         outbox = business insert + outbox insert + commit; tx/s: median of {rounds} runs; \
         ratio: median over {rounds} back-to-back pairs of outbox / business."
    );
    println!(
        "p50 / p99: {LATENCY_COMMITS} sequential commits, ms from calling commit() to the transport's \
         confirm (RabbitMQ: the broker's publisher confirm); \"after\": from commit() returning."
    );
    println!(
        "drain: a backlog of Pending rows sent by the retry scanner (batch 1000) until all are Sent; \
         in publish = time the relay spent in the transport's publish (send + confirms); \
         RSS = peak growth of the process RSS meanwhile."
    );
    println!("process VmHWM: {} MiB", rss_kib("VmHWM:") / 1024);
    for r in &all {
        for t in &r.throughput {
            println!(
                "RESULT outbox_enqueue_{}_{}_{}w ratio={:.3} rounds={rounds}",
                r.db.to_ascii_lowercase().replace('/', "_"),
                r.transport.to_ascii_lowercase().replace(['-', ' '], "_"),
                t.writers,
                t.ratio
            );
        }
    }
    let db = sqlite_path();
    for ext in ["", "-wal", "-shm"] {
        let mut file = db.clone().into_os_string();
        file.push(ext);
        let _ = std::fs::remove_file(file);
    }
}
