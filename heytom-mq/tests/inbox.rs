//! The inbox and transactional handlers against real databases
//! (PostgreSQL, MariaDB, SQLite) and brokers (RabbitMQ, Kafka, in-memory).
//!
//! Each case runs one app whose `#[handler(idempotent)]` handler writes a
//! business row through `Tx<DB>` and publishes a follow-up with
//! `ctx.publish()`, and whose second handler counts the follow-ups that
//! arrive over the broker. It sends:
//! - one message twice with the same id: one row, one run, one follow-up;
//! - one that fails twice after its writes: retried, one row, one follow-up
//!   (the rolled-back runs' follow-ups are never sent);
//! - one that panics after its writes: the same;
//! - a last one, after which everything before it was handled.
//!
//! The services come from `HEYTOM_TEST_POSTGRES_URL`, `HEYTOM_TEST_MYSQL_URL`,
//! `HEYTOM_TEST_RABBITMQ_URL`, `HEYTOM_KAFKA_BOOTSTRAP_SERVERS`; with
//! `HEYTOM_TEST_REQUIRE_SERVICES=1` a missing one fails the test.

#[macro_use]
mod inbox_support;

use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{Envelope, Error, Inbox, Publisher, Tx};
use inbox_support::*;
use sqlx::AssertSqlSafe;

/// How long any one wait may take (a loaded machine; not a speed check).
const PATIENCE: Duration = Duration::from_secs(120);

/// One case: `$via` broker, `$db` database.
macro_rules! case {
    ($name:ident, $via:ident, $db:ty, $connect:ident, $outbox:ident, $ph:literal) => {
        mod $name {
            use super::*;

            test_event!(Order, $via, { n: u32, fail_attempts: u32, panic_attempts: u32 });
            test_event!(Billed, $via, { source: String });

            #[handler(idempotent, concurrency = 1)]
            async fn bill(
                event: Order,
                mut tx: Tx<$db>,
                ctx: Context,
                State(ctl): State<Ctl>,
            ) -> Result<(), HandlerError> {
                let sql = format!("INSERT INTO {} (event_id, n) VALUES ({})", ctl.table, $ph);
                sqlx::query(AssertSqlSafe(sql))
                    .bind(ctx.event_id().to_string())
                    .bind(i64::from(event.n))
                    .execute(&mut *tx)
                    .await?;
                ctx.publish(&Billed {
                    source: ctx.event_id().to_string(),
                })
                .await?;
                ctl.ran(ctx.event_id());
                if ctx.attempt() <= event.fail_attempts {
                    return Err("failing after the writes".into());
                }
                if ctx.attempt() <= event.fail_attempts + event.panic_attempts {
                    panic!("panicking after the writes");
                }
                Ok(())
            }

            #[handler(concurrency = 1)]
            async fn count_billed(event: Billed, State(ctl): State<Ctl>) {
                ctl.followed_up(&event.source);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn runs_each_message_once() {
                let Some(pool) = $connect().await else { return };
                let Some(builder) = builder(Via::$via).await else { return };
                let id = unique();
                let table = format!("inbox_biz_{id}");
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TABLE {table} (event_id VARCHAR(64) NOT NULL, n BIGINT NOT NULL)"
                )))
                .execute(&pool)
                .await
                .expect("business table");
                let ctl = Ctl::new(&table);
                let outbox_table = format!("inbox_out_{id}");
                let inbox = Inbox::$outbox(pool.clone()).table_name(format!("inbox_rcv_{id}"));
                let app = builder
                    .discover_in(module_path!())
                    .state(ctl.clone())
                    .outbox(Outbox::$outbox(pool.clone()).table_name(&outbox_table))
                    .inbox(inbox.clone())
                    .retry_policy(
                        RetryPolicy::default()
                            .max_attempts(5)
                            .initial_backoff(Duration::from_millis(20)),
                    )
                    .start()
                    .await
                    .expect("app starts");
                let producer = app.producer();
                let order = |n, fail_attempts, panic_attempts| Order {
                    n,
                    fail_attempts,
                    panic_attempts,
                };

                let twice = Envelope::new(&order(1, 0, 0)).unwrap();
                for _ in 0..2 {
                    producer
                        .publish_envelope(Order::route(), twice.clone())
                        .await
                        .expect("sent");
                }
                let failing = producer.send(&order(2, 2, 0)).await.expect("sent");
                let panicking = producer.send(&order(3, 0, 1)).await.expect("sent");
                let last = producer.send(&order(4, 0, 0)).await.expect("sent");
                let all = [twice.id, failing, panicking, last];
                ctl.wait_follow_ups(&all, PATIENCE).await;

                let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT event_id, COUNT(*) FROM {table} GROUP BY event_id"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                let rows_of = |id: EventId| {
                    rows.iter()
                        .find(|(e, _)| *e == id.to_string())
                        .map_or(0, |(_, n)| *n)
                };
                for id in all {
                    assert_eq!(rows_of(id), 1, "business rows of {id}: {rows:?}");
                    assert!(inbox.processed(id, "bill").await.unwrap(), "inbox row of {id}");
                }
                assert_eq!(rows.len(), 4, "{rows:?}");
                assert_eq!(ctl.runs(twice.id), 1, "the second delivery was skipped");
                assert_eq!(ctl.runs(failing), 3, "two failed runs, then one that commits");
                assert_eq!(ctl.runs(panicking), 2, "a panicking run, then one that commits");
                // The outbox holds the committed runs' follow-ups only.
                let follow_up_rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {outbox_table}"
                )))
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(follow_up_rows, 4, "one follow-up row per committed run");
                // Every follow-up is Sent: nothing more is on its way.
                let outbox = Outbox::$outbox(pool.clone()).table_name(&outbox_table);
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while outbox.status_counts().await.unwrap().sent < 4 {
                    assert!(tokio::time::Instant::now() < deadline, "follow-ups not marked Sent");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for id in all {
                    assert_eq!(ctl.follow_ups(id), 1, "follow-ups of {id} on the broker");
                }
                app.shutdown().await.expect("clean shutdown");
            }
        }
    };
}

