//! Local message table (transactional outbox) on PostgreSQL, MariaDB/MySQL
//! and SQLite. One suite, instantiated per database by `outbox_suite!`.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `HEYTOM_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`); SQLite uses files in the
//! temp dir. Unreachable servers skip with a notice, or fail when
//! `HEYTOM_TEST_REQUIRE_SERVICES=1`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use heytom_mq::prelude::*;
use heytom_mq::{
    Error, HandlerEntry, InMemoryConsumer, InMemoryTransport, LocalMessage, LocalMessageRepository,
    MessageStatus, Outgoing, Subscription, SubscriptionHandle, Transport, TransportKind,
};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

// ---------------------------------------------------------------- events

#[derive(Serialize, Deserialize, Debug, Clone)]
struct OrderPlaced {
    n: u64,
}

impl Event for OrderPlaced {
    const NAME: &'static str = "OutboxTestOrderPlaced";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration { name: OrderPlaced::NAME, route: OrderPlaced::route }
}

/// Never registered: the relay must refuse it.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Unregistered;

impl Event for Unregistered {
    const NAME: &'static str = "OutboxTestUnregistered";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------- helpers

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn unavailable(what: &str, err: impl std::fmt::Display) {
    if require_services() {
        panic!("{what} unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {err}");
    }
    eprintln!("NOTICE: {what} unreachable ({err}); skipping this test");
}

fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 12..].to_owned()
}

fn pg_url() -> String {
    std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn mysql_url() -> String {
    std::env::var("HEYTOM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("heytom-outbox-test-{}.db", unique()));
    format!("sqlite://{}", path.display())
}

async fn pg_connect(url: &str) -> Option<sqlx::PgPool> {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(url),
    )
    .await;
    match r {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            unavailable("PostgreSQL", e);
            None
        }
        Err(e) => {
            unavailable("PostgreSQL", e);
            None
        }
    }
}

async fn mysql_connect(url: &str) -> Option<sqlx::MySqlPool> {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(10)
            .connect(url),
    )
    .await;
    match r {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            unavailable("MariaDB/MySQL", e);
            None
        }
        Err(e) => {
            unavailable("MariaDB/MySQL", e);
            None
        }
    }
}

async fn sqlite_connect(url: &str) -> Option<sqlx::SqlitePool> {
    use std::str::FromStr;
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .expect("test sqlite url")
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    match sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
    {
        Ok(p) => Some(p),
        Err(e) => {
            unavailable("SQLite", e);
            None
        }
    }
}

/// Collects the `n` of every delivered `OrderPlaced`.
#[derive(Clone, Default)]
struct Delivered(Arc<Mutex<Vec<u64>>>);

impl Delivered {
    fn all(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.all();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_exactly_once(&self, expected: &[u64]) {
        let got = self.all();
        let set: HashSet<u64> = got.iter().copied().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "duplicates delivered: {} deliveries of {} ids",
            got.len(),
            set.len()
        );
        let want: HashSet<u64> = expected.iter().copied().collect();
        assert_eq!(
            set,
            want,
            "delivered set differs (got {}, want {})",
            set.len(),
            want.len()
        );
    }
}

/// A consumer of `OrderPlaced` on `broker`.
async fn consume(broker: &InMemoryBroker) -> (InMemoryConsumer, Delivered) {
    let delivered = Delivered::default();
    let consumer = InMemoryConsumer::new(broker);
    consumer.start().await.unwrap();
    let d = delivered.clone();
    consumer
        .subscribe(move |e: OrderPlaced| {
            let d = d.clone();
            async move {
                d.0.lock().unwrap().push(e.n);
                true
            }
        })
        .await
        .unwrap();
    (consumer, delivered)
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An in-memory transport that fails every publish while "the broker is down".
struct FlakyTransport {
    inner: InMemoryTransport,
    down: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    /// Ids of confirmed publishes, in order.
    log: Arc<Mutex<Vec<uuid::Uuid>>>,
}

#[async_trait]
impl Transport for FlakyTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::InMemory
    }
    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.inner.group_for(handler)
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::publish(&message.envelope.name, "broker down (test)"));
        }
        self.inner.publish(message).await?;
        self.log.lock().unwrap().push(message.envelope.id);
        Ok(())
    }
    async fn subscribe(&self, sub: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        self.inner.subscribe(sub).await
    }
}

