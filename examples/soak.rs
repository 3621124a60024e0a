//! Soak: the local message table (outbox) on PostgreSQL over RabbitMQ and
//! Kafka for N minutes, while the brokers go away and come back.
//!
//! Run it through `scripts/soak.sh --minutes 10`, which starts a private
//! RabbitMQ node and a private Kafka-protocol broker, restarts / stalls them
//! at random intervals while this runs, and cleans up. Alone (no faults):
//! `cargo run --release --example soak -- --minutes 2`.
//!
//! A few writers commit business rows with their events
//! (`send_with_transaction`, and `begin` + `publish` + `commit`), a consumer
//! app counts the deliveries per event id on each transport. After the
//! writing period it drains (until every row is Sent and delivered, bounded),
//! waits 15 s for late duplicates and prints committed / delivered /
//! duplicates / lost per transport; a line every 30 s shows the progress and
//! the process RSS. Exits non-zero if an event was lost or a row left unsent.
//!
//! Environment: `SOAK_MINUTES` (or `--minutes`, default 10), `SOAK_WRITERS`
//! (4), `SOAK_TX_PER_SEC` (per writer, 10), `SOAK_DRAIN_SECS` (300),
//! `SOAK_REPORT_SECS` (30), `SOAK_SCAN_MS` (retry scan interval, 2000),
//! `HEYTOM_DATABASE_URL` (`postgres://postgres@127.0.0.1:5432/test`),
//! `SOAK_RABBITMQ_URL` / `HEYTOM_RABBITMQ_URL` (`amqp://guest:guest@127.0.0.1:5672/%2f`),
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
    RunningApp,
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

/// `name` from the environment (or `default`), checked to lie in `lo..=hi`.
fn env_in<T>(name: &str, default: T, lo: T, hi: T) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let v = match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().ok(),
        _ => Some(default),
    };
    v.filter(|v| *v >= lo && *v <= hi)
        .ok_or_else(|| anyhow::anyhow!("{name} must be a number in {lo}..={hi}"))
}

