//! The local message table (transactional outbox).
//!
//! Events are written to a table in the same database transaction as the
//! business data, then sent by an in-process relay right after the commit.
//! A retry scanner picks up whatever was not sent (broker down, process
//! crashed between commit and send) and claims rows so that several app
//! instances on one table never send the same row twice.
//!
//! ```no_run
//! # use heytom_mq::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct OrderCreated { order_id: String }
//! # impl Event for OrderCreated { const NAME: &'static str = "OrderCreated";
//! #   fn route() -> &'static Route { static R: Route = Route::Default; &R }
//! #   fn partition_key(&self) -> Option<String> { None } }
//! # async fn run(pool: sqlx::PgPool) -> Result<(), heytom_mq::Error> {
//! let app = App::builder()
//!     .outbox(Outbox::postgres(pool.clone()).table_name("LocalMessages"))
//!     .start()
//!     .await?;
//! let producer = app.producer();
//! producer
//!     .send_with_transaction(&pool, |tx| Box::pin(async move {
//!         sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o-1").execute(&mut **tx).await?;
//!         Ok(OrderCreated { order_id: "o-1".into() })
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`repository`] holds the statements and repository logic once;
//! `postgres.rs`, `mysql.rs` and `sqlite.rs` hold each database's dialect
//! (quoting, placeholders, DDL, claim strategy) and row mapping; `relay.rs`
//! runs the dispatch after commit and the retry scanner.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{check, Error, Result};

mod admin;
mod backend;
mod config;
mod dialect;
mod followups;
mod gauges;
mod health;
mod lease;
mod marker;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(all(test, feature = "postgres"))]
mod plan_tests;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
pub mod repository;
mod schedule;
mod sender;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
mod transaction;
mod wake;

pub use admin::{MessageFilter, MessagePage, OutboxAdmin, SentRate};
pub(crate) use config::resolve_config;
pub use config::OutboxConfig;
pub use health::OutboxHealth;
pub use relay::OutboxRuntime;
pub use transaction::{OutboxDatabase, OutboxTransaction};

use repository::{check_table_name, Backend, Store};

/// The default table name.
pub const DEFAULT_TABLE_NAME: &str = "LocalMessages";

/// A callback for rows that used up their retries.
pub type ExhaustedCallback = Arc<dyn Fn(&LocalMessage) + Send + Sync>;

#[derive(Clone)]
enum OutboxPool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// Where the local message table lives and how the relay treats it.
///
/// ```no_run
/// # use heytom_mq::Outbox;
/// # use std::time::Duration;
/// # fn f(pool: sqlx::PgPool) {
/// let outbox = Outbox::postgres(pool)
///     .table_name("LocalMessages")
///     .retention(Duration::from_secs(7 * 24 * 3600))
///     .on_exhausted(|msg| eprintln!("gave up on {} ({})", msg.id, msg.message_type));
/// # }
/// ```
#[derive(Clone)]
pub struct Outbox {
    pool: OutboxPool,
    table_name: String,
    create_table: bool,
    dispatch_after_commit: bool,
    dispatch_lease: Duration,
    retry_backoff: Duration,
    max_retry_backoff: Duration,
    retention: Option<Duration>,
    pub(crate) allow_unconfirmed_transport: bool,
    on_exhausted: Option<ExhaustedCallback>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("database", &self.kind().as_str())
            .field("table_name", &self.table_name)
            .field("create_table", &self.create_table)
            .field("dispatch_after_commit", &self.dispatch_after_commit)
            .field("dispatch_lease", &self.dispatch_lease)
            .field("retry_backoff", &self.retry_backoff)
            .field("retention", &self.retention)
            .field("allow_unconfirmed", &self.allow_unconfirmed_transport)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    fn with_pool(pool: OutboxPool) -> Self {
        Outbox {
            pool,
            table_name: DEFAULT_TABLE_NAME.to_owned(),
            create_table: true,
            dispatch_after_commit: true,
            dispatch_lease: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(2),
            max_retry_backoff: Duration::from_secs(300),
            retention: None,
            allow_unconfirmed_transport: false,
            on_exhausted: None,
        }
    }

