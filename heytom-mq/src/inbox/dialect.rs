//! What differs between databases, as data: one [`InboxDialect`] const per
//! database (`postgres.rs`, `mysql.rs`, `sqlite.rs`), each statement
//! written whole for the default table name `ReceivedMessages`, which
//! [`InboxTable`] replaces with the configured (checked) name.

use chrono::{DateTime, Utc};
use sqlx::Pool;
use uuid::Uuid;

use super::InboxPool;
use crate::outbox::repository::{check_identifier, Arg, Built, DbKind};
use crate::outbox::OutboxDatabase;

/// Rows deleted per statement by retention.
pub(crate) const DELETE_BATCH: i64 = 1000;

/// The longest handler name: the `HandlerName` column is `VARCHAR(200)`.
pub(crate) const MAX_HANDLER_NAME_LEN: usize = 200;

/// One database's inbox SQL.
pub(crate) struct InboxDialect {
    pub(crate) kind: DbKind,
    /// The directory under `migrations/` (named in errors).
    pub(crate) dir: &'static str,
    /// `migrations/<dir>/inbox_001_create_received_messages.sql`.
    pub(crate) create_sql: &'static str,
    /// Records (message id, handler name, received at); fails with a
    /// unique violation when the pair is there.
    pub(crate) insert_sql: &'static str,
    /// `COUNT(*)` of the rows of (message id, handler name).
    pub(crate) processed_sql: &'static str,
    /// Deletes at most (limit) rows received before (time).
    pub(crate) delete_sql: &'static str,
    /// Selects every column, no row: fails when one is missing.
    pub(crate) probe_sql: &'static str,
}

/// The migration file of the inbox table, as named in errors.
pub(crate) const MIGRATION: &str = "inbox_001_create_received_messages.sql";

/// The dialect of a pool's database.
pub(crate) fn of(pool: &InboxPool) -> &'static InboxDialect {
    match pool {
        #[cfg(feature = "postgres")]
        InboxPool::Postgres(_) => &super::postgres::DIALECT,
        #[cfg(feature = "mysql")]
        InboxPool::MySql(_) => &super::mysql::DIALECT,
        #[cfg(feature = "sqlite")]
        InboxPool::Sqlite(_) => &super::sqlite::DIALECT,
    }
}

/// The statements of one inbox table.
pub(crate) struct InboxTable {
    pub(crate) d: &'static InboxDialect,
    pub(crate) name: String,
    insert: String,
    pub(crate) processed: String,
    delete: String,
    pub(crate) probe: String,
}

impl std::fmt::Debug for InboxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxTable")
            .field("database", &self.d.kind)
            .field("name", &self.name)
            .finish()
    }
}

impl InboxTable {
    /// `name` must have passed [`check_table_name`].
    pub(crate) fn new(d: &'static InboxDialect, name: &str) -> Self {
        let named = |sql: &str| sql.replace(super::DEFAULT_TABLE_NAME, name);
        InboxTable {
            d,
            name: name.to_owned(),
            insert: named(d.insert_sql),
            processed: named(d.processed_sql),
            delete: named(d.delete_sql),
            probe: named(d.probe_sql),
        }
    }

    /// The statements of the migration file, for this table.
    pub(crate) fn create_statements(&self) -> Vec<String> {
        let text = self
            .d
            .create_sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.replace(super::DEFAULT_TABLE_NAME, &self.name))
            .collect()
    }

    /// The path of the migration file, as named in errors.
    pub(crate) fn migration(&self) -> String {
        format!("migrations/{}/{MIGRATION}", self.d.dir)
    }

    /// Records that `handler` processed message `id`.
    pub(crate) fn insert(&self, id: Uuid, handler: &str, at: DateTime<Utc>) -> Built {
        Built {
            sql: self.insert.clone(),
            args: vec![
                Arg::Text(id.to_string()),
                Arg::Text(handler.to_owned()),
                Arg::Time(at),
            ],
        }
    }

    /// Deletes at most `limit` rows received before `before`.
    pub(crate) fn delete_before(&self, before: DateTime<Utc>, limit: i64) -> Built {
        Built {
            sql: self.delete.clone(),
            args: vec![Arg::Time(before), Arg::BigInt(limit)],
        }
    }
}

/// Checks that a table name is a plain SQL identifier of at most 48
/// characters, as the outbox's: nothing else reaches the SQL text.
pub(crate) fn check_table_name(name: &str) -> std::result::Result<(), String> {
    check_identifier("inbox table", name)
}

/// Runs one statement without arguments on a connection of `pool`.
pub(crate) async fn run<DB: OutboxDatabase>(
    pool: &Pool<DB>,
    sql: &str,
) -> Result<u64, sqlx::Error> {
    execute(
        pool,
        Built {
            sql: sql.to_owned(),
            args: Vec::new(),
        },
    )
    .await
}

/// Runs one statement on a connection of `pool`.
pub(crate) async fn execute<DB: OutboxDatabase>(
    pool: &Pool<DB>,
    q: Built,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    DB::__execute(&mut *conn, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(check_table_name("ReceivedMessages").is_ok());
        assert!(check_table_name("_inbox_2").is_ok());
        for bad in ["", "1x", "a-b", "a b", "x;DROP TABLE y", "\"q\""] {
            assert!(check_table_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_table_name(&"a".repeat(49)).is_err());
    }
}
