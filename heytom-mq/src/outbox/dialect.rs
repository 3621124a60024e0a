//! What differs between databases, as data: quoting, placeholders, id
//! casts, how rows are claimed, the migration files. One `Dialect` const
//! per database (`postgres.rs`, `mysql.rs`, `sqlite.rs`).

use chrono::{DateTime, Utc};

/// A bound argument. Every database binds only these types, so one
/// statement text per dialect works for all of them.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Arg {
    /// A string.
    Text(String),
    /// A nullable string.
    OptText(Option<String>),
    /// A 32-bit integer.
    Int(i32),
    /// A 64-bit integer.
    BigInt(i64),
    /// A timestamp.
    Time(DateTime<Utc>),
    /// A nullable timestamp.
    OptTime(Option<DateTime<Utc>>),
}

/// A statement with its arguments.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct Built {
    /// The SQL text.
    pub sql: String,
    /// The arguments, in placeholder order.
    pub args: Vec<Arg>,
}

/// Which database.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl DbKind {
    /// The name used in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            DbKind::Postgres => "PostgreSQL",
            DbKind::MySql => "MySQL/MariaDB",
            DbKind::Sqlite => "SQLite",
        }
    }
}

// Each database feature uses some variants only.
#[allow(dead_code)]
pub(crate) enum Placeholder {
    /// `$1, $2, ...`
    Dollar,
    /// `?`
    Question,
}

/// How the scanner claims due rows.
#[allow(dead_code)]
pub(crate) enum ClaimStyle {
    /// One `UPDATE ... WHERE Id IN (SELECT ... <lock>) RETURNING ...`.
    UpdateReturning {
        /// Appended to the inner select (`FOR UPDATE SKIP LOCKED` or nothing).
        lock: &'static str,
    },
    /// `SELECT ... FOR UPDATE SKIP LOCKED`, then `UPDATE`, in one transaction.
    SelectForUpdate,
}

/// What differs between databases, as data.
pub(crate) struct Dialect {
    pub(crate) kind: DbKind,
    pub(crate) open_quote: char,
    pub(crate) close_quote: char,
    pub(crate) placeholder: Placeholder,
    /// Appended to placeholders bound to the `Id` column (`::uuid`).
    pub(crate) id_param_cast: &'static str,
    /// Appended to `Id` in select lists so it reads back as text (`::text`).
    pub(crate) id_select_cast: &'static str,
    pub(crate) claim: ClaimStyle,
    /// Run on the connection before the claim transaction starts.
    pub(crate) before_claim: Option<&'static str>,
    /// `DELETE ... LIMIT n` (MySQL) instead of `DELETE ... WHERE Id IN (SELECT ... LIMIT n)`.
    pub(crate) delete_with_limit: bool,
    /// `migrations/<db>/001_create_local_messages.sql`: the original table
    /// (`CREATE TABLE IF NOT EXISTS` and its indexes), for `LocalMessages`.
    pub(crate) create_sql: &'static str,
    /// `migrations/<db>/002_add_relay_columns.sql`: the relay's columns.
    pub(crate) upgrade_sql: &'static str,
    /// `SELECT pg_notify(...)` for a channel, where supported.
    pub(crate) notify: Option<&'static str>,
    /// The database's clock in Unix milliseconds, as an SQL expression:
    /// leases and retry times are measured in database time, never by the
    /// app's clock, so instances whose clocks differ still agree.
    pub(crate) now_ms: &'static str,
}

/// A migration file's statements for `table`: comments dropped, split at
/// `;`, the file's `LocalMessages` (in identifiers and index names) renamed.
pub(crate) fn migration_statements(sql: &str, table: &str) -> Vec<String> {
    let text = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("LocalMessages", table))
        .collect()
}

/// The columns, in select order (the original eleven, then the relay's).
pub(crate) const COLUMNS: [&str; 15] = [
    "Id",
    "MQType",
    "Topic",
    "RoutingKey",
    "MessageType",
    "MessageBody",
    "Status",
    "CreatedAt",
    "UpdatedAt",
    "RetryCount",
    "ErrorMessage",
    "Headers",
    "PartitionKey",
    "NextAttemptAt",
    "LockedBy",
];

/// Rows per multi-row statement: 12 parameters each stays under every
/// database's parameter limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 1000;

/// Longest error text written to `ErrorMessage`.
pub(crate) const MAX_ERROR_LEN: usize = 2000;

/// Longest accepted table name (index names add a prefix and suffix and
/// must stay under PostgreSQL's 63 characters).
pub(crate) const MAX_TABLE_NAME_LEN: usize = 48;

/// Checks that a table name is a plain SQL identifier: ASCII letters,
/// digits and `_`, not starting with a digit, at most 48 characters. Nothing
/// else can reach the SQL text, so no name can inject SQL.
pub(crate) fn check_table_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || !ok_rest {
        return Err(format!(
            "invalid local message table name {name:?}: use a plain SQL identifier (ASCII letters, digits and '_', not starting with a digit)"
        ));
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return Err(format!(
            "invalid local message table name {name:?}: longer than {MAX_TABLE_NAME_LEN} characters"
        ));
    }
    Ok(())
}