    /// A local message table in PostgreSQL.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::with_pool(OutboxPool::Postgres(pool))
    }

    /// A local message table in MySQL 8+ or MariaDB 10.6+.
    #[cfg(feature = "mysql")]
    pub fn mysql(pool: sqlx::MySqlPool) -> Self {
        Self::with_pool(OutboxPool::MySql(pool))
    }

    /// A local message table in SQLite.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::with_pool(OutboxPool::Sqlite(pool))
    }

    /// An outbox from a database URL (`postgres://`, `mysql://`,
    /// `mariadb://`, `sqlite:`); the pool connects lazily, on first use.
    pub fn from_url(url: &str) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "Outbox::from_url needs a running tokio runtime",
            ));
        }
        let bad = |what: &str| {
            Error::config(format!(
                "could not use database URL {} for the outbox: {what}",
                crate::redact::redact_url(url)
            ))
        };
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => sqlx::postgres::PgPoolOptions::new()
                .connect_lazy(url)
                .map(Self::postgres)
                .map_err(|_| bad("not a valid PostgreSQL URL")),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                sqlx::mysql::MySqlPoolOptions::new()
                    .connect_lazy(&url)
                    .map(Self::mysql)
                    .map_err(|_| bad("not a valid MySQL URL"))
            }
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                use std::str::FromStr;
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .map_err(|_| bad("not a valid SQLite URL"))?
                    .create_if_missing(true);
                Ok(Self::sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(opts),
                ))
            }
            _ => Err(bad(
                "unsupported scheme (enabled: postgres, mysql, sqlite features)",
            )),
        }
    }

    /// Sets the table name (default `LocalMessages`). `AppBuilder::build`
    /// rejects anything but a plain SQL identifier.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = name.into();
        self
    }

    /// The table name.
    pub fn get_table_name(&self) -> &str {
        &self.table_name
    }

    /// Creates the table and its indexes if missing (default `true`). With
    /// `false` the table must exist (see `migrations/`); `build` checks its columns.
    pub fn create_table(mut self, on: bool) -> Self {
        self.create_table = on;
        self
    }

    /// Sends committed rows at once from this process (default `true`).
    /// With `false` rows are left to the retry scanner of any instance.
    pub fn dispatch_after_commit(mut self, on: bool) -> Self {
        self.dispatch_after_commit = on;
        self
    }

    /// How long a row claimed by one sender is hidden from every other
    /// sender (default 10 s), measured on the database's clock. The sender
    /// renews the lease every third of it while the send is in flight, so a
    /// slow broker never makes a second sender take the row; a row whose
    /// instance died is free again at most this long after the death (then
    /// sent by the next scan of any instance). Committed rows carry the same
    /// lease from their insert until the post-commit sender takes them over.
    /// From 100 ms to 1 day.
    pub fn dispatch_lease(mut self, lease: Duration) -> Self {
        self.dispatch_lease = lease;
        self
    }

    /// Wait before the first retry of a failed send (default 2 s, at most
    /// 1 day); doubles with each failure up to
    /// [`max_retry_backoff`](Self::max_retry_backoff).
    pub fn retry_backoff(mut self, first: Duration) -> Self {
        self.retry_backoff = first;
        self
    }

    /// Upper bound of the retry wait (default 5 min, at most 1 day).
    pub fn max_retry_backoff(mut self, max: Duration) -> Self {
        self.max_retry_backoff = max;
        self
    }

    /// Deletes Sent rows older than `age` (at most 100 years), in small
    /// batches, on each scan (default: keep them). With `Duration::ZERO`
    /// a row is deleted as soon as its send is confirmed, in the statement
    /// that would have marked it Sent: the table holds only rows still to
    /// send and Failed ones, and each event costs the database one write
    /// less.
    pub fn retention(mut self, age: Duration) -> Self {
        self.retention = Some(age);
        self
    }

    /// Lets the outbox send over a transport that cannot confirm delivery
    /// (default `false`; RabbitMQ without publisher confirms, Kafka with
    /// `acks = 0` in the options or an event's attribute), which `build`
    /// refuses otherwise: a row would be marked Sent once the message is
    /// written to the socket, whether or not the broker stored it.
    pub fn allow_unconfirmed_transport(mut self, allow: bool) -> Self {
        self.allow_unconfirmed_transport = allow;
        self
    }

    /// Called (besides a `tracing` warning) for each row that reached
    /// `max_retry_count` and will not be retried.
    pub fn on_exhausted(mut self, f: impl Fn(&LocalMessage) + Send + Sync + 'static) -> Self {
        self.on_exhausted = Some(Arc::new(f));
        self
    }

    fn kind(&self) -> repository::DbKind {
        match &self.pool {
            #[cfg(feature = "postgres")]
            OutboxPool::Postgres(_) => repository::DbKind::Postgres,
            #[cfg(feature = "mysql")]
            OutboxPool::MySql(_) => repository::DbKind::MySql,
            #[cfg(feature = "sqlite")]
            OutboxPool::Sqlite(_) => repository::DbKind::Sqlite,
        }
    }

    fn backend(&self) -> Box<dyn Backend> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            OutboxPool::Postgres(p) => Box::new(postgres::PgBackend { pool: p.clone() }),
            #[cfg(feature = "mysql")]
            OutboxPool::MySql(p) => Box::new(mysql::MySqlBackend { pool: p.clone() }),
            #[cfg(feature = "sqlite")]
            OutboxPool::Sqlite(p) => Box::new(sqlite::SqliteBackend { pool: p.clone() }),
        }
    }

    pub(crate) fn store(&self) -> Result<Store> {
        check_table_name(&self.table_name).map_err(Error::Configuration)?;
        Ok(Store::new(self.backend(), &self.table_name))
    }

    /// Creates the table and its indexes if they do not exist.
    pub async fn ensure_table(&self) -> Result<()> {
        self.store()?.create_table().await
    }

    /// Rows per status.
    pub async fn status_counts(&self) -> Result<StatusCounts> {
        Ok(StatusCounts::from_pairs(self.store()?.counts().await?))
    }

    /// Failed rows (those still retried and those that used up their
    /// retries), oldest first.
    pub async fn failed_messages(&self, limit: u32) -> Result<Vec<LocalMessage>> {
        self.store()?
            .list(MessageStatus::Failed, i64::from(limit))
            .await
    }

    /// Rows with a given status, oldest first.
    pub async fn messages(&self, status: MessageStatus, limit: u32) -> Result<Vec<LocalMessage>> {
        self.store()?.list(status, i64::from(limit)).await
    }

    /// One row by id.
    pub async fn message(&self, id: Uuid) -> Result<Option<LocalMessage>> {
        self.store()?.get(id).await
    }

    /// Puts a Failed row back to Pending with its retry count reset, so the
    /// next scan sends it. Returns `false` if no Failed row has this id.
    pub async fn requeue(&self, id: Uuid) -> Result<bool> {
        self.store()?.requeue(id).await
    }

    /// Deletes rows with `status` created before `before`, in batches;
    /// returns how many were deleted.
    pub async fn purge(&self, status: MessageStatus, before: DateTime<Utc>) -> Result<u64> {
        self.store()?.delete_before(status, before, 1000).await
    }
}

