//! The inbox: idempotent consumers and transactional handlers.
//!
//! Consuming is at least once: a message is acked after its handler
//! finished, so a crash in between delivers it again, and brokers redeliver
//! for reasons of their own. The inbox makes such a redelivery harmless. Its
//! table (`ReceivedMessages` by default) holds one row per (message id,
//! handler name), the pair being the primary key.
//!
//! A handler runs in the inbox's transaction when it is
//! `#[handler(idempotent)]`, when it takes a [`Tx<DB>`](Tx) argument, or
//! when the inbox is registered with [`Inbox::for_all_handlers`]. Per
//! delivery, the runtime:
//!
//! 1. begins a transaction on the inbox's pool and inserts the row
//!    (message id, handler). A duplicate key means the message was handled
//!    already: the transaction is rolled back and the message acked without
//!    running the handler. While the row is uncommitted it is locked, so a
//!    concurrent duplicate (another consumer, a redelivery) waits for this
//!    run and is then skipped (PostgreSQL, MySQL/MariaDB; SQLite has one
//!    writer at a time anyway);
//! 2. runs the handler, which writes its business data through
//!    [`Tx`] (`&mut *tx` is the connection) in the same transaction;
//! 3. when it succeeds, writes the follow-ups it published with
//!    `ctx.publish()` into the outbox table, in the same transaction;
//! 4. commits, then emits the `tracing` event "inbox committed" (target
//!    `heytom_mq::inbox`), then hands the follow-ups to the outbox relay,
//!    which sends them at once; the dispatcher acks the message (for Kafka:
//!    stores its offset) only after that;
//! 5. when the handler fails, panics or is abandoned at the stop deadline,
//!    rolls everything back (business writes, inbox row, follow-ups) and
//!    the retry policy applies as usual.
//!
//! So from database through broker to database an event takes effect once:
//! a crash before the commit leaves nothing, and a crash after it leaves a
//! row that skips the redelivery. Only the handler's effects outside the
//! transaction (an HTTP call, a direct send) are at least once.
//!
//! The follow-ups are written into the outbox only when the outbox is in
//! the inbox's database (`AppBuilder::outbox` on the same database; `build`
//! checks that its table is reachable through the inbox's pool). A handler
//! taking `Tx` needs that; an idempotent handler without `Tx` in an app
//! whose outbox is elsewhere (or absent) publishes its follow-ups at once,
//! as any handler does.
//!
//! Old rows are deleted after [`Inbox::retention`] (7 days by default): a
//! redelivery older than that runs again.
//!
//! ```no_run
//! # use heytom_mq::prelude::*;
//! # use heytom_mq::{Inbox, Tx};
//! # #[derive(Event, serde::Serialize, serde::Deserialize)] struct OrderPlaced { order_id: String }
//! #[handler(idempotent)]
//! async fn bill(event: OrderPlaced, mut tx: Tx<sqlx::Postgres>) -> Result<(), HandlerError> {
//!     sqlx::query("INSERT INTO invoices (order_id) VALUES ($1)")
//!         .bind(&event.order_id)
//!         .execute(&mut *tx)
//!         .await?;
//!     Ok(())
//! }
//!
//! # async fn run(pool: sqlx::PgPool) -> Result<(), heytom_mq::Error> {
//! App::builder()
//!     .outbox(Outbox::postgres(pool.clone()))
//!     .inbox(Inbox::postgres(pool))
//!     .run()
//!     .await
//! # }
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::outbox::repository::DbKind;

mod dialect;
mod guard;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
mod runtime;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tx;

use dialect::{check_table_name, InboxTable};
pub(crate) use runtime::{require_inbox, InboxRuntime};
pub use tx::Tx;

/// The default table name.
pub const DEFAULT_TABLE_NAME: &str = "ReceivedMessages";

