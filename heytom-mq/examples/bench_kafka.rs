//! Produce and consume throughput through heytom-mq vs raw rdkafka doing the
//! same work, side by side in one process.
//!
//! ```text
//! eval "$(scripts/kafka-broker.sh start)"
//! cargo run --release -p heytom-mq --example bench_kafka -- [messages] [payload_bytes] [rounds] [concurrency]
//! ```
//!
//! Both sides send the same JSON payload (serialized per message), keyed, with
//! the same three headers (event id, name, occurred-at: heytom-mq leaves out a
//! correlation id equal to the event id), and
//! wait for every delivery report:
//!
//! - `produce`: heytom's `send_batch` vs raw `FutureProducer::send_result`
//!   pipelined over the whole batch;
//! - `produce_concurrent`: `concurrency` sends in flight at once, heytom's
//!   `send` vs raw `FutureProducer::send`.
//!
//! Both consumers decode every payload, read the event id and store the
//! offset only after "handling" it, committing in the background (the
//! at-least-once pattern). The raw consumer is a `BaseConsumer` polled in a
//! tight loop on its own thread (librdkafka's fastest consume path: no waker,
//! no channel, no allocation per message beyond the decode). Consume time runs
//! from the first message to the last, so the group join is not counted.
//!
//! Every side runs `rounds` times (default 5) on fresh topics, alternating
//! which side goes first; each round prints both rates, the CPU time per
//! message of the whole process (getrusage, librdkafka's threads included)
//! and the heap allocations per message (a counting global allocator). The
//! `RESULT` lines give the median of the per-round ratios: `kafka.<figure>`
//! of the rates (heytom/raw), `kafka.<figure>_cpu` of the CPU time per
//! message (raw/heytom, so above 1 is heytom cheaper), which other load on
//! the machine and the broker's pace disturb less.

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{allocations, cpu_us, median};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use heytom_mq::{Event, KafkaConsumer, KafkaOptions, KafkaProducer, KafkaRoute, Route};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// A point in time, CPU time and allocation count.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: u64,
    allocs: u64,
}

impl Mark {
    fn now() -> Self {
        Mark {
            at: Instant::now(),
            cpu: cpu_us(),
            allocs: allocations(),
        }
    }
}

/// What one side did in one phase.
#[derive(Clone, Copy)]
struct Phase {
    n: usize,
    wall: Duration,
    cpu_us: u64,
    allocs: u64,
}

