//! What every comparison shares: the payload, the handler counter, CPU time,
//! the per-round figures and the summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Cfg {
    pub count: usize,
    pub kafka_count: usize,
    pub outbox_count: usize,
    pub latency_count: usize,
    pub rounds: usize,
    pub rabbit_url: String,
    pub kafka: Option<String>,
    pub pg_url: String,
    /// Unique per run: every queue, exchange, topic and table name carries it.
    pub run: String,
}

impl Cfg {
    pub fn from_env() -> Self {
        let run = format!(
            "{:x}{:x}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis() % 0xfffff
        );
        Cfg {
            count: env_num("PEERS_COUNT", 20_000) as usize,
            kafka_count: env_num("PEERS_KAFKA_COUNT", 100_000) as usize,
            outbox_count: env_num("PEERS_OUTBOX_COUNT", 4_000) as usize,
            latency_count: env_num("PEERS_LATENCY_COUNT", 200) as usize,
            rounds: env_num("PEERS_ROUNDS", 5).max(1) as usize,
            rabbit_url: std::env::var("HEYTOM_RABBITMQ_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            kafka: std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS").ok(),
            pg_url: std::env::var("HEYTOM_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            run,
        }
    }
}

/// The message both sides send: 252 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    pub seq: u64,
    pub key: String,
    pub data: String,
}

pub const PAYLOAD_BYTES: usize = 252;

pub fn payloads(n: usize) -> Vec<Payload> {
    let probe = serde_json::to_vec(&Payload {
        seq: 10_000,
        key: "key-00".into(),
        data: String::new(),
    })
    .map_or(40, |v| v.len());
    let data = "x".repeat(PAYLOAD_BYTES.saturating_sub(probe));
    (0..n)
        .map(|i| Payload {
            seq: 10_000 + i as u64,
            key: format!("key-{:02}", i % 64),
            data: data.clone(),
        })
        .collect()
}

pub fn payload_len() -> usize {
    serde_json::to_vec(&payloads(1)[0]).map_or(0, |v| v.len())
}

/// CPU time (user + system) of the whole process so far.
pub fn cpu_now() -> Duration {
    // SAFETY: getrusage writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Counts handler calls of the phase running now (one phase at a time).
pub struct Counter {
    handled: AtomicUsize,
    target: AtomicUsize,
    first: Mutex<Option<(Instant, Duration)>>,
    last: Mutex<Option<(Instant, Duration)>>,
    done: Notify,
    record_latency: AtomicBool,
    seen: Mutex<Vec<(u64, Instant)>>,
}

pub static COUNTER: Counter = Counter {
    handled: AtomicUsize::new(0),
    target: AtomicUsize::new(usize::MAX),
    first: Mutex::new(None),
    last: Mutex::new(None),
    done: Notify::const_new(),
    record_latency: AtomicBool::new(false),
    seen: Mutex::new(Vec::new()),
};

impl Counter {
    pub fn reset(&self, target: usize, latency: bool) {
        self.handled.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
        *self.first.lock().unwrap() = None;
        *self.last.lock().unwrap() = None;
        self.record_latency.store(latency, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }

    /// Called by every handler, on both sides.
    pub fn hit(&self, seq: u64) {
        let n = self.handled.fetch_add(1, Ordering::AcqRel);
        if n == 0 {
            *self.first.lock().unwrap() = Some((Instant::now(), cpu_now()));
        }
        if self.record_latency.load(Ordering::Relaxed) {
            self.seen.lock().unwrap().push((seq, Instant::now()));
        }
        if n + 1 == self.target.load(Ordering::Acquire) {
            *self.last.lock().unwrap() = Some((Instant::now(), cpu_now()));
            self.done.notify_one();
        }
    }

    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::Acquire)
    }

    /// Waits until the target is reached; the time from the first handled message to the last.
    pub async fn wait(&self, limit: Duration) -> anyhow::Result<Duration> {
        Ok(self.wait_cpu(limit).await?.0)
    }

    /// Like [`wait`](Self::wait), with the process CPU time spent between the
    /// first handled message and the last.
    pub async fn wait_cpu(&self, limit: Duration) -> anyhow::Result<(Duration, Duration)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((last, last_cpu)) = *self.last.lock().unwrap() {
                let (first, first_cpu) = self.first.lock().unwrap().unwrap_or((last, last_cpu));
                return Ok((last - first, last_cpu.saturating_sub(first_cpu)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "only {} of {} messages handled within {limit:?}",
                    self.handled(),
                    self.target.load(Ordering::Acquire)
                );
            }
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), self.done.notified())
                    .await;
        }
    }

    pub fn seen(&self) -> HashMap<u64, Instant> {
        std::mem::take(&mut *self.seen.lock().unwrap())
            .into_iter()
            .collect()
    }
}

