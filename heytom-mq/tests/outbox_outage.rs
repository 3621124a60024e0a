//! The local message table's promise under broker trouble, on PostgreSQL
//! and the real RabbitMQ: a committed event is delivered once, without an
//! operator, whatever the broker does.
//!
//! These tests break the broker on purpose (`rabbitmqctl
//! set_vm_memory_high_watermark` to block publishers, `rabbitmqctl
//! stop_app`), one at a time, and restore it in a guard even when they
//! fail. They count what arrived at a consumer app.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{HandlerEntry, LocalMessageRetryOptions, MessageStatus, RunningApp};
use serde::{Deserialize, Serialize};

mod outage_support;
use outage_support::{counter, pg, rabbit, rabbit_url, require_services, unique, Count, Seen};
use sqlx::AssertSqlSafe;

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "outage.blocked",
    exchange = "heytom.outage.test",
    exchange_type = "topic",
    queue_name = "heytom.outage.blocked",
    durable = true
)]
struct BlockedEvent {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "outage.held",
    exchange = "heytom.outage.test",
    exchange_type = "topic",
    queue_name = "heytom.outage.held",
    durable = true
)]
struct HeldEvent {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "outage.stopped",
    exchange = "heytom.outage.test",
    exchange_type = "topic",
    queue_name = "heytom.outage.stopped",
    durable = true
)]
struct StoppedEvent {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(topic = "heytom-outage-kafka-side", session_timeout_ms = 6000)]
struct KafkaSide {
    n: u32,
}

/// Warnings logged by this test binary (the relay's state changes).
fn warnings() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Captured(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("heytom_mq=info"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buf
    })
}

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many lines logged so far contain all of `parts`.
fn logged_lines(parts: &[&str]) -> usize {
    let bytes = warnings().lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// One broker-breaking test at a time.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn rabbit_up() -> bool {
    match lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            true
        }
        Err(e) if require_services() => {
            panic!("RabbitMQ unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: RabbitMQ unreachable ({e}); skipping this test");
            false
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed for the broker under test");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Blocks publishers with a memory alarm; the guard restores the
/// watermark the broker had, also when the test fails.
struct BlockPublishers {
    restore: String,
}

impl BlockPublishers {
    fn on() -> Self {
        let current = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
        let restore = parse_watermark(current.trim());
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.00001"]);
        BlockPublishers { restore }
    }
}

/// `0.4`, `{relative,0.4}` or `{absolute,N}` as `rabbitmqctl
/// set_vm_memory_high_watermark` arguments.
fn parse_watermark(v: &str) -> String {
    let v = v.trim_matches(|c| c == '{' || c == '}');
    match v.split_once(',') {
        Some(("absolute", n)) => format!("absolute {n}"),
        Some((_, n)) => n.to_owned(),
        None if v.parse::<f64>().is_ok() => v.to_owned(),
        None => "0.4".to_owned(),
    }
}

impl Drop for BlockPublishers {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.restore.split(' '));
        let _ = std::process::Command::new("rabbitmqctl")
            .args(&args)
            .output();
    }
}

/// `rabbitmqctl start_app` when dropped, also when the test fails.
struct StartApp;

impl Drop for StartApp {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

/// A producing app with the outbox on `table`: a 1 s lease, a 200 ms scan.
async fn producer_app(pool: &sqlx::PgPool, table: &str, retries: u32) -> RunningApp {
    App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .outbox(
            Outbox::postgres(pool.clone())
                .table_name(table)
                .dispatch_lease(Duration::from_secs(1)),
        )
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            max_retry_count: retries,
            ..Default::default()
        })
        .start()
        .await
        .expect("producer app")
}