impl Phase {
    fn between(n: usize, a: Mark, b: Mark) -> Self {
        Phase {
            n,
            wall: b.at.saturating_duration_since(a.at),
            cpu_us: b.cpu.saturating_sub(a.cpu),
            allocs: b.allocs.saturating_sub(a.allocs),
        }
    }
    fn rate(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64()
    }
    fn cpu_per_msg(&self) -> f64 {
        self.cpu_us as f64 / self.n as f64
    }
    fn allocs_per_msg(&self) -> f64 {
        self.allocs as f64 / self.n as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchEvent {
    seq: u64,
    key: String,
    data: String,
}

/// The route of the current round (a fresh topic per round); one atomic load per call.
static ROUTE: AtomicPtr<Route> = AtomicPtr::new(std::ptr::null_mut());
static DEFAULT_ROUTE: Route = Route::Default;

fn set_topic(topic: &'static str) {
    let mut k = KafkaRoute::new(topic);
    k.num_partitions = Some(1);
    k.session_timeout_ms = Some(6000);
    ROUTE.store(Box::into_raw(Box::new(Route::Kafka(k))), Ordering::Release);
}

impl Event for BenchEvent {
    const NAME: &'static str = "BenchEvent";
    fn route() -> &'static Route {
        let p = ROUTE.load(Ordering::Acquire);
        // SAFETY: only ever set to a leaked Box, never freed.
        unsafe { p.as_ref() }.unwrap_or(&DEFAULT_ROUTE)
    }
    fn partition_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

// Registered like every `#[derive(Event)]` type (the derive needs a fixed
// topic; this benchmark uses a fresh one per round).
heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration {
        name: <BenchEvent as Event>::NAME,
        route: <BenchEvent as Event>::route,
    }
}

fn events(n: usize, size: usize) -> Vec<BenchEvent> {
    let probe = serde_json::to_vec(&BenchEvent {
        seq: 10_000,
        key: "key-00".into(),
        data: String::new(),
    })
    .map_or(40, |v| v.len());
    let data = "x".repeat(size.saturating_sub(probe));
    (0..n)
        .map(|i| BenchEvent {
            seq: i as u64,
            key: format!("key-{:02}", i % 64),
            data: data.clone(),
        })
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn heytom_producer(servers: &str, topic: &'static str) -> KafkaProducer {
    set_topic(topic);
    KafkaProducer::new(KafkaOptions::new(servers)).expect("producer")
}

async fn heytom_produce(servers: &str, topic: &'static str, evs: &[BenchEvent]) -> Phase {
    let producer = heytom_producer(servers, topic);
    // Create the topic outside the timing, with one warm-up message.
    producer.send(&evs[0]).await.expect("warm-up send");
    let a = Mark::now();
    producer.send_batch(&evs[1..]).await.expect("send_batch");
    Phase::between(evs.len() - 1, a, Mark::now())
}

async fn heytom_produce_concurrent(
    servers: &str,
    topic: &'static str,
    evs: &[BenchEvent],
    concurrency: usize,
) -> Phase {
    let producer = heytom_producer(servers, topic);
    producer.send(&evs[0]).await.expect("warm-up send");
    let a = Mark::now();
    let mut sends = futures::stream::iter(&evs[1..])
        .map(|e| producer.send(e))
        .buffer_unordered(concurrency);
    while let Some(r) = sends.next().await {
        r.expect("send");
    }
    Phase::between(evs.len() - 1, a, Mark::now())
}

fn raw_config(servers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers);
    c
}

/// The same durability as heytom's default producer: acks=all, idempotent.
async fn raw_producer(servers: &str, topic: &str) -> FutureProducer {
    let producer: FutureProducer = raw_config(servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("raw producer");
    // Create the topic outside the timing (like the heytom side).
    let admin: rdkafka::admin::AdminClient<_> = raw_config(servers).create().expect("admin");
    let _ = admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                topic,
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await;
    producer
}

/// The work heytom does per message, by hand: JSON, a UUID v7 id, the time,
/// three headers. Payload, headers and timestamp of the record.
fn raw_parts(e: &BenchEvent) -> (Vec<u8>, OwnedHeaders, i64) {
    let payload = serde_json::to_vec(e).expect("json");
    let id = uuid::Uuid::now_v7();
    let mut buf = uuid::Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut buf);
    let now = chrono::Utc::now();
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "heytom-event-id",
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: "heytom-event-name",
            value: Some("BenchEvent"),
        })
        .insert(Header {
            key: "heytom-occurred-at",
            value: Some(&now.to_rfc3339()),
        });
    (payload, headers, now.timestamp_millis())
}

fn raw_record<'a>(
    topic: &'a str,
    e: &'a BenchEvent,
    payload: &'a [u8],
    headers: OwnedHeaders,
    timestamp: i64,
) -> FutureRecord<'a, str, [u8]> {
    FutureRecord::to(topic)
        .payload(payload)
        .key(e.key.as_str())
        .timestamp(timestamp)
        .headers(headers)
}