/// Retry scanner settings, checked by `AppBuilder::build` (see
/// [`LocalMessageRetryOptions::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMessageRetryOptions {
    /// Run the scanner at all.
    pub enabled: bool,
    /// Time between scans (a scan that finds a full batch continues at
    /// once); from 1 ms to 1 day.
    pub scan_interval: Duration,
    /// Rows claimed per query, from 1 to [`MAX_BATCH_SIZE`](Self::MAX_BATCH_SIZE).
    pub batch_size: u32,
    /// Failed sends after which a row stays Failed and is reported; from 1
    /// to `i32::MAX` (the `RetryCount` column is a 32-bit integer).
    pub max_retry_count: u32,
    /// The table; left at the default it follows the [`Outbox`]'s.
    pub table_name: String,
}

impl LocalMessageRetryOptions {
    /// The largest `batch_size` accepted (a claim binds one parameter per
    /// row, and every database bounds the parameters of a statement).
    pub const MAX_BATCH_SIZE: u32 = 10_000;

    /// Checks the numbers; the error names the setting and its range. The
    /// scan interval is checked only when the scanner is enabled.
    pub fn validate(&self) -> Result<()> {
        let name = |field: &str| format!("LocalMessageRetryOptions::{field}");
        if self.enabled {
            let (min, max) = (check::MILLISECOND, check::DAY);
            check::duration(&name("scan_interval"), self.scan_interval, min, max)?;
        }
        check::int(
            &name("batch_size"),
            self.batch_size,
            1,
            Self::MAX_BATCH_SIZE,
        )?;
        check::int(&name("max_retry_count"), self.max_retry_count, 1, i32::MAX)
    }
}

impl Default for LocalMessageRetryOptions {
    fn default() -> Self {
        LocalMessageRetryOptions {
            enabled: true,
            scan_interval: Duration::from_secs(30),
            batch_size: 100,
            max_retry_count: 5,
            table_name: DEFAULT_TABLE_NAME.to_owned(),
        }
    }
}

