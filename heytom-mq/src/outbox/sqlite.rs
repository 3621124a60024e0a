//! SQLite: `[bracketed]` identifiers, `?` placeholders, `TEXT` ids and times.
//! SQLite has one writer at a time, so a claim is one
//! `UPDATE ... RETURNING` that leases the rows to this instance.

use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::Sqlite,
    // Not `"`: SQLite reads a double-quoted name that is no column as a
    // string literal, which would hide a missing column.
    open_quote: '[',
    close_quote: ']',
    placeholder: Placeholder::Question,
    id_param_cast: "",
    id_select_cast: "",
    claim: ClaimStyle::UpdateReturning { lock: "" },
    before_claim: None,
    delete_with_limit: false,
    ddl,
    notify: None,
};

fn ddl(t: &str) -> Vec<String> {
    vec![
        format!(
            r#"CREATE TABLE IF NOT EXISTS "{t}" (
    "Id" TEXT NOT NULL PRIMARY KEY,
    "MQType" TEXT NOT NULL,
    "Topic" TEXT NOT NULL,
    "RoutingKey" TEXT NULL,
    "MessageType" TEXT NOT NULL,
    "MessageBody" TEXT NOT NULL,
    "Status" INTEGER NOT NULL DEFAULT 0,
    "CreatedAt" TEXT NOT NULL,
    "UpdatedAt" TEXT NULL,
    "RetryCount" INTEGER NOT NULL DEFAULT 0,
    "ErrorMessage" TEXT NULL,
    "Headers" TEXT NULL,
    "PartitionKey" TEXT NULL,
    "NextAttemptAt" INTEGER NOT NULL DEFAULT 0,
    "LockedBy" TEXT NULL
)"#
        ),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_Status" ON "{t}" ("Status")"#),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_CreatedAt" ON "{t}" ("CreatedAt")"#),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_Due" ON "{t}" ("Status", "CreatedAt")"#),
    ]
}

fn no_listener(
    _: &SqlitePool,
    _: String,
    _: std::sync::Arc<Notify>,
    _: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}

sql_backend!(SqliteBackend, Sqlite, DIALECT, no_listener);