/// One send, waiting for its delivery report.
async fn raw_send(
    producer: &FutureProducer,
    topic: &str,
    e: &BenchEvent,
) -> rdkafka::error::KafkaResult<()> {
    let (payload, headers, ts) = raw_parts(e);
    producer
        .send(raw_record(topic, e, &payload, headers, ts), Timeout::Never)
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

async fn raw_produce(servers: &str, topic: &str, evs: &[BenchEvent]) -> Phase {
    let producer = raw_producer(servers, topic).await;
    let send = |e: &BenchEvent| {
        let (payload, headers, ts) = raw_parts(e);
        producer
            .send_result(raw_record(topic, e, &payload, headers, ts))
            .map_err(|(e, _)| e)
    };
    send(&evs[0])
        .expect("warm-up")
        .await
        .expect("warm-up")
        .expect("warm-up");
    let a = Mark::now();
    let mut pending = std::collections::VecDeque::with_capacity(evs.len());
    for e in &evs[1..] {
        loop {
            match send(e) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err(_) => {
                    // Queue full: wait for the oldest delivery.
                    if let Some(f) = pending.pop_front() {
                        f.await.expect("delivery").expect("delivered");
                    }
                }
            }
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("delivered");
    }
    Phase::between(evs.len() - 1, a, Mark::now())
}

async fn raw_produce_concurrent(
    servers: &str,
    topic: &str,
    evs: &[BenchEvent],
    concurrency: usize,
) -> Phase {
    let producer = raw_producer(servers, topic).await;
    raw_send(&producer, topic, &evs[0]).await.expect("warm-up");
    let a = Mark::now();
    let mut sends = futures::stream::iter(&evs[1..])
        .map(|e| raw_send(&producer, topic, e))
        .buffer_unordered(concurrency);
    while let Some(r) = sends.next().await {
        r.expect("send");
    }
    Phase::between(evs.len() - 1, a, Mark::now())
}

async fn heytom_consume(servers: &str, topic: &'static str, n: usize) -> Phase {
    set_topic(topic);
    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<Mark>));
    let done = Arc::new(Notify::new());
    let mut options = KafkaOptions::new(servers)
        .group_id(format!("{topic}-heytom"))
        .consumer_property("fetch.wait.max.ms", "10");
    for (k, v) in extra_consumer_properties() {
        options = options.consumer_property(k, v);
    }
    let consumer = KafkaConsumer::new(options).expect("consumer");
    consumer.start().await.expect("start");
    let (c, f, d) = (count.clone(), first.clone(), done.clone());
    consumer
        .subscribe(move |e: BenchEvent| {
            let seen = c.fetch_add(1, Ordering::Relaxed);
            if seen == 0 {
                *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(Mark::now());
            }
            if seen + 1 == n as u64 {
                d.notify_one();
            }
            std::hint::black_box(&e);
            async {}
        })
        .await
        .expect("subscribe");
    done.notified().await;
    let end = Mark::now();
    consumer.stop().await.expect("stop");
    let start = first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(end);
    Phase::between(n, start, end)
}

/// librdkafka properties for both consumers, from
/// `BENCH_KAFKA_CONSUMER_PROPS=key=value,key=value` (to compare settings).
/// An entry without `=` stops the run: ignored, it would compare nothing.
fn extra_consumer_properties() -> Vec<(String, String)> {
    std::env::var("BENCH_KAFKA_CONSUMER_PROPS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => panic!("BENCH_KAFKA_CONSUMER_PROPS: `{kv}` is not key=value"),
        })
        .collect()
}

fn raw_consume(servers: &str, topic: &str, n: usize) -> Phase {
    let mut config = raw_config(servers);
    config
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "10");
    for (k, v) in extra_consumer_properties() {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut start = None;
    let mut seen = 0;
    while seen < n {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("poll");
        if start.is_none() {
            start = Some(Mark::now());
        }
        let e: BenchEvent = serde_json::from_slice(m.payload().unwrap_or_default()).expect("json");
        let id = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "heytom-event-id")
                    .and_then(|h| h.value)
            })
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| uuid::Uuid::parse_str(s).ok());
        std::hint::black_box((&e, id));
        consumer.store_offset_from_message(&m).expect("store");
        seen += 1;
    }
    let end = Mark::now();
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Phase::between(n, start.unwrap_or(end), end)
}