fn flaky(
    broker: &InMemoryBroker,
    down: bool,
) -> (Arc<FlakyTransport>, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let d = Arc::new(AtomicBool::new(down));
    let a = Arc::new(AtomicUsize::new(0));
    (
        Arc::new(FlakyTransport {
            inner: InMemoryTransport::new(broker.clone()),
            down: d.clone(),
            attempts: a.clone(),
            log: Arc::default(),
        }),
        d,
        a,
    )
}

fn fast_retry() -> LocalMessageRetryOptions {
    LocalMessageRetryOptions {
        scan_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

fn body(n: u64) -> String {
    serde_json::to_string(&OrderPlaced { n }).unwrap()
}

fn migration(db: &str, file: &str, table: &str) -> Vec<String> {
    let path = format!("{}/../migrations/{db}/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("LocalMessages", table);
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------- the suite

macro_rules! outbox_suite {
    ($module:ident, $db:ty, $name:literal, $url:path, $connect:path, $outbox:path, $ph:literal, $q:literal) => {
        mod $module {
            use super::*;

            type Db = $db;

            struct Fixture {
                url: String,
                pool: sqlx::Pool<Db>,
                table: String,
                biz: String,
            }

            impl Fixture {
                async fn new() -> Option<Fixture> {
                    let url = $url();
                    let pool = $connect(&url).await?;
                    let id = unique();
                    let f = Fixture {
                        url,
                        pool,
                        table: format!("LocalMessages_{id}"),
                        biz: format!("biz_orders_{id}"),
                    };
                    f.exec(&format!("CREATE TABLE {} (id BIGINT PRIMARY KEY)", f.biz)).await;
                    Some(f)
                }

                async fn exec(&self, sql: &str) {
                    sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                }

                fn insert_sql(&self) -> String {
                    format!("INSERT INTO {} (id) VALUES ({})", self.biz, $ph)
                }

                async fn biz_count(&self) -> i64 {
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", self.biz)))
                        .fetch_one(&self.pool)
                        .await
                        .unwrap()
                }

                fn outbox(&self) -> Outbox {
                    $outbox(self.pool.clone())
                        .table_name(&self.table)
                        .retry_backoff(Duration::from_millis(50))
                        .max_retry_backoff(Duration::from_millis(200))
                }

                fn app(&self, broker: &InMemoryBroker, outbox: Outbox) -> heytom_mq::AppBuilder {
                    App::builder()
                        .in_memory_broker(broker.clone())
                        .discover(false)
                        .outbox(outbox)
                        .local_message_retry(fast_retry())
                }

                /// Writes a Pending row by hand, with the original table's
                /// columns only (as code before heytom-mq did).
                async fn insert_by_hand(&self, row: &LocalMessage, retry_count: i32) {
                    let insert = format!(
                        "INSERT INTO {q}{t}{q} ({q}Id{q}, {q}MQType{q}, {q}Topic{q}, {q}MessageType{q}, {q}MessageBody{q}, {q}Status{q}, {q}CreatedAt{q}, {q}RetryCount{q}) VALUES ({}, 'InMemory', 't', {}, {}, 0, {}, {})",
                        if $name == "postgres" { "$1::uuid" } else { $ph },
                        if $name == "postgres" { "$2" } else { "?" },
                        if $name == "postgres" { "$3" } else { "?" },
                        if $name == "postgres" { "$4" } else { "?" },
                        if $name == "postgres" { "$5" } else { "?" },
                        q = $q,
                        t = self.table
                    );
                    sqlx::query(AssertSqlSafe(insert))
                        .bind(row.id.to_string())
                        .bind(&row.message_type)
                        .bind(&row.message_body)
                        .bind(row.created_at)
                        .bind(retry_count)
                        .execute(&self.pool)
                        .await
                        .unwrap();
                }

                /// Commits one business row and one event.
                async fn commit(&self, producer: &Producer, n: u64) -> heytom_mq::Result<EventId> {
                    let sql = self.insert_sql();
                    producer
                        .send_with_transaction(&self.pool, move |tx| {
                            Box::pin(async move {
                                sqlx::query(AssertSqlSafe(sql.clone())).bind(n as i64).execute(&mut **tx).await?;
                                Ok(OrderPlaced { n })
                            })
                        })
                        .await
                }

                async fn drop_tables(self) {
                    self.exec(&format!("DROP TABLE IF EXISTS {}", self.biz)).await;
                    self.exec(&format!("DROP TABLE IF EXISTS {q}{}{q}", self.table, q = $q)).await;
                    self.pool.close().await;
                    if let Some(path) = self.url.strip_prefix("sqlite://") {
                        for suffix in ["", "-wal", "-shm"] {
                            let _ = std::fs::remove_file(format!("{path}{suffix}"));
                        }
                    }
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_delivers_exactly_once() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                let producer = app.producer();

                let id = f.commit(&producer, 1).await.unwrap();
                // The same through begin / publish / commit.
                let mut tx = producer.begin(&f.pool).await.unwrap();
                sqlx::query(AssertSqlSafe(f.insert_sql().clone())).bind(2i64).execute(&mut **tx).await.unwrap();
                let id2 = tx.publish(&OrderPlaced { n: 2 }).await.unwrap();
                tx.commit().await.unwrap();

                delivered.wait_for(2, Duration::from_secs(10)).await;
                // Several scans later there is still exactly one delivery each.
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivered.assert_exactly_once(&[1, 2]);
                assert_eq!(f.biz_count().await, 2);
                let outbox = f.outbox();
                for id in [id, id2] {
                    let outbox = outbox.clone();
                    eventually("row marked Sent", Duration::from_secs(5), move || {
                        let outbox = outbox.clone();
                        async move { outbox.message(id).await.unwrap().is_some_and(|m| m.status == MessageStatus::Sent) }
                    })
                    .await;
                }
                let row = outbox.message(id).await.unwrap().unwrap();
                assert_eq!(row.message_type, OrderPlaced::NAME);
                assert_eq!(row.retry_count, 0);
                assert!(row.headers.unwrap().contains("correlation-id"));
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rollback_error_panic_and_drop_send_nothing() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                let producer = app.producer();

                // Rollback.
                let mut tx = producer.begin(&f.pool).await.unwrap();
                sqlx::query(AssertSqlSafe(f.insert_sql().clone())).bind(10i64).execute(&mut **tx).await.unwrap();
                tx.publish(&OrderPlaced { n: 10 }).await.unwrap();
                tx.rollback().await.unwrap();

                // Drop.
                let mut tx = producer.begin(&f.pool).await.unwrap();
                sqlx::query(AssertSqlSafe(f.insert_sql().clone())).bind(11i64).execute(&mut **tx).await.unwrap();
                tx.publish_batch(&[OrderPlaced { n: 11 }, OrderPlaced { n: 12 }]).await.unwrap();
                drop(tx);

                // The closure returns an error.
                let sql = f.insert_sql();
                let err = producer
                    .send_with_transaction(&f.pool, move |tx| {
                        Box::pin(async move {
                            sqlx::query(AssertSqlSafe(sql.clone())).bind(13i64).execute(&mut **tx).await?;
                            Err::<OrderPlaced, BoxError>("business rule violated".into())
                        })
                    })
                    .await
                    .unwrap_err();
                assert!(matches!(err, Error::Transaction(_)), "{err:?}");
                assert!(err.to_string().contains("business rule violated"));

                // The closure panics.
                let (p, pool, sql) = (producer.clone(), f.pool.clone(), f.insert_sql());
                let joined = tokio::spawn(async move {
                    p.send_with_transaction(&pool, move |tx| {
                        Box::pin(async move {
                            sqlx::query(AssertSqlSafe(sql.clone())).bind(14i64).execute(&mut **tx).await?;
                            if tx.is_some_and_panics() {
                                panic!("handler bug");
                            }
                            Ok(OrderPlaced { n: 14 })
                        })
                    })
                    .await
                })
                .await;
                assert!(joined.unwrap_err().is_panic());

                // An event type the relay does not know is refused at publish.
                let mut tx = producer.begin(&f.pool).await.unwrap();
                let err = tx.publish(&Unregistered).await.unwrap_err();
                assert!(err.to_string().contains("not registered"), "{err}");
                tx.rollback().await.unwrap();

                // A marker proves the relay runs; then a few more scans.
                f.commit(&producer, 99).await.unwrap();
                delivered.wait_for(1, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivered.assert_exactly_once(&[99]);
                assert_eq!(f.biz_count().await, 1);
                let counts = f.outbox().status_counts().await.unwrap();
                assert_eq!(counts.pending + counts.sent + counts.failed + counts.other, 1, "{counts:?}");
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch_is_delivered() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                let producer = app.producer();

                let sql = f.insert_sql();
                let ids = producer
                    .send_batch_with_transaction(&f.pool, move |tx| {
                        Box::pin(async move {
                            sqlx::query(AssertSqlSafe(sql.clone())).bind(1i64).execute(&mut **tx).await?;
                            Ok((0..50).map(|n| OrderPlaced { n }).collect::<Vec<_>>())
                        })
                    })
                    .await
                    .unwrap();
                assert_eq!(ids.len(), 50);
                let mut tx = producer.begin(&f.pool).await.unwrap();
                let more: Vec<OrderPlaced> = (50..1500).map(|n| OrderPlaced { n }).collect();
                assert_eq!(tx.publish_batch(&more).await.unwrap().len(), 1450);
                tx.commit().await.unwrap();

                delivered.wait_for(1500, Duration::from_secs(20)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&(0..1500).collect::<Vec<_>>());
                let outbox = f.outbox();
                eventually("all rows Sent", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().sent == 1500 }
                })
                .await;
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn broker_down_at_commit_then_scanner_delivers() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let (transport, down, _) = flaky(&broker, true);
                let app = f.app(&broker, f.outbox()).transport(transport).start().await.unwrap();
                let producer = app.producer();

                for n in 0..20 {
                    f.commit(&producer, n).await.unwrap();
                }
                let outbox = f.outbox();
                eventually("rows Failed with the broker's error", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().failed == 20 }
                })
                .await;
                let failed = outbox.failed_messages(100).await.unwrap();
                assert_eq!(failed.len(), 20);
                assert!(failed.iter().all(|m| m.retry_count >= 1
                    && m.error_message.as_deref().is_some_and(|e| e.contains("broker down"))));
                assert!(delivered.all().is_empty());

                down.store(false, Ordering::SeqCst);
                delivered.wait_for(20, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                delivered.assert_exactly_once(&(0..20).collect::<Vec<_>>());
                eventually("all rows Sent", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().sent == 20 }
                })
                .await;
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn crash_after_commit_is_delivered_by_a_new_app() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                // The "crashed" process: commits, never dispatches, no scanner.
                let crashed = f
                    .app(&broker, f.outbox().dispatch_after_commit(false))
                    .local_message_retry(LocalMessageRetryOptions { enabled: false, ..fast_retry() })
                    .start()
                    .await
                    .unwrap();
                for n in 0..10 {
                    f.commit(&crashed.producer(), n).await.unwrap();
                }
                crashed.shutdown().await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(delivered.all().is_empty());
                assert_eq!(f.outbox().status_counts().await.unwrap().pending, 10);

                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                delivered.wait_for(10, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&(0..10).collect::<Vec<_>>());
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dispatch_off_wakes_this_instances_scanner_at_commit() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                // One scan at start, the next one ten minutes later: only the
                // commit's wake-up can send the rows in time.
                let app = f
                    .app(&broker, f.outbox().dispatch_after_commit(false))
                    .local_message_retry(LocalMessageRetryOptions {
                        scan_interval: Duration::from_secs(600),
                        ..Default::default()
                    })
                    .start()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                for n in 0..3 {
                    f.commit(&app.producer(), n).await.unwrap();
                }
                delivered.wait_for(3, Duration::from_secs(10)).await;
                delivered.assert_exactly_once(&[0, 1, 2]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_apps_on_one_table_deliver_each_exactly_once() {
                let Some(f) = Fixture::new().await else { return };
                let Some(pool2) = $connect(&f.url).await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                f.outbox().ensure_table().await.unwrap();
                // 3,000 rows left by a crashed writer, due now: both scanners compete for them.
                let rows: Vec<LocalMessage> = (0..3000).map(|n| LocalMessage::pending(OrderPlaced::NAME, body(n))).collect();
                f.outbox().save_batch(&rows).await.unwrap();

                let retry = LocalMessageRetryOptions { batch_size: 50, scan_interval: Duration::from_millis(50), ..Default::default() };
                let a = f.app(&broker, f.outbox()).local_message_retry(retry.clone()).start().await.unwrap();
                let b = f
                    .app(&broker, $outbox(pool2.clone()).table_name(&f.table))
                    .local_message_retry(retry)
                    .start()
                    .await
                    .unwrap();
                // Meanwhile both apps commit 1,000 more each.
                let mut writers = Vec::new();
                for (w, producer) in [(0u64, a.producer()), (1, a.producer()), (2, b.producer()), (3, b.producer())] {
                    let pool = if w < 2 { f.pool.clone() } else { pool2.clone() };
                    writers.push(tokio::spawn(async move {
                        for i in 0..500u64 {
                            let n = 3000 + w * 500 + i;
                            producer
                                .send_with_transaction(&pool, move |_tx| Box::pin(async move { Ok(OrderPlaced { n }) }))
                                .await
                                .unwrap();
                        }
                    }));
                }
                for w in writers {
                    w.await.unwrap();
                }
                delivered.wait_for(5000, Duration::from_secs(60)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivered.assert_exactly_once(&(0..5000).collect::<Vec<_>>());
                let outbox = f.outbox();
                eventually("all rows Sent", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().sent == 5000 }
                })
                .await;
                a.shutdown().await.unwrap();
                b.shutdown().await.unwrap();
                pool2.close().await;
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn max_retry_count_is_respected_and_reported() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let (transport, down, attempts) = flaky(&broker, true);
                let exhausted = Arc::new(Mutex::new(Vec::new()));
                let ex = exhausted.clone();
                let outbox = f.outbox().on_exhausted(move |m: &LocalMessage| ex.lock().unwrap().push(m.clone()));
                let app = f
                    .app(&broker, outbox)
                    .transport(transport)
                    .local_message_retry(LocalMessageRetryOptions { max_retry_count: 3, ..fast_retry() })
                    .start()
                    .await
                    .unwrap();
                let id = f.commit(&app.producer(), 7).await.unwrap();
                let ex = exhausted.clone();
                eventually("exhausted callback", Duration::from_secs(10), move || {
                    let n = ex.lock().unwrap().len();
                    async move { n == 1 }
                })
                .await;
                // Several more scans: no further attempt.
                tokio::time::sleep(Duration::from_millis(600)).await;
                assert_eq!(attempts.load(Ordering::SeqCst), 3);
                let reported = exhausted.lock().unwrap().clone();
                assert_eq!(reported.len(), 1);
                assert_eq!(reported[0].id, id);
                assert_eq!(reported[0].retry_count, 3);
                let row = f.outbox().message(id).await.unwrap().unwrap();
                assert_eq!(row.status, MessageStatus::Failed);
                assert_eq!(row.retry_count, 3);
                assert!(row.error_message.unwrap().contains("broker down"));

                // Back up: the row stays Failed until requeued, then it is sent.
                down.store(false, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(delivered.all().is_empty());
                assert!(f.outbox().requeue(id).await.unwrap());
                delivered.wait_for(1, Duration::from_secs(10)).await;
                delivered.assert_exactly_once(&[7]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            /// A claim counts a failure from the retry count the row has in
            /// the table, also for a Pending row that has one (written by
            /// hand here; the MySQL claim skips its second read only for
            /// Pending rows read with count 0).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failure_counts_on_from_the_rows_own_retry_count() {
                let Some(f) = Fixture::new().await else { return };
                f.outbox().ensure_table().await.unwrap();
                let row = LocalMessage::pending(OrderPlaced::NAME, body(9));
                f.insert_by_hand(&row, 2).await;
                let broker = InMemoryBroker::new();
                let (transport, _down, attempts) = flaky(&broker, true);
                // One attempt: the retry comes long after this test.
                let outbox = f.outbox().retry_backoff(Duration::from_secs(600));
                let app = f
                    .app(&broker, outbox)
                    .transport(transport)
                    .local_message_retry(LocalMessageRetryOptions { max_retry_count: 5, ..fast_retry() })
                    .start()
                    .await
                    .unwrap();
                let (outbox, id) = (f.outbox(), row.id);
                eventually("the failed send recorded", Duration::from_secs(10), move || {
                    let outbox = outbox.clone();
                    async move {
                        let stored = outbox.message(id).await.unwrap().unwrap();
                        stored.status == MessageStatus::Failed
                    }
                })
                .await;
                app.shutdown().await.unwrap();
                let stored = f.outbox().message(row.id).await.unwrap().unwrap();
                assert_eq!(attempts.load(Ordering::SeqCst), 1);
                assert_eq!(stored.retry_count, 3, "one failed send after 2");
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn scanner_sends_in_creation_order() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                f.outbox().ensure_table().await.unwrap();
                // 250 rows whose creation times run opposite to their insertion order.
                let base = chrono::Utc::now() - chrono::Duration::seconds(60);
                let mut rows: Vec<LocalMessage> = (0..250u64)
                    .map(|n| {
                        let mut m = LocalMessage::pending(OrderPlaced::NAME, body(n));
                        m.created_at = base + chrono::Duration::milliseconds(n as i64 * 7);
                        m
                    })
                    .collect();
                let expected: Vec<uuid::Uuid> = rows.iter().map(|m| m.id).collect();
                rows.reverse();
                for chunk in rows.chunks(25) {
                    f.outbox().save_batch(chunk).await.unwrap();
                }
                let (transport, _, _) = flaky(&broker, false);
                let log = transport.log.clone();
                let app = f
                    .app(&broker, f.outbox())
                    .transport(transport)
                    .local_message_retry(LocalMessageRetryOptions { batch_size: 40, ..fast_retry() })
                    .start()
                    .await
                    .unwrap();
                delivered.wait_for(250, Duration::from_secs(15)).await;
                delivered.assert_exactly_once(&(0..250).collect::<Vec<_>>());
                assert_eq!(*log.lock().unwrap(), expected, "publish order is creation order");
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unknown_message_type_is_marked_failed() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                let row = LocalMessage::pending("NoSuchEventType", "{}");
                let known = LocalMessage::pending(OrderPlaced::NAME, body(5));
                f.outbox().save_batch(&[row.clone(), known]).await.unwrap();
                let outbox = f.outbox();
                let id = row.id;
                eventually("unknown type marked Failed", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.message(id).await.unwrap().is_some_and(|m| m.status == MessageStatus::Failed) }
                })
                .await;
                let stored = outbox.message(id).await.unwrap().unwrap();
                let err = stored.error_message.unwrap();
                assert!(err.contains("unknown message type") && err.contains("NoSuchEventType"), "{err}");
                delivered.wait_for(1, Duration::from_secs(10)).await;
                delivered.assert_exactly_once(&[5]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invalid_table_names_are_rejected() {
                let Some(f) = Fixture::new().await else { return };
                for bad in ["Local Messages", "x; DROP TABLE y", "a\"b", "a`b", "a'b", "", "1abc", "s.t"] {
                    let r = App::builder().discover(false).outbox($outbox(f.pool.clone()).table_name(bad)).build().await;
                    assert!(matches!(r, Err(Error::Configuration(_))), "{bad:?} accepted: {r:?}");
                }
                let r = App::builder()
                    .discover(false)
                    .outbox($outbox(f.pool.clone()).table_name("Outbox_A"))
                    .local_message_retry(LocalMessageRetryOptions { table_name: "Outbox_B".into(), ..Default::default() })
                    .build()
                    .await;
                match r {
                    Err(Error::Configuration(m)) => assert!(m.contains("Outbox_A") && m.contains("Outbox_B"), "{m}"),
                    other => panic!("expected a configuration error, got {other:?}"),
                }
                // create_table(false) on a missing table is a configuration error too.
                let r = App::builder()
                    .discover(false)
                    .outbox($outbox(f.pool.clone()).table_name(&f.table).create_table(false))
                    .build()
                    .await;
                assert!(matches!(r, Err(Error::Configuration(_))), "{r:?}");
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn table_from_migration_001_is_upgraded_at_startup() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                for sql in migration($name, "001_create_local_messages.sql", &f.table) {
                    f.exec(&sql).await;
                }
                // create_table is on by default: the relay's columns are added.
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                f.commit(&app.producer(), 1).await.unwrap();
                delivered.wait_for(1, Duration::from_secs(10)).await;
                app.shutdown().await.unwrap();
                // A second start finds them and adds nothing (no duplicate-column error).
                let app = f.app(&broker, f.outbox()).start().await.unwrap();
                f.commit(&app.producer(), 2).await.unwrap();
                delivered.wait_for(2, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&[1, 2]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn migrations_001_and_002_run_by_hand_work() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                for sql in migration($name, "001_create_local_messages.sql", &f.table) {
                    f.exec(&sql).await;
                }
                // A row written by the original (pre-heytom) code, before the new columns.
                // (The original DDL itself, run verbatim: tests/outbox_original_ddl.rs.)
                let legacy = LocalMessage::pending(OrderPlaced::NAME, body(1));
                f.insert_by_hand(&legacy, 0).await;
                // Without the added columns the app refuses to start, with a clear error.
                let r = f.app(&broker, f.outbox().create_table(false)).build().await;
                assert!(matches!(r, Err(Error::Configuration(_))), "{r:?}");
                for sql in migration($name, "002_add_relay_columns.sql", &f.table) {
                    f.exec(&sql).await;
                }
                let app = f.app(&broker, f.outbox().create_table(false)).start().await.unwrap();
                f.commit(&app.producer(), 2).await.unwrap();
                delivered.wait_for(2, Duration::from_secs(10)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&[1, 2]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn zero_retention_deletes_each_row_once_confirmed() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let (transport, down, _) = flaky(&broker, false);
                let app = f
                    .app(&broker, f.outbox().retention(Duration::ZERO))
                    .transport(transport)
                    // No scan after the first: only the sender's own write can
                    // remove a row (the scan's retention pass would too).
                    .local_message_retry(LocalMessageRetryOptions {
                        max_retry_count: 1,
                        scan_interval: Duration::from_secs(600),
                        ..Default::default()
                    })
                    .start()
                    .await
                    .unwrap();
                let producer = app.producer();
                for n in 0..3 {
                    f.commit(&producer, n).await.unwrap();
                }
                delivered.wait_for(3, Duration::from_secs(10)).await;
                let outbox = f.outbox();
                eventually("the confirmed rows deleted", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap() == Default::default() }
                })
                .await;
                // A send that is not confirmed keeps its row (Failed here).
                down.store(true, Ordering::SeqCst);
                let failed = f.commit(&producer, 3).await.unwrap();
                eventually("the unconfirmed row Failed", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().failed == 1 }
                })
                .await;
                assert_eq!(outbox.failed_messages(10).await.unwrap()[0].id, failed);
                // Several scans later nothing was sent twice.
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivered.assert_exactly_once(&[0, 1, 2]);
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn inspection_requeue_purge_and_retention() {
                let Some(f) = Fixture::new().await else { return };
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let (transport, down, _) = flaky(&broker, true);
                let app = f
                    .app(&broker, f.outbox().retention(Duration::from_millis(1)))
                    .transport(transport)
                    .local_message_retry(LocalMessageRetryOptions { max_retry_count: 1, ..fast_retry() })
                    .start()
                    .await
                    .unwrap();
                let producer = app.producer();
                let mut ids = Vec::new();
                for n in 0..3 {
                    ids.push(f.commit(&producer, n).await.unwrap());
                }
                let outbox = f.outbox();
                eventually("3 Failed", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move { outbox.status_counts().await.unwrap().failed == 3 }
                })
                .await;
                let failed = outbox.failed_messages(10).await.unwrap();
                assert_eq!(failed.iter().map(|m| m.id).collect::<Vec<_>>(), ids, "oldest first");
                assert!(!outbox.requeue(uuid::Uuid::now_v7()).await.unwrap());

                down.store(false, Ordering::SeqCst);
                assert!(outbox.requeue(ids[0]).await.unwrap());
                delivered.wait_for(1, Duration::from_secs(10)).await;
                delivered.assert_exactly_once(&[0]);
                // Retention deletes the Sent row on a following scan.
                eventually("retention deleted the Sent row", Duration::from_secs(10), || {
                    let outbox = outbox.clone();
                    async move {
                        let c = outbox.status_counts().await.unwrap();
                        c.pending == 0 && c.sent == 0 && c.failed == 2
                    }
                })
                .await;
                let purged = outbox
                    .purge(MessageStatus::Failed, chrono::Utc::now() + chrono::Duration::seconds(1))
                    .await
                    .unwrap();
                assert_eq!(purged, 2);
                assert_eq!(outbox.status_counts().await.unwrap(), Default::default());
                assert!(outbox.update_status(ids[1], MessageStatus::Sent, None).await.is_ok());
                assert!(outbox.get_pending_messages(10).await.unwrap().is_empty());
                app.shutdown().await.unwrap();
                f.drop_tables().await;
            }
        }
    };
}

/// `tx.is_some_and_panics()`: an always-true condition the compiler cannot
/// see through, so the closure's type still says it returns an event.
trait PanicSwitch {
    fn is_some_and_panics(&self) -> bool {
        true
    }
}
impl<T> PanicSwitch for T {}

outbox_suite!(
    postgres,
    sqlx::Postgres,
    "postgres",
    pg_url,
    pg_connect,
    Outbox::postgres,
    "$1",
    ""
);
outbox_suite!(
    mysql,
    sqlx::MySql,
    "mysql",
    mysql_url,
    mysql_connect,
    Outbox::mysql,
    "?",
    "`"
);
outbox_suite!(
    sqlite,
    sqlx::Sqlite,
    "sqlite",
    sqlite_url,
    sqlite_connect,
    Outbox::sqlite,
    "?",
    "\""
);

/// PostgreSQL only: a scanner with a long interval is woken by NOTIFY when
/// another process commits rows it will not dispatch itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_the_scanner() {
    let Some(pool) = pg_connect(&pg_url()).await else {
        return;
    };
    let table = format!("LocalMessages_{}", unique());
    let broker = InMemoryBroker::new();
    let (_c, delivered) = consume(&broker).await;
    let scanner = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).table_name(&table))
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_secs(600),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    // Let the first scan finish and LISTEN start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writer = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(
            Outbox::postgres(pool.clone())
                .table_name(&table)
                .dispatch_after_commit(false),
        )
        .local_message_retry(LocalMessageRetryOptions {
            enabled: false,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    writer
        .producer()
        .send_with_transaction(&pool, |_tx| {
            Box::pin(async move { Ok(OrderPlaced { n: 42 }) })
        })
        .await
        .unwrap();
    delivered.wait_for(1, Duration::from_secs(15)).await;
    delivered.assert_exactly_once(&[42]);
    writer.shutdown().await.unwrap();
    scanner.shutdown().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await
        .unwrap();
}

/// `Outbox::from_url` (what `App::from_env` uses for `HEYTOM_DATABASE_URL`):
/// connects lazily, works end to end, and never shows a password in errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_from_url_and_configuration_errors() {
    let path = std::env::temp_dir().join(format!("heytom-outbox-url-{}.db", unique()));
    let url = format!("sqlite://{}", path.display());
    let broker = InMemoryBroker::new();
    let (_c, delivered) = consume(&broker).await;
    // The test's own pool first: it switches the file to WAL, which needs
    // the file to itself (with the app's relay already writing, SQLite may
    // answer "database is locked" at once, busy timeout or not).
    let pool = sqlite_connect(&url).await.unwrap();
    let outbox = Outbox::from_url(&url)
        .unwrap()
        .table_name("LocalMessages_url");
    let app = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(outbox)
        .start()
        .await
        .unwrap();
    app.producer()
        .send_with_transaction(&pool, |_tx| {
            Box::pin(async move { Ok(OrderPlaced { n: 1 }) })
        })
        .await
        .unwrap();
    delivered.wait_for(1, Duration::from_secs(10)).await;
    delivered.assert_exactly_once(&[1]);
    app.shutdown().await.unwrap();
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    let err = Outbox::from_url("redis://user:hunter2@127.0.0.1/0").unwrap_err();
    assert!(matches!(err, Error::Configuration(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // A producer without an outbox says so.
    let app = App::builder()
        .in_memory_broker(broker)
        .discover(false)
        .start()
        .await
        .unwrap();
    let pool = sqlite_connect("sqlite::memory:").await.unwrap();
    let err = app
        .producer()
        .send_with_transaction(&pool, |_tx| {
            Box::pin(async move { Ok(OrderPlaced { n: 2 }) })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Configuration(_)) && err.to_string().contains("outbox"),
        "{err}"
    );
    app.shutdown().await.unwrap();
}