case!(
    memory_postgres,
    Memory,
    sqlx::Postgres,
    postgres,
    postgres,
    "$1, $2"
);
case!(memory_mysql, Memory, sqlx::MySql, mysql, mysql, "?, ?");
case!(memory_sqlite, Memory, sqlx::Sqlite, sqlite, sqlite, "?, ?");
case!(
    rabbitmq_postgres,
    RabbitMq,
    sqlx::Postgres,
    postgres,
    postgres,
    "$1, $2"
);
case!(rabbitmq_mysql, RabbitMq, sqlx::MySql, mysql, mysql, "?, ?");
case!(
    rabbitmq_sqlite,
    RabbitMq,
    sqlx::Sqlite,
    sqlite,
    sqlite,
    "?, ?"
);
case!(
    kafka_postgres,
    Kafka,
    sqlx::Postgres,
    postgres,
    postgres,
    "$1, $2"
);
case!(kafka_mysql, Kafka, sqlx::MySql, mysql, mysql, "?, ?");
case!(kafka_sqlite, Kafka, sqlx::Sqlite, sqlite, sqlite, "?, ?");

/// Two deliveries of one message at the same time: the second waits on
/// the first's uncommitted inbox row, then finds it and is skipped.
macro_rules! concurrent {
    ($name:ident, $db:ty, $connect:ident, $ctor:ident, $ph:literal) => {
        mod $name {
            use super::*;

            test_event!(Slow, Memory, { n: u32 });

            #[handler(concurrency = 2)]
            async fn slow(
                event: Slow,
                mut tx: Tx<$db>,
                ctx: Context,
                State(ctl): State<Ctl>,
            ) -> Result<(), HandlerError> {
                let sql = format!("INSERT INTO {} (event_id, n) VALUES ({})", ctl.table, $ph);
                sqlx::query(AssertSqlSafe(sql))
                    .bind(ctx.event_id().to_string())
                    .bind(i64::from(event.n))
                    .execute(&mut *tx)
                    .await?;
                ctl.ran(ctx.event_id());
                // Long enough for the duplicate to arrive while this runs.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_concurrent_duplicate_waits_and_is_skipped() {
                let Some(pool) = $connect().await else { return };
                let id = unique();
                let table = format!("inbox_conc_{id}");
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TABLE {table} (event_id VARCHAR(64) NOT NULL, n BIGINT NOT NULL)"
                )))
                .execute(&pool)
                .await
                .unwrap();
                let ctl = Ctl::new(&table);
                let inbox = Inbox::$ctor(pool.clone()).table_name(format!("inbox_conc_rcv_{id}"));
                let app = App::builder()
                    .discover_in(module_path!())
                    .state(ctl.clone())
                    .outbox(Outbox::$ctor(pool.clone()).table_name(format!("inbox_conc_out_{id}")))
                    .inbox(inbox.clone())
                    .start()
                    .await
                    .expect("app starts");
                let twice = Envelope::new(&Slow { n: 1 }).unwrap();
                let producer = app.producer();
                for _ in 0..2 {
                    producer
                        .publish_envelope(Slow::route(), twice.clone())
                        .await
                        .unwrap();
                }
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while !inbox.processed(twice.id, "slow").await.unwrap() {
                    assert!(tokio::time::Instant::now() < deadline, "not handled");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Shutdown waits for both deliveries to finish.
                app.shutdown().await.unwrap();
                assert_eq!(ctl.runs(twice.id), 1, "the duplicate did not run");
                let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {table}"
                )))
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(rows, 1);
            }
        }
    };
}

