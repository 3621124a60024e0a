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
use heytom_mq::{
    HandlerEntry, LocalMessageRetryOptions, MessageStatus, RabbitMqOptions, RunningApp,
};
use serde::{Deserialize, Serialize};
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

/// One broker-breaking test at a time.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbit_url() -> String {
    std::env::var("HEYTOM_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn pg_url() -> String {
    std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The PostgreSQL pool, or `None` (a notice) when the server is missing and
/// services are not required.
async fn pg() -> Option<sqlx::PgPool> {
    match sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&pg_url())
        .await
    {
        Ok(p) => Some(p),
        Err(e) if require_services() => {
            panic!("PostgreSQL unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: PostgreSQL unreachable ({e}); skipping this test");
            None
        }
    }
}

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

fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

fn rabbit() -> RabbitMqOptions {
    RabbitMqOptions::new(rabbit_url())
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .publish_timeout(Duration::from_secs(30))
}

/// Deliveries per event id, as a consumer app saw them.
type Seen = Arc<Mutex<HashMap<EventId, usize>>>;

struct Count(Seen);

impl<E: Event> EventHandler<E> for Count {
    async fn handle(&self, _event: E, ctx: Context) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(ctx.event_id()).or_default() += 1;
        Ok(())
    }
}

/// A consumer app counting the deliveries of `E`; its queue is purged first.
async fn counter<E: Event>() -> (RunningApp, Seen) {
    let seen = Seen::default();
    let app = App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<E, Count>(
            "count",
            Count(seen.clone()),
        ))
        .start()
        .await
        .expect("consumer app");
    let conn = lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = E::route().as_rabbitmq().unwrap().queue_name.unwrap();
    ch.queue_purge(queue.into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    seen.lock().unwrap().clear();
    (app, seen)
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
