//! Benchmark of the local message table on PostgreSQL, MariaDB/MySQL and SQLite.
//!
//! ```text
//! cargo run -p heytom-mq --release --example bench_outbox
//! ```
//!
//! Per database:
//! (a) enqueue throughput: business insert + outbox insert + commit, at 1 and
//!     8 concurrent writers, against the same loop with the business insert
//!     alone (raw sqlx), as a ratio;
//! (b) end-to-end latency from `commit()` returning to the transport's
//!     confirm, p50 / p99;
//! (c) time and peak RSS growth to drain a backlog of 100,000 Pending rows.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL`, `HEYTOM_TEST_MYSQL_URL` (same defaults
//! as the tests); SQLite uses a file in the temp dir. Sizes:
//! `HEYTOM_BENCH_TX` (transactions per throughput run, default 2000) and
//! `HEYTOM_BENCH_BACKLOG` (default 100000).
//!
//! Transport: in-memory (the relay and the database are what is measured).
//! TODO(lead): once the RabbitMQ transport is merged, add a run with
//! `.rabbitmq(RabbitMqOptions::new("amqp://guest:guest@127.0.0.1:5672"))`
//! wrapped in the same `TimingTransport` to get latency with broker confirms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use heytom_mq::prelude::*;
use heytom_mq::{
    HandlerEntry, InMemoryTransport, LocalMessage, LocalMessageRepository, Outgoing, Subscription,
    SubscriptionHandle, Transport, TransportKind,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
struct BenchOrderPlaced {
    id: i64,
    note: String,
}

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

/// The in-memory transport, recording when each event was confirmed.
struct TimingTransport {
    inner: InMemoryTransport,
    confirmed: Mutex<HashMap<uuid::Uuid, Instant>>,
    count: AtomicUsize,
    record: bool,
}

#[async_trait]
impl Transport for TimingTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::InMemory
    }
    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.inner.group_for(handler)
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        let r = self.inner.publish(message).await;
        self.done(std::slice::from_ref(message));
        r
    }
    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<heytom_mq::Result<()>> {
        let r = self.inner.publish_batch(messages).await;
        self.done(messages);
        r
    }
    async fn subscribe(&self, sub: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        self.inner.subscribe(sub).await
    }
}

impl TimingTransport {
    fn new(record: bool) -> Arc<Self> {
        Arc::new(TimingTransport {
            inner: InMemoryTransport::new(InMemoryBroker::new()),
            confirmed: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            record,
        })
    }

