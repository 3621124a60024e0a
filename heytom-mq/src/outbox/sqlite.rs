//! SQLite: `[bracketed]` identifiers, `?` placeholders, `TEXT` ids and times.
//! SQLite has one writer at a time, so a claim is one
//! `UPDATE ... RETURNING` that leases the rows to this instance.

use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::admin::AdminSql;
use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::Sqlite,
    dir: "sqlite",
    // Not `"`: SQLite reads a double-quoted name that is no column as a
    // string literal, which would hide a missing column.
    open_quote: "[",
    close_quote: "]",
    placeholder: Placeholder::Question,
    id_param_cast: "",
    id_array_cast: None,
    id_select_cast: "",
    time_select_cast: "",
    claim: ClaimStyle::UpdateReturning { lock: "" },
    claim_from_last: false,
    delete_with_limit: false,
    create_sql: include_str!("../../migrations/sqlite/001_create_local_messages.sql"),
    upgrade_sql: include_str!("../../migrations/sqlite/002_add_relay_columns.sql"),
    created_sql: None,
    columns_sql: "SELECT name FROM pragma_table_info(?)",
    indexes_sql: None,
    quoted_table_sql: None,
    notify: None,
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
};

/// The admin queries' SQLite parts (times are RFC 3339 text).
pub(crate) const ADMIN: AdminSql = AdminSql {
    bucket: "((CAST(strftime('%s', {col}) AS INTEGER) - {since}) / {secs})",
};

fn no_listener(
    _: &SqlitePool,
    _: String,
    _: std::sync::Arc<Notify>,
    _: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}

sql_backend!(SqliteBackend, Sqlite, DIALECT, no_listener);
