//! Scheduled sends (`Producer::send_at` / `send_after`,
//! `OutboxTransaction::publish_at`) against the real databases and brokers:
//! PostgreSQL over the in-memory broker, MariaDB over RabbitMQ, SQLite over
//! Kafka (tansu), each with every test below that makes sense there; on
//! PostgreSQL also a failed scheduled send retried after the backoff, and
//! another instance woken by NOTIFY.
//!
//! Every app here scans only every 60 s: a message that arrives a few
//! seconds after its due time was sent because the scanner woke at the due
//! time, not because of the interval. Time bounds are generous upper limits
//! (the machine is shared); the lower bound (never before the due time) is
//! exact. Each test prints `SCHEDULED <case> late_ms=..` for the record.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use heytom_mq::prelude::*;
use heytom_mq::{
    AutoOffsetReset, Error, HandlerEntry, InMemoryTransport, KafkaRoute, MessageStatus, Outgoing,
    RabbitMqRoute, RunningApp, Subscription, SubscriptionHandle, Transport, TransportKind,
};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

mod kafka_support;
mod outage_support;
use outage_support::{pg_url, rabbit, require_services, unique};

/// The scanner's interval in these apps: far longer than any wait below.
const SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// How late a due message may arrive before the test calls it lost
/// (a loaded machine; the scanner wakes at the due time, not the interval).
const LATE_LIMIT: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------- events

/// An event type of one transport, numbered.
trait Numbered: Event + Clone {
    fn new(n: u32) -> Self;
    fn n(&self) -> u32;
}

macro_rules! numbered_event {
    ($ty:ident, $route:expr) => {
        #[derive(Serialize, Deserialize, Debug, Clone)]
        struct $ty {
            n: u32,
        }
        impl Event for $ty {
            const NAME: &'static str = stringify!($ty);
            fn route() -> &'static Route {
                static R: OnceLock<Route> = OnceLock::new();
                R.get_or_init(|| $route)
            }
            fn partition_key(&self) -> Option<String> {
                Some(self.n.to_string())
            }
        }
        impl Numbered for $ty {
            fn new(n: u32) -> Self {
                $ty { n }
            }
            fn n(&self) -> u32 {
                self.n
            }
        }
        heytom_mq::__private::inventory::submit! {
            heytom_mq::__private::EventRegistration { name: $ty::NAME, route: $ty::route }
        }
    };
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A suffix unique to this test process (topology names).
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(unique)
}

numbered_event!(SchedMemory, Route::Default);
numbered_event!(
    SchedRabbit,
    Route::RabbitMq(
        RabbitMqRoute::new(leak(format!("sched.{}", run_id())))
            .exchange(leak(format!("heytom.sched.{}", run_id())))
            .queue_name(leak(format!("heytom.sched.{}", run_id())))
    )
);
numbered_event!(SchedKafka, {
    let mut r = KafkaRoute::new(kafka_support::unique_topic("sched"));
    r.session_timeout_ms = Some(6000);
    r.auto_offset_reset = Some(AutoOffsetReset::Earliest);
    Route::Kafka(r)
});

// ---------------------------------------------------------------- arrivals

/// An event's number and when it arrived at the handler (the app's clock).
type Arrival = (u32, DateTime<Utc>);

/// Every arrival, in order.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Arrival>>>);

impl Arrivals {
    fn of(&self, n: u32) -> Vec<DateTime<Utc>> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Waits until `n` arrived (or `timeout` passed); its arrival times.
    async fn wait(&self, n: u32, timeout: Duration) -> Vec<DateTime<Utc>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.of(n);
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn entry<E: Numbered>(&self) -> HandlerEntry {
        let arrivals = self.clone();
        HandlerEntry::from_closure("scheduled", move |e: E| {
            let arrivals = arrivals.clone();
            async move {
                arrivals.0.lock().unwrap().push((e.n(), Utc::now()));
            }
        })
    }
}

// ---------------------------------------------------------------- fixtures

#[derive(Clone)]
enum Db {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool, String),
}