concurrent!(
    concurrent_postgres,
    sqlx::Postgres,
    postgres,
    postgres,
    "$1, $2"
);
concurrent!(concurrent_mysql, sqlx::MySql, mysql, mysql, "?, ?");
concurrent!(concurrent_sqlite, sqlx::Sqlite, sqlite, sqlite, "?, ?");

/// `Inbox::for_all_handlers`: a plain handler (no flag, no `Tx`) runs once
/// per message id, and its follow-ups wait for the commit.
mod for_all_handlers {
    use super::*;

    test_event!(Ping, Memory, { n: u32 });

    #[handler]
    async fn count(_event: Ping, ctx: Context, State(ctl): State<Ctl>) {
        ctl.ran(ctx.event_id());
    }

    #[tokio::test]
    async fn every_handler_is_idempotent() {
        let Some(pool) = sqlite().await else { return };
        let ctl = Ctl::new("unused");
        let app = App::builder()
            .discover_in(module_path!())
            .state(ctl.clone())
            .inbox(Inbox::sqlite(pool.clone()).for_all_handlers())
            .start()
            .await
            .expect("app starts");
        let twice = Envelope::new(&Ping { n: 1 }).unwrap();
        let producer = app.producer();
        for _ in 0..3 {
            producer
                .publish_envelope(Ping::route(), twice.clone())
                .await
                .unwrap();
        }
        let last = producer.send(&Ping { n: 2 }).await.unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ctl.runs(last) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not handled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ctl.runs(twice.id), 1, "three deliveries, one run");
        let inbox = Inbox::sqlite(pool);
        assert!(inbox.processed(twice.id, "count").await.unwrap());
        assert!(!inbox
            .processed(uuid::Uuid::now_v7(), "count")
            .await
            .unwrap());
        app.shutdown().await.unwrap();
    }
}

/// Retention: `purge` deletes what is older, keeps the rest.
#[tokio::test]
async fn purge_deletes_old_rows_only() {
    let Some(pool) = postgres().await else { return };
    let inbox = Inbox::postgres(pool.clone()).table_name(format!("inbox_purge_{}", unique()));
    inbox.ensure_table().await.unwrap();
    let old = uuid::Uuid::now_v7();
    let new = uuid::Uuid::now_v7();
    for (id, age) in [(old, "2 days"), (new, "1 minute")] {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (MessageId, HandlerName, ReceivedAt) VALUES ($1::uuid, 'h', now() - interval '{age}')",
            inbox.get_table_name()
        )))
        .bind(id.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::days(1);
    assert_eq!(inbox.purge(cutoff).await.unwrap(), 1);
    assert!(!inbox.processed(old, "h").await.unwrap());
    assert!(inbox.processed(new, "h").await.unwrap());
}

/// Retention while the app runs: the cleanup task deletes rows older than
/// the retention, and only those.
#[tokio::test]
async fn the_running_app_deletes_rows_past_the_retention() {
    let Some(pool) = postgres().await else { return };
    let inbox = Inbox::postgres(pool.clone())
        .table_name(format!("inbox_retain_{}", unique()))
        .retention(Duration::from_secs(3600))
        .cleanup_interval(Duration::from_secs(1));
    inbox.ensure_table().await.unwrap();
    let (old, new) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (id, age) in [(old, "2 hours"), (new, "59 minutes")] {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (MessageId, HandlerName, ReceivedAt) VALUES ($1::uuid, 'h', now() - interval '{age}')",
            inbox.get_table_name()
        )))
        .bind(id.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let app = App::builder()
        .discover(false)
        .inbox(inbox.clone())
        .start()
        .await
        .expect("app starts");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while inbox.processed(old, "h").await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old row was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        inbox.processed(new, "h").await.unwrap(),
        "a younger row is kept"
    );
    app.shutdown().await.unwrap();
}

/// Startup errors: each names what is at fault.
mod config {
    use super::*;

    test_event!(Cfg, Memory, { n: u32 });

    pub mod idempotent_only {
        use super::*;
        #[handler(idempotent)]
        async fn needs_inbox(_event: Cfg) {}
    }