/// Status of a row in the local message table.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Written, not yet sent.
    Pending = 0,
    /// Sent and confirmed by the broker.
    Sent = 1,
    /// The last send failed; retried while `RetryCount < max_retry_count`.
    Failed = 2,
}

impl TryFrom<i32> for MessageStatus {
    type Error = String;
    fn try_from(v: i32) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(MessageStatus::Pending),
            1 => Ok(MessageStatus::Sent),
            2 => Ok(MessageStatus::Failed),
            other => Err(format!("unknown message status {other}")),
        }
    }
}

/// Rows per status, from [`Outbox::status_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Pending rows.
    pub pending: u64,
    /// Sent rows.
    pub sent: u64,
    /// Failed rows.
    pub failed: u64,
    /// Rows with a status value heytom-mq does not know.
    pub other: u64,
}

/// A row of the local message table.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalMessage {
    /// The event id (UUID v7).
    pub id: Uuid,
    /// The transport: `InMemory`, `RabbitMQ` or `Kafka`.
    pub mq_type: String,
    /// Kafka topic, RabbitMQ exchange, or the event name on the default transport.
    pub topic: String,
    /// RabbitMQ routing key.
    pub routing_key: Option<String>,
    /// The event's `NAME`; the relay sends only registered types.
    pub message_type: String,
    /// The event as JSON.
    pub message_body: String,
    /// Pending, Sent or Failed.
    pub status: MessageStatus,
    /// When the event was created (its `occurred_at`).
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: Option<DateTime<Utc>>,
    /// Failed sends so far.
    pub retry_count: i32,
    /// The last send's error.
    pub error_message: Option<String>,
    /// The envelope's headers as a JSON object (correlation id, ...).
    pub headers: Option<String>,
    /// The partition key (Kafka message key).
    pub partition_key: Option<String>,
    /// Not claimed by a scanner before this time (a scheduled row's due time).
    pub next_attempt_at: DateTime<Utc>,
    /// The relay instance that holds the row's lease.
    pub locked_by: Option<String>,
}

impl LocalMessage {
    /// A Pending row for a message type and JSON body, due now; the other
    /// columns take their defaults (topic = message type, default transport).
    pub fn pending(message_type: impl Into<String>, message_body: impl Into<String>) -> Self {
        let message_type = message_type.into();
        let now = Utc::now();
        LocalMessage {
            id: crate::event::new_event_id(),
            mq_type: crate::event::TransportKind::InMemory.as_str().to_owned(),
            topic: message_type.clone(),
            routing_key: None,
            message_type,
            message_body: message_body.into(),
            status: MessageStatus::Pending,
            created_at: now,
            updated_at: None,
            retry_count: 0,
            error_message: None,
            headers: None,
            partition_key: None,
            next_attempt_at: DateTime::UNIX_EPOCH,
            locked_by: None,
        }
    }
}

/// Storage of local messages, as in the original `ILocalMessageRepository`.
/// Implemented by [`Outbox`].
#[async_trait]
pub trait LocalMessageRepository: Send + Sync {
    /// Inserts one row (outside any business transaction).
    async fn save(&self, message: &LocalMessage) -> Result<()>;
    /// Inserts rows with multi-row inserts.
    async fn save_batch(&self, messages: &[LocalMessage]) -> Result<()>;
    /// Sets a row's status and error message; `false` if no row has this id.
    async fn update_status(
        &self,
        id: Uuid,
        status: MessageStatus,
        error_message: Option<&str>,
    ) -> Result<bool>;
    /// Pending rows, oldest first.
    async fn get_pending_messages(&self, limit: u32) -> Result<Vec<LocalMessage>>;
}

#[async_trait]
impl LocalMessageRepository for Outbox {
    async fn save(&self, message: &LocalMessage) -> Result<()> {
        self.store()?.save(std::slice::from_ref(message)).await
    }

    async fn save_batch(&self, messages: &[LocalMessage]) -> Result<()> {
        self.store()?.save(messages).await
    }

    async fn update_status(
        &self,
        id: Uuid,
        status: MessageStatus,
        error_message: Option<&str>,
    ) -> Result<bool> {
        self.store()?.update_status(id, status, error_message).await
    }

    async fn get_pending_messages(&self, limit: u32) -> Result<Vec<LocalMessage>> {
        self.store()?
            .list(MessageStatus::Pending, i64::from(limit))
            .await
    }
}
