//! Soak: the local message table (outbox) on PostgreSQL over RabbitMQ and
//! Kafka for N minutes, while the brokers go away and come back.
//!
//! Run it through `scripts/soak.sh --minutes 10`, which starts a private
//! RabbitMQ node and a private Kafka-protocol broker, restarts / stalls them
//! at random intervals while this runs, and cleans up. Alone:
//!
//! ```sh
//! HEYTOM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 SOAK_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo run --release --example soak -- --minutes 2
//! ```
//!
//! A few writers commit business rows with their events
//! (`send_with_transaction`, and `begin` + `publish` + `commit`), a consumer
//! app counts the deliveries per event id on each transport. After the
//! writing period it drains (until every row is Sent and delivered, bounded),
//! waits a little for late duplicates and prints committed / delivered /
//! duplicates / lost per transport, plus a line every 30 s with the process
//! RSS. The exit status is non-zero if an event was lost or a row was left
//! unsent.
//!
//! Environment: `SOAK_MINUTES` (or `--minutes`, default 10), `SOAK_WRITERS`
//! (4), `SOAK_TX_PER_SEC` (per writer, 10), `SOAK_DRAIN_SECS` (300),
//! `SOAK_REPORT_SECS` (30), `SOAK_SCAN_MS` (retry scan interval, 2000),
//! `HEYTOM_DATABASE_URL` (`postgres://postgres@127.0.0.1:5432/test`),
//! `SOAK_RABBITMQ_URL` / `HEYTOM_RABBITMQ_URL`
//! (`amqp://guest:guest@127.0.0.1:5672/%2f`),
//! `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` (`127.0.0.1:9092`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use heytom_mq::prelude::*;
use heytom_mq::sqlx::{self, AssertSqlSafe, PgPool};
use heytom_mq::{
    HandlerEntry, KafkaOptions, LocalMessageRetryOptions, MessageStatus, RabbitMqOptions,
    RunningApp, StatusCounts,
};
use serde::{Deserialize, Serialize};

/// An order event on RabbitMQ (a durable queue; messages are persistent).
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "soak.RabbitOrder")]
#[rabbitmq(
    routing_key = "soak.order",
    exchange = "heytom.soak",
    exchange_type = "topic",
    queue_name = "heytom.soak.orders",
    durable = true
)]
pub struct RabbitOrder {
    pub writer: u32,
    pub seq: u64,
}

/// An order event on Kafka, keyed by order so that partitions get mixed.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "soak.KafkaOrder")]
#[kafka(
    topic = "heytom-soak-orders",
    partition_key = key,
    num_partitions = 3,
    auto_offset_reset = "earliest",
    session_timeout_ms = 10000
)]
pub struct KafkaOrder {
    pub key: String,
    pub writer: u32,
    pub seq: u64,
}

/// Deliveries per event id, as the consumer app saw them.
type Seen = Arc<Mutex<HashMap<EventId, u32>>>;

struct Count(Seen);

impl<E: Event> EventHandler<E> for Count {
    async fn handle(&self, _event: E, ctx: Context) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(ctx.event_id()).or_default() += 1;
        Ok(())
    }
}

/// What the writers were told was committed, per transport.
#[derive(Default)]
struct Committed {
    rabbit: Mutex<HashSet<EventId>>,
    kafka: Mutex<HashSet<EventId>>,
    errors: AtomicU64,
    transactions: AtomicU64,
}

struct Settings {
    minutes: f64,
    writers: u32,
    tx_per_sec: f64,
    drain: Duration,
    report: Duration,
    scan: Duration,
    database_url: String,
    rabbit_url: String,
    kafka_servers: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        _ => Ok(default),
    }
}

