//! Benchmark of the local message table on PostgreSQL, MariaDB/MySQL and
//! SQLite, through the in-memory transport and through RabbitMQ.
//!
//! ```text
//! cargo run -p heytom-mq --release --example bench_outbox
//! ```
//!
//! Per database:
//! (a) enqueue (in-memory transport, the relay running): three loops in
//!     alternating order each round, at 1 and 8 concurrent writers —
//!     `business` (business insert + commit, raw sqlx), `hand` (the same plus
//!     an INSERT of the outbox row with the same 13 columns, written by hand
//!     in sqlx, into a table of the same DDL; nothing sends it) and `outbox`
//!     (`send_with_transaction` with the same business insert). Ratios:
//!     outbox / hand (`outbox.enqueue.<db>.<n>w`) and outbox / business
//!     (`outbox.enqueue_vs_business.<db>.<n>w`), median of the rounds' ratios.
//!     Then, as an additional figure, the same three loops with the outbox's
//!     post-commit send off and no scanner (`dispatch_after_commit(false)`,
//!     retry scanner disabled, a table of its own): nothing sends on either
//!     side, so `outbox.enqueue_send_off.<db>.<n>w` is the framework's enqueue
//!     cost alone (on PostgreSQL it includes the `NOTIFY`s that wake other
//!     instances' scanners, sent after the commits and coalesced);
//! (b) latency from calling `commit()` to the transport's confirm (RabbitMQ:
//!     the broker's publisher confirm), 1 writer (1000 commits) and 8 writers
//!     (8 x 250), a commit every millisecond per writer, p50 / p99; over
//!     RabbitMQ next to the same commits written by hand, each followed by a
//!     raw lapin publish on one shared channel whose confirm a task of its
//!     own awaits (`<n>w_by_hand`; `outbox.latency_vs_hand.*` = by hand p50
//!     / outbox p50, one round: the outbox side also writes and marks its
//!     row, the hand side does not); each line also splits the time from
//!     `commit()` returning into the relay's part (until it hands the row
//!     to the transport) and the transport's (hand-off to confirm), and the
//!     by-hand line gives its time from `commit()` returning too;
//! (c) drain of a backlog of 100,000 Pending rows by the retry scanner
//!     (batch 1000) until every row is Sent in the table; over RabbitMQ,
//!     alternating with raw lapin publishing the same number of messages
//!     (same payload and properties, persistent, mandatory) in windows of
//!     1000 whose confirms are awaited before the next window — the relay's
//!     own pattern, without the database (`outbox.drain.<db>.rabbitmq`,
//!     outbox rows/s / raw msg/s); peak RSS growth during the drain.
//!
//! Every figure prints each round, CPU µs and allocations per transaction /
//! message (whole process, this benchmark's counting allocator), and ends
//! with `RESULT outbox.<figure> ratio=<median> rounds=<n>` lines, and
//! `FIGURE ... met=yes|no` lines for absolute targets.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL`, `HEYTOM_TEST_MYSQL_URL` (same defaults
//! as the tests); SQLite a file in the temp dir, removed at the end;
//! `HEYTOM_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! Each RabbitMQ run publishes to an exchange of its own with a durable queue
//! bound to it, both deleted afterwards. Tables are named `ob11_*`.
//!
//! Knobs: `HEYTOM_BENCH_DB` (`postgres`, `mysql`, `sqlite`; default all),
//! `HEYTOM_BENCH_TRANSPORT` (`memory`, `rabbitmq`; default both; enqueue
//! runs in the `memory` pass), `HEYTOM_BENCH_PHASES` (`enqueue`, `latency`,
//! `drain`; default all), `HEYTOM_BENCH_TX` (transactions per side and
//! writer count, split over the rounds; default 3000), `HEYTOM_BENCH_ROUNDS`
//! (default 5), `HEYTOM_BENCH_DRAIN_ROUNDS` (default 5),
//! `HEYTOM_BENCH_BACKLOG` (default 100000), `HEYTOM_BENCH_SEND_OFF` (`0`:
//! skip the send-off enqueue figure), `HEYTOM_BENCH_SEND_ON` (`0`: skip the
//! enqueue figure with the send on), `HEYTOM_BENCH_RETENTION_ZERO` (`1`: the
//! enqueue's outbox deletes confirmed rows instead of marking them Sent,
//! `outbox.enqueue_retention0.*`), `HEYTOM_BENCH_SIDES` (`business`,
//! `hand`, `outbox`; default all: one side alone, to profile it).

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{allocations, cpu_us, median};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use heytom_mq::prelude::*;
use heytom_mq::RabbitMqTransport;
use heytom_mq::{
    BoxError, Envelope, HandlerEntry, InMemoryTransport, LocalMessage, LocalMessageRepository,
    Outgoing, PendingResults, Subscription, SubscriptionHandle, Transport, TransportKind,
};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

/// One side of one round: rate, CPU µs and allocations per item.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rate: f64,
    cpu_us: f64,
    allocs: f64,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0}/s {:>6.1} µs CPU {:>6.1} allocs",
            self.rate, self.cpu_us, self.allocs
        )
    }
}

/// Measures a phase of `n` items.
struct Meter {
    start: Instant,
    cpu: u64,
    allocs: u64,
}

