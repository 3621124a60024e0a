//! A local message table made from the original Heytom.MQ DDL, run verbatim,
//! works on PostgreSQL, MariaDB/MySQL and SQLite: the app upgrades it at
//! startup (or, with `create_table(false)`, names exactly the columns it
//! lacks and the migration file to run), delivers through it, and users'
//! plain unquoted SQL (`SELECT ... FROM LocalMessages WHERE Status = 1`)
//! reads what the app wrote. On PostgreSQL, a table made by older heytom-mq
//! (quoted mixed-case identifiers) is moved by
//! `migrations/postgres/003_unquote_identifiers.sql`.
//!
//! Each test runs the DDL exactly as published, table name included, so it
//! gets a database of its own: a fresh schema on PostgreSQL (the pool's
//! `search_path`), a fresh database on MariaDB, a fresh file on SQLite.
//!
//! Servers: `HEYTOM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `HEYTOM_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`). Unreachable servers skip
//! with a notice, or fail when `HEYTOM_TEST_REQUIRE_SERVICES=1`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{Error, InMemoryConsumer, MessageStatus};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

// ------------------------------------------------- the original DDL, verbatim

// From the original Heytom.MQ README.md (github.com/heytom-labs/heytom-mq,
// commit 8023fe1803dffd43a093820754c58f2b8ecb3c9a), section
// "本地消息表（事务性消息）" > "快速开始" > "1. 创建本地消息表", the
// "PostgreSQL:" block, unchanged.
const ORIGINAL_POSTGRES_DDL: &str = "CREATE TABLE LocalMessages (
    Id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    MQType VARCHAR(50) NOT NULL,
    Topic VARCHAR(200) NOT NULL,
    RoutingKey VARCHAR(200),
    MessageType VARCHAR(500) NOT NULL,
    MessageBody TEXT NOT NULL,
    Status INT NOT NULL DEFAULT 0,
    CreatedAt TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UpdatedAt TIMESTAMP,
    RetryCount INT NOT NULL DEFAULT 0,
    ErrorMessage TEXT
);

CREATE INDEX IX_LocalMessages_Status ON LocalMessages(Status);
CREATE INDEX IX_LocalMessages_CreatedAt ON LocalMessages(CreatedAt);
";

// The same README, the "MySQL:" block, unchanged.
const ORIGINAL_MYSQL_DDL: &str = "CREATE TABLE LocalMessages (
    Id CHAR(36) PRIMARY KEY,
    MQType VARCHAR(50) NOT NULL,
    Topic VARCHAR(200) NOT NULL,
    RoutingKey VARCHAR(200),
    MessageType VARCHAR(500) NOT NULL,
    MessageBody TEXT NOT NULL,
    Status INT NOT NULL DEFAULT 0,
    CreatedAt DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UpdatedAt DATETIME,
    RetryCount INT NOT NULL DEFAULT 0,
    ErrorMessage TEXT
);

CREATE INDEX IX_LocalMessages_Status ON LocalMessages(Status);
CREATE INDEX IX_LocalMessages_CreatedAt ON LocalMessages(CreatedAt);
";

// The same README, the "SQLite:" block, unchanged (the original's test app,
// src/Heytom.MQ.TestApi/Services/DatabaseInitializer.cs, creates the same
// columns).
const ORIGINAL_SQLITE_DDL: &str = "CREATE TABLE LocalMessages (
    Id TEXT PRIMARY KEY,
    MQType TEXT NOT NULL,
    Topic TEXT NOT NULL,
    RoutingKey TEXT,
    MessageType TEXT NOT NULL,
    MessageBody TEXT NOT NULL,
    Status INTEGER NOT NULL DEFAULT 0,
    CreatedAt TEXT NOT NULL,
    UpdatedAt TEXT,
    RetryCount INTEGER NOT NULL DEFAULT 0,
    ErrorMessage TEXT
);

CREATE INDEX IX_LocalMessages_Status ON LocalMessages(Status);
CREATE INDEX IX_LocalMessages_CreatedAt ON LocalMessages(CreatedAt);
";