fn env_str(names: &[&str], default: &str) -> String {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

impl Settings {
    fn read() -> anyhow::Result<Self> {
        let mut minutes: f64 = env_or("SOAK_MINUTES", 10.0)?;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--minutes" => {
                    let v = args.next().context("--minutes needs a value")?;
                    minutes = v
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--minutes {v:?} is not a number"))?;
                }
                other => anyhow::bail!("unknown argument {other:?} (usage: soak [--minutes N])"),
            }
        }
        anyhow::ensure!(
            minutes.is_finite() && minutes > 0.0 && minutes <= 24.0 * 60.0,
            "minutes must be in (0, 1440], got {minutes}"
        );
        let tx_per_sec: f64 = env_or("SOAK_TX_PER_SEC", 10.0)?;
        anyhow::ensure!(
            tx_per_sec.is_finite() && tx_per_sec > 0.0 && tx_per_sec <= 10_000.0,
            "SOAK_TX_PER_SEC must be in (0, 10000]"
        );
        let writers = env_or("SOAK_WRITERS", 4u32)?;
        anyhow::ensure!((1..=256).contains(&writers), "SOAK_WRITERS must be 1..=256");
        let secs = |name, default: u64| -> anyhow::Result<Duration> {
            let v = env_or(name, default)?;
            anyhow::ensure!(v > 0 && v <= 86_400, "{name} must be 1..=86400");
            Ok(Duration::from_secs(v))
        };
        let scan_ms = env_or("SOAK_SCAN_MS", 2000u64)?;
        anyhow::ensure!(
            (10..=600_000).contains(&scan_ms),
            "SOAK_SCAN_MS must be 10..=600000"
        );
        Ok(Settings {
            minutes,
            writers,
            tx_per_sec,
            drain: secs("SOAK_DRAIN_SECS", 300)?,
            report: secs("SOAK_REPORT_SECS", 30)?,
            scan: Duration::from_millis(scan_ms),
            database_url: env_str(
                &["HEYTOM_DATABASE_URL"],
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            rabbit_url: env_str(
                &["SOAK_RABBITMQ_URL", "HEYTOM_RABBITMQ_URL"],
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
            kafka_servers: env_str(&["HEYTOM_KAFKA_BOOTSTRAP_SERVERS"], "127.0.0.1:9092"),
        })
    }
}

/// The process's resident set size in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One writer: business row + event(s) per transaction, alternating the
/// API shapes and the transports, at `tx_per_sec` until `stop`.
async fn writer(
    id: u32,
    pool: PgPool,
    producer: Producer,
    orders: String,
    tx_per_sec: f64,
    stop: Arc<AtomicBool>,
    committed: Arc<Committed>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / tx_per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let attempt = tokio::time::timeout(
            Duration::from_secs(30),
            one_transaction(id, seq, &pool, &producer, &orders),
        )
        .await;
        committed.transactions.fetch_add(1, Ordering::Relaxed);
        match attempt {
            Ok(Ok((rabbit, kafka))) => {
                committed.rabbit.lock().unwrap().extend(rabbit);
                committed.kafka.lock().unwrap().extend(kafka);
            }
            Ok(Err(e)) => {
                committed.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("writer {id}: transaction {seq} failed: {e:#}");
            }
            Err(_) => {
                committed.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("writer {id}: transaction {seq} took longer than 30 s");
            }
        }
    }
}

fn insert_order(orders: &str) -> String {
    format!("INSERT INTO {orders} (writer, seq) VALUES ($1, $2)")
}