fn unavailable(what: &str, e: impl std::fmt::Display) {
    if require_services() {
        panic!("{what} unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}");
    }
    eprintln!("NOTICE: {what} unreachable ({e}); skipping this test");
}

impl Db {
    async fn postgres() -> Option<Db> {
        match sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&pg_url())
            .await
        {
            Ok(p) => Some(Db::Postgres(p)),
            Err(e) => {
                unavailable("PostgreSQL", e);
                None
            }
        }
    }

    async fn mysql() -> Option<Db> {
        let url = std::env::var("HEYTOM_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
        match sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
        {
            Ok(p) => Some(Db::MySql(p)),
            Err(e) => {
                unavailable("MariaDB", e);
                None
            }
        }
    }

    async fn sqlite() -> Db {
        use std::str::FromStr;
        let path = std::env::temp_dir().join(format!("heytom-scheduled-{}.db", unique()));
        let url = format!("sqlite://{}", path.display());
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .expect("sqlite url")
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(5)
            .connect_with(opts)
            .await
            .expect("a SQLite file in the temp dir");
        Db::Sqlite(pool, path.display().to_string())
    }

    fn outbox(&self, table: &str) -> Outbox {
        let outbox = match self {
            Db::Postgres(p) => Outbox::postgres(p.clone()),
            Db::MySql(p) => Outbox::mysql(p.clone()),
            Db::Sqlite(p, _) => Outbox::sqlite(p.clone()),
        };
        outbox
            .table_name(table)
            .retry_backoff(Duration::from_millis(100))
    }

    async fn drop_table(&self, table: &str) {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        let r = match self {
            Db::Postgres(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(drop),
            Db::MySql(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(drop),
            Db::Sqlite(p, path) => {
                p.close().await;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            eprintln!("NOTICE: could not drop {table}: {e}");
        }
    }
}

#[derive(Clone)]
enum Broker {
    Memory(InMemoryBroker),
    RabbitMq,
    Kafka(String),
}

impl Broker {
    async fn rabbitmq() -> Option<Broker> {
        let url = outage_support::rabbit_url();
        match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
            Ok(c) => {
                let _ = c.close(200, "probe".into()).await;
                Some(Broker::RabbitMq)
            }
            Err(e) => {
                unavailable("RabbitMQ", e);
                None
            }
        }
    }

    fn kafka() -> Option<Broker> {
        kafka_support::bootstrap().map(Broker::Kafka)
    }

    fn builder(&self) -> heytom_mq::AppBuilder {
        let b = App::builder().discover(false);
        match self {
            Broker::Memory(m) => b.in_memory_broker(m.clone()),
            Broker::RabbitMq => b.rabbitmq(rabbit()),
            Broker::Kafka(servers) => b.kafka(
                kafka_support::options(servers).group_id(kafka_support::unique_group("scheduled")),
            ),
        }
    }
}

/// One database table and one broker, and the apps started on them.
struct Fixture {
    db: Db,
    broker: Broker,
    table: String,
    arrivals: Arrivals,
}

impl Fixture {
    fn new(db: Db, broker: Broker) -> Fixture {
        Fixture {
            db,
            broker,
            table: format!("Scheduled_{}", unique()),
            arrivals: Arrivals::default(),
        }
    }

    fn outbox(&self) -> Outbox {
        self.db.outbox(&self.table)
    }

    /// An app producing and consuming `E` on the table, scanning every 60 s.
    async fn app<E: Numbered>(&self) -> RunningApp {
        self.broker
            .builder()
            .outbox(self.outbox())
            .local_message_retry(LocalMessageRetryOptions {
                scan_interval: SCAN_INTERVAL,
                ..Default::default()
            })
            .handler_entry(self.arrivals.entry::<E>())
            .start()
            .await
            .expect("app starts")
    }

    /// Sends event 0 at once and waits for it: the consumer is running
    /// (a Kafka group is assigned) before any timing is measured.
    async fn warm_up<E: Numbered>(&self, app: &RunningApp) {
        app.producer().send(&E::new(0)).await.expect("warm-up send");
        let got = self.arrivals.wait(0, Duration::from_secs(60)).await;
        assert!(!got.is_empty(), "the warm-up event never arrived");
    }

    async fn status(&self, id: EventId) -> Option<MessageStatus> {
        let row = self.outbox().message(id).await.expect("read the row");
        row.map(|r| r.status)
    }

    async fn cleanup(self) {
        self.db.drop_table(&self.table).await;
    }
}

/// Asserts `n` arrived exactly once, not before `due` and at most
/// [`LATE_LIMIT`] after it; prints how late.
async fn assert_on_time(f: &Fixture, case: &str, n: u32, due: DateTime<Utc>) {
    let left = (due - Utc::now()).to_std().unwrap_or_default();
    let got = f.arrivals.wait(n, left + LATE_LIMIT).await;
    assert!(
        !got.is_empty(),
        "{case}: event {n} due at {due} had not arrived {LATE_LIMIT:?} after it (the scanner scans only every {SCAN_INTERVAL:?})"
    );
    let at = got[0];
    let late = at - due;
    println!("SCHEDULED {case} late_ms={}", late.num_milliseconds());
    assert!(
        at >= due,
        "{case}: event {n} arrived at {at}, before its due time {due}"
    );
    // Anything sent twice would arrive within the same wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f.arrivals.of(n).len(),
        1,
        "{case}: event {n} arrived more than once"
    );
}

/// Schedules event `n` due in 2 s the way `how` says, checks it stays
/// unsent until then and arrives once soon after.
async fn due_in_two_seconds<E: Numbered>(f: &Fixture, app: &RunningApp, case: &str, n: u32) {
    let producer = app.producer();
    let due = Utc::now() + chrono::Duration::seconds(2);
    let id = match n % 3 {
        0 => producer.send_at(&E::new(n), due).await,
        1 => {
            producer
                .send_after(&E::new(n), Duration::from_secs(2))
                .await
        }
        _ => publish_at_in_tx(f, &producer, E::new(n), due, true).await,
    }
    .expect("scheduled");
    // (send_after's own due time is a moment after `due`: the bounds hold.)
    assert_eq!(f.status(id).await, Some(MessageStatus::Pending));
    // Shortly before the due time nothing has been sent.
    let before = (due - Utc::now() - chrono::Duration::milliseconds(300))
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(before).await;
    assert!(
        f.arrivals.of(n).is_empty(),
        "{case}: sent before its due time"
    );
    assert_eq!(f.status(id).await, Some(MessageStatus::Pending));
    assert_on_time(f, case, n, due).await;
    eventually_sent(f, id).await;
}

async fn eventually_sent(f: &Fixture, id: EventId) {
    for _ in 0..100 {
        if f.status(id).await == Some(MessageStatus::Sent) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("row {id} was never marked Sent");
}

/// `publish_at` in a transaction on the fixture's database, committed or
/// rolled back.
async fn publish_at_in_tx<E: Numbered>(
    f: &Fixture,
    producer: &Producer,
    event: E,
    due: DateTime<Utc>,
    commit: bool,
) -> heytom_mq::Result<EventId> {
    macro_rules! on {
        ($pool:expr) => {{
            let mut tx = producer.begin($pool).await?;
            let id = tx.publish_at(&event, due).await?;
            assert_eq!(tx.event_ids(), vec![id]);
            if commit {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(id)
        }};
    }
    match &f.db {
        Db::Postgres(p) => on!(p),
        Db::MySql(p) => on!(p),
        Db::Sqlite(p, _) => on!(p),
    }
}

/// Schedules event `n` due in 3 s, stops the app before then, starts a new
/// app on the same table: that one sends it, once, not before it is due.
async fn survives_a_restart<E: Numbered>(f: &Fixture, first: RunningApp, case: &str, n: u32) {
    let due = Utc::now() + chrono::Duration::seconds(3);
    let id = first
        .producer()
        .send_at(&E::new(n), due)
        .await
        .expect("scheduled");
    first.shutdown().await.expect("the first app stops");
    assert!(
        f.arrivals.of(n).is_empty(),
        "{case}: sent before its due time"
    );
    assert_eq!(f.status(id).await, Some(MessageStatus::Pending));
    // The new app learns the due time from the table alone.
    let second = f.app::<E>().await;
    assert_on_time(f, case, n, due).await;
    eventually_sent(f, id).await;
    second.shutdown().await.expect("the second app stops");
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_in_memory() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let f = Fixture::new(db, Broker::Memory(InMemoryBroker::new()));
    let app = f.app::<SchedMemory>().await;
    f.warm_up::<SchedMemory>(&app).await;

    // send_at, send_after, publish_at: each due in 2 s.
    for n in [3, 4, 5] {
        due_in_two_seconds::<SchedMemory>(&f, &app, &format!("postgres-memory-{n}"), n).await;
    }

    // A due time in the past: sent at once, by the post-commit path.
    let producer = app.producer();
    let past = Utc::now() - chrono::Duration::seconds(5);
    producer.send_at(&SchedMemory::new(6), past).await.unwrap();
    let got = f.arrivals.wait(6, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "a past due time is sent at once");

    // A delay past what a timestamp holds.
    let e = producer
        .send_after(&SchedMemory::new(1), Duration::MAX)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");

    // publish_at in a rolled-back (and a dropped) transaction: never sent.
    // A committed one due at the same time shows the scanner got past it.
    let due = Utc::now() + chrono::Duration::seconds(1);
    let rolled_back = publish_at_in_tx(&f, &producer, SchedMemory::new(7), due, false)
        .await
        .unwrap();
    let dropped = {
        let Db::Postgres(pool) = &f.db else {
            unreachable!()
        };
        let mut tx = producer.begin(pool).await.unwrap();
        let id = tx.publish_at(&SchedMemory::new(8), due).await.unwrap();
        drop(tx);
        id
    };
    publish_at_in_tx(&f, &producer, SchedMemory::new(9), due, true)
        .await
        .unwrap();
    assert_on_time(&f, "postgres-memory-control", 9, due).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        f.arrivals.of(7).is_empty(),
        "a rolled-back publish_at was sent"
    );
    assert!(f.arrivals.of(8).is_empty(), "a dropped publish_at was sent");
    assert_eq!(f.status(rolled_back).await, None);
    assert_eq!(f.status(dropped).await, None);

    survives_a_restart::<SchedMemory>(&f, app, "postgres-memory-restart", 10).await;
    f.cleanup().await;
}

/// Another instance on the table, already asleep until its 60 s scan,
/// sends a row scheduled by an app that then stopped: on PostgreSQL the
/// insert's NOTIFY makes it read the new due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_another_instance_for_its_due_time() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let f = Fixture::new(db, Broker::Memory(InMemoryBroker::new()));
    let sender = f.app::<SchedMemory>().await;
    f.warm_up::<SchedMemory>(&sender).await;
    // Its first scan is done: it sleeps until the interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scheduler = f.app::<SchedMemory>().await;
    let due = Utc::now() + chrono::Duration::seconds(2);
    let id = scheduler
        .producer()
        .send_at(&SchedMemory::new(1), due)
        .await
        .unwrap();
    scheduler.shutdown().await.unwrap();
    assert_on_time(&f, "postgres-memory-notify", 1, due).await;
    eventually_sent(&f, id).await;
    sender.shutdown().await.unwrap();
    f.cleanup().await;
}

/// The in-memory transport, refusing the first publish of each message
/// (the broker refused it: a failure of the message, counted as a retry).
struct RefuseFirst {
    inner: InMemoryTransport,
    refused: Mutex<std::collections::HashSet<EventId>>,
}

#[async_trait::async_trait]
impl Transport for RefuseFirst {
    fn kind(&self) -> TransportKind {
        TransportKind::InMemory
    }
    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.inner.group_for(handler)
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        if self.refused.lock().unwrap().insert(message.envelope.id) {
            return Err(Error::publish(
                &message.envelope.name,
                "refused once (test)",
            ));
        }
        self.inner.publish(message).await
    }
    async fn subscribe(&self, sub: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        self.inner.subscribe(sub).await
    }
}

