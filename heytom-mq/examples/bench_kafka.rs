//! Produce and consume throughput through heytom-mq vs raw rdkafka doing the
//! same work, side by side in one process.
//!
//! ```text
//! eval "$(scripts/kafka-broker.sh start)"
//! cargo run --release -p heytom-mq --example bench_kafka -- [messages] [payload_bytes] [rounds]
//! ```
//!
//! Both sides send the same JSON payload (serialized per message), keyed, with
//! the same four headers (event id, name, occurred-at, correlation id), and
//! wait for every delivery report. Both consumers decode every payload, read
//! the event id and store the offset only after "handling" it, committing in
//! the background (the at-least-once pattern). Consume time runs from the
//! first message to the last, so the group join is not counted. Every side
//! runs `rounds` times (default 5) on fresh topics; the best round of each
//! side counts, and the median of the per-round ratios is printed too (the
//! machine may be shared, so single rounds are noisy).

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heytom_mq::{Event, KafkaConsumer, KafkaOptions, KafkaProducer, KafkaRoute, Route};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

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

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn heytom_produce(servers: &str, topic: &'static str, evs: &[BenchEvent]) -> Duration {
    set_topic(topic);
    let producer = KafkaProducer::new(KafkaOptions::new(servers)).expect("producer");
    // Create the topic outside the timing, with one warm-up message.
    producer.send(&evs[0]).await.expect("warm-up send");
    let start = Instant::now();
    producer.send_batch(&evs[1..]).await.expect("send_batch");
    start.elapsed()
}

fn raw_config(servers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers);
    c
}

async fn raw_produce(servers: &str, topic: &str, evs: &[BenchEvent]) -> Duration {
    // The same durability as heytom's default producer: acks=all, idempotent.
    let producer: FutureProducer = raw_config(servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("raw producer");
    let send = |e: &BenchEvent| {
        let payload = serde_json::to_vec(e).expect("json");
        let id = uuid::Uuid::now_v7().to_string();
        let now = chrono::Utc::now();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "correlation-id",
                value: Some(&id),
            })
            .insert(Header {
                key: "heytom-event-id",
                value: Some(&id),
            })
            .insert(Header {
                key: "heytom-event-name",
                value: Some("BenchEvent"),
            })
            .insert(Header {
                key: "heytom-occurred-at",
                value: Some(&now.to_rfc3339()),
            });
        let record = FutureRecord::to(topic)
            .payload(&payload)
            .key(e.key.as_str())
            .timestamp(now.timestamp_millis())
            .headers(headers);
        producer.send_result(record).map_err(|(e, _)| e)
    };
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
    send(&evs[0])
        .expect("warm-up")
        .await
        .expect("warm-up")
        .expect("warm-up");
    let start = Instant::now();
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
    start.elapsed()
}

async fn heytom_consume(servers: &str, topic: &'static str, n: usize) -> Duration {
    set_topic(topic);
    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let done = Arc::new(Notify::new());
    let consumer = KafkaConsumer::new(
        KafkaOptions::new(servers)
            .group_id(format!("{topic}-heytom"))
            .consumer_property("fetch.wait.max.ms", "10"),
    )
    .expect("consumer");
    consumer.start().await.expect("start");
    let (c, f, d) = (count.clone(), first.clone(), done.clone());
    consumer
        .subscribe(move |e: BenchEvent| {
            let (c, f, d) = (c.clone(), f.clone(), d.clone());
            async move {
                std::hint::black_box(&e);
                let seen = c.fetch_add(1, Ordering::Relaxed);
                if seen == 0 {
                    *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
                if seen + 1 == n as u64 {
                    d.notify_one();
                }
            }
        })
        .await
        .expect("subscribe");
    done.notified().await;
    let end = Instant::now();
    consumer.stop().await.expect("stop");
    let start = first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(end);
    end - start
}

async fn raw_consume(servers: &str, topic: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = raw_config(servers)
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut start = None;
    let mut seen = 0;
    while seen < n {
        let m = consumer.recv().await.expect("recv");
        if start.is_none() {
            start = Some(Instant::now());
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
    let end = Instant::now();
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    end - start.unwrap_or(end)
}

#[tokio::main]
async fn main() {
    let servers = std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| {
        eprintln!("HEYTOM_KAFKA_BOOTSTRAP_SERVERS is not set; run: eval \"$(scripts/kafka-broker.sh start)\"");
        std::process::exit(2);
    });
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let evs = events(n, size);
    let run = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    println!(
        "bench_kafka: {n} messages x {} B JSON payload, 1 partition, {rounds} round(s), broker {servers}",
        serde_json::to_vec(&evs[0]).map_or(0, |v| v.len())
    );

    let (mut hp, mut rp, mut hc, mut rc) =
        (Duration::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut produce_ratios, mut consume_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let ht = leak(format!("bench-heytom-{run}-{round}"));
        let rt = leak(format!("bench-raw-{run}-{round}"));
        // Alternate which side goes first to spread any warm-up effect.
        let (a, b) = if round % 2 == 0 {
            let a = heytom_produce(&servers, ht, &evs).await;
            (a, raw_produce(&servers, rt, &evs).await)
        } else {
            let b = raw_produce(&servers, rt, &evs).await;
            (heytom_produce(&servers, ht, &evs).await, b)
        };
        let (c, d) = if round % 2 == 0 {
            let c = heytom_consume(&servers, ht, n).await;
            (c, raw_consume(&servers, rt, n).await)
        } else {
            let d = raw_consume(&servers, rt, n).await;
            (heytom_consume(&servers, ht, n).await, d)
        };
        println!(
            "round {round}: produce heytom {:>9.0}/s raw {:>9.0}/s | consume heytom {:>9.0}/s raw {:>9.0}/s",
            rate(n - 1, a),
            rate(n - 1, b),
            rate(n, c),
            rate(n, d)
        );
        produce_ratios.push(b.as_secs_f64() / a.as_secs_f64());
        consume_ratios.push(d.as_secs_f64() / c.as_secs_f64());
        hp = hp.min(a);
        rp = rp.min(b);
        hc = hc.min(c);
        rc = rc.min(d);
    }
    let (hpr, rpr, hcr, rcr) = (rate(n - 1, hp), rate(n - 1, rp), rate(n, hc), rate(n, rc));
    println!("best of {rounds}:");
    println!(
        "  produce  heytom-mq {hpr:>9.0} msg/s   raw rdkafka {rpr:>9.0} msg/s   ratio {:.2}",
        hpr / rpr
    );
    println!(
        "  consume  heytom-mq {hcr:>9.0} msg/s   raw rdkafka {rcr:>9.0} msg/s   ratio {:.2}",
        hcr / rcr
    );
    println!(
        "median of per-round ratios (heytom/raw, same round): produce {:.2}, consume {:.2}",
        median(&mut produce_ratios),
        median(&mut consume_ratios)
    );
    println!(
        "RESULT kafka_produce ratio={:.3} rounds={rounds}",
        median(&mut produce_ratios)
    );
    println!(
        "RESULT kafka_consume ratio={:.3} rounds={rounds}",
        median(&mut consume_ratios)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