async fn raw_consume_async(servers: String, topic: &'static str, n: usize) -> Phase {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Its own named thread, so that a profile tells it apart.
    std::thread::Builder::new()
        .name("raw-consumer".into())
        .spawn(move || {
            let _ = tx.send(raw_consume(&servers, topic, n));
        })
        .expect("raw consumer thread");
    rx.await.expect("raw consumer result")
}

/// One figure: both sides of every round.
struct Figure {
    name: &'static str,
    rounds: Vec<(Phase, Phase)>,
}

impl Figure {
    fn new(name: &'static str) -> Self {
        Figure {
            name,
            rounds: Vec::new(),
        }
    }

    fn push(&mut self, round: usize, heytom: Phase, raw: Phase) {
        println!(
            "round {round} {:<20} heytom {:>9.0}/s {:>6.2} us/msg {:>6.2} allocs/msg | raw {:>9.0}/s {:>6.2} us/msg {:>6.2} allocs/msg | ratio {:.3}",
            self.name,
            heytom.rate(),
            heytom.cpu_per_msg(),
            heytom.allocs_per_msg(),
            raw.rate(),
            raw.cpu_per_msg(),
            raw.allocs_per_msg(),
            heytom.rate() / raw.rate()
        );
        self.rounds.push((heytom, raw));
    }

    fn report(&self) {
        let med = |f: &dyn Fn(&(Phase, Phase)) -> f64| {
            let mut v: Vec<f64> = self.rounds.iter().map(f).collect();
            median(&mut v)
        };
        let ratio = med(&|(h, r)| h.rate() / r.rate());
        let ratios: Vec<String> = self
            .rounds
            .iter()
            .map(|(h, r)| format!("{:.3}", h.rate() / r.rate()))
            .collect();
        println!(
            "{}: ratios [{}] median {ratio:.3}; median heytom {:.0}/s {:.2} us/msg {:.2} allocs/msg, raw {:.0}/s {:.2} us/msg {:.2} allocs/msg",
            self.name,
            ratios.join(", "),
            med(&|(h, _)| h.rate()),
            med(&|(h, _)| h.cpu_per_msg()),
            med(&|(h, _)| h.allocs_per_msg()),
            med(&|(_, r)| r.rate()),
            med(&|(_, r)| r.cpu_per_msg()),
            med(&|(_, r)| r.allocs_per_msg()),
        );
    }

    fn result(&self) {
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .map(|(h, r)| h.rate() / r.rate())
            .collect();
        println!(
            "RESULT kafka.{} ratio={:.3} rounds={}",
            self.name,
            median(&mut v),
            self.rounds.len()
        );
        // CPU per message, raw/heytom: steadier than rates on a shared machine.
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .map(|(h, r)| r.cpu_per_msg() / h.cpu_per_msg())
            .collect();
        println!(
            "RESULT kafka.{}_cpu ratio={:.3} rounds={}",
            self.name,
            median(&mut v),
            self.rounds.len()
        );
    }
}

/// How long each side waits before it starts, so that whatever the broker
/// still does for the previous phase (after the last delivery report or
/// the last message consumed) does not land on the side going next.
const SETTLE: Duration = Duration::from_millis(1500);

/// Runs `heytom` and `raw` one after the other, the order alternating by
/// round, each after [`SETTLE`].
async fn pair<H, R>(round: usize, heytom: H, raw: R) -> (Phase, Phase)
where
    H: std::future::Future<Output = Phase>,
    R: std::future::Future<Output = Phase>,
{
    tokio::time::sleep(SETTLE).await;
    if round.is_multiple_of(2) {
        let h = heytom.await;
        tokio::time::sleep(SETTLE).await;
        (h, raw.await)
    } else {
        let r = raw.await;
        tokio::time::sleep(SETTLE).await;
        (heytom.await, r)
    }
}