/// A scheduled send that fails is retried like any row: Failed, one retry
/// counted, sent again after the outbox's backoff (the scanner wakes for
/// it, not at the 60 s interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_scheduled_send_is_retried_after_the_backoff() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let broker = InMemoryBroker::new();
    let f = Fixture::new(db, Broker::Memory(broker.clone()));
    let backoff = Duration::from_secs(1);
    let app = f
        .broker
        .builder()
        .transport(Arc::new(RefuseFirst {
            inner: InMemoryTransport::new(broker),
            refused: Mutex::default(),
        }))
        .outbox(f.outbox().retry_backoff(backoff))
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: SCAN_INTERVAL,
            ..Default::default()
        })
        .handler_entry(f.arrivals.entry::<SchedMemory>())
        .start()
        .await
        .unwrap();
    let due = Utc::now() + chrono::Duration::seconds(2);
    let id = app
        .producer()
        .send_at(&SchedMemory::new(1), due)
        .await
        .unwrap();
    // First attempt at the due time, refused; the retry a backoff later.
    let retry_due = due + chrono::Duration::from_std(backoff).unwrap();
    assert_on_time(
        &f,
        "postgres-memory-retry",
        1,
        retry_due - chrono::Duration::milliseconds(100),
    )
    .await;
    let row = f.outbox().message(id).await.unwrap().expect("the row");
    assert_eq!(row.retry_count, 1, "one failed attempt counted");
    assert!(row
        .error_message
        .is_some_and(|e| e.contains("refused once")));
    eventually_sent(&f, id).await;
    app.shutdown().await.unwrap();
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rabbitmq() {
    let Some(db) = Db::mysql().await else {
        return;
    };
    let Some(broker) = Broker::rabbitmq().await else {
        return;
    };
    let f = Fixture::new(db, broker);
    let app = f.app::<SchedRabbit>().await;
    f.warm_up::<SchedRabbit>(&app).await;
    due_in_two_seconds::<SchedRabbit>(&f, &app, "mariadb-rabbitmq-send_at", 3).await;
    due_in_two_seconds::<SchedRabbit>(&f, &app, "mariadb-rabbitmq-publish_at", 5).await;
    survives_a_restart::<SchedRabbit>(&f, app, "mariadb-rabbitmq-restart", 10).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kafka() {
    let Some(broker) = Broker::kafka() else {
        return;
    };
    let f = Fixture::new(Db::sqlite().await, broker);
    let app = f.app::<SchedKafka>().await;
    f.warm_up::<SchedKafka>(&app).await;
    due_in_two_seconds::<SchedKafka>(&f, &app, "sqlite-kafka-send_after", 4).await;
    due_in_two_seconds::<SchedKafka>(&f, &app, "sqlite-kafka-publish_at", 5).await;
    survives_a_restart::<SchedKafka>(&f, app, "sqlite-kafka-restart", 10).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_needs_an_outbox_and_its_scanner() {
    // No outbox: a configuration error, not a panic.
    let app = App::builder()
        .in_memory_broker(InMemoryBroker::new())
        .discover(false)
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let e = producer
        .send_at(
            &SchedMemory::new(1),
            Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Configuration(m) if m.contains("AppBuilder::outbox")),
        "{e}"
    );
    let e = producer
        .send_after(&SchedMemory::new(1), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    app.shutdown().await.unwrap();

    // An outbox without its retry scanner could never send a scheduled row.
    let db = Db::sqlite().await;
    let table = format!("Scheduled_{}", unique());
    let app = App::builder()
        .in_memory_broker(InMemoryBroker::new())
        .discover(false)
        .outbox(db.outbox(&table))
        .local_message_retry(LocalMessageRetryOptions {
            enabled: false,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let e = app
        .producer()
        .send_after(&SchedMemory::new(1), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Configuration(m) if m.contains("LocalMessageRetryOptions::enabled")),
        "{e}"
    );
    let Db::Sqlite(pool, _) = &db else {
        unreachable!()
    };
    let mut tx = app.producer().begin(pool).await.unwrap();
    let e = tx
        .publish_at(
            &SchedMemory::new(1),
            Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    drop(tx);
    app.shutdown().await.unwrap();
    db.drop_table(&table).await;
}