/// One side's figure in one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Side {
    /// msg/s for a rate, ms for a latency.
    pub value: f64,
    /// CPU µs per message over the phase (NaN when not measured).
    pub cpu_us: f64,
}

struct Row {
    name: String,
    unit: &'static str,
    higher_is_better: bool,
    note: String,
    rounds: Vec<(Side, Side)>,
}

impl Row {
    fn ratio(&self, h: Side, r: Side) -> f64 {
        if self.higher_is_better {
            h.value / r.value
        } else {
            r.value / h.value
        }
    }
}

#[derive(Default)]
pub struct Figures {
    rows: Vec<Row>,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figures {
    /// Records one round of `name`; prints the round's line at once.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        name: &str,
        unit: &'static str,
        higher_is_better: bool,
        note: &str,
        round: usize,
        heytom: Side,
        rs: Side,
    ) {
        let idx = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    name: name.to_owned(),
                    unit,
                    higher_is_better,
                    note: note.to_owned(),
                    rounds: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[idx];
        row.rounds.push((heytom, rs));
        println!(
            "  round {round} {name:<40} heytom {:>9.1} {unit} {:>6.1} us/msg | ruststream {:>9.1} {unit} {:>6.1} us/msg | ratio {:.2}",
            heytom.value,
            heytom.cpu_us,
            rs.value,
            rs.cpu_us,
            row.ratio(heytom, rs)
        );
    }

    pub fn print_summary(&self, _default_rounds: usize) {
        println!();
        println!("summary (ratio = heytom/ruststream for rates, ruststream/heytom for latencies: > 1 means heytom is ahead)");
        println!(
            "| figure | rounds' ratios | median ratio | heytom median | ruststream median | CPU us/msg heytom / ruststream | note |"
        );
        println!("|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let ratios: Vec<f64> = row.rounds.iter().map(|(h, r)| row.ratio(*h, *r)).collect();
            let list = ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ");
            let hv = median(row.rounds.iter().map(|(h, _)| h.value).collect());
            let rv = median(row.rounds.iter().map(|(_, r)| r.value).collect());
            let hc = median(row.rounds.iter().map(|(h, _)| h.cpu_us).collect());
            let rc = median(row.rounds.iter().map(|(_, r)| r.cpu_us).collect());
            let cpu = if hc.is_nan() && rc.is_nan() {
                "-".to_owned()
            } else {
                format!("{hc:.1} / {rc:.1}")
            };
            println!(
                "| {} | {list} | {:.2} | {hv:.1} {u} | {rv:.1} {u} | {cpu} | {} |",
                row.name,
                median(ratios.clone()),
                row.note,
                u = row.unit
            );
        }
        println!();
        for row in &self.rows {
            let ratios: Vec<f64> = row.rounds.iter().map(|(h, r)| row.ratio(*h, *r)).collect();
            println!(
                "RESULT {} ratio={:.3} rounds={}",
                row.name,
                median(ratios),
                row.rounds.len()
            );
        }
    }
}

/// Runs a phase, returning its duration and the CPU µs per message it cost.
pub async fn measured<F, T>(count: usize, f: F) -> anyhow::Result<(T, f64)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let c0 = cpu_now();
    let out = f.await?;
    let cpu = (cpu_now() - c0).as_secs_f64() * 1e6 / count as f64;
    Ok((out, cpu))
}

pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// The metadata heytom's envelope carries, as plain string headers, for
/// ruststream's "same metadata" runs: event id (UUID v7), name, occurred-at,
/// correlation id.
pub fn heytom_like_headers(name: &str) -> [(&'static str, String); 4] {
    let id = uuid::Uuid::now_v7().to_string();
    [
        ("heytom-event-id", id.clone()),
        ("heytom-event-name", name.to_owned()),
        ("heytom-occurred-at", chrono::Utc::now().to_rfc3339()),
        ("correlation-id", id),
    ]
}
