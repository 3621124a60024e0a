//! Throughput of the in-memory transport against a hand-written loop doing
//! the same work, side by side in one process:
//!
//! - raw: each event encoded with `serde_json` into a tokio `mpsc` channel,
//!   a consumer task decoding each;
//! - heytom-mq: an [`InMemoryProducer`] sending the same events with
//!   `send_batch` (`BENCH_BATCH` at a time) to an [`InMemoryConsumer`] whose
//!   no-op handler decodes each: envelope, dispatcher and retry machinery
//!   included.
//!
//! Both sides run from the first send until the last event is decoded.
//! Every round runs both, alternating who goes first; the figure is the
//! median of the per-round ratios (heytom / raw). CPU time (getrusage) and
//! allocations (a counting global allocator) per message are printed for
//! each side.
//!
//! ```text
//! cargo run --release -p heytom-mq --example bench_memory
//! ```
//!
//! Environment: `BENCH_COUNT` (200000), `BENCH_SIZE` (JSON body bytes,
//! 252), `BENCH_ROUNDS` (5), `BENCH_BATCH` (1000); `BENCH_PROFILE=heytom`
//! runs the framework side alone (for a profiler).

#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{allocations, cpu_time, median};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heytom_mq::{Event, InMemoryBroker, InMemoryConsumer, InMemoryProducer, Route};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize, Debug, Clone)]
struct BenchEvent {
    seq: u64,
    data: String,
}

impl Event for BenchEvent {
    const NAME: &'static str = "BenchMemoryEvent";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
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

/// One side's figures for a round.
#[derive(Clone, Copy)]
struct Figures {
    rate: f64,
    cpu_us: f64,
    allocs: f64,
}

async fn measure<F: std::future::Future<Output = Duration>>(count: usize, f: F) -> Figures {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (cpu0, a0) = (cpu_time(), allocations());
    let took = f.await;
    let (cpu1, a1) = (cpu_time(), allocations());
    Figures {
        rate: count as f64 / took.as_secs_f64(),
        cpu_us: (cpu1 - cpu0).as_secs_f64() * 1e6 / count as f64,
        allocs: (a1 - a0) as f64 / count as f64,
    }
}

/// The hand-written loop: serde_json into an mpsc channel, decoded by a task.
async fn raw(events: &[BenchEvent]) -> Duration {
    let count = events.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut n = 0;
        while let Some(body) = rx.recv().await {
            let e: BenchEvent = serde_json::from_slice(&body).expect("decodes");
            std::hint::black_box(e);
            n += 1;
            if n == count {
                break;
            }
        }
    });
    for e in events {
        tx.send(serde_json::to_vec(e).expect("encodes"))
            .expect("receiver alive");
    }
    consumer.await.expect("consumer task");
    start.elapsed()
}

/// heytom-mq: `send_batch` to the in-memory broker, a no-op handler.
async fn heytom(broker: &InMemoryBroker, events: &[BenchEvent], batch: usize) -> Duration {
    let count = events.len();
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let (h, d) = (handled.clone(), all_done.clone());
    let consumer = InMemoryConsumer::new(broker);
    consumer.start().await.expect("starts");
    consumer
        .subscribe(move |e: BenchEvent| {
            std::hint::black_box(e);
            if h.fetch_add(1, Ordering::Relaxed) + 1 == count {
                d.notify_one();
            }
            async {}
        })
        .await
        .expect("subscribes");
    let producer = InMemoryProducer::new(broker);
    let start = Instant::now();
    for chunk in events.chunks(batch.max(1)) {
        producer.send_batch(chunk).await.expect("sent");
    }
    all_done.notified().await;
    let took = start.elapsed();
    consumer.stop().await.expect("stops");
    took
}

#[tokio::main]
async fn main() {
    let count = env_num("BENCH_COUNT", 200_000) as usize;
    let size = env_num("BENCH_SIZE", 252) as usize;
    let rounds = env_num("BENCH_ROUNDS", 5).max(1);
    let batch = env_num("BENCH_BATCH", 1000) as usize;
    let batch_events = events(count, size);
    let body = serde_json::to_vec(&batch_events[0]).map_or(0, |v| v.len());
    println!(
        "in-memory bench: {count} events x {body} B JSON body, send_batch of {batch}, {rounds} rounds \
         (raw: serde_json through a tokio mpsc channel, decoded by a task)"
    );
    let broker = InMemoryBroker::new();
    if std::env::var("BENCH_PROFILE").as_deref() == Ok("heytom") {
        // For perf: the framework side alone.
        for _ in 0..rounds {
            let h = measure(count, heytom(&broker, &batch_events, batch)).await;
            println!(
                "heytom {:.0}/s {:.2}us {:.2} allocs",
                h.rate, h.cpu_us, h.allocs
            );
        }
        return;
    }
    let mut ratios = Vec::new();
    let (mut raw_all, mut hey_all) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (r, h);
        if round % 2 == 1 {
            r = measure(count, raw(&batch_events)).await;
            h = measure(count, heytom(&broker, &batch_events, batch)).await;
        } else {
            h = measure(count, heytom(&broker, &batch_events, batch)).await;
            r = measure(count, raw(&batch_events)).await;
        }
        let ratio = h.rate / r.rate;
        println!(
            "round {round}: raw {:>8.0}/s {:>5.2}us {:>5.2} allocs | heytom {:>8.0}/s {:>5.2}us {:>5.2} allocs | ratio {ratio:.3}",
            r.rate, r.cpu_us, r.allocs, h.rate, h.cpu_us, h.allocs
        );
        ratios.push(ratio);
        raw_all.push(r);
        hey_all.push(h);
    }
    let med =
        |v: &[Figures], f: fn(&Figures) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    println!(
        "median: raw {:.0}/s {:.2} us CPU/msg {:.2} allocs/msg | heytom {:.0}/s {:.2} us CPU/msg {:.2} allocs/msg",
        med(&raw_all, |f| f.rate),
        med(&raw_all, |f| f.cpu_us),
        med(&raw_all, |f| f.allocs),
        med(&hey_all, |f| f.rate),
        med(&hey_all, |f| f.cpu_us),
        med(&hey_all, |f| f.allocs),
    );
    println!(
        "RESULT memory.throughput ratio={:.3} rounds={rounds}",
        median(&mut ratios)
    );
}