/// The default [`Inbox::retention`]: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub(crate) enum InboxPool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// Runs `$body` with `$p` bound to the concrete pool (one arm per database).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            $crate::inbox::InboxPool::Postgres($p) => $body,
            #[cfg(feature = "mysql")]
            $crate::inbox::InboxPool::MySql($p) => $body,
            #[cfg(feature = "sqlite")]
            $crate::inbox::InboxPool::Sqlite($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The inbox: where an app records the messages its handlers processed.
/// Register it with `AppBuilder::inbox`.
///
/// ```no_run
/// # use heytom_mq::Inbox;
/// # use std::time::Duration;
/// # fn f(pool: sqlx::PgPool) {
/// let inbox = Inbox::postgres(pool)
///     .table_name("ReceivedMessages")          // the default
///     .retention(Duration::from_secs(3 * 24 * 3600))
///     .for_all_handlers();                      // not only #[handler(idempotent)]
/// # }
/// ```
#[derive(Clone)]
pub struct Inbox {
    pub(crate) pool: InboxPool,
    pub(crate) table_name: String,
    pub(crate) create_table: bool,
    pub(crate) retention: Option<Duration>,
    pub(crate) cleanup_interval: Duration,
    pub(crate) for_all_handlers: bool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("database", &self.kind().as_str())
            .field("table_name", &self.table_name)
            .field("create_table", &self.create_table)
            .field("retention", &self.retention)
            .field("for_all_handlers", &self.for_all_handlers)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    fn with_pool(pool: InboxPool) -> Self {
        Inbox {
            pool,
            table_name: DEFAULT_TABLE_NAME.to_owned(),
            create_table: true,
            retention: Some(DEFAULT_RETENTION),
            cleanup_interval: Duration::from_secs(600),
            for_all_handlers: false,
        }
    }

    /// An inbox in PostgreSQL; `Tx<sqlx::Postgres>` runs on this pool.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::with_pool(InboxPool::Postgres(pool))
    }

    /// An inbox in MySQL or MariaDB; `Tx<sqlx::MySql>` runs on this pool.
    #[cfg(feature = "mysql")]
    pub fn mysql(pool: sqlx::MySqlPool) -> Self {
        Self::with_pool(InboxPool::MySql(pool))
    }

    /// An inbox in SQLite; `Tx<sqlx::Sqlite>` runs on this pool. SQLite has
    /// one writer at a time: a handler's transaction holds it while the
    /// handler runs.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::with_pool(InboxPool::Sqlite(pool))
    }

    /// Sets the table name (default `ReceivedMessages`). `AppBuilder::build`
    /// rejects anything but a plain SQL identifier of at most 48 characters.
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = name.into();
        self
    }

    /// The table name.
    pub fn get_table_name(&self) -> &str {
        &self.table_name
    }

    /// Creates the table and its index if missing (default `true`). With
    /// `false` the table must exist (`migrations/<db>/inbox_001_create_received_messages.sql`);
    /// `build` checks its columns.
    pub fn create_table(mut self, on: bool) -> Self {
        self.create_table = on;
        self
    }

    /// Deletes rows older than `age` (default 7 days, from 1 minute to 100
    /// years), in small batches, every
    /// [`cleanup_interval`](Self::cleanup_interval). A message redelivered
    /// after its row was deleted is handled again: keep rows longer than
    /// any redelivery can take.
    pub fn retention(mut self, age: Duration) -> Self {
        self.retention = Some(age);
        self
    }

    /// Keeps every row (no periodic delete).
    pub fn keep_forever(mut self) -> Self {
        self.retention = None;
        self
    }

    /// How often old rows are deleted (default 10 minutes, from 1 second
    /// to 1 day).
    pub fn cleanup_interval(mut self, every: Duration) -> Self {
        self.cleanup_interval = every;
        self
    }

    /// Makes every handler of the app idempotent, not only those with
    /// `#[handler(idempotent)]`.
    pub fn for_all_handlers(mut self) -> Self {
        self.for_all_handlers = true;
        self
    }

    pub(crate) fn kind(&self) -> DbKind {
        dialect::of(&self.pool).kind
    }

    pub(crate) fn table(&self) -> Result<InboxTable> {
        check_table_name(&self.table_name).map_err(Error::Configuration)?;
        Ok(InboxTable::new(dialect::of(&self.pool), &self.table_name))
    }

    /// Creates the table and its index if they do not exist.
    pub async fn ensure_table(&self) -> Result<()> {
        let table = self.table()?;
        for stmt in table.create_statements() {
            on_pool!(&self.pool, p => dialect::run(p, &stmt).await).map_err(|e| {
                Error::storage(
                    format!("creating the inbox table {} failed: {e}", table.name),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Whether `handler` has processed the message `id` (its row is there).
    pub async fn processed(&self, id: Uuid, handler: &str) -> Result<bool> {
        let table = self.table()?;
        let sql = sqlx::AssertSqlSafe(table.processed.clone());
        let n: i64 = on_pool!(&self.pool, p => sqlx::query_scalar(sql)
            .bind(id.to_string())
            .bind(handler)
            .fetch_one(p)
            .await)
        .map_err(|e| {
            Error::storage(
                format!("reading the inbox table {} failed: {e}", table.name),
                e,
            )
        })?;
        Ok(n > 0)
    }

    /// Deletes rows received before `before`, in batches; returns how many
    /// were deleted.
    pub async fn purge(&self, before: DateTime<Utc>) -> Result<u64> {
        runtime::purge(&self.pool, &self.table()?, before).await
    }
}