// What heytom-mq's PostgreSQL migrations 001 and 002 created before the
// identifiers were unquoted (quoted mixed-case names), verbatim.
const OLD_QUOTED_POSTGRES_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS "LocalMessages" (
    "Id" UUID NOT NULL PRIMARY KEY,
    "MQType" VARCHAR(50) NOT NULL,
    "Topic" VARCHAR(255) NOT NULL,
    "RoutingKey" VARCHAR(255) NULL,
    "MessageType" VARCHAR(255) NOT NULL,
    "MessageBody" TEXT NOT NULL,
    "Status" INT NOT NULL DEFAULT 0,
    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "UpdatedAt" TIMESTAMPTZ NULL,
    "RetryCount" INT NOT NULL DEFAULT 0,
    "ErrorMessage" TEXT NULL
);
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_Status" ON "LocalMessages" ("Status");
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_CreatedAt" ON "LocalMessages" ("CreatedAt");
ALTER TABLE "LocalMessages" ADD COLUMN IF NOT EXISTS "Headers" TEXT NULL;
ALTER TABLE "LocalMessages" ADD COLUMN IF NOT EXISTS "PartitionKey" VARCHAR(255) NULL;
ALTER TABLE "LocalMessages" ADD COLUMN IF NOT EXISTS "NextAttemptAt" BIGINT NOT NULL DEFAULT 0;
ALTER TABLE "LocalMessages" ADD COLUMN IF NOT EXISTS "LockedBy" VARCHAR(64) NULL;
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_Due" ON "LocalMessages" ("Status", "CreatedAt");
"#;

const RELAY_COLUMNS: [&str; 4] = ["Headers", "PartitionKey", "NextAttemptAt", "LockedBy"];
const ORIGINAL_COLUMNS: [&str; 11] = [
    "Id",
    "MQType",
    "Topic",
    "RoutingKey",
    "MessageType",
    "MessageBody",
    "Status",
    "CreatedAt",
    "UpdatedAt",
    "RetryCount",
    "ErrorMessage",
];

// ---------------------------------------------------------------- events

#[derive(Serialize, Deserialize, Debug, Clone)]
struct OrderPlaced {
    n: u64,
}

impl Event for OrderPlaced {
    const NAME: &'static str = "OriginalDdlOrderPlaced";
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
    let s = Uuid::now_v7().simple().to_string();
    s[s.len() - 12..].to_owned()
}

/// A test's own schema, database or file: dropped when this goes out of
/// scope, also when the test fails (on a thread of its own, since `Drop`
/// cannot await).
enum Place {
    PgSchema(String, String),
    MySqlDatabase(String, String),
    SqliteFile(std::path::PathBuf),
}

impl Drop for Place {
    fn drop(&mut self) {
        let sql = match self {
            Place::PgSchema(url, s) => (url.clone(), format!("DROP SCHEMA IF EXISTS {s} CASCADE")),
            Place::MySqlDatabase(url, d) => (url.clone(), format!("DROP DATABASE IF EXISTS {d}")),
            Place::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                return;
            }
        };
        let pg = matches!(self, Place::PgSchema(..));
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (url, sql) = sql;
                if pg {
                    let admin = sqlx::PgPool::connect(&url).await?;
                    sqlx::query(AssertSqlSafe(sql)).execute(&admin).await?;
                    admin.close().await;
                } else {
                    let admin = sqlx::MySqlPool::connect(&url).await?;
                    sqlx::query(AssertSqlSafe(sql)).execute(&admin).await?;
                    admin.close().await;
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("NOTICE: could not drop the test's schema/database: {e}");
        }
    }
}

/// A pool whose `search_path` is a fresh schema.
async fn postgres_place() -> Option<(sqlx::PgPool, Place)> {
    let url = std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let admin =
        match tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&url)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return skip("PostgreSQL", e),
            Err(e) => return skip("PostgreSQL", e),
        };
    let schema = format!("heytom_ddl_{}", unique());
    let sql = format!("CREATE SCHEMA {schema}");
    sqlx::query(AssertSqlSafe(sql))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let place = Place::PgSchema(url.clone(), schema.clone());
    let opts = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(opts)
        .await
        .unwrap();
    Some((pool, place))
}

/// A pool on a fresh database.
async fn mysql_place() -> Option<(sqlx::MySqlPool, Place)> {
    let url = std::env::var("HEYTOM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let admin =
        match tokio::time::timeout(Duration::from_secs(5), sqlx::MySqlPool::connect(&url)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return skip("MariaDB/MySQL", e),
            Err(e) => return skip("MariaDB/MySQL", e),
        };
    let db = format!("heytom_ddl_{}", unique());
    let sql = format!("CREATE DATABASE {db}");
    sqlx::query(AssertSqlSafe(sql))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let place = Place::MySqlDatabase(url.clone(), db.clone());
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url)
        .unwrap()
        .database(&db);
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(10)
        .connect_with(opts)
        .await
        .unwrap();
    Some((pool, place))
}