/// One business transaction; returns the event ids it committed.
async fn one_transaction(
    writer: u32,
    seq: u64,
    pool: &PgPool,
    producer: &Producer,
    orders: &str,
) -> anyhow::Result<(Vec<EventId>, Vec<EventId>)> {
    let kafka = |n: u64| KafkaOrder {
        key: format!("order-{writer}-{}", n % 16),
        writer,
        seq: n,
    };
    let sql = insert_order(orders);
    let seq_i = i64::try_from(seq)?;
    let writer_i = i32::try_from(writer)?;
    match seq % 4 {
        // The closure shape, RabbitMQ.
        0 => {
            let id = producer
                .send_with_transaction(pool, move |tx| {
                    Box::pin(async move {
                        sqlx::query(AssertSqlSafe(sql))
                            .bind(writer_i)
                            .bind(seq_i)
                            .execute(&mut **tx)
                            .await?;
                        Ok(RabbitOrder { writer, seq })
                    })
                })
                .await?;
            Ok((vec![id], vec![]))
        }
        // The closure shape, Kafka.
        1 => {
            let event = kafka(seq);
            let id = producer
                .send_with_transaction(pool, move |tx| {
                    Box::pin(async move {
                        sqlx::query(AssertSqlSafe(sql))
                            .bind(writer_i)
                            .bind(seq_i)
                            .execute(&mut **tx)
                            .await?;
                        Ok(event)
                    })
                })
                .await?;
            Ok((vec![], vec![id]))
        }
        // begin + publish on both transports + commit.
        2 => {
            let mut tx = producer.begin(pool).await?;
            sqlx::query(AssertSqlSafe(sql))
                .bind(writer_i)
                .bind(seq_i)
                .execute(&mut **tx)
                .await?;
            let r = tx.publish(&RabbitOrder { writer, seq }).await?;
            let k = tx.publish(&kafka(seq)).await?;
            tx.commit().await?;
            Ok((vec![r], vec![k]))
        }
        // begin + publish_batch of three on each + commit.
        _ => {
            let mut tx = producer.begin(pool).await?;
            sqlx::query(AssertSqlSafe(sql))
                .bind(writer_i)
                .bind(seq_i)
                .execute(&mut **tx)
                .await?;
            let rabbit: Vec<_> = (0..3)
                .map(|i| RabbitOrder {
                    writer,
                    seq: seq * 10 + i,
                })
                .collect();
            let kafkas: Vec<_> = (0..3).map(|i| kafka(seq * 10 + i)).collect();
            let r = tx.publish_batch(&rabbit).await?;
            let k = tx.publish_batch(&kafkas).await?;
            tx.commit().await?;
            Ok((r, k))
        }
    }
}

/// Everything the progress lines and the final report read.
struct Probe {
    outbox: Outbox,
    committed: Arc<Committed>,
    rabbit_seen: Seen,
    kafka_seen: Seen,
    start: Instant,
    rss: Mutex<Vec<(Duration, u64)>>,
}

impl Probe {
    fn delivered(seen: &Seen, committed: &Mutex<HashSet<EventId>>) -> usize {
        let committed = committed.lock().unwrap();
        let seen = seen.lock().unwrap();
        committed.iter().filter(|id| seen.contains_key(id)).count()
    }

    async fn counts(&self) -> Option<StatusCounts> {
        match self.outbox.status_counts().await {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("status counts: {e}");
                None
            }
        }
    }

    /// One progress line; returns true when everything committed so far
    /// is Sent and delivered on both transports.
    async fn line(&self, phase: &str) -> bool {
        let rss = rss_kib();
        let at = self.start.elapsed();
        self.rss.lock().unwrap().push((at, rss));
        let rc = self.committed.rabbit.lock().unwrap().len();
        let kc = self.committed.kafka.lock().unwrap().len();
        let rd = Self::delivered(&self.rabbit_seen, &self.committed.rabbit);
        let kd = Self::delivered(&self.kafka_seen, &self.committed.kafka);
        let counts = self.counts().await;
        let (pending, failed) = counts.map_or((u64::MAX, u64::MAX), |c| (c.pending, c.failed));
        println!(
            "[{phase} {:>5}s] committed rabbit={rc} kafka={kc} | delivered rabbit={rd} kafka={kd} | rows pending={pending} failed={failed} | tx errors={} | RSS {:.1} MiB",
            at.as_secs(),
            self.committed.errors.load(Ordering::Relaxed),
            mib(rss),
        );
        rc == rd && kc == kd && pending == 0 && failed == 0
    }
}

/// Per transport: (committed rows in the table, delivered, duplicate
/// deliveries, lost, deliveries of ids not in the table).
struct Tally {
    committed: usize,
    delivered: usize,
    duplicates: u64,
    lost: Vec<EventId>,
    foreign: usize,
}

