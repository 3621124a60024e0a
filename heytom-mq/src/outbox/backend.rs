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
        //
        // The arguments are built in place with room for all of them (one
        // allocation each for the values and their types), not by
        // `Query::bind`, which moves the whole query per value and grows
        // both buffers value by value (8.5k instructions per outbox row on
        // PostgreSQL, callgrind of `bench_outbox`).
        fn bind<'q, 'a>(
            sql: impl sqlx::SqlSafeStr,
            args: impl Iterator<Item = $crate::outbox::repository::ArgRef<'a>> + Clone,
        ) -> Result<sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>, sqlx::Error> {
            use sqlx::Arguments as _;
            use $crate::outbox::repository::ArgRef;
            let mut values = <$db as sqlx::Database>::Arguments::default();
            let (count, size) = args
                .clone()
                .fold((0, 0), |(n, size), a| (n + 1, size + a.encoded_size()));
            values.reserve(count, size);
            for a in args {
                match a {
                    ArgRef::Text(v) => values.add(v),
                    ArgRef::OptText(v) => values.add(v),
                    ArgRef::Int(v) => values.add(v),
                    ArgRef::BigInt(v) => values.add(v),
                    ArgRef::Time(v) => values.add(v),
                    ArgRef::OptTime(v) => values.add(v),
                    ArgRef::Id(v) => {
                        let mut text = uuid::Uuid::encode_buffer();
                        values.add(&*v.hyphenated().encode_lower(&mut text))
                    }
                }
                .map_err(sqlx::Error::Encode)?;
            }
            Ok(sqlx::query_with(sql, values))
        }

        /// A statement with its arguments bound.
        fn query<'q>(
            q: $crate::outbox::repository::Built,
        ) -> Result<sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>, sqlx::Error> {
            let $crate::outbox::repository::Built { sql, args } = q;
            bind(
                sqlx::AssertSqlSafe(sql),
                args.iter().map($crate::outbox::repository::Arg::as_ref),
            )
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
                Ok(query(q)?.execute(&self.pool).await?.rows_affected())
            }

            async fn fetch(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<$crate::outbox::LocalMessage>, sqlx::Error> {
                let rows = query(q)?.fetch_all(&self.pool).await?;
                rows.iter().map(map_row).collect()
            }

            async fn fetch_counts(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<(i32, i64)>, sqlx::Error> {
                use sqlx::Row;
                let rows = query(q)?.fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }

            async fn fetch_names(
                &self,
                q: $crate::outbox::repository::Built,
            ) -> Result<Vec<String>, sqlx::Error> {
                use sqlx::Row;
                let rows = query(q)?.fetch_all(&self.pool).await?;
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
            fn __insert<'c>(
                conn: &'c mut <$db as sqlx::Database>::Connection,
                q: $crate::outbox::repository::Insert<'c>,
            ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let lease_ms = q.lease_ms;
                    let args = q
                        .rows
                        .iter()
                        .flat_map(move |m| $crate::outbox::repository::insert_args(m, lease_ms));
                    Ok(bind(sqlx::AssertSqlSafe(q.sql), args)?
                        .execute(&mut *conn)
                        .await?
                        .rows_affected())
                })
            }

            #[doc(hidden)]
            fn __execute<'c>(
                conn: &'c mut <$db as sqlx::Database>::Connection,
                q: $crate::outbox::repository::Built,
            ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move { Ok(query(q)?.execute(&mut *conn).await?.rows_affected()) })
            }
        }
    };
}
pub(crate) use sql_backend;