    fn done(&self, messages: &[Outgoing]) {
        let now = Instant::now();
        self.count.fetch_add(messages.len(), Ordering::Relaxed);
        if self.record {
            let mut c = self.confirmed.lock().unwrap();
            for m in messages {
                c.insert(m.envelope.id, now);
            }
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

#[derive(Default)]
struct Results {
    db: &'static str,
    /// (writers, raw tx/s, outbox tx/s)
    throughput: Vec<(usize, f64, f64)>,
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

macro_rules! bench_db {
    ($fn_name:ident, $label:literal, $db:ty, $pool:expr, $outbox:path, $ph:expr, $q:literal) => {
        async fn $fn_name() -> Option<Results> {
            let pool: sqlx::Pool<$db> = match $pool.await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("NOTICE: {} unreachable ({e}); skipped", $label);
                    return None;
                }
            };
            let id = suffix();
            let table = format!("LocalMessages_bench_{id}");
            let biz = format!("bench_biz_{id}");
            let tx_count = env_usize("HEYTOM_BENCH_TX", 2000);
            let backlog = env_usize("HEYTOM_BENCH_BACKLOG", 100_000);
            let mut res = Results {
                db: $label,
                backlog,
                ..Default::default()
            };
            sqlx::query(&format!(
                "CREATE TABLE {biz} (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL)"
            ))
            .execute(&pool)
            .await
            .ok()?;
            let insert = format!("INSERT INTO {biz} (id, note) VALUES ({}, {})", $ph.0, $ph.1);
            let next_id = Arc::new(std::sync::atomic::AtomicI64::new(0));

            // (a) throughput
            let transport = TimingTransport::new(false);
            let app = App::builder()
                .discover(false)
                .transport(transport.clone())
                .outbox($outbox(pool.clone()).table_name(&table))
                .start()
                .await
                .ok()?;
            let producer = app.producer();
            // The first round warms both paths (connections, caches) and is not
            // reported; then three rounds alternate business-only and outbox runs
            // (the machine is shared) and the median rate of each is reported.
            for (writers, rounds) in [(1usize, 0usize), (1, 3), (8, 3)] {
                let per_writer = if rounds > 0 {
                    tx_count / writers / 3
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
                                                sqlx::query(&insert)
                                                    .bind(id)
                                                    .bind(&note)
                                                    .execute(&mut **tx)
                                                    .await?;
                                                Ok(BenchOrderPlaced { id, note })
                                            })
                                        })
                                        .await
                                        .expect("outbox transaction");
                                } else {
                                    let mut tx = pool.begin().await.expect("begin");
                                    sqlx::query(&insert)
                                        .bind(id)
                                        .bind(&note)
                                        .execute(&mut *tx)
                                        .await
                                        .expect("insert");
                                    tx.commit().await.expect("commit");
                                }
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.ok()?;
                    }
                    samples[k].push((per_writer * writers) as f64 / start.elapsed().as_secs_f64());
                }
                if rounds > 0 {
                    res.throughput.push((
                        writers,
                        median(&mut samples[0]),
                        median(&mut samples[1]),
                    ));
                }
            }
            app.shutdown().await.ok()?;

            // (b) latency commit -> transport confirm
            let transport = TimingTransport::new(true);
            let app = App::builder()
                .discover(false)
                .transport(transport.clone())
                .outbox($outbox(pool.clone()).table_name(&table))
                .start()
                .await
                .ok()?;
            let producer = app.producer();
            let mut committed = Vec::with_capacity(1000);
            for _ in 0..1000 {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let mut tx = producer.begin(&pool).await.ok()?;
                sqlx::query(&insert)
                    .bind(id)
                    .bind("latency")
                    .execute(&mut **tx)
                    .await
                    .ok()?;
                let event_id = tx
                    .publish(&BenchOrderPlaced {
                        id,
                        note: "latency".into(),
                    })
                    .await
                    .ok()?;
                let before = Instant::now();
                tx.commit().await.ok()?;
                committed.push((event_id, before, Instant::now()));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (mut from_call, mut from_return): (Vec<Duration>, Vec<Duration>) = {
                let c = transport.confirmed.lock().unwrap();
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
            app.shutdown().await.ok()?;

            // (c) drain a backlog
            let drain_table = format!("LocalMessages_drain_{id}");
            let outbox = $outbox(pool.clone()).table_name(&drain_table);
            outbox.ensure_table().await.ok()?;
            for chunk_start in (0..backlog).step_by(10_000) {
                let rows: Vec<LocalMessage> = (chunk_start..(chunk_start + 10_000).min(backlog))
                    .map(|i| {
                        LocalMessage::pending(
                            BenchOrderPlaced::NAME,
                            format!(r#"{{"id":{i},"note":"backlog"}}"#),
                        )
                    })
                    .collect();
                outbox.save_batch(&rows).await.ok()?;
            }
            let transport = TimingTransport::new(false);
            let rss_before = rss_kib("VmRSS:");
            let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
            let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let sampler = {
                let (peak, sampling) = (peak.clone(), sampling.clone());
                tokio::spawn(async move {
                    while sampling.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
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
                .await
                .ok()?;
            loop {
                let counts = outbox.status_counts().await.ok()?;
                if counts.sent as usize >= backlog {
                    break;
                }
                if start.elapsed() > Duration::from_secs(600) {
                    eprintln!("{}: drain timed out at {counts:?}", $label);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            res.drain_s = start.elapsed().as_secs_f64();
            res.drain_rows_per_s = backlog as f64 / res.drain_s;
            sampling.store(false, Ordering::Relaxed);
            let _ = sampler.await;
            res.peak_rss_growth_mib =
                peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64 / 1024.0;
            app.shutdown().await.ok()?;

            for t in [&biz, &table, &drain_table] {
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {q}{t}{q}", q = $q))
                    .execute(&pool)
                    .await;
            }
            pool.close().await;
            Some(res)
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
    "\""
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
                .filename(std::env::temp_dir().join(format!("heytom-bench-{}.db", suffix())))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(60))
        ),
    Outbox::sqlite,
    ("?", "?"),
    "\""
);

#[tokio::main]
async fn main() {
    let mut all = Vec::new();
    let only = std::env::var("HEYTOM_BENCH_DB")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if only.is_empty() || only.contains("postgres") {
        all.extend(bench_postgres().await);
    }
    if only.is_empty() || only.contains("mysql") || only.contains("maria") {
        all.extend(bench_mysql().await);
    }
    if only.is_empty() || only.contains("sqlite") {
        all.extend(bench_sqlite().await);
    }

    println!(
        "\n(a) enqueue throughput, transactions/s (business insert [+ outbox insert] + commit)"
    );
    println!("| database   | writers | business only | with outbox | ratio |");
    println!("|------------|--------:|--------------:|------------:|------:|");
    for r in &all {
        for (w, raw, ob) in &r.throughput {
            println!(
                "| {:<10} | {:>7} | {:>13.0} | {:>11.0} | {:>5.2} |",
                r.db,
                w,
                raw,
                ob,
                ob / raw
            );
        }
    }
    println!(
        "\n(b) latency to the transport's confirm (in-memory transport), 1000 sequential commits"
    );
    println!("| database   | confirmed | p50 ms from commit() call | p99 ms | p50 ms from commit() return | p99 ms |");
    println!("|------------|----------:|--------------------------:|-------:|----------------------------:|-------:|");
    for r in &all {
        println!(
            "| {:<10} | {:>9} | {:>25.2} | {:>6.2} | {:>27.2} | {:>6.2} |",
            r.db, r.confirmed, r.p50_ms, r.p99_ms, r.p50_after_ms, r.p99_after_ms
        );
    }
    println!("\n(c) drain a backlog of Pending rows (scanner batch 1000)");
    println!("| database   | rows    | seconds | rows/s  | peak RSS growth MiB |");
    println!("|------------|--------:|--------:|--------:|--------------------:|");
    for r in &all {
        println!(
            "| {:<10} | {:>7} | {:>7.1} | {:>7.0} | {:>19.1} |",
            r.db, r.backlog, r.drain_s, r.drain_rows_per_s, r.peak_rss_growth_mib
        );
    }
    println!("\nprocess VmHWM: {} MiB", rss_kib("VmHWM:") / 1024);
}
