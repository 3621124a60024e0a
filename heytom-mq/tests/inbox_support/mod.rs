//! What the inbox tests (`inbox.rs`, `inbox_crash.rs`) share: the
//! databases, the transports, test events on routes unique to this run,
//! and the handlers' shared state.
#![allow(dead_code)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heytom_mq::{
    AppBuilder, AutoOffsetReset, EventId, KafkaOptions, KafkaRoute, RabbitMqOptions, RabbitMqRoute,
    Route,
};

pub fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A service is unreachable: fails the test under
/// `HEYTOM_TEST_REQUIRE_SERVICES=1`, otherwise a notice.
pub fn unavailable(what: &str, e: impl std::fmt::Display) {
    if require_services() {
        panic!("{what} unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}");
    }
    eprintln!("NOTICE: {what} unreachable ({e}); skipping this test");
}

/// A short unique suffix for table, queue and topic names.
pub fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

/// This run's id, in every broker name.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| std::env::var("HEYTOM_INBOX_RUN").unwrap_or_else(|_| unique()))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn pg_url() -> String {
    std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn mysql_url() -> String {
    std::env::var("HEYTOM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

pub fn rabbit_url() -> String {
    std::env::var("HEYTOM_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub async fn postgres() -> Option<sqlx::PgPool> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&pg_url()),
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

pub async fn mysql() -> Option<sqlx::MySqlPool> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(10)
            .connect(&mysql_url()),
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

/// A fresh SQLite file (WAL, several connections).
pub async fn sqlite() -> Option<sqlx::SqlitePool> {
    let path = std::env::temp_dir().join(format!("heytom-inbox-test-{}.db", unique()));
    sqlite_at(&format!("sqlite://{}", path.display())).await
}

pub async fn sqlite_at(url: &str) -> Option<sqlx::SqlitePool> {
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

/// Which broker a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Memory,
    RabbitMq,
    Kafka,
}

pub fn rabbit() -> RabbitMqOptions {
    RabbitMqOptions::new(rabbit_url())
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .publish_timeout(Duration::from_secs(30))
}

/// The Kafka broker: `HEYTOM_KAFKA_BOOTSTRAP_SERVERS`.
pub fn kafka_servers() -> Option<String> {
    match std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
        Ok(s) if !s.trim().is_empty() => Some(s),
        _ => {
            unavailable(
                "Kafka",
                "HEYTOM_KAFKA_BOOTSTRAP_SERVERS is not set (eval \"$(scripts/kafka-broker.sh start)\")",
            );
            None
        }
    }
}

pub fn kafka(servers: &str) -> KafkaOptions {
    KafkaOptions::new(servers)
        .consumer_property("fetch.wait.max.ms", "10")
        .operation_timeout(Duration::from_secs(20))
}

/// An app builder on `via`, or `None` (after a notice) when its broker is
/// not there and services are not required.
pub async fn builder(via: Via) -> Option<AppBuilder> {
    let b = heytom_mq::App::builder();
    match via {
        Via::Memory => Some(b.in_memory()),
        Via::RabbitMq => {
            match lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default())
                .await
            {
                Ok(c) => {
                    let _ = c.close(200, "probe".into()).await;
                    Some(b.rabbitmq(rabbit()))
                }
                Err(e) => {
                    unavailable("RabbitMQ", e);
                    None
                }
            }
        }
        Via::Kafka => kafka_servers().map(|s| b.kafka(kafka(&s))),
    }
}

/// The route of test event `name` on `via`, unique to this run.
pub fn route_for(name: &str, via: Via) -> Route {
    let name = name.replace("::", ".").replace('_', "-").to_lowercase();
    let base = format!("heytom-inbox-{name}-{}", run_id());
    match via {
        Via::Memory => Route::Default,
        Via::RabbitMq => Route::RabbitMq(
            RabbitMqRoute::new(leak(format!("{base}.key")))
                .exchange(leak(format!("heytom.inbox.test.{}", run_id())))
                .queue_name(leak(base))
                .durable(false),
        ),
        Via::Kafka => Route::Kafka(
            KafkaRoute::new(leak(base.clone()))
                .group_id(leak(format!("{base}-group")))
                .num_partitions(1)
                .session_timeout_ms(6000)
                .auto_offset_reset(AutoOffsetReset::Earliest),
        ),
    }
}

/// Defines test event `$ty` with the given fields on `Via::$via`, named
/// by its path (unique in the binary), registered (the outbox relay sends only registered events).
#[macro_export]
macro_rules! test_event {
    ($ty:ident, $via:ident, { $($field:ident : $fty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        pub struct $ty {
            $(pub $field: $fty),*
        }

        impl heytom_mq::Event for $ty {
            // Unique in the binary: the outbox relay routes a row by its name.
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($ty));
            fn route() -> &'static heytom_mq::Route {
                static ROUTE: std::sync::OnceLock<heytom_mq::Route> = std::sync::OnceLock::new();
                ROUTE.get_or_init(|| {
                    $crate::inbox_support::route_for(
                        <$ty as heytom_mq::Event>::NAME,
                        $crate::inbox_support::Via::$via,
                    )
                })
            }
            fn partition_key(&self) -> Option<String> {
                None
            }
        }

        heytom_mq::__private::inventory::submit! {
            heytom_mq::__private::EventRegistration {
                name: <$ty as heytom_mq::Event>::NAME,
                route: <$ty as heytom_mq::Event>::route,
            }
        }
    };
}

/// What the handlers of one test share: the business table, and counts per
/// event id of handler runs and follow-up deliveries.
#[derive(Clone, Default)]
pub struct Ctl {
    pub table: Arc<str>,
    runs: Arc<Mutex<HashMap<String, u32>>>,
    follow_ups: Arc<Mutex<HashMap<String, u32>>>,
}

impl Ctl {
    pub fn new(table: &str) -> Self {
        Ctl {
            table: Arc::from(table),
            ..Ctl::default()
        }
    }

    pub fn ran(&self, id: EventId) {
        *self.runs.lock().unwrap().entry(id.to_string()).or_default() += 1;
    }

    pub fn followed_up(&self, source: &str) {
        *self
            .follow_ups
            .lock()
            .unwrap()
            .entry(source.to_owned())
            .or_default() += 1;
    }

    pub fn runs(&self, id: EventId) -> u32 {
        self.runs
            .lock()
            .unwrap()
            .get(&id.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub fn follow_ups(&self, id: EventId) -> u32 {
        self.follow_ups
            .lock()
            .unwrap()
            .get(&id.to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Waits until every id in `ids` has a follow-up delivered.
    pub async fn wait_follow_ups(&self, ids: &[EventId], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while ids.iter().any(|id| self.follow_ups(*id) == 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "follow-ups after {timeout:?}: {:?}; runs: {:?}",
                self.follow_ups.lock().unwrap(),
                self.runs.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