fn env_str(names: &[&str], default: &str) -> String {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

impl Settings {
    fn read() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let minutes = match args.as_slice() {
            [] => env_in("SOAK_MINUTES", 10.0, 0.01, 1440.0)?,
            [flag, v] if flag == "--minutes" => v
                .parse()
                .ok()
                .filter(|m| (0.01..=1440.0).contains(m))
                .context("--minutes must be a number in 0.01..=1440")?,
            _ => anyhow::bail!("usage: soak [--minutes N]"),
        };
        let secs = |name, default| env_in(name, default, 1, 86_400).map(Duration::from_secs);
        Ok(Settings {
            minutes,
            writers: env_in("SOAK_WRITERS", 4, 1, 256)?,
            tx_per_sec: env_in("SOAK_TX_PER_SEC", 10.0, 0.01, 10_000.0)?,
            drain: secs("SOAK_DRAIN_SECS", 300)?,
            report: secs("SOAK_REPORT_SECS", 30)?,
            scan: Duration::from_millis(env_in("SOAK_SCAN_MS", 2000, 10, 600_000)?),
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

/// The business row of a transaction.
async fn order_row(
    conn: &mut sqlx::PgConnection,
    orders: &str,
    writer: u32,
    seq: u64,
) -> Result<(), BoxError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {orders} (writer, seq) VALUES ($1, $2)"
    )))
    .bind(i32::try_from(writer)?)
    .bind(i64::try_from(seq)?)
    .execute(conn)
    .await?;
    Ok(())
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
    let rabbit = |n: u64| RabbitOrder { writer, seq: n };
    let orders = orders.to_owned();
    Ok(match seq % 4 {
        // The closure shape, one event on either transport.
        0 => {
            let event = rabbit(seq);
            let id = producer
                .send_with_transaction(pool, move |tx| {
                    Box::pin(async move {
                        order_row(tx, &orders, writer, seq).await?;
                        Ok(event)
                    })
                })
                .await?;
            (vec![id], vec![])
        }
        1 => {
            let event = kafka(seq);
            let id = producer
                .send_with_transaction(pool, move |tx| {
                    Box::pin(async move {
                        order_row(tx, &orders, writer, seq).await?;
                        Ok(event)
                    })
                })
                .await?;
            (vec![], vec![id])
        }
        // begin + publish (one event on each transport, or a batch of three
        // on each) + commit.
        n => {
            let mut tx = producer.begin(pool).await?;
            order_row(&mut tx, &orders, writer, seq)
                .await
                .map_err(|e| anyhow::anyhow!("business row: {e}"))?;
            let ids = if n == 2 {
                (
                    vec![tx.publish(&rabbit(seq)).await?],
                    vec![tx.publish(&kafka(seq)).await?],
                )
            } else {
                let r: Vec<_> = (0..3).map(|i| rabbit(seq * 10 + i)).collect();
                let k: Vec<_> = (0..3).map(|i| kafka(seq * 10 + i)).collect();
                (tx.publish_batch(&r).await?, tx.publish_batch(&k).await?)
            };
            tx.commit().await?;
            ids
        }
    })
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
        let counts = self.outbox.status_counts().await;
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
    let got: Vec<u32> = rows.iter().filter_map(|id| seen.get(id).copied()).collect();
    Tally {
        committed: rows.len(),
        delivered: got.len(),
        duplicates: got.iter().map(|&n| u64::from(n - 1)).sum(),
        lost: rows
            .iter()
            .filter(|id| !seen.contains_key(id))
            .copied()
            .collect(),
        foreign: seen.keys().filter(|id| !rows.contains(id)).count(),
    }
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
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let table = format!("soak_{run_id}_{}", since_epoch.as_secs());
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
    let (rabbit_seen, kafka_seen) = (Seen::default(), Seen::default());
    // One consumer app per transport, so that each one's shutdown is seen.
    let rabbit_consumer = App::builder()
        .rabbitmq(rabbit().connection_name("heytom-soak-consumer"))
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<RabbitOrder, Count>(
            "soak-rabbit",
            Count(rabbit_seen.clone()),
        ))
        .start()
        .await
        .context("starting the RabbitMQ consumer app")?;
    let kafka_consumer = App::builder()
        .kafka(KafkaOptions::new(&s.kafka_servers).group_id(format!("heytom-soak-{table}")))
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<KafkaOrder, Count>(
            "soak-kafka",
            Count(kafka_seen.clone()),
        ))
        .start()
        .await
        .context("starting the Kafka consumer app")?;

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
    let most = s.drain.as_secs();
    println!("writers stopped; draining (at most {most} s)");

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

    let shutdown = |app: RunningApp, name: &'static str| async move {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), app.shutdown()).await;
        let took = t.elapsed().as_secs_f64();
        match r {
            Ok(Ok(())) => println!("  {name} shut down in {took:.1} s"),
            Ok(Err(e)) => println!("  {name} shutdown: error after {took:.1} s: {e}"),
            Err(_) => println!("  {name} shutdown took longer than 60 s"),
        }
    };
    shutdown(producer_app, "producer app").await;
    shutdown(rabbit_consumer, "RabbitMQ consumer app").await;
    shutdown(kafka_consumer, "Kafka consumer app").await;

    let r = tally(&rows_rabbit, &rabbit_seen);
    let k = tally(&rows_kafka, &kafka_seen);
    let rss = probe.rss.lock().unwrap().clone();
    let rss_start = rss.first().map_or(0, |x| x.1);
    let (peak_at, rss_peak) = rss
        .iter()
        .max_by_key(|x| x.1)
        .map_or((Duration::ZERO, 0), |x| (x.0, x.1));
    let rss_end = rss.last().map_or(0, |x| x.1);

    println!(
        "\nsoak results ({} min of writes, {} writers)",
        s.minutes, s.writers
    );
    println!(
        "  transactions {} ({} failed)",
        committed.transactions.load(Ordering::Relaxed),
        committed.errors.load(Ordering::Relaxed)
    );
    println!("  | transport | committed | delivered | duplicates | lost | unknown ids |");
    println!("  |-----------|----------:|----------:|-----------:|-----:|------------:|");
    for (name, t) in [("RabbitMQ", &r), ("Kafka", &k)] {
        let (c, d, dup, l, f) = (
            t.committed,
            t.delivered,
            t.duplicates,
            t.lost.len(),
            t.foreign,
        );
        println!("  | {name:<9} | {c:>9} | {d:>9} | {dup:>10} | {l:>4} | {f:>11} |");
    }
    let drain = if drained { "complete" } else { "INCOMPLETE" };
    let (a, b, c, at) = (
        mib(rss_start),
        mib(rss_peak),
        mib(rss_end),
        peak_at.as_secs(),
    );
    println!("  rows not Sent at the end: {unsent}; ids committed but not in the table: {acked_without_row}");
    println!("  drain: {drain} in {:.1} s", drain_took.as_secs_f64());
    println!("  RSS: start {a:.1} MiB, peak {b:.1} MiB (at {at} s), end {c:.1} MiB");
    for (name, t) in [("RabbitMQ", &r), ("Kafka", &k)] {
        for id in t.lost.iter().take(10) {
            let row = outbox.message(*id).await.ok().flatten();
            let row = row.map(|m| (m.status, m.retry_count, m.error_message));
            println!("  lost {name} {id}: (status, retries, error) {row:?}");
        }
    }

    let ok = r.lost.is_empty() && k.lost.is_empty() && unsent == 0 && acked_without_row == 0;
    let mut line = format!("SOAK {}:", if ok { "PASS" } else { "FAIL" });
    for (name, t) in [("rabbitmq", &r), ("kafka", &k)] {
        let (c, d, dup, l) = (t.committed, t.delivered, t.duplicates, t.lost.len());
        line += &format!(" {name} committed={c} delivered={d} duplicates={dup} lost={l};");
    }
    println!("{line} unsent={unsent} RSS start/peak/end {a:.0}/{b:.0}/{c:.0} MiB");
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