/// Commits `count` events, one per transaction, spread over `apps`.
async fn commit_all<E: Event + Sync>(
    pool: &sqlx::PgPool,
    apps: &[&RunningApp],
    count: u32,
    event: impl Fn(u32) -> E,
) {
    let mut commits = Vec::new();
    for n in 0..count {
        let producer = apps[n as usize % apps.len()].producer();
        let (pool, e) = (pool.clone(), event(n));
        commits.push(tokio::spawn(async move {
            let mut tx = producer.begin(&pool).await.unwrap();
            tx.publish(&e).await.unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for c in commits {
        c.await.unwrap();
    }
}

/// Waits until `want` distinct ids arrived (or `timeout`), then a little
/// longer for late duplicates; returns (distinct, total deliveries).
async fn settle(seen: &Seen, want: usize, timeout: Duration) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.lock().unwrap().len() < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything sent twice arrives within a few leases.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = seen.lock().unwrap();
    (s.len(), s.values().sum())
}

async fn statuses(pool: &sqlx::PgPool, table: &str) -> HashMap<i32, i64> {
    let sql = format!("SELECT Status, COUNT(*) FROM {table} GROUP BY Status");
    sqlx::query_as::<_, (i32, i64)>(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn drop_table(pool: &sqlx::PgPool, table: &str) {
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(pool)
        .await;
}

/// Two apps on one table, RabbitMQ blocking publishers for 4 s (four
/// leases) while 200 rows are committed: each is delivered exactly once.
/// Before the fencing, the second app's scanner took over every row whose
/// lease ran out during the blocked send, and each arrived twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_blocking_publishers_longer_than_the_lease_sends_each_row_once() {
    let _x = EXCLUSIVE.lock().await;
    let Some(pool) = pg().await else { return };
    if !rabbit_up().await {
        return;
    }
    let table = format!("OutageBlocked_{}", unique());
    let (consumer, seen) = counter::<BlockedEvent>().await;
    let a = producer_app(&pool, &table, 5).await;
    let b = producer_app(&pool, &table, 5).await;
    let block = BlockPublishers::on();
    commit_all(&pool, &[&a, &b], 200, |n| BlockedEvent { n }).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(block);
    let (distinct, total) = settle(&seen, 200, Duration::from_secs(60)).await;
    let counts = statuses(&pool, &table).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    drop_table(&pool, &table).await;
    assert_eq!(distinct, 200, "every committed row arrived");
    assert_eq!(total, 200, "no row arrived twice");
    assert_eq!(counts.get(&(MessageStatus::Sent as i32)), Some(&200));
}

/// A business transaction held open for two leases: its row is delivered
/// once, although the lease taken at the insert ran out before the commit
/// and both apps' scanners race the post-commit sender for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_held_open_past_the_lease_is_delivered_once() {
    let _x = EXCLUSIVE.lock().await;
    let Some(pool) = pg().await else { return };
    if !rabbit_up().await {
        return;
    }
    let table = format!("OutageHeld_{}", unique());
    let (consumer, seen) = counter::<HeldEvent>().await;
    let a = producer_app(&pool, &table, 5).await;
    let b = producer_app(&pool, &table, 5).await;
    let mut held = Vec::new();
    for n in 0..20u32 {
        let (producer, pool) = (a.producer(), pool.clone());
        held.push(tokio::spawn(async move {
            let mut tx = producer.begin(&pool).await.unwrap();
            tx.publish(&HeldEvent { n }).await.unwrap();
            // Two leases, plus a little spread so commits meet scans.
            tokio::time::sleep(Duration::from_millis(2000 + 37 * u64::from(n))).await;
            tx.commit().await.unwrap();
        }));
    }
    for h in held {
        h.await.unwrap();
    }
    let (distinct, total) = settle(&seen, 20, Duration::from_secs(30)).await;
    let counts = statuses(&pool, &table).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    drop_table(&pool, &table).await;
    assert_eq!(distinct, 20, "every committed row arrived");
    assert_eq!(total, 20, "no row arrived twice");
    assert_eq!(counts.get(&(MessageStatus::Sent as i32)), Some(&20));
}

/// RabbitMQ stopped for 45 s, longer than the whole retry budget (5
/// retries, 2 s backoff doubling: about 30 s), while rows are committed:
/// once it is back every row is delivered and none is Failed. Before,
/// "connection refused" counted as a failed attempt and every row ended
/// Failed with RetryCount 5, delivered by nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_the_retry_budget_strands_no_row() {
    let _x = EXCLUSIVE.lock().await;
    let Some(pool) = pg().await else { return };
    if !rabbit_up().await {
        return;
    }
    let table = format!("OutageStopped_{}", unique());
    let (consumer, seen) = counter::<StoppedEvent>().await;
    let app = producer_app(&pool, &table, 5).await;
    let restart = StartApp;
    rabbitmqctl(&["stop_app"]);
    // Rows committed at the start of the outage, then more during it.
    commit_all(&pool, &[&app], 100, |n| StoppedEvent { n }).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    commit_all(&pool, &[&app], 100, |n| StoppedEvent { n: 100 + n }).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let during = statuses(&pool, &table).await;
    drop(restart);
    let (distinct, total) = settle(&seen, 200, Duration::from_secs(90)).await;
    let after = statuses(&pool, &table).await;
    app.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    let retries: Vec<(i32,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT MAX(RetryCount) FROM {table}"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    drop_table(&pool, &table).await;
    assert_eq!(
        during.get(&(MessageStatus::Failed as i32)),
        None,
        "nothing Failed during the outage: {during:?}"
    );
    assert_eq!(distinct, 200, "every committed row arrived: {after:?}");
    assert_eq!(total, 200, "no row arrived twice");
    assert_eq!(
        after.get(&(MessageStatus::Sent as i32)),
        Some(&200),
        "{after:?}"
    );
    assert_eq!(
        retries,
        vec![(0,)],
        "an unavailable broker uses up no retry"
    );
}

fn kafka_servers() -> Option<String> {
    match std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
        Ok(s) => Some(s),
        Err(_) if require_services() => panic!(
            "HEYTOM_KAFKA_BOOTSTRAP_SERVERS unset and HEYTOM_TEST_REQUIRE_SERVICES=1 (scripts/kafka-broker.sh start)"
        ),
        Err(_) => {
            eprintln!("NOTICE: HEYTOM_KAFKA_BOOTSTRAP_SERVERS unset; skipping this test");
            None
        }
    }
}

/// One transport down is one transport's business: with RabbitMQ stopped
/// while events for RabbitMQ and Kafka are committed side by side, the
/// Kafka events are delivered while RabbitMQ is down, the relay logs
/// RabbitMQ going away once and coming back once (not once per Kafka
/// confirmation in between), and the RabbitMQ rows arrive once it is back.
/// The soak found the relay's availability shared by all transports: every
/// confirmed Kafka row declared RabbitMQ available again, restarting its
/// backoff and repeating the warning (23–79 times per run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transport_down_does_not_hold_back_another() {
    let _x = EXCLUSIVE.lock().await;
    warnings();
    let Some(pool) = pg().await else { return };
    let Some(servers) = kafka_servers() else {
        return;
    };
    if !rabbit_up().await {
        return;
    }
    let table = format!("OutageMixed_{}", unique());
    let (rabbit_consumer, rabbit_seen) = counter::<StoppedEvent>().await;
    let kafka_seen = Seen::default();
    let kafka_consumer = App::builder()
        .kafka(heytom_mq::KafkaOptions::new(&servers).group_id(format!("outage-{}", unique())))
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<KafkaSide, Count>(
            "count",
            Count(kafka_seen.clone()),
        ))
        .start()
        .await
        .expect("kafka consumer app");
    let app = App::builder()
        .rabbitmq(rabbit())
        .kafka(heytom_mq::KafkaOptions::new(&servers))
        .discover(false)
        .outbox(
            Outbox::postgres(pool.clone())
                .table_name(&table)
                .dispatch_lease(Duration::from_secs(1)),
        )
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            ..Default::default()
        })
        .start()
        .await
        .expect("producer app");
    // The Kafka consumer is assigned, and has read what earlier runs left in
    // the topic (one partition, in order), once this first event arrives.
    let first = app
        .producer()
        .send_with_transaction(&pool, |_tx| Box::pin(async { Ok(KafkaSide { n: 0 }) }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !kafka_seen.lock().unwrap().contains_key(&first) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Kafka consumer never assigned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kafka_before = kafka_seen.lock().unwrap().len();
    let gone = ["transport unavailable", "RabbitMQ"];
    let back = ["transport available again", "RabbitMQ"];
    let (gone_before, back_before) = (logged_lines(&gone), logged_lines(&back));
    let restart = StartApp;
    rabbitmqctl(&["stop_app"]);
    // 12 s of side-by-side traffic: a RabbitMQ and a Kafka event every 200 ms.
    for n in 0..60u32 {
        commit_all(&pool, &[&app], 1, |_| StoppedEvent { n }).await;
        commit_all(&pool, &[&app], 1, |_| KafkaSide { n: 1 + n }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while kafka_seen.lock().unwrap().len() < kafka_before + 60
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kafka_during = kafka_seen.lock().unwrap().len() - kafka_before;
    let rabbit_during = rabbit_seen.lock().unwrap().len();
    let gone_during = logged_lines(&gone) - gone_before;
    drop(restart);
    let (rabbit_delivered, rabbit_total) = settle(&rabbit_seen, 60, Duration::from_secs(60)).await;
    let back_after = logged_lines(&back) - back_before;
    let counts = statuses(&pool, &table).await;
    app.shutdown().await.unwrap();
    kafka_consumer.shutdown().await.unwrap();
    rabbit_consumer.shutdown().await.unwrap();
    drop_table(&pool, &table).await;
    assert_eq!(rabbit_during, 0, "RabbitMQ was down");
    assert_eq!(
        kafka_during, 60,
        "Kafka events went out while RabbitMQ was down"
    );
    assert_eq!(gone_during, 1, "RabbitMQ going away is logged once");
    assert_eq!(back_after, 1, "RabbitMQ coming back is logged once");
    assert_eq!(
        (rabbit_delivered, rabbit_total),
        (60, 60),
        "RabbitMQ rows once it was back"
    );
    assert_eq!(
        counts.get(&(MessageStatus::Sent as i32)),
        Some(&121),
        "{counts:?}"
    );
}

/// Stops the Kafka-protocol broker this test suite runs (tansu, started by
/// `scripts/kafka-broker.sh`) with SIGSTOP: a broker that hangs rather than
/// refuses. The guard sends SIGCONT, also when the test fails.
struct StallKafka(String);

impl StallKafka {
    fn on(servers: &str) -> Option<Self> {
        let port = servers.rsplit(':').next().unwrap_or_default();
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
        let pidfile = format!("{dir}/heytom-tansu-{port}.pid");
        let pid = match std::fs::read_to_string(&pidfile) {
            Ok(p) => p.trim().to_owned(),
            Err(e) if require_services() => panic!(
                "no {pidfile} ({e}): this test stalls the broker scripts/kafka-broker.sh started"
            ),
            Err(_) => {
                eprintln!("NOTICE: {pidfile} missing (not our broker); skipping this test");
                return None;
            }
        };
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        Some(StallKafka(pid))
    }
}

impl Drop for StallKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// A broker that hangs holds up its own rows only: with the Kafka broker
/// stalled (SIGSTOP) while RabbitMQ and Kafka events are committed side by
/// side, the RabbitMQ events are delivered during the stall, and the Kafka
/// ones after it. (The soak saw RabbitMQ deliveries fall behind during
/// Kafka stalls: one relay pipeline for every transport.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_transport_does_not_hold_up_another() {
    let _x = EXCLUSIVE.lock().await;
    let Some(pool) = pg().await else { return };
    let Some(servers) = kafka_servers() else {
        return;
    };
    if !rabbit_up().await {
        return;
    }
    let table = format!("OutageHung_{}", unique());
    let (rabbit_consumer, rabbit_seen) = counter::<BlockedEvent>().await;
    let app = App::builder()
        .rabbitmq(rabbit())
        .kafka(heytom_mq::KafkaOptions::new(&servers))
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).table_name(&table))
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_millis(200),
            ..Default::default()
        })
        .start()
        .await
        .expect("producer app");
    // The Kafka producer is connected (and the topic made) before the stall.
    app.producer()
        .send_with_transaction(&pool, |_tx| Box::pin(async { Ok(KafkaSide { n: 0 }) }))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while statuses(&pool, &table)
        .await
        .get(&(MessageStatus::Sent as i32))
        != Some(&1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first Kafka row never sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(stall) = StallKafka::on(&servers) else {
        return;
    };
    // 4 s of side-by-side traffic into the hung Kafka and the healthy RabbitMQ.
    for n in 0..20u32 {
        commit_all(&pool, &[&app], 1, |_| KafkaSide { n: 1 + n }).await;
        commit_all(&pool, &[&app], 1, |_| BlockedEvent { n }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while rabbit_seen.lock().unwrap().len() < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rabbit_during = rabbit_seen.lock().unwrap().len();
    drop(stall);
    // The Kafka rows go out once the broker answers again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while statuses(&pool, &table)
        .await
        .get(&(MessageStatus::Sent as i32))
        != Some(&41)
    {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = statuses(&pool, &table).await;
    app.shutdown().await.unwrap();
    rabbit_consumer.shutdown().await.unwrap();
    drop_table(&pool, &table).await;
    assert_eq!(
        rabbit_during, 20,
        "RabbitMQ events went out while Kafka hung"
    );
    assert_eq!(
        counts.get(&(MessageStatus::Sent as i32)),
        Some(&41),
        "{counts:?}"
    );
}
