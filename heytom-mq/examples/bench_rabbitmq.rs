//! Throughput of heytom-mq on RabbitMQ against raw lapin doing the same
//! work, side by side in one process:
//!
//! - publish: N messages of the same size, all sent, then every publisher
//!   confirm awaited (heytom-mq: `Producer::send_batch`);
//! - consume: N waiting messages delivered with the same prefetch, each
//!   JSON-decoded and acknowledged (heytom-mq: a handler behind the
//!   dispatcher), timed from the first delivery handled to the last one
//!   acknowledged and the consumer stopped (CPU and allocations over the
//!   same window); the subscription's set-up before it is printed apart.
//!   Each side consumes right after its own publish phase, so each queue
//!   holds exactly the round's N messages, just published.
//!
//! ```text
//! cargo run --release -p heytom-mq --example bench_rabbitmq
//! ```
//!
//! Environment: `HEYTOM_RABBITMQ_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), `BENCH_COUNT` (20000),
//! `BENCH_SIZE` (payload bytes, 256), `BENCH_ROUNDS` (5), `BENCH_PREFETCH` (64),
//! `BENCH_HEYTOM_FIRST` (0; 1 lets heytom-mq go first in odd rounds),
//! `BENCH_CONSUME` (1; 0 runs the publish figures only), `BENCH_PROFILE`
//! (`concurrent`: heytom-mq's concurrent sends alone, for a profiler).
//!
//! A third figure, `publish_concurrent`, sends the same messages as N
//! `Producer::send` futures awaited at once (the shape of ruststream's
//! publisher), against the same round's raw publish; it runs after the
//! consume phases, into the emptied queue.

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{allocations, cpu_time, median};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use heytom_mq::{
    Envelope, Event, RabbitMqConsumer, RabbitMqOptions, RabbitMqProducer, RabbitMqRoute, Route,
};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize, Debug, Clone)]
struct BenchEvent {
    seq: u64,
    data: String,
}

struct Names {
    exchange: String,
    raw_queue: String,
    raw_key: String,
    heytom_queue: String,
    heytom_key: String,
}

static NAMES: OnceLock<Names> = OnceLock::new();

fn names() -> &'static Names {
    NAMES.get_or_init(|| {
        let id = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
        Names {
            exchange: format!("bench.{id}"),
            raw_queue: format!("bench.raw.{id}"),
            raw_key: format!("raw.{id}"),
            heytom_queue: format!("bench.heytom.{id}"),
            heytom_key: format!("heytom.{id}"),
        }
    })
}

// Registered like every `#[derive(Event)]` type (the derive needs fixed
// names; this benchmark uses fresh ones per run).
heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration {
        name: <BenchEvent as Event>::NAME,
        route: <BenchEvent as Event>::route,
    }
}

impl Event for BenchEvent {
    const NAME: &'static str = "BenchEvent";
    fn route() -> &'static Route {
        static R: OnceLock<Route> = OnceLock::new();
        R.get_or_init(|| {
            let n = names();
            let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
            Route::RabbitMq(
                RabbitMqRoute::new(leak(&n.heytom_key))
                    .exchange(leak(&n.exchange))
                    .queue_name(leak(&n.heytom_queue))
                    .durable(false),
            )
        })
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events whose JSON body is exactly `size` bytes (when `size` allows).
fn events(count: usize, size: usize) -> Vec<BenchEvent> {
    (0..count as u64)
        .map(|seq| {
            let mut e = BenchEvent {
                seq,
                data: String::new(),
            };
            let base = serde_json::to_vec(&e).map(|v| v.len()).unwrap_or(0);
            e.data = "x".repeat(size.saturating_sub(base));
            e
        })
        .collect()
}

/// The AMQP properties raw lapin sends: what heytom-mq sends too (id,
/// type, correlation id, content type, timestamp, persistent, the
/// envelope's string headers and the time to the nanosecond as
/// `heytom-occurred-at`).
fn raw_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &envelope.headers {
        headers.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(LongString::from(v.as_str())),
        );
    }
    headers.insert(
        ShortString::from(heytom_mq::headers::OCCURRED_AT),
        AMQPValue::LongString(LongString::from(envelope.occurred_at.to_rfc3339())),
    );
    let id = envelope.id.to_string();
    BasicProperties::default()
        .with_correlation_id(id.as_str().into())
        .with_message_id(id.into())
        .with_type(envelope.name.as_str().into())
        .with_content_type("application/json".into())
        .with_timestamp(envelope.occurred_at.timestamp() as u64)
        .with_delivery_mode(2)
        .with_headers(headers)
}