/// A pool on a fresh file.
async fn sqlite_place() -> Option<(sqlx::SqlitePool, Place)> {
    let path = std::env::temp_dir().join(format!("heytom-original-ddl-{}.db", unique()));
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
        .unwrap();
    Some((pool, Place::SqliteFile(path)))
}

fn skip<T>(what: &str, err: impl std::fmt::Display) -> Option<T> {
    unavailable(what, err);
    None
}

/// Collects the `n` of every delivered `OrderPlaced`.
#[derive(Clone, Default)]
struct Delivered(Arc<Mutex<Vec<u64>>>);

impl Delivered {
    fn all(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.all().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_exactly_once(&self, expected: &[u64]) {
        let mut got = self.all();
        got.sort_unstable();
        assert_eq!(got, expected, "each event delivered exactly once");
    }
}

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

fn body(n: u64) -> String {
    serde_json::to_string(&OrderPlaced { n }).unwrap()
}

fn scan_fast() -> LocalMessageRetryOptions {
    LocalMessageRetryOptions {
        scan_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

fn migration_file(db: &str, file: &str) -> String {
    let path = format!("{}/migrations/{db}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `$1, $2, ...` or `?, ?, ...`.
fn placeholders(dollar: bool, n: usize) -> String {
    (1..=n)
        .map(|i| {
            if dollar {
                format!("${i}")
            } else {
                "?".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asserts a configuration error that names exactly `missing` (none of the
/// table's other columns) and `file`.
fn assert_names_missing(r: &heytom_mq::Result<heytom_mq::App>, missing: &[&str], file: &str) {
    let msg = match r {
        Err(Error::Configuration(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    for c in missing {
        assert!(msg.contains(c), "{c} not named: {msg}");
    }
    let words: HashSet<&str> = msg.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    for c in ORIGINAL_COLUMNS.iter().chain(&RELAY_COLUMNS) {
        if !missing.contains(c) {
            assert!(!words.contains(c), "{c} is not missing but named: {msg}");
        }
    }
    assert!(msg.contains(file), "{file} not named: {msg}");
}

// ---------------------------------------------------------------- the suite

macro_rules! original_ddl_suite {
    ($module:ident, $db:ty, $dir:tt, $ddl:path, $place:path, $outbox:path, $dollar:literal, $id:expr, $read_id:expr) => {
        mod $module {
            use super::*;

            fn app(broker: &InMemoryBroker, outbox: Outbox) -> heytom_mq::AppBuilder {
                App::builder()
                    .in_memory_broker(broker.clone())
                    .discover(false)
                    .outbox(outbox.retry_backoff(Duration::from_millis(50)))
                    .local_message_retry(scan_fast())
            }

            async fn exec(pool: &sqlx::Pool<$db>, sql: &str) {
                sqlx::query(AssertSqlSafe(sql.to_owned()))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }

            /// A row as the original library's repository writes it (its
            /// `SaveAsync` statement, this database's placeholders).
            async fn legacy_row(pool: &sqlx::Pool<$db>, n: u64) -> Uuid {
                let id = Uuid::now_v7();
                let sql = format!(
                    "INSERT INTO LocalMessages \
                     (Id, MQType, Topic, RoutingKey, MessageType, MessageBody, Status, CreatedAt, UpdatedAt, RetryCount, ErrorMessage) \
                     VALUES ({})",
                    placeholders($dollar, 11)
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(($id)(id))
                    .bind("RabbitMQ")
                    .bind("heytom.exchange")
                    .bind(None::<String>)
                    .bind(OrderPlaced::NAME)
                    .bind(body(n))
                    .bind(0i32)
                    .bind(chrono::Utc::now())
                    .bind(None::<chrono::DateTime<chrono::Utc>>)
                    .bind(0i32)
                    .bind(None::<String>)
                    .execute(pool)
                    .await
                    .unwrap();
                id
            }

            async fn commit(pool: &sqlx::Pool<$db>, producer: &Producer, n: u64) -> Uuid {
                producer
                    .send_with_transaction(pool, move |_tx| Box::pin(async move { Ok(OrderPlaced { n }) }))
                    .await
                    .unwrap()
            }

            /// `SELECT Id, Status, RetryCount FROM LocalMessages WHERE Status = 1`, as a user types it.
            async fn sent_rows(pool: &sqlx::Pool<$db>) -> Vec<(Uuid, i32, i32)> {
                sqlx::query("SELECT Id, Status, RetryCount FROM LocalMessages WHERE Status = 1")
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (($read_id)(r), r.get::<i32, _>(1), r.get::<i32, _>(2)))
                    .collect()
            }

            async fn count(pool: &sqlx::Pool<$db>, sql: &'static str) -> i64 {
                sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn table_from_the_original_ddl_works() {
                let Some((pool, place)) = $place().await else { return };
                sqlx::raw_sql(AssertSqlSafe($ddl)).execute(&pool).await.unwrap();
                // A row the original library wrote before heytom-mq took over.
                let legacy = legacy_row(&pool, 1).await;

                // Default options: table `LocalMessages`, create_table on.
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let app = app(&broker, $outbox(pool.clone())).start().await.unwrap();
                let mut ids = HashSet::from([legacy]);
                for n in 2..=4 {
                    ids.insert(commit(&pool, &app.producer(), n).await);
                }
                delivered.wait_for(4, Duration::from_secs(15)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&[1, 2, 3, 4]);
                let outbox = $outbox(pool.clone());
                for id in ids.clone() {
                    let mut sent = false;
                    for _ in 0..200 {
                        sent = outbox.message(id).await.unwrap().is_some_and(|m| m.status == MessageStatus::Sent);
                        if sent {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    assert!(sent, "row {id} not marked Sent");
                }
                app.shutdown().await.unwrap();

                // Users' plain SQL reaches the rows the app wrote and updated.
                let rows = sent_rows(&pool).await;
                assert_eq!(rows.iter().map(|r| r.0).collect::<HashSet<_>>(), ids, "{rows:?}");
                assert!(rows.iter().all(|r| r.1 == 1 && r.2 == 0), "{rows:?}");
                assert_eq!(count(&pool, "SELECT COUNT(*) FROM LocalMessages WHERE Status = 2").await, 0);
                assert_eq!(
                    count(&pool, "SELECT COUNT(*) FROM LocalMessages WHERE Headers IS NOT NULL AND LockedBy IS NULL AND NextAttemptAt > 0").await,
                    3,
                    "the relay's columns, written by the app, read with unquoted names"
                );
                // One table only: the app used the user's table, made no other.
                assert_eq!(count(&pool, one_table_sql!($dir)).await, 1);
                pool.close().await;
                drop(place);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn table_from_the_original_ddl_is_upgraded_at_startup() {
                let Some((pool, place)) = $place().await else { return };
                sqlx::raw_sql(AssertSqlSafe($ddl)).execute(&pool).await.unwrap();
                let broker = InMemoryBroker::new();
                let (_c, delivered) = consume(&broker).await;
                let file = concat!("migrations/", $dir, "/002_add_relay_columns.sql");

                // create_table(false): the error names exactly the missing columns and the file.
                let r = app(&broker, $outbox(pool.clone()).create_table(false)).build().await;
                assert_names_missing(&r, &RELAY_COLUMNS, file);
                // Half of the upgrade done by hand: only the rest is named, then added.
                exec(&pool, "ALTER TABLE LocalMessages ADD COLUMN Headers TEXT NULL").await;
                exec(&pool, "ALTER TABLE LocalMessages ADD COLUMN LockedBy VARCHAR(64) NULL").await;
                let r = app(&broker, $outbox(pool.clone()).create_table(false)).build().await;
                assert_names_missing(&r, &["PartitionKey", "NextAttemptAt"], file);

                let legacy = legacy_row(&pool, 1).await;
                let app1 = app(&broker, $outbox(pool.clone())).start().await.unwrap();
                commit(&pool, &app1.producer(), 2).await;
                delivered.wait_for(2, Duration::from_secs(15)).await;
                app1.shutdown().await.unwrap();
                // A second start finds everything and adds nothing; so does create_table(false).
                let app2 = app(&broker, $outbox(pool.clone())).start().await.unwrap();
                commit(&pool, &app2.producer(), 3).await;
                delivered.wait_for(3, Duration::from_secs(15)).await;
                app2.shutdown().await.unwrap();
                let app3 = app(&broker, $outbox(pool.clone()).create_table(false)).start().await.unwrap();
                commit(&pool, &app3.producer(), 4).await;
                delivered.wait_for(4, Duration::from_secs(15)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                delivered.assert_exactly_once(&[1, 2, 3, 4]);
                app3.shutdown().await.unwrap();
                assert!(sent_rows(&pool).await.iter().any(|r| r.0 == legacy));
                assert_eq!(count(&pool, due_index_sql!($dir)).await, 1, "the due index");
                pool.close().await;
                drop(place);
            }

            /// Instances of a deployment start together: each upgrades the
            /// table (or finds it upgraded), none fails.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn apps_starting_together_upgrade_the_table() {
                let Some((pool, place)) = $place().await else { return };
                sqlx::raw_sql(AssertSqlSafe($ddl)).execute(&pool).await.unwrap();
                let broker = InMemoryBroker::new();
                let builds = (0..4).map(|_| app(&broker, $outbox(pool.clone())).build());
                for r in futures::future::join_all(builds).await {
                    assert!(r.is_ok(), "{r:?}");
                }
                let r = app(&broker, $outbox(pool.clone()).create_table(false)).build().await;
                assert!(r.is_ok(), "{r:?}");
                assert_eq!(count(&pool, due_index_sql!($dir)).await, 1, "the due index");
                // And on an empty database, where they all create the table.
                let builds = (0..4).map(|_| app(&broker, $outbox(pool.clone()).table_name("Fresh")).build());
                for r in futures::future::join_all(builds).await {
                    assert!(r.is_ok(), "{r:?}");
                }
                pool.close().await;
                drop(place);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn missing_table_without_create_table_names_the_migrations() {
                let Some((pool, place)) = $place().await else { return };
                let broker = InMemoryBroker::new();
                let r = app(&broker, $outbox(pool.clone()).create_table(false)).build().await;
                let msg = match r {
                    Err(Error::Configuration(m)) => m,
                    other => panic!("expected a configuration error, got {other:?}"),
                };
                assert!(msg.contains("does not exist"), "{msg}");
                assert!(msg.contains(concat!("migrations/", $dir, "/001_create_local_messages.sql")), "{msg}");
                assert!(msg.contains(concat!("migrations/", $dir, "/002_add_relay_columns.sql")), "{msg}");
                pool.close().await;
                drop(place);
            }
        }
    };
}

macro_rules! one_table_sql {
    ("postgres") => {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()"
    };
    ("mysql") => {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
    };
    ("sqlite") => {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
    };
}

macro_rules! due_index_sql {
    ("postgres") => {
        "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'ix_localmessages_due'"
    };
    ("mysql") => {
        "SELECT COUNT(DISTINCT INDEX_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME = 'IX_LocalMessages_Due'"
    };
    ("sqlite") => {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'IX_LocalMessages_Due'"
    };
}

original_ddl_suite!(
    postgres,
    sqlx::Postgres,
    "postgres",
    ORIGINAL_POSTGRES_DDL,
    postgres_place,
    Outbox::postgres,
    true,
    |id: Uuid| id,
    |r: &sqlx::postgres::PgRow| r.get::<Uuid, _>(0)
);
original_ddl_suite!(
    mysql,
    sqlx::MySql,
    "mysql",
    ORIGINAL_MYSQL_DDL,
    mysql_place,
    Outbox::mysql,
    false,
    |id: Uuid| id.to_string(),
    |r: &sqlx::mysql::MySqlRow| Uuid::parse_str(r.get::<String, _>(0).trim()).unwrap()
);
original_ddl_suite!(
    sqlite,
    sqlx::Sqlite,
    "sqlite",
    ORIGINAL_SQLITE_DDL,
    sqlite_place,
    Outbox::sqlite,
    false,
    |id: Uuid| id.to_string(),
    |r: &sqlx::sqlite::SqliteRow| Uuid::parse_str(r.get::<String, _>(0).trim()).unwrap()
);

// ------------------------------------- PostgreSQL: a table of older heytom-mq

/// A table made by older heytom-mq (quoted mixed-case DDL) is refused at
/// startup with the script to run; after
/// `migrations/postgres/003_unquote_identifiers.sql` (run verbatim) the app
/// delivers the rows it held and users' plain SQL reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quoted_table_is_moved_by_003() {
    let Some((pool, place)) = postgres_place().await else {
        return;
    };
    sqlx::raw_sql(OLD_QUOTED_POSTGRES_DDL)
        .execute(&pool)
        .await
        .unwrap();
    // A row committed by the older heytom-mq and never sent.
    let old = Uuid::now_v7();
    sqlx::query(
        r#"INSERT INTO "LocalMessages" ("Id", "MQType", "Topic", "MessageType", "MessageBody", "Status", "CreatedAt", "RetryCount", "Headers", "NextAttemptAt")
           VALUES ($1, 'InMemory', 't', $2, $3, 0, now(), 0, '{}', 0)"#,
    )
    .bind(old)
    .bind(OrderPlaced::NAME)
    .bind(body(1))
    .execute(&pool)
    .await
    .unwrap();
    let broker = InMemoryBroker::new();
    let (_c, delivered) = consume(&broker).await;

    // Not silently a second, empty table beside the old one.
    let r = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()))
        .build()
        .await;
    match r {
        Err(Error::Configuration(m)) => assert!(
            m.contains("\"LocalMessages\"")
                && m.contains("migrations/postgres/003_unquote_identifiers.sql"),
            "{m}"
        ),
        other => panic!("expected a configuration error, got {other:?}"),
    }

    let script = migration_file("postgres", "003_unquote_identifiers.sql");
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&pool)
        .await
        .unwrap();
    let app = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).create_table(false))
        .local_message_retry(scan_fast())
        .start()
        .await
        .unwrap();
    let new = app
        .producer()
        .send_with_transaction(&pool, |_tx| {
            Box::pin(async move { Ok(OrderPlaced { n: 2 }) })
        })
        .await
        .unwrap();
    delivered.wait_for(2, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    delivered.assert_exactly_once(&[1, 2]);
    let outbox = Outbox::postgres(pool.clone());
    for id in [old, new] {
        let mut sent = false;
        for _ in 0..200 {
            sent = outbox
                .message(id)
                .await
                .unwrap()
                .is_some_and(|m| m.status == MessageStatus::Sent);
            if sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(sent, "row {id} not marked Sent");
    }
    app.shutdown().await.unwrap();
    let rows: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT Id, RetryCount FROM LocalMessages WHERE Status = 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<HashSet<_>>(),
        HashSet::from([old, new])
    );
    // Everything renamed: no mixed-case table, column or index is left.
    let mixed: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name <> lower(table_name))
              + (SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND column_name <> lower(column_name))
              + (SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname <> lower(indexname))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(mixed, 0);
    pool.close().await;
    drop(place);
}

// ------------------------------------------- PostgreSQL: the table's fill factor

/// The fill factor of `table` in the pool's schema, as PostgreSQL keeps it.
async fn pg_fillfactor(pool: &sqlx::PgPool, table: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT array_to_string(c.reloptions, ',') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relname = lower($1)",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A table heytom-mq creates leaves room on its pages for the relay's
/// updates (`004_fillfactor.sql`); a table the user made keeps its settings,
/// and `004_fillfactor.sql` run verbatim sets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_heytom_creates_leave_room_for_updates() {
    let Some((pool, place)) = postgres_place().await else {
        return;
    };
    let broker = InMemoryBroker::new();
    // Created by the app: fillfactor 70.
    let made = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).table_name("Made_Out"))
        .start()
        .await
        .unwrap();
    made.shutdown().await.unwrap();
    assert_eq!(
        pg_fillfactor(&pool, "Made_Out").await.as_deref(),
        Some("fillfactor=70")
    );
    // The user's table from the original DDL: upgraded, its settings untouched.
    sqlx::raw_sql(ORIGINAL_POSTGRES_DDL)
        .execute(&pool)
        .await
        .unwrap();
    let theirs = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()))
        .start()
        .await
        .unwrap();
    theirs.shutdown().await.unwrap();
    assert_eq!(pg_fillfactor(&pool, "LocalMessages").await, None);
    // The migration, run verbatim by its user.
    let script = migration_file("postgres", "004_fillfactor.sql");
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        pg_fillfactor(&pool, "LocalMessages").await.as_deref(),
        Some("fillfactor=70")
    );
    pool.close().await;
    drop(place);
}