impl Meter {
    fn start() -> Self {
        Meter {
            start: Instant::now(),
            cpu: cpu_us(),
            allocs: allocations(),
        }
    }

    fn stop(self, n: usize) -> Sample {
        let secs = self.start.elapsed().as_secs_f64();
        let n = n.max(1) as f64;
        Sample {
            rate: n / secs,
            cpu_us: cpu_us().saturating_sub(self.cpu) as f64 / n,
            allocs: allocations().saturating_sub(self.allocs) as f64 / n,
        }
    }
}

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
    fn key(self) -> &'static str {
        match self {
            Via::InMemory => "memory",
            Via::RabbitMq => "rabbitmq",
        }
    }
}

/// A transport, recording when each message was confirmed.
struct TimingTransport {
    inner: Arc<dyn Transport>,
    /// With `record`: per message, when it was handed to the transport and
    /// when its confirm came back.
    confirmed: Mutex<HashMap<uuid::Uuid, (Instant, Instant)>>,
    count: AtomicUsize,
    /// Time spent in publish calls (sending and awaiting confirms), in µs.
    busy_us: AtomicU64,
    record: bool,
    /// Itself, for the results of a batch that come after the call.
    me: std::sync::OnceLock<std::sync::Weak<TimingTransport>>,
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
        self.done(
            start,
            std::slice::from_ref(message),
            std::slice::from_ref(&r),
        );
        r
    }
    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<heytom_mq::Result<()>> {
        let start = Instant::now();
        let r = self.inner.publish_batch(messages).await;
        self.busy(start);
        self.done(start, messages, &r);
        r
    }
    async fn publish_batch_queued(&self, messages: Vec<Outgoing>) -> PendingResults {
        let start = Instant::now();
        let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.envelope.id).collect();
        let pending = self.inner.publish_batch_queued(messages).await;
        let me = self.me.get().and_then(std::sync::Weak::upgrade);
        Box::pin(async move {
            let r = pending.await;
            if let Some(me) = me {
                me.busy(start);
                me.done_ids(start, &ids, &r);
            }
            r
        })
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
        let t = Arc::new(TimingTransport {
            inner,
            confirmed: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            busy_us: AtomicU64::new(0),
            record,
            me: std::sync::OnceLock::new(),
        });
        let _ = t.me.set(Arc::downgrade(&t));
        t
    }

    fn busy(&self, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.busy_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts (and with `record`, timestamps) the confirmed messages.
    fn done(&self, handed: Instant, messages: &[Outgoing], results: &[heytom_mq::Result<()>]) {
        let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.envelope.id).collect();
        self.done_ids(handed, &ids, results);
    }

    fn done_ids(&self, handed: Instant, ids: &[uuid::Uuid], results: &[heytom_mq::Result<()>]) {
        let now = Instant::now();
        let ok = ids.iter().zip(results).filter(|(_, r)| r.is_ok());
        if self.record {
            let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            for (id, _) in ok {
                c.insert(*id, (handed, now));
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
                let exchange = format!("ob11.outbox.{id}");
                let queue = format!("ob11.outbox.{id}");
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
                        .connection_name("ob11-bench-outbox"),
                )
                .await?,
            ),
        };
        Ok(TimingTransport::new(inner, record))
    }

    /// Empties the run's queue (the broker is shared: a drain leaves
    /// 100,000 messages in it).
    async fn purge(&self) -> Result<(), BoxError> {
        let Some(r) = &self.rabbit else {
            return Ok(());
        };
        let connection =
            lapin::Connection::connect(&r.url, ConnectionProperties::default()).await?;
        let ch = connection.create_channel().await?;
        ch.queue_purge(
            r.queue.as_str().into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await?;
        connection.close(200, "purged".into()).await?;
        Ok(())
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

/// One database's figures on one transport.
#[derive(Default)]
struct Results {
    db: &'static str,
    via: &'static str,
    enqueue: Vec<Enqueue>,
    latency: Vec<Latency>,
    drain: Vec<DrainRound>,
    backlog: usize,
    /// Raw lapin publish -> confirm of one message at a time: p50, p99 ms.
    raw_latency: Option<(f64, f64)>,
    /// The same commits written by hand (business insert, commit, then raw
    /// lapin publish -> confirm on one shared channel): writers, p50, p99 ms.
    hand_latency: Vec<(usize, f64, f64)>,
}

/// Enqueue rounds at one number of writers: business, hand, outbox.
struct Enqueue {
    writers: usize,
    /// Post-commit send off and no scanner: nothing sends.
    send_off: bool,
    rounds: Vec<[Sample; 3]>,
}

struct Latency {
    writers: usize,
    commits: usize,
    confirmed: usize,
    p50_ms: f64,
    p99_ms: f64,
    p50_after_ms: f64,
    p99_after_ms: f64,
}

struct DrainRound {
    outbox: Sample,
    raw: Option<Sample>,
    rss_mib: f64,
    publish_s: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Longest wait for the relay to catch up (untimed) before going on.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Messages per confirm window of the raw lapin drain (the scanner's batch).
const DRAIN_BATCH: usize = 1000;

/// `HEYTOM_BENCH_<name>` lowercased: selected when it is empty or
/// mentions one of `keys`.
fn selected(var: &str, keys: &[&str]) -> bool {
    let only = std::env::var(var).unwrap_or_default().to_ascii_lowercase();
    only.is_empty() || keys.iter().any(|k| only.contains(k))
}

/// `HEYTOM_BENCH_RETENTION_ZERO=1`: the enqueue's outbox (send on) runs
/// with `retention(Duration::ZERO)`, so a confirmed row is deleted instead
/// of marked Sent (`outbox.enqueue_retention0.*`).
fn retention_zero() -> bool {
    std::env::var("HEYTOM_BENCH_RETENTION_ZERO").is_ok_and(|v| v == "1")
}

fn phase(name: &str) -> bool {
    selected("HEYTOM_BENCH_PHASES", &[name])
}

/// The AMQP properties heytom-mq sends (id, type, content type, timestamp,
/// persistent, the envelope's headers), for the raw lapin side.
fn raw_properties(envelope: &Envelope) -> BasicProperties {
    use heytom_mq::headers::{CORRELATION_ID, EVENT_ID, EVENT_NAME};
    let id = envelope.id.to_string();
    let mut headers = FieldTable::default();
    for (k, v) in envelope.wire_headers() {
        // heytom-mq sends the id and name as message_id and type, and the
        // default correlation id as the correlation_id property only.
        if k == EVENT_ID || k == EVENT_NAME || (k == CORRELATION_ID && v == id) {
            continue;
        }
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    BasicProperties::default()
        .with_correlation_id(id.as_str().into())
        .with_message_id(id.into())
        .with_type(envelope.name.as_str().into())
        .with_content_type("application/json".into())
        .with_timestamp(envelope.occurred_at.timestamp() as u64)
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Raw lapin: `n` backlog messages, persistent and mandatory, in windows of
/// [`DRAIN_BATCH`] whose confirms are all awaited before the next window.
async fn raw_publish(r: &RabbitTopology, n: usize) -> Result<Sample, BoxError> {
    let connection = lapin::Connection::connect(&r.url, ConnectionProperties::default()).await?;
    let ch = connection.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let meter = Meter::start();
    let mut i = 0;
    while i < n {
        let end = (i + DRAIN_BATCH).min(n);
        let mut confirms = Vec::with_capacity(end - i);
        for k in i..end {
            let event = BenchOrderPlaced {
                id: k as i64,
                note: "backlog".into(),
            };
            let envelope = Envelope::new(&event)?;
            confirms.push(
                ch.basic_publish(
                    r.exchange.as_str().into(),
                    BenchOrderPlaced::NAME.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &envelope.payload,
                    raw_properties(&envelope),
                )
                .await?,
            );
        }
        for c in confirms {
            let c = c.await?;
            if c != Confirmation::Ack(None) {
                return Err(format!("raw publish not acked: {c:?}").into());
            }
        }
        i = end;
    }
    let sample = meter.stop(n);
    ch.close(200, "done".into()).await?;
    connection.close(200, "done".into()).await?;
    Ok(sample)
}

/// Raw lapin: one persistent, mandatory message with the envelope's
/// payload and properties, its confirm awaited (an error unless acked).
async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    envelope: &Envelope,
) -> Result<(), BoxError> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            BenchOrderPlaced::NAME.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &envelope.payload,
            raw_properties(envelope),
        )
        .await?
        .await?;
    if confirm != Confirmation::Ack(None) {
        return Err(format!("raw publish not acked: {confirm:?}").into());
    }
    Ok(())
}

/// The broker's own floor for the latency figures: raw lapin publishing one
/// persistent, mandatory message at a time and awaiting its confirm, a
/// millisecond apart, `n` times; (p50, p99) in ms.
async fn raw_confirm_latency(r: &RabbitTopology, n: usize) -> Result<(f64, f64), BoxError> {
    let connection = lapin::Connection::connect(&r.url, ConnectionProperties::default()).await?;
    let ch = connection.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut took = Vec::with_capacity(n);
    for k in 0..n {
        let event = BenchOrderPlaced {
            id: k as i64,
            note: "latency".into(),
        };
        let envelope = Envelope::new(&event)?;
        let start = Instant::now();
        publish_confirmed(&ch, &r.exchange, &envelope).await?;
        took.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    took.sort();
    ch.close(200, "done".into()).await?;
    connection.close(200, "done".into()).await?;
    Ok((percentile(&took, 0.5), percentile(&took, 0.99)))
}

/// The latency floor of the same commits written by hand: `writers` tasks,
/// `per` commits each a millisecond apart, each a business insert and a
/// commit, then a raw lapin publish (same payload and properties, persistent,
/// mandatory) on one channel shared by the writers, its confirm awaited in
/// a task of its own (the writer goes on, as with the outbox); (p50, p99)
/// in ms from calling `commit()` to the confirm, then (p50, p99) from its
/// return.
macro_rules! hand_commit_latency {
    ($pool:expr, $insert_biz:expr, $next_id:expr, $r:expr, $writers:expr, $per:expr) => {{
        let connection =
            lapin::Connection::connect(&$r.url, ConnectionProperties::default()).await?;
        let ch = Arc::new(connection.create_channel().await?);
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut tasks = Vec::new();
        for _ in 0..$writers {
            let (pool, insert_biz, next_id, ch, exchange) = (
                $pool.clone(),
                $insert_biz.clone(),
                $next_id.clone(),
                ch.clone(),
                $r.exchange.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut took: Vec<tokio::task::JoinHandle<Result<(Duration, Duration), BoxError>>> =
                    Vec::with_capacity($per);
                for _ in 0..$per {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let event = BenchOrderPlaced {
                        id,
                        note: "latency".into(),
                    };
                    let envelope = Envelope::new(&event)?;
                    let mut tx = pool.begin().await?;
                    sqlx::query(AssertSqlSafe(insert_biz.clone()))
                        .bind(id)
                        .bind("latency")
                        .execute(&mut *tx)
                        .await?;
                    let before = Instant::now();
                    tx.commit().await?;
                    let committed = Instant::now();
                    // Published without holding up the writer, as the
                    // outbox does: the same commit rate on both sides.
                    let ch = ch.clone();
                    let exchange = exchange.clone();
                    took.push(tokio::spawn(async move {
                        publish_confirmed(&ch, &exchange, &envelope).await?;
                        Ok((before.elapsed(), committed.elapsed()))
                    }));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, BoxError>(took)
            }));
        }
        let mut took = Vec::new();
        for t in tasks {
            for publish in t.await?? {
                took.push(publish.await??);
            }
        }
        let (mut took, mut after): (Vec<Duration>, Vec<Duration>) = took.into_iter().unzip();
        took.sort();
        after.sort();
        connection.close(200, "done".into()).await?;
        (
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            percentile(&after, 0.5),
            percentile(&after, 0.99),
        )
    }};
}

/// One function per database (the pool and outbox types differ), taking the
/// transport as a parameter.
macro_rules! bench_db {
    ($fn_name:ident, $key:literal, $db:ty, $pool:expr, $outbox:path, $ph:expr, $idcast:literal, $q:literal) => {
        async fn $fn_name(via: Via) -> Result<Results, BoxError> {
            let pool: sqlx::Pool<$db> = $pool.await?;
            let id = suffix();
            let broker = Broker::setup(via, &id).await?;
            let table = format!("ob11_out_{id}");
            let hand = format!("ob11_hand_{id}");
            let biz = format!("ob11_biz_{id}");
            let pure = format!("ob11_pure_{id}");
            let drop_tables = Mutex::new(vec![table.clone(), hand.clone(), biz.clone()]);
            let backlog = env_usize("HEYTOM_BENCH_BACKLOG", 100_000);
            let mut res = Results {
                db: $key,
                via: via.key(),
                backlog,
                ..Default::default()
            };
            let label = format!("{} / {}", $key, via.key());
            let result: Result<(), BoxError> = async {
                let ph: fn(usize) -> String = $ph;
                let q = $q;
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TABLE {biz} (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL)"
                )))
                .execute(&pool)
                .await?;
                let insert_biz = format!("INSERT INTO {biz} (id, note) VALUES ({}, {})", ph(1), ph(2));
                let next_id = Arc::new(AtomicI64::new(0));

                // (a) enqueue: business / hand-written / send_with_transaction
                if via == Via::InMemory && phase("enqueue") {
                    $outbox(pool.clone()).table_name(&hand).ensure_table().await?;
                    let cols = [
                        "Id", "MQType", "Topic", "RoutingKey", "MessageType", "MessageBody", "Status",
                        "CreatedAt", "RetryCount", "Headers", "PartitionKey", "NextAttemptAt", "LockedBy",
                    ];
                    let col_list: Vec<String> = cols.iter().map(|c| format!("{q}{c}{q}")).collect();
                    let values: Vec<String> = (1..=cols.len())
                        .map(|i| if i == 1 { format!("{}{}", ph(1), $idcast) } else { ph(i) })
                        .collect();
                    let insert_hand = format!(
                        "INSERT INTO {q}{hand}{q} ({}) VALUES ({})",
                        col_list.join(", "),
                        values.join(", ")
                    );
                    // The headers column as heytom-mq writes it for this event.
                    let sample = Envelope::new(&BenchOrderPlaced { id: 0, note: String::new() })?;
                    let headers = Arc::new(serde_json::to_string(&sample.headers)?);
                    let rounds = env_usize("HEYTOM_BENCH_ROUNDS", 5).max(1);
                    let tx_count = env_usize("HEYTOM_BENCH_TX", 3000);
                    // First as users run it (the relay sends and marks each row after
                    // commit); then, as an additional figure, with the post-commit send
                    // off and no scanner (nothing sends: the framework's enqueue alone),
                    // on a table of its own.
                    let send_off_too = std::env::var("HEYTOM_BENCH_SEND_OFF").map_or(true, |v| v != "0");
                    // HEYTOM_BENCH_SEND_ON=0: the send-off figure alone (to profile it).
                    let send_on_too = std::env::var("HEYTOM_BENCH_SEND_ON").map_or(true, |v| v != "0");
                    for send_off in [false, true] {
                    if (send_off && !send_off_too) || (!send_off && !send_on_too) {
                        continue;
                    }
                    let transport = broker.transport(false).await?;
                    let builder = App::builder().discover(false).transport(transport.clone());
                    let builder = if send_off {
                        drop_tables.lock().unwrap_or_else(|p| p.into_inner()).push(pure.clone());
                        builder
                            .outbox($outbox(pool.clone()).table_name(&pure).dispatch_after_commit(false))
                            .local_message_retry(heytom_mq::LocalMessageRetryOptions {
                                enabled: false,
                                ..Default::default()
                            })
                    } else {
                        let outbox = $outbox(pool.clone()).table_name(&table);
                        // Confirmed rows deleted, not marked Sent (HEYTOM_BENCH_RETENTION_ZERO=1).
                        let outbox = if retention_zero() { outbox.retention(Duration::ZERO) } else { outbox };
                        builder.outbox(outbox)
                    };
                    let app = builder.start().await?;
                    let producer = app.producer();
                    let mut sent_total = 0usize;
                    for writers in [1usize, 8] {
                        let per_writer = (tx_count / writers / rounds).max(1);
                        let mut en = Enqueue { writers, send_off, rounds: Vec::new() };
                        // Round 0 warms every path up and is not reported.
                        for round in 0..=rounds {
                            let per = if round == 0 { (per_writer / 4).max(1) } else { per_writer };
                            let mut samples = [Sample::default(); 3];
                            for k in 0..3 {
                                // The order of the sides rotates from round to round.
                                let side = (k + round) % 3;
                                if !selected("HEYTOM_BENCH_SIDES", &[["business", "hand", "outbox"][side]]) {
                                    continue;
                                }
                                let meter = Meter::start();
                                let mut tasks = Vec::new();
                                for _ in 0..writers {
                                    let (pool, producer, insert_biz, insert_hand, next_id, headers) = (
                                        pool.clone(),
                                        producer.clone(),
                                        insert_biz.clone(),
                                        insert_hand.clone(),
                                        next_id.clone(),
                                        headers.clone(),
                                    );
                                    tasks.push(tokio::spawn(async move {
                                        for _ in 0..per {
                                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                                            let note = format!("order {id}");
                                            match side {
                                                0 => {
                                                    let mut tx = pool.begin().await?;
                                                    sqlx::query(AssertSqlSafe(insert_biz.clone()))
                                                        .bind(id)
                                                        .bind(&note)
                                                        .execute(&mut *tx)
                                                        .await?;
                                                    tx.commit().await?;
                                                }
                                                1 => {
                                                    let mut tx = pool.begin().await?;
                                                    sqlx::query(AssertSqlSafe(insert_biz.clone()))
                                                        .bind(id)
                                                        .bind(&note)
                                                        .execute(&mut *tx)
                                                        .await?;
                                                    let event = BenchOrderPlaced { id, note };
                                                    let body = serde_json::to_string(&event)?;
                                                    sqlx::query(AssertSqlSafe(insert_hand.clone()))
                                                        .bind(uuid::Uuid::now_v7().to_string())
                                                        .bind("InMemory")
                                                        .bind(BenchOrderPlaced::NAME)
                                                        .bind(None::<String>)
                                                        .bind(BenchOrderPlaced::NAME)
                                                        .bind(body)
                                                        .bind(0i32)
                                                        .bind(chrono::Utc::now())
                                                        .bind(0i32)
                                                        .bind(headers.as_str())
                                                        .bind(None::<String>)
                                                        .bind(0i64)
                                                        .bind(None::<String>)
                                                        .execute(&mut *tx)
                                                        .await?;
                                                    tx.commit().await?;
                                                }
                                                _ => {
                                                    let insert_biz = insert_biz.clone();
                                                    producer
                                                        .send_with_transaction(&pool, move |tx| {
                                                            Box::pin(async move {
                                                                sqlx::query(AssertSqlSafe(insert_biz))
                                                                    .bind(id)
                                                                    .bind(&note)
                                                                    .execute(&mut **tx)
                                                                    .await?;
                                                                Ok(BenchOrderPlaced { id, note })
                                                            })
                                                        })
                                                        .await?;
                                                }
                                            }
                                        }
                                        Ok::<(), BoxError>(())
                                    }));
                                }
                                for t in tasks {
                                    t.await??;
                                }
                                if side == 2 && !send_off {
                                    // Let the relay send and mark this run's rows
                                    // before the next run starts, so that no run pays
                                    // for another's.
                                    sent_total += per * writers;
                                    if !transport.wait_for(sent_total, SETTLE_TIMEOUT).await {
                                        eprintln!("{label}: relay did not catch up");
                                    }
                                    samples[side] = meter.stop(per * writers);
                                } else {
                                    samples[side] = meter.stop(per * writers);
                                }
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                            if round > 0 {
                                println!(
                                    "enqueue{} {label} {writers}w round {round}: business {} | hand {} | outbox {} | outbox/hand {:.3} outbox/business {:.3}",
                                    if send_off { " (send off)" } else { "" },
                                    samples[0], samples[1], samples[2],
                                    samples[2].rate / samples[1].rate,
                                    samples[2].rate / samples[0].rate
                                );
                                en.rounds.push(samples);
                            }
                        }
                        res.enqueue.push(en);
                    }
                    app.shutdown().await?;
                    }
                }

                // (b) latency commit -> transport confirm, 1 and 8 writers
                if phase("latency") {
                    let transport = broker.transport(true).await?;
                    let app = App::builder()
                        .discover(false)
                        .transport(transport.clone())
                        .outbox($outbox(pool.clone()).table_name(&table))
                        .start()
                        .await?;
                    let producer = app.producer();
                    let mut expected = 0usize;
                    for (writers, per) in [(1usize, 1000usize), (8, 250)] {
                        let mut tasks = Vec::new();
                        for _ in 0..writers {
                            let (pool, producer, insert_biz, next_id) =
                                (pool.clone(), producer.clone(), insert_biz.clone(), next_id.clone());
                            tasks.push(tokio::spawn(async move {
                                let mut committed = Vec::with_capacity(per);
                                for _ in 0..per {
                                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                                    let mut tx = producer.begin(&pool).await?;
                                    sqlx::query(AssertSqlSafe(insert_biz.clone()))
                                        .bind(id)
                                        .bind("latency")
                                        .execute(&mut **tx)
                                        .await?;
                                    let event_id = tx
                                        .publish(&BenchOrderPlaced { id, note: "latency".into() })
                                        .await?;
                                    let before = Instant::now();
                                    tx.commit().await?;
                                    committed.push((event_id, before, Instant::now()));
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                Ok::<_, BoxError>(committed)
                            }));
                        }
                        let mut committed = Vec::new();
                        for t in tasks {
                            committed.extend(t.await??);
                        }
                        expected += writers * per;
                        transport.wait_for(expected, SETTLE_TIMEOUT).await;
                        // From calling commit(), from its return; and the part of
                        // the latter before the relay hands the row to the
                        // transport, and from there to the confirm.
                        let (mut from_call, mut from_return, mut to_hand_off, mut in_transport) =
                            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                        {
                            let c = transport.confirmed.lock().unwrap_or_else(|p| p.into_inner());
                            for (id, before, after) in &committed {
                                if let Some((handed, d)) = c.get(id) {
                                    from_call.push(d.saturating_duration_since(*before));
                                    from_return.push(d.saturating_duration_since(*after));
                                    to_hand_off.push(handed.saturating_duration_since(*after));
                                    in_transport.push(d.saturating_duration_since(*handed));
                                }
                            }
                        }
                        for v in [&mut from_call, &mut from_return, &mut to_hand_off, &mut in_transport] {
                            v.sort();
                        }
                        let l = Latency {
                            writers,
                            commits: writers * per,
                            confirmed: from_call.len(),
                            p50_ms: percentile(&from_call, 0.5),
                            p99_ms: percentile(&from_call, 0.99),
                            p50_after_ms: percentile(&from_return, 0.5),
                            p99_after_ms: percentile(&from_return, 0.99),
                        };
                        println!(
                            "latency {label} {writers}w: {}/{} confirmed, commit() -> confirm p50 {:.2} ms p99 {:.2} ms (from commit() returning: p50 {:.2} p99 {:.2}; of which until the relay hands the row to the transport p50 {:.3} p99 {:.2}, transport hand-off -> confirm p50 {:.2} p99 {:.2})",
                            l.confirmed, l.commits, l.p50_ms, l.p99_ms, l.p50_after_ms, l.p99_after_ms,
                            percentile(&to_hand_off, 0.5), percentile(&to_hand_off, 0.99),
                            percentile(&in_transport, 0.5), percentile(&in_transport, 0.99)
                        );
                        res.latency.push(l);
                        if let Some(r) = &broker.rabbit {
                            let (p50, p99, p50_after, p99_after) =
                                hand_commit_latency!(pool, insert_biz, next_id, r, writers, per);
                            println!(
                                "latency {label} {writers}w by hand (business insert, commit, then raw lapin publish -> confirm on one shared channel, not holding up the writer): commit() -> confirm p50 {p50:.2} ms p99 {p99:.2} ms (from commit() returning: p50 {p50_after:.2} p99 {p99_after:.2})"
                            );
                            res.hand_latency.push((writers, p50, p99));
                        }
                    }
                    app.shutdown().await?;
                    if let Some(r) = &broker.rabbit {
                        let (p50, p99) = raw_confirm_latency(r, 1000).await?;
                        println!(
                            "latency {label} raw lapin (one persistent message at a time, publish -> confirm): p50 {p50:.2} ms p99 {p99:.2} ms"
                        );
                        res.raw_latency = Some((p50, p99));
                        broker.purge().await?;
                    }
                }

                // (c) drain a backlog; over RabbitMQ alternating with raw lapin
                if phase("drain") {
                    let drain_rounds = env_usize("HEYTOM_BENCH_DRAIN_ROUNDS", 5).max(1);
                    for round in 1..=drain_rounds {
                        let sides: [bool; 2] = if round % 2 == 1 { [false, true] } else { [true, false] };
                        let mut raw = None;
                        let mut outbox_side = None;
                        for is_outbox in sides {
                            if !is_outbox {
                                if let Some(r) = &broker.rabbit {
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                    raw = Some(raw_publish(r, backlog).await?);
                                    broker.purge().await?;
                                }
                                continue;
                            }
                            let dt = format!("ob11_drain_{id}_{round}");
                            drop_tables.lock().unwrap_or_else(|p| p.into_inner()).push(dt.clone());
                            let outbox = $outbox(pool.clone()).table_name(&dt);
                            outbox.ensure_table().await?;
                            for chunk_start in (0..backlog).step_by(10_000) {
                                let rows: Vec<LocalMessage> = (chunk_start..(chunk_start + 10_000).min(backlog))
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
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            let rss = RssSampler::start();
                            let meter = Meter::start();
                            let app = App::builder()
                                .discover(false)
                                .transport(transport.clone())
                                .outbox(outbox.clone().create_table(false))
                                .local_message_retry(LocalMessageRetryOptions {
                                    batch_size: DRAIN_BATCH as u32,
                                    scan_interval: Duration::from_millis(200),
                                    ..Default::default()
                                })
                                .start()
                                .await?;
                            // Untimed by the database until every row is confirmed,
                            // then until every row is Sent in the table.
                            let deadline = Instant::now() + Duration::from_secs(600);
                            while transport.count.load(Ordering::Relaxed) < backlog && Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            loop {
                                let counts = outbox.status_counts().await?;
                                if counts.sent as usize >= backlog {
                                    break;
                                }
                                if Instant::now() > deadline {
                                    eprintln!("{label}: drain timed out at {counts:?}");
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            let sample = meter.stop(backlog);
                            let rss_mib = rss.stop().await;
                            let publish_s = transport.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
                            app.shutdown().await?;
                            let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {q}{dt}{q}")))
                                .execute(&pool)
                                .await;
                            broker.purge().await?;
                            outbox_side = Some((sample, rss_mib, publish_s));
                        }
                        let (outbox, rss_mib, publish_s) = outbox_side.unwrap_or_default();
                        let d = DrainRound { outbox, raw, rss_mib, publish_s };
                        match d.raw {
                            Some(raw) => println!(
                                "drain {label} round {round}: outbox {} | raw lapin {} | ratio {:.3} | in publish {:.1} s | RSS +{:.1} MiB",
                                d.outbox, raw, d.outbox.rate / raw.rate, d.publish_s, d.rss_mib
                            ),
                            None => println!(
                                "drain {label} round {round}: outbox {} | in publish {:.1} s | RSS +{:.1} MiB",
                                d.outbox, d.publish_s, d.rss_mib
                            ),
                        }
                        res.drain.push(d);
                    }
                }
                Ok(())
            }
            .await;

            let tables: Vec<String> = drop_tables.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for t in tables {
                let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {q}{t}{q}", q = $q)))
                    .execute(&pool)
                    .await;
            }
            broker.cleanup().await;
            pool.close().await;
            result.map(|()| res)
        }
    };
}

fn dollar(i: usize) -> String {
    format!("${i}")
}

fn question(_: usize) -> String {
    "?".to_owned()
}

bench_db!(
    bench_postgres,
    "postgres",
    sqlx::Postgres,
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(
            &std::env::var("HEYTOM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
        ),
    Outbox::postgres,
    dollar,
    "::uuid",
    ""
);
bench_db!(
    bench_mysql,
    "mysql",
    sqlx::MySql,
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(16)
        .connect(
            &std::env::var("HEYTOM_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
        ),
    Outbox::mysql,
    question,
    "",
    "`"
);
bench_db!(
    bench_sqlite,
    "sqlite",
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
    question,
    "",
    "\""
);

/// The SQLite file of this process's runs, removed at the end.
fn sqlite_path() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("ob11-bench-{}.db", suffix())))
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

fn yes(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "no"
    }
}

/// The summary: RESULT lines for ratios, FIGURE lines for absolute targets.
fn summarize(r: &Results) {
    let (db, via) = (r.db, r.via);
    for e in &r.enqueue {
        let n = e.rounds.len();
        let mut vs_hand: Vec<f64> = e.rounds.iter().map(|s| s[2].rate / s[1].rate).collect();
        let mut vs_biz: Vec<f64> = e.rounds.iter().map(|s| s[2].rate / s[0].rate).collect();
        let side = |i: usize| {
            let mut rate: Vec<f64> = e.rounds.iter().map(|s| s[i].rate).collect();
            let mut cpu: Vec<f64> = e.rounds.iter().map(|s| s[i].cpu_us).collect();
            let mut allocs: Vec<f64> = e.rounds.iter().map(|s| s[i].allocs).collect();
            format!(
                "{:.0} tx/s, {:.1} µs CPU/tx, {:.1} allocs/tx",
                median(&mut rate),
                median(&mut cpu),
                median(&mut allocs)
            )
        };
        // The additional figure: the post-commit send off (nothing sends).
        let off = match (e.send_off, retention_zero()) {
            (true, _) => "_send_off",
            (false, true) => "_retention0",
            (false, false) => "",
        };
        println!(
            "enqueue{off} {db} {}w medians: business {} | hand {} | outbox {}",
            e.writers,
            side(0),
            side(1),
            side(2)
        );
        println!(
            "RESULT outbox.enqueue{off}.{db}.{}w ratio={:.3} rounds={n}",
            e.writers,
            median(&mut vs_hand)
        );
        println!(
            "RESULT outbox.enqueue{off}_vs_business.{db}.{}w ratio={:.3} rounds={n}",
            e.writers,
            median(&mut vs_biz)
        );
    }
    for l in &r.latency {
        let targets = via == "rabbitmq" && (db == "postgres" || db == "sqlite");
        let met = l.p50_ms <= 2.0 && l.p99_ms <= 20.0 && l.confirmed == l.commits;
        println!(
            "FIGURE outbox.latency.{db}.{via}.{}w p50_ms={:.2} p99_ms={:.2} confirmed={}/{} target_p50_ms=2 target_p99_ms=20 met={}",
            l.writers,
            l.p50_ms,
            l.p99_ms,
            l.confirmed,
            l.commits,
            if targets { yes(met) } else { "n/a" }
        );
    }
    for &(writers, p50, p99) in &r.hand_latency {
        println!(
            "FIGURE outbox.latency.{db}.{via}.{writers}w_by_hand p50_ms={p50:.2} p99_ms={p99:.2}"
        );
        if let Some(l) = r.latency.iter().find(|l| l.writers == writers) {
            // Above 1: the outbox is as quick from commit to confirm as
            // publishing right after the commit by hand.
            println!(
                "RESULT outbox.latency_vs_hand.{db}.{via}.{writers}w ratio={:.3} rounds=1",
                p50 / l.p50_ms
            );
        }
    }
    if let Some((p50, p99)) = r.raw_latency {
        println!("FIGURE outbox.latency.{db}.{via}.raw_lapin p50_ms={p50:.2} p99_ms={p99:.2}");
    }
    if !r.drain.is_empty() {
        let n = r.drain.len();
        let mut rates: Vec<f64> = r.drain.iter().map(|d| d.outbox.rate).collect();
        let mut cpu: Vec<f64> = r.drain.iter().map(|d| d.outbox.cpu_us).collect();
        let mut allocs: Vec<f64> = r.drain.iter().map(|d| d.outbox.allocs).collect();
        let rss = r.drain.iter().map(|d| d.rss_mib).fold(0.0, f64::max);
        let rate = median(&mut rates);
        println!(
            "drain {db} {via} medians: outbox {rate:.0} rows/s, {:.1} µs CPU/row, {:.1} allocs/row; peak RSS growth {rss:.1} MiB (max of {n} rounds)",
            median(&mut cpu),
            median(&mut allocs)
        );
        let raws: Vec<Sample> = r.drain.iter().filter_map(|d| d.raw).collect();
        if raws.len() == n {
            let mut ratios: Vec<f64> = r
                .drain
                .iter()
                .filter_map(|d| d.raw.map(|raw| d.outbox.rate / raw.rate))
                .collect();
            let mut rr: Vec<f64> = raws.iter().map(|s| s.rate).collect();
            let mut rc: Vec<f64> = raws.iter().map(|s| s.cpu_us).collect();
            let mut ra: Vec<f64> = raws.iter().map(|s| s.allocs).collect();
            println!(
                "drain {db} {via} raw lapin medians: {:.0} msg/s, {:.1} µs CPU/msg, {:.1} allocs/msg",
                median(&mut rr),
                median(&mut rc),
                median(&mut ra)
            );
            println!(
                "RESULT outbox.drain.{db}.{via} ratio={:.3} rounds={n}",
                median(&mut ratios)
            );
        }
        let target = match (db, via) {
            ("postgres", "memory") => Some(30_000.0),
            ("mysql", "memory") => Some(20_000.0),
            _ => None,
        };
        match target {
            Some(t) => println!(
                "FIGURE outbox.drain.{db}.{via} rows_per_s={rate:.0} target={t:.0} met={} rounds={n}",
                yes(rate >= t)
            ),
            None => println!("FIGURE outbox.drain.{db}.{via} rows_per_s={rate:.0} rounds={n}"),
        }
        println!(
            "FIGURE outbox.drain.{db}.{via}.rss_growth_mib value={rss:.1} target=64 met={} backlog={}",
            yes(rss < 64.0),
            r.backlog
        );
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
                        via.key(),
                        start.elapsed().as_secs_f64()
                    );
                    all.push(r);
                }
                Err(e) => eprintln!("NOTICE: {db:?} / {} skipped: {e}", via.key()),
            }
        }
    }
    println!();
    println!(
        "enqueue: in-memory transport, relay running; business = business insert + commit; hand = + the outbox row's \
         INSERT written by hand (13 columns) + commit; outbox = send_with_transaction. latency: ms from calling commit() \
         to the transport's confirm. drain: scanner batch {DRAIN_BATCH}, until every row is Sent; raw lapin: same \
         payload and properties, persistent, mandatory, windows of {DRAIN_BATCH} confirmed before the next."
    );
    println!("process VmHWM: {} MiB", rss_kib("VmHWM:") / 1024);
    for r in &all {
        summarize(r);
    }
    let db = sqlite_path();
    for ext in ["", "-wal", "-shm"] {
        let mut file = db.clone().into_os_string();
        file.push(ext);
        let _ = std::fs::remove_file(file);
    }
}