    pub mod takes_mysql_tx {
        use super::*;
        #[handler]
        async fn wrong_database(_event: Cfg, _tx: Tx<sqlx::MySql>) {}
    }

    pub mod takes_sqlite_tx {
        use super::*;
        #[handler]
        async fn needs_outbox(_event: Cfg, _tx: Tx<sqlx::Sqlite>) {}
    }

    pub mod takes_two_tx {
        use super::*;
        #[handler]
        async fn two(_event: Cfg, _a: Tx<sqlx::Sqlite>, _b: Tx<sqlx::Sqlite>) {}
    }

    async fn error(builder: heytom_mq::AppBuilder) -> String {
        match builder.build().await {
            Ok(_) => panic!("build accepted a wrong configuration"),
            Err(e @ Error::Configuration(_)) => e.to_string(),
            Err(other) => panic!("not a configuration error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_idempotent_handler_without_an_inbox_is_refused() {
        let e =
            error(App::builder().discover_in(format!("{}::idempotent_only", module_path!()))).await;
        assert!(
            e.contains("handler `needs_inbox`") && e.contains("AppBuilder::inbox"),
            "{e}"
        );
        let e =
            error(App::builder().discover_in(format!("{}::takes_sqlite_tx", module_path!()))).await;
        assert!(e.contains("handler `needs_outbox` takes Tx<Sqlite>"), "{e}");
    }

    #[tokio::test]
    async fn a_tx_of_another_database_is_refused() {
        let Some(pool) = sqlite().await else { return };
        let e = error(
            App::builder()
                .discover_in(format!("{}::takes_mysql_tx", module_path!()))
                .inbox(Inbox::sqlite(pool)),
        )
        .await;
        assert!(
            e.contains("handler `wrong_database` takes Tx<MySql> but the inbox is on SQLite"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_handler_with_two_tx_is_refused() {
        let Some(pool) = sqlite().await else { return };
        let e = error(
            App::builder()
                .discover_in(format!("{}::takes_two_tx", module_path!()))
                .inbox(Inbox::sqlite(pool)),
        )
        .await;
        assert!(e.contains("handler `two` takes 2 transactions"), "{e}");
    }

    #[tokio::test]
    async fn a_tx_handler_needs_the_outbox_in_the_inbox_database() {
        let Some(pool) = sqlite().await else { return };
        let Some(other) = sqlite().await else { return };
        let only = format!("{}::takes_sqlite_tx", module_path!());
        let e = error(
            App::builder()
                .discover_in(&only)
                .inbox(Inbox::sqlite(pool.clone())),
        )
        .await;
        assert!(
            e.contains("handler `needs_outbox` takes Tx<Sqlite>") && e.contains("needs an outbox"),
            "{e}"
        );
        let e = error(
            App::builder()
                .discover_in(&only)
                .outbox(Outbox::sqlite(other))
                .inbox(Inbox::sqlite(pool.clone())),
        )
        .await;
        assert!(e.contains("not reachable through the inbox's pool"), "{e}");
        // The same database: accepted.
        App::builder()
            .discover_in(&only)
            .outbox(Outbox::sqlite(pool.clone()))
            .inbox(Inbox::sqlite(pool))
            .build()
            .await
            .expect("outbox and inbox on one database");
    }

    #[tokio::test]
    async fn bad_inbox_settings_are_refused() {
        let Some(pool) = sqlite().await else { return };
        let none = App::builder().discover(false);
        let e =
            error(none.inbox(Inbox::sqlite(pool.clone()).table_name("Received Messages"))).await;
        assert!(
            e.contains("invalid inbox table name \"Received Messages\""),
            "{e}"
        );
        let e = error(
            App::builder()
                .discover(false)
                .inbox(Inbox::sqlite(pool.clone()).retention(Duration::from_secs(1))),
        )
        .await;
        assert!(e.contains("Inbox::retention"), "{e}");
        let e = error(
            App::builder()
                .discover(false)
                .inbox(Inbox::sqlite(pool).cleanup_interval(Duration::ZERO)),
        )
        .await;
        assert!(e.contains("Inbox::cleanup_interval"), "{e}");
    }

    #[tokio::test]
    async fn without_create_table_a_missing_table_names_the_migration() {
        let Some(pool) = sqlite().await else { return };
        let r = App::builder()
            .discover(false)
            .inbox(Inbox::sqlite(pool).create_table(false))
            .build()
            .await;
        let e = r.expect_err("no table").to_string();
        assert!(
            e.contains("migrations/sqlite/inbox_001_create_received_messages.sql"),
            "{e}"
        );
    }
}