fn tally(rows: &HashSet<EventId>, seen: &Seen) -> Tally {
    let seen = seen.lock().unwrap();
    let mut t = Tally {
        committed: rows.len(),
        delivered: 0,
        duplicates: 0,
        lost: Vec::new(),
        foreign: seen.keys().filter(|id| !rows.contains(id)).count(),
    };
    for id in rows {
        match seen.get(id) {
            Some(&n) => {
                t.delivered += 1;
                t.duplicates += u64::from(n - 1);
            }
            None => t.lost.push(*id),
        }
    }
    t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let s = Settings::read()?;
    let ok = run(s).await?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(s: Settings) -> anyhow::Result<bool> {
    let run_id = format!("{:x}", std::process::id());
    let table = format!("soak_{run_id}_{}", chrono_ish_now());
    let orders = format!("{table}_orders");
    println!(
        "soak: {} min, {} writers x {} tx/s, table {table}, RabbitMQ {}, Kafka {}",
        s.minutes,
        s.writers,
        s.tx_per_sec,
        RabbitMqOptions::new(&s.rabbit_url).redacted_url(),
        s.kafka_servers
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(s.writers + 8)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&s.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {orders} (id BIGSERIAL PRIMARY KEY, writer INT NOT NULL, seq BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await?;

    let rabbit = || {
        RabbitMqOptions::new(&s.rabbit_url)
            .reconnect_backoff(Duration::from_millis(200), Duration::from_secs(2))
    };
    let rabbit_seen = Seen::default();
    let kafka_seen = Seen::default();
    let consumer = App::builder()
        .rabbitmq(rabbit().connection_name("heytom-soak-consumer"))
        .kafka(KafkaOptions::new(&s.kafka_servers).group_id(format!("heytom-soak-{table}")))
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<RabbitOrder, Count>(
            "soak-rabbit",
            Count(rabbit_seen.clone()),
        ))
        .handler_entry(HandlerEntry::from_type::<KafkaOrder, Count>(
            "soak-kafka",
            Count(kafka_seen.clone()),
        ))
        .start()
        .await
        .context("starting the consumer app")?;

    let outbox = Outbox::postgres(pool.clone()).table_name(&table);
    let producer_app = App::builder()
        .rabbitmq(rabbit().connection_name("heytom-soak-producer"))
        .kafka(KafkaOptions::new(&s.kafka_servers))
        .discover(false)
        .outbox(outbox.clone())
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: s.scan,
            ..Default::default()
        })
        .start()
        .await
        .context("starting the producer app")?;

    let committed = Arc::new(Committed::default());
    let probe = Probe {
        outbox: outbox.clone(),
        committed: committed.clone(),
        rabbit_seen: rabbit_seen.clone(),
        kafka_seen: kafka_seen.clone(),
        start: Instant::now(),
        rss: Mutex::new(Vec::new()),
    };
    probe.line("start").await;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..s.writers)
        .map(|w| {
            tokio::spawn(writer(
                w,
                pool.clone(),
                producer_app.producer(),
                orders.clone(),
                s.tx_per_sec,
                stop.clone(),
                committed.clone(),
            ))
        })
        .collect();

    let run_for = Duration::from_secs_f64(s.minutes * 60.0);
    let mut next = Instant::now() + s.report;
    while probe.start.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next {
            probe.line("run").await;
            next += s.report;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    println!(
        "writers stopped; draining (at most {} s)",
        s.drain.as_secs()
    );

    let drain_start = Instant::now();
    let mut drained = false;
    while drain_start.elapsed() < s.drain {
        if probe.line("drain").await {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let drain_took = drain_start.elapsed();
    // Late duplicates (a row sent again after a lost Sent mark, a redelivery
    // after a broker restart) arrive within a few seconds of the drain.
    tokio::time::sleep(Duration::from_secs(15)).await;
    probe.line("end").await;

    // The table is the truth about what was committed.
    let mut rows_rabbit = HashSet::new();
    let mut rows_kafka = HashSet::new();
    let mut unsent = 0usize;
    for status in [
        MessageStatus::Sent,
        MessageStatus::Pending,
        MessageStatus::Failed,
    ] {
        let rows = outbox.messages(status, u32::MAX).await?;
        for r in rows {
            if status != MessageStatus::Sent {
                unsent += 1;
            }
            match r.message_type.as_str() {
                "soak.RabbitOrder" => rows_rabbit.insert(r.id),
                "soak.KafkaOrder" => rows_kafka.insert(r.id),
                other => anyhow::bail!("unexpected row type {other}"),
            };
        }
    }
    let acked_without_row = {
        let r = committed.rabbit.lock().unwrap();
        let k = committed.kafka.lock().unwrap();
        r.difference(&rows_rabbit).count() + k.difference(&rows_kafka).count()
    };
    let business_rows: i64 =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {orders}")))
            .fetch_one(&pool)
            .await?;

    let shutdown = |app: RunningApp, name: &'static str| async move {
        match tokio::time::timeout(Duration::from_secs(60), app.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{name} shutdown: {e}"),
            Err(_) => eprintln!("{name} shutdown took longer than 60 s"),
        }
    };
    shutdown(producer_app, "producer app").await;
    shutdown(consumer, "consumer app").await;

    let r = tally(&rows_rabbit, &rabbit_seen);
    let k = tally(&rows_kafka, &kafka_seen);
    let rss = probe.rss.lock().unwrap().clone();
    let rss_start = rss.first().map_or(0, |x| x.1);
    let (peak_at, rss_peak) = rss
        .iter()
        .max_by_key(|x| x.1)
        .map_or((Duration::ZERO, 0), |x| (x.0, x.1));
    let rss_end = rss.last().map_or(0, |x| x.1);

    println!();
    println!(
        "soak results ({} min of writes, {} writers)",
        s.minutes, s.writers
    );
    println!(
        "  transactions {} ({} failed), business rows {business_rows}",
        committed.transactions.load(Ordering::Relaxed),
        committed.errors.load(Ordering::Relaxed)
    );
    println!("  | transport | committed | delivered | duplicates | lost | unknown ids |");
    println!("  |-----------|----------:|----------:|-----------:|-----:|------------:|");
    for (name, t) in [("RabbitMQ", &r), ("Kafka", &k)] {
        println!(
            "  | {name:<9} | {:>9} | {:>9} | {:>10} | {:>4} | {:>11} |",
            t.committed,
            t.delivered,
            t.duplicates,
            t.lost.len(),
            t.foreign
        );
    }
    println!(
        "  rows not Sent at the end: {unsent}; ids acknowledged by commit() but not in the table: {acked_without_row}"
    );
    println!(
        "  drain: {} in {:.1} s",
        if drained { "complete" } else { "INCOMPLETE" },
        drain_took.as_secs_f64()
    );
    println!(
        "  RSS: start {:.1} MiB, peak {:.1} MiB (at {} s), end {:.1} MiB",
        mib(rss_start),
        mib(rss_peak),
        peak_at.as_secs(),
        mib(rss_end)
    );
    for (name, t) in [("RabbitMQ", &r), ("Kafka", &k)] {
        for id in t.lost.iter().take(10) {
            match outbox.message(*id).await {
                Ok(Some(m)) => println!(
                    "  lost {name} {id}: status {:?} retries {} error {:?}",
                    m.status, m.retry_count, m.error_message
                ),
                _ => println!("  lost {name} {id}"),
            }
        }
    }

    let lost = r.lost.len() + k.lost.len();
    let ok = lost == 0 && unsent == 0 && acked_without_row == 0;
    println!(
        "SOAK {}: committed rabbitmq={} kafka={}, delivered rabbitmq={} kafka={}, duplicates rabbitmq={} kafka={}, lost rabbitmq={} kafka={}, unsent={unsent}, RSS start/peak/end {:.0}/{:.0}/{:.0} MiB",
        if ok { "PASS" } else { "FAIL" },
        r.committed,
        k.committed,
        r.delivered,
        k.delivered,
        r.duplicates,
        k.duplicates,
        r.lost.len(),
        k.lost.len(),
        mib(rss_start),
        mib(rss_peak),
        mib(rss_end),
    );
    if ok {
        // Keep the tables when something went wrong, for inspection.
        for t in [&table, &orders] {
            let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
                .execute(&pool)
                .await;
        }
    } else {
        println!("  tables {table} and {orders} kept for inspection");
    }
    pool.close().await;
    Ok(ok)
}

/// Seconds since the epoch, to tell runs apart in table and group names.
fn chrono_ish_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