async fn raw_publish(
    conn: &Connection,
    events: &[BenchEvent],
) -> Result<Duration, Box<dyn std::error::Error>> {
    let n = names();
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let start = Instant::now();
    let mut confirms = Vec::with_capacity(events.len());
    for e in events {
        // Same work as the framework: serialize, give the message an id.
        let envelope = Envelope::new(e)?;
        let props = raw_properties(&envelope);
        let opts = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        confirms.push(
            ch.basic_publish(
                n.exchange.as_str().into(),
                n.raw_key.as_str().into(),
                opts,
                &envelope.payload,
                props,
            )
            .await?,
        );
    }
    for c in confirms {
        if c.await? != Confirmation::Ack(None) {
            return Err("raw publish not acked".into());
        }
    }
    let took = start.elapsed();
    ch.close(200, "done".into()).await?;
    Ok(took)
}

async fn heytom_publish(
    producer: &RabbitMqProducer,
    events: &[BenchEvent],
) -> Result<Duration, heytom_mq::Error> {
    let start = Instant::now();
    let ids = producer.send_batch(events).await?;
    let took = start.elapsed();
    assert_eq!(ids.len(), events.len());
    Ok(took)
}

async fn heytom_publish_concurrent(
    producer: &RabbitMqProducer,
    events: &[BenchEvent],
) -> Result<Duration, heytom_mq::Error> {
    let start = Instant::now();
    let ids = futures::future::try_join_all(events.iter().map(|e| producer.send(e))).await?;
    let took = start.elapsed();
    assert_eq!(ids.len(), events.len());
    Ok(took)
}

/// The consume window (both sides): from the first delivery handled to the
/// last one handled and acknowledged, the consumer stopped. Subscribing
/// (heytom-mq declares its queue's topology first: 8 round trips, 80-190 ms
/// on a loaded machine, a tenth of a round) is left out; it is printed as
/// `setup`.
struct Consumed {
    took: Duration,
    setup: Duration,
    /// CPU time and allocations of the process when the first was handled.
    at_first: (Duration, u64),
}

/// When the first delivery is handled: the time, CPU time and allocations.
fn mark() -> (Instant, (Duration, u64)) {
    (Instant::now(), (cpu_time(), allocations()))
}

