//! MySQL / MariaDB: backquoted identifiers, `?` placeholders, `CHAR(36)`
//! ids, claims with a `SELECT` of due ids that locks nothing, then an
//! `UPDATE` of those still due, then a `SELECT` of the rows it leased.

use sqlx::{MySql, MySqlPool};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::admin::AdminSql;
use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::MySql,
    dir: "mysql",
    open_quote: "`",
    close_quote: "`",
    placeholder: Placeholder::Question,
    id_param_cast: "",
    id_array_cast: None,
    id_select_cast: "",
    time_select_cast: "",
    claim: ClaimStyle::SelectThenUpdate,
    claim_from_last: true,
    delete_with_limit: true,
    create_sql: include_str!("../../migrations/mysql/001_create_local_messages.sql"),
    upgrade_sql: include_str!("../../migrations/mysql/002_add_relay_columns.sql"),
    created_sql: None,
    columns_sql: "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
                  WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    indexes_sql: Some(
        "SELECT DISTINCT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    ),
    quoted_table_sql: None,
    notify: None,
    now_ms: "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)",
};

/// The admin queries' MySQL parts (`DATETIME` holds UTC, as sqlx writes it).
pub(crate) const ADMIN: AdminSql = AdminSql {
    bucket: "((TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {col}) - {since}) DIV {secs})",
};

fn no_listener(
    _: &MySqlPool,
    _: String,
    _: std::sync::Arc<Notify>,
    _: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}

sql_backend!(MySqlBackend, MySql, DIALECT, no_listener);
