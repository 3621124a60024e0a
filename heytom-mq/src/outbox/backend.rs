//! The database behind a store: the [`Backend`] trait and the
//! `sql_backend!` macro that implements it (binding, row mapping) for one
//! sqlx database.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::dialect::{Built, Dialect};
use super::LocalMessage;

/// What a database must do; generated per database by [`sql_backend!`].
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    fn dialect(&self) -> &'static Dialect;
    async fn execute(&self, q: Built) -> std::result::Result<u64, sqlx::Error>;
    async fn fetch(&self, q: Built) -> std::result::Result<Vec<LocalMessage>, sqlx::Error>;
    async fn fetch_counts(&self, q: Built) -> std::result::Result<Vec<(i32, i64)>, sqlx::Error>;
    /// The first column of every row, as text (column and index names).
    async fn fetch_names(&self, q: Built) -> std::result::Result<Vec<String>, sqlx::Error>;
    /// Starts a task that wakes `wake` on every notification on `channel` (PostgreSQL).
    fn spawn_listener(
        &self,
        channel: String,
        wake: Arc<Notify>,
        stop: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>>;
}

/// Generates a [`Backend`] and the `OutboxDatabase` impl for one sqlx database.
macro_rules! sql_backend {
    ($backend:ident, $db:ty, $dialect:expr, $listener:expr) => {
        /// The sqlx backend of this database.
        #[derive(Clone, Debug)]
        pub(crate) struct $backend {
            pub(crate) pool: sqlx::Pool<$db>,
        }

        // The SQL is built from the dialect's fixed text and a table name
        // that `Outbox::table_name` accepted only as a plain identifier;
        // every value is a bind parameter. Hence `AssertSqlSafe` below.
        fn bind<'q>(
            mut q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            args: Vec<$crate::outbox::repository::Arg>,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            use $crate::outbox::repository::Arg;
            for a in args {
                q = match a {
                    Arg::Text(v) => q.bind(v),
                    Arg::OptText(v) => q.bind(v),
                    Arg::Int(v) => q.bind(v),
                    Arg::BigInt(v) => q.bind(v),
                    Arg::Time(v) => q.bind(v),
                    Arg::OptTime(v) => q.bind(v),
                };
            }
            q
        }

        fn map_row(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<$crate::outbox::LocalMessage, sqlx::Error> {
            use sqlx::Row;
            let decode = |e: String| sqlx::Error::Decode(e.into());
            let id: String = row.try_get(0)?;
            let id =
                uuid::Uuid::parse_str(id.trim()).map_err(|e| decode(format!("column Id: {e}")))?;
            let status: i32 = row.try_get(6)?;
            let status = $crate::outbox::MessageStatus::try_from(status).map_err(decode)?;
            let next_ms: i64 = row.try_get(13)?;
            Ok($crate::outbox::LocalMessage {
                id,
                mq_type: row.try_get(1)?,
                topic: row.try_get(2)?,
                routing_key: row.try_get(3)?,
                message_type: row.try_get(4)?,
                message_body: row.try_get(5)?,
                status,
                created_at: row.try_get(7)?,
                updated_at: row.try_get(8)?,
                retry_count: row.try_get(9)?,
                error_message: row.try_get(10)?,
                headers: row.try_get(11)?,
                partition_key: row.try_get(12)?,
                next_attempt_at: chrono::DateTime::from_timestamp_millis(next_ms)
                    .unwrap_or(chrono::DateTime::UNIX_EPOCH),
                locked_by: row.try_get(14)?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::outbox::repository::Backend for $backend {
            fn dialect(&self) -> &'static $crate::outbox::repository::Dialect {
                &$dialect
            }

            async fn execute(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<u64, sqlx::Error> {
                Ok(bind(sqlx::query(sqlx::AssertSqlSafe(q.sql)), q.args)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            async fn fetch(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<$crate::outbox::LocalMessage>, sqlx::Error> {
                let rows = bind(sqlx::query(sqlx::AssertSqlSafe(q.sql)), q.args)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(map_row).collect()
            }

            async fn fetch_counts(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<(i32, i64)>, sqlx::Error> {
                use sqlx::Row;
                let rows = bind(sqlx::query(sqlx::AssertSqlSafe(q.sql)), q.args)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }

            async fn fetch_names(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<String>, sqlx::Error> {
                use sqlx::Row;
                let rows = bind(sqlx::query(sqlx::AssertSqlSafe(q.sql)), q.args)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| r.try_get(0)).collect()
            }

            fn spawn_listener(
                &self,
                channel: String,
                wake: std::sync::Arc<tokio::sync::Notify>,
                stop: tokio::sync::watch::Receiver<bool>,
            ) -> Option<tokio::task::JoinHandle<()>> {
                ($listener)(&self.pool, channel, wake, stop)
            }
        }

        impl $crate::outbox::OutboxDatabase for $db {
            #[doc(hidden)]
            const KIND: $crate::outbox::repository::DbKind = $dialect.kind;

            #[doc(hidden)]
            fn __execute<'c>(
                conn: &'c mut <$db as sqlx::Database>::Connection,
                q: $crate::outbox::repository::Built,
            ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    Ok(bind(sqlx::query(sqlx::AssertSqlSafe(q.sql)), q.args)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected())
                })
            }
        }
    };
}
pub(crate) use sql_backend;