async fn raw_consume(
    conn: &Connection,
    count: usize,
    prefetch: u16,
) -> Result<Consumed, Box<dyn std::error::Error>> {
    let n = names();
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let subscribed = Instant::now();
    let mut consumer = ch
        .basic_consume(
            n.raw_queue.as_str().into(),
            "raw-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut acks = Vec::with_capacity(count);
    let mut first = None;
    while acks.len() < count {
        let Some(delivery) = consumer.next().await else {
            return Err("raw consumer ended".into());
        };
        let delivery = delivery?;
        first.get_or_insert_with(mark);
        // Same work as the framework: decode the event, then ack; acks are
        // not awaited one by one (the framework does not either).
        let event: BenchEvent = serde_json::from_slice(&delivery.data)?;
        std::hint::black_box(event);
        acks.push(tokio::spawn(async move {
            delivery.acker.ack(BasicAckOptions::default()).await
        }));
    }
    for a in acks {
        a.await??;
    }
    ch.close(200, "done".into()).await?;
    let (first, at_first) = first.ok_or("nothing consumed")?;
    Ok(Consumed {
        took: first.elapsed(),
        setup: first - subscribed,
        at_first,
    })
}

async fn heytom_consume(
    options: &RabbitMqOptions,
    count: usize,
) -> Result<Consumed, heytom_mq::Error> {
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let first = Arc::new(OnceLock::new());
    let (h, d, f) = (handled.clone(), all_done.clone(), first.clone());
    // Connected before the clock starts, like the raw side's connection.
    let consumer = RabbitMqConsumer::connect(options.clone()).await?;
    consumer.start().await?;
    let subscribed = Instant::now();
    consumer
        .subscribe(move |e: BenchEvent| {
            f.get_or_init(mark);
            std::hint::black_box(e);
            if h.fetch_add(1, Ordering::Relaxed) + 1 == count {
                d.notify_one();
            }
            async { true }
        })
        .await?;
    all_done.notified().await;
    // Stopping waits for the last acks and closes the channel, like the raw side.
    consumer.stop().await?;
    let (first, at_first) = first
        .get()
        .copied()
        .unwrap_or((subscribed, (cpu_time(), 0)));
    Ok(Consumed {
        took: first.elapsed(),
        setup: first - subscribed,
        at_first,
    })
}

async fn setup(conn: &Connection) -> Result<(), lapin::Error> {
    let n = names();
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        n.exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for (q, k) in [(&n.raw_queue, &n.raw_key), (&n.heytom_queue, &n.heytom_key)] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            q.as_str().into(),
            n.exchange.as_str().into(),
            k.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.close(200, "ok".into()).await
}

async fn purge(conn: &Connection) -> Result<(), lapin::Error> {
    let n = names();
    let ch = conn.create_channel().await?;
    for q in [&n.raw_queue, &n.heytom_queue] {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }
    ch.close(200, "ok".into()).await
}

async fn teardown(conn: &Connection) {
    let n = names();
    if let Ok(ch) = conn.create_channel().await {
        for q in [
            &n.raw_queue,
            &n.heytom_queue,
            &format!("{}.dlq", n.heytom_queue),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(n.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}

/// Runs a phase; returns (messages per second, CPU microseconds per
/// message, allocations per message).
async fn phase<F, E>(count: usize, f: F) -> Result<(f64, f64, f64), E>
where
    F: std::future::Future<Output = Result<Duration, E>>,
{
    // Let the broker settle (flush, collect garbage) between phases.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu0, a0) = (cpu_time(), allocations());
    let took = f.await?;
    let (cpu1, a1) = (cpu_time(), allocations());
    let cpu = (cpu1 - cpu0).as_secs_f64() * 1e6 / count as f64;
    Ok((rate(count, took), cpu, (a1 - a0) as f64 / count as f64))
}

/// Runs a consume phase; returns (messages per second, CPU microseconds
/// per message, allocations per message) over the consume window, and the
/// set-up time before it in milliseconds.
async fn consume_phase<F, E>(count: usize, f: F) -> Result<((f64, f64, f64), f64), E>
where
    F: std::future::Future<Output = Result<Consumed, E>>,
{
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = f.await?;
    let (cpu1, a1) = (cpu_time(), allocations());
    let (cpu0, a0) = c.at_first;
    let cpu = (cpu1 - cpu0).as_secs_f64() * 1e6 / count as f64;
    let allocs = (a1 - a0) as f64 / count as f64;
    Ok((
        (rate(count, c.took), cpu, allocs),
        c.setup.as_secs_f64() * 1e3,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HEYTOM_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count = env_num("BENCH_COUNT", 20_000) as usize;
    let size = env_num("BENCH_SIZE", 256) as usize;
    let rounds = env_num("BENCH_ROUNDS", 5).max(1);
    let prefetch = env_num("BENCH_PREFETCH", 64).clamp(1, 65535) as u16;
    let options = RabbitMqOptions::new(url.clone()).prefetch(prefetch);

    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    setup(&conn).await?;
    let producer = RabbitMqProducer::connect(options.clone()).await?;
    let batch = events(count, size);
    let body = serde_json::to_vec(&batch[0])?.len();
    println!(
        "RabbitMQ bench: {count} messages x {body} B JSON body, prefetch {prefetch}, {rounds} rounds \
         (non-durable queue, persistent messages, publisher confirms, mandatory)"
    );

    // BENCH_PROFILE=concurrent: heytom-mq's concurrent sends alone, every
    // round, for a profiler (no figures compared).
    if std::env::var("BENCH_PROFILE").as_deref() == Ok("concurrent") {
        for round in 1..=rounds {
            let f = phase(count, heytom_publish_concurrent(&producer, &batch)).await?;
            println!(
                "round {round}: concurrent send {:.0}/s {:.1}us {:.1}a",
                f.0, f.1, f.2
            );
            purge(&conn).await?;
        }
        teardown(&conn).await;
        producer.close().await?;
        return Ok(());
    }
    let consume = env_num("BENCH_CONSUME", 1) != 0;
    // BENCH_HEYTOM_FIRST=1 lets heytom-mq open the first round instead.
    let first_offset = env_num("BENCH_HEYTOM_FIRST", 0) % 2;
    // raw publish, heytom publish, heytom concurrent sends, raw consume, heytom consume
    let mut cpu: [Vec<f64>; 5] = Default::default();
    let mut allocs: [Vec<f64>; 5] = Default::default();
    let mut all: [Vec<f64>; 5] = Default::default();
    let mut ratios: [Vec<f64>; 3] = Default::default();
    let skipped = (f64::NAN, f64::NAN, f64::NAN);
    let result = async {
        for round in 1..=rounds {
            // Alternate who goes first, so neither always meets a warmer broker.
            let (mut raw_pub, mut hey_pub, mut raw_con, mut hey_con) = (skipped, skipped, skipped, skipped);
            // Each side consumes its queue right after publishing it, so both
            // consumers meet a queue in the same state (the round's `count`
            // messages, just published, the other queue empty): consuming the
            // queue published first was up to twice as fast. The concurrent
            // sends go to the (purged) heytom-mq queue afterwards.
            let (mut raw_setup, mut hey_setup) = (f64::NAN, f64::NAN);
            let raw_first = (round + first_offset) % 2 == 1;
            for raw_turn in [raw_first, !raw_first] {
                if raw_turn {
                    raw_pub = phase(count, raw_publish(&conn, &batch)).await?;
                    if consume {
                        (raw_con, raw_setup) =
                            consume_phase(count, raw_consume(&conn, count, prefetch)).await?;
                    }
                } else {
                    hey_pub = phase(count, heytom_publish(&producer, &batch)).await?;
                    if consume {
                        (hey_con, hey_setup) =
                            consume_phase(count, heytom_consume(&options, count)).await?;
                    }
                }
            }
            purge(&conn).await?;
            let hey_conc = phase(count, heytom_publish_concurrent(&producer, &batch)).await?;
            println!(
                "round {round}: publish raw {:>6.0}/s {:>5.1}us {:>5.1}a heytom {:>6.0}/s {:>5.1}us {:>5.1}a ({:.2}) \
                 concurrent send {:>6.0}/s {:>5.1}us {:>5.1}a ({:.2}) | \
                 consume raw {:>6.0}/s {:>5.1}us {:>5.1}a heytom {:>6.0}/s {:>5.1}us {:>5.1}a ({:.2}) \
                 setup raw {raw_setup:.0} ms heytom {hey_setup:.0} ms",
                raw_pub.0, raw_pub.1, raw_pub.2, hey_pub.0, hey_pub.1, hey_pub.2, hey_pub.0 / raw_pub.0,
                hey_conc.0, hey_conc.1, hey_conc.2, hey_conc.0 / raw_pub.0,
                raw_con.0, raw_con.1, raw_con.2, hey_con.0, hey_con.1, hey_con.2, hey_con.0 / raw_con.0,
            );
            // What was not consumed (the concurrent sends', or all) goes.
            purge(&conn).await?;
            let figures = [raw_pub, hey_pub, hey_conc, raw_con, hey_con];
            for (i, f) in figures.iter().enumerate() {
                all[i].push(f.0);
                cpu[i].push(f.1);
                allocs[i].push(f.2);
            }
            ratios[0].push(hey_pub.0 / raw_pub.0);
            ratios[1].push(hey_conc.0 / raw_pub.0);
            ratios[2].push(hey_con.0 / raw_con.0);
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    teardown(&conn).await;
    result?;
    let [m_raw_pub, m_hey_pub, m_hey_conc, m_raw_con, m_hey_con] = all.map(|mut v| median(&mut v));
    println!(
        "median publish+confirm: raw lapin {m_raw_pub:.0} msg/s, heytom-mq send_batch {m_hey_pub:.0} msg/s, \
         concurrent send {m_hey_conc:.0} msg/s"
    );
    println!(
        "median consume+ack:     raw lapin {m_raw_con:.0} msg/s, heytom-mq {m_hey_con:.0} msg/s"
    );
    let [c0, c1, c2, c3, c4] = cpu.map(|mut v| median(&mut v));
    println!(
        "CPU per message (process, median): publish raw {c0:.1} us, heytom send_batch {c1:.1} us, \
         concurrent send {c2:.1} us | consume raw {c3:.1} us, heytom {c4:.1} us"
    );
    let [a0, a1, a2, a3, a4] = allocs.map(|mut v| median(&mut v));
    println!(
        "allocations per message (median): publish raw {a0:.1}, heytom send_batch {a1:.1}, \
         concurrent send {a2:.1} | consume raw {a3:.1}, heytom {a4:.1}"
    );
    let [publish, concurrent, consumed] = ratios.map(|mut v| median(&mut v));
    println!(
        "median of per-round ratios (heytom/raw, same round): publish+confirm {publish:.2}, \
         concurrent send {concurrent:.2}, consume+ack {consumed:.2}"
    );
    println!("RESULT rabbitmq.publish ratio={publish:.3} rounds={rounds}");
    println!("RESULT rabbitmq.publish_concurrent ratio={concurrent:.3} rounds={rounds}");
    if consume {
        println!("RESULT rabbitmq.consume ratio={consumed:.3} rounds={rounds}");
    }
    producer.close().await?;
    Ok(())
}