#[tokio::main]
async fn main() {
    let servers = std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| {
        eprintln!("HEYTOM_KAFKA_BOOTSTRAP_SERVERS is not set; run: eval \"$(scripts/kafka-broker.sh start)\"");
        std::process::exit(2);
    });
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(252);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let concurrency: usize = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .max(1);
    // Which figures to run (default all): BENCH_KAFKA_ONLY=consume,produce,produce_concurrent
    let only = std::env::var("BENCH_KAFKA_ONLY").unwrap_or_default();
    let wants = |f: &str| only.is_empty() || only.split(',').any(|o| o.trim() == f);
    let evs = events(n, size);
    let run = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    println!(
        "bench_kafka: {n} messages x {} B JSON payload, 1 partition, {rounds} round(s), {concurrency} concurrent sends, broker {servers}",
        serde_json::to_vec(&evs[0]).map_or(0, |v| v.len())
    );

    let mut produce = Figure::new("produce");
    let mut concurrent = Figure::new("produce_concurrent");
    let mut consume = Figure::new("consume");
    let consuming = wants("consume");
    for round in 0..rounds {
        let ht = leak(format!("kafka-bench-heytom-{run}-{round}"));
        let rt = leak(format!("kafka-bench-raw-{run}-{round}"));
        // The batch produce fills the topics the consumers read.
        if wants("produce") || consuming {
            let profiled = std::env::var("BENCH_KAFKA_PERF_PHASE").as_deref() == Ok("produce");
            if profiled {
                perf_control("enable");
            }
            let (h, r) = pair(
                round,
                heytom_produce(&servers, ht, &evs),
                raw_produce(&servers, rt, &evs),
            )
            .await;
            if profiled {
                perf_control("disable");
            }
            produce.push(round, h, r);
        }
        if wants("produce_concurrent") {
            let hc = leak(format!("kafka-bench-heytom-c-{run}-{round}"));
            let rc = leak(format!("kafka-bench-raw-c-{run}-{round}"));
            let (h, r) = pair(
                round,
                heytom_produce_concurrent(&servers, hc, &evs, concurrency),
                raw_produce_concurrent(&servers, rc, &evs, concurrency),
            )
            .await;
            concurrent.push(round, h, r);
        }
        if consuming {
            // BENCH_KAFKA_PROFILE=heytom|raw consumes on that side only (for
            // `perf record`); the other side's figures then repeat it.
            let profiled = std::env::var("BENCH_KAFKA_PERF_PHASE").is_err();
            if profiled {
                perf_control("enable");
            }
            let (h, r) = match std::env::var("BENCH_KAFKA_PROFILE").as_deref() {
                Ok("heytom") => {
                    let h = heytom_consume(&servers, ht, n).await;
                    (h, h)
                }
                Ok("raw") => {
                    let r = raw_consume_async(servers.clone(), rt, n).await;
                    (r, r)
                }
                _ => {
                    pair(
                        round,
                        heytom_consume(&servers, ht, n),
                        raw_consume_async(servers.clone(), rt, n),
                    )
                    .await
                }
            };
            if profiled {
                perf_control("disable");
            }
            consume.push(round, h, r);
        }
    }
    let figures = [&produce, &concurrent, &consume];
    for f in figures.iter().filter(|f| !f.rounds.is_empty()) {
        f.report();
    }
    for f in figures.iter().filter(|f| !f.rounds.is_empty()) {
        f.result();
    }
}

/// With `BENCH_KAFKA_PERF_CTL=<fifo>`, tells `perf record -D -1
/// --control=fifo:<fifo>` to record only the consume phases.
fn perf_control(cmd: &str) {
    use std::io::Write as _;
    if let Ok(path) = std::env::var("BENCH_KAFKA_PERF_CTL") {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = writeln!(f, "{cmd}");
        }
    }
}
