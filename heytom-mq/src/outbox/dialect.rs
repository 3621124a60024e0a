//! What differs between databases, as data: quoting, placeholders, id
//! casts, how rows are claimed, the migration files, how the table's
//! columns are read back. One `Dialect` const per database (`postgres.rs`,
//! `mysql.rs`, `sqlite.rs`).

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

impl Arg {
    /// The value, borrowed for binding.
    pub(crate) fn as_ref(&self) -> ArgRef<'_> {
        match self {
            Arg::Text(v) => ArgRef::Text(v),
            Arg::OptText(v) => ArgRef::OptText(v.as_deref()),
            Arg::Int(v) => ArgRef::Int(*v),
            Arg::BigInt(v) => ArgRef::BigInt(*v),
            Arg::Time(v) => ArgRef::Time(*v),
            Arg::OptTime(v) => ArgRef::OptTime(*v),
        }
    }
}

/// A bound argument, borrowed: what the database bindings take (an
/// [`Arg`], or an inserted row's fields without a copy of each).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ArgRef<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i32),
    BigInt(i64),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    /// An id, bound as its hyphenated text.
    Id(uuid::Uuid),
}

impl ArgRef<'_> {
    /// About how many bytes the value takes in a database's argument
    /// buffer (its length prefix included): room reserved up front.
    pub(crate) fn encoded_size(&self) -> usize {
        const PREFIX: usize = 4;
        PREFIX
            + match self {
                ArgRef::Text(v) | ArgRef::OptText(Some(v)) => v.len(),
                ArgRef::OptText(None) | ArgRef::OptTime(None) => 0,
                ArgRef::Int(_) => 4,
                ArgRef::BigInt(_) | ArgRef::Time(_) | ArgRef::OptTime(Some(_)) => 8,
                ArgRef::Id(_) => uuid::fmt::Hyphenated::LENGTH,
            }
    }

    /// The value as an owned [`Arg`].
    pub(crate) fn to_owned_arg(self) -> Arg {
        match self {
            ArgRef::Text(v) => Arg::Text(v.to_owned()),
            ArgRef::OptText(v) => Arg::OptText(v.map(str::to_owned)),
            ArgRef::Int(v) => Arg::Int(v),
            ArgRef::BigInt(v) => Arg::BigInt(v),
            ArgRef::Time(v) => Arg::Time(v),
            ArgRef::OptTime(v) => Arg::OptTime(v),
            ArgRef::Id(v) => Arg::Text(v.to_string()),
        }
    }
}

/// An insert of rows into the local message table, its values bound
/// straight from the rows (see `Table::insert_rows`).
#[doc(hidden)]
#[derive(Debug)]
pub struct Insert<'a> {
    /// The SQL text (the one-row text shared, not copied per insert).
    pub(crate) sql: std::sync::Arc<str>,
    pub(crate) rows: &'a [super::LocalMessage],
    /// The commit lease, if the rows carry one (see `Table::insert`).
    pub(crate) lease_ms: Option<i64>,
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
    /// `SELECT Id ...` without locks, then an `UPDATE` of those ids that
    /// are still due, then the rows it leased: three statements, no
    /// transaction, so a claim holds row locks only while its update runs
    /// (a `SELECT ... FOR UPDATE` held them, on the rows it stepped over
    /// too, until its commit, and the marks of earlier batches queued
    /// behind it).
    SelectThenUpdate,
}

/// What differs between databases, as data.
pub(crate) struct Dialect {
    pub(crate) kind: DbKind,
    /// The directory under `migrations/` (named in errors).
    pub(crate) dir: &'static str,
    /// Written around every identifier. Empty on PostgreSQL: its names are
    /// unquoted, as in the original DDL, so they fold to lower case and
    /// users' plain SQL (`SELECT * FROM LocalMessages`) reaches the table.
    pub(crate) open_quote: &'static str,
    pub(crate) close_quote: &'static str,
    pub(crate) placeholder: Placeholder,
    /// Appended to placeholders bound to the `Id` column (`::uuid`).
    pub(crate) id_param_cast: &'static str,
    /// Where set, a list of ids is one array argument cast with this
    /// (`::uuid[]`) and read as `Id = ANY(ARRAY(SELECT unnest(...)))`,
    /// and a sub-select of ids as `Id = ANY(ARRAY(...))`, so that the rows
    /// are looked up by primary key (`Params::id_in`); otherwise `Id IN
    /// (...)` with one placeholder per id.
    pub(crate) id_array_cast: Option<&'static str>,
    /// Appended to `Id` in select lists so it reads back as text (`::text`).
    pub(crate) id_select_cast: &'static str,
    /// Appended to `CreatedAt` / `UpdatedAt` in select lists
    /// (`::timestamptz`: the original PostgreSQL DDL has `TIMESTAMP`
    /// columns, read back in the session time zone they were written in).
    pub(crate) time_select_cast: &'static str,
    pub(crate) claim: ClaimStyle,
    /// A scanner draining a backlog starts each claim at the last one's
    /// newest `CreatedAt` (see `Store::claim`): where a status change leaves
    /// old index entries behind for a while (InnoDB's delete-marked entries
    /// before purge, PostgreSQL's dead tuples), a claim from the start of
    /// the index would step over every row sent so far.
    pub(crate) claim_from_last: bool,
    /// `DELETE ... LIMIT n` (MySQL) instead of `DELETE ... WHERE Id IN (SELECT ... LIMIT n)`.
    pub(crate) delete_with_limit: bool,
    /// `migrations/<db>/001_create_local_messages.sql`: the original table
    /// (`CREATE TABLE IF NOT EXISTS` and its indexes), for `LocalMessages`.
    pub(crate) create_sql: &'static str,
    /// `migrations/<db>/002_add_relay_columns.sql`: the relay's columns,
    /// one `ADD COLUMN` statement per column, then the due index.
    pub(crate) upgrade_sql: &'static str,
    /// Storage settings run right after this crate creates the table, never
    /// on a table that existed (`migrations/postgres/004_fillfactor.sql`).
    pub(crate) created_sql: Option<&'static str>,
    /// The names of the columns of the table named by the one parameter
    /// (none when it does not exist): `information_schema` on PostgreSQL
    /// (current schema, name folded to lower case) and MySQL (current
    /// database), `pragma_table_info` on SQLite.
    pub(crate) columns_sql: &'static str,
    /// The names of the indexes of the table named by the one parameter,
    /// where `CREATE INDEX` has no `IF NOT EXISTS` (MySQL).
    pub(crate) indexes_sql: Option<&'static str>,
    /// Whether a table of exactly the name of the one parameter (case
    /// kept) exists, where unquoted names fold (PostgreSQL): a table that
    /// older heytom-mq made with quoted mixed-case names.
    pub(crate) quoted_table_sql: Option<&'static str>,
    /// `SELECT pg_notify(...)` for a channel, where supported.
    pub(crate) notify: Option<&'static str>,
    /// The database's clock in Unix milliseconds, as an SQL expression:
    /// leases and retry times are measured in database time, never by the
    /// app's clock, so instances whose clocks differ still agree.
    pub(crate) now_ms: &'static str,
}

impl Dialect {
    /// The names of `table`'s columns, as the database reports them.
    pub(crate) fn columns(&self, table: &str) -> Built {
        Built {
            sql: self.columns_sql.to_owned(),
            args: vec![Arg::Text(table.to_owned())],
        }
    }

    /// The names of `table`'s indexes, where the dialect needs them.
    pub(crate) fn indexes(&self, table: &str) -> Option<Built> {
        self.indexes_sql.map(|sql| Built {
            sql: sql.to_owned(),
            args: vec![Arg::Text(table.to_owned())],
        })
    }

    /// A table named `table`, case kept, where unquoted names fold
    /// (PostgreSQL) and `table` is not folded already: what older
    /// heytom-mq's quoted DDL made.
    pub(crate) fn quoted_table(&self, table: &str) -> Option<Built> {
        let sql = self.quoted_table_sql?;
        if table == table.to_ascii_lowercase() {
            return None;
        }
        Some(Built {
            sql: sql.to_owned(),
            args: vec![Arg::Text(table.to_owned())],
        })
    }

    /// The path of a migration file, as named in errors.
    pub(crate) fn migration(&self, file: &str) -> String {
        format!("migrations/{}/{file}", self.dir)
    }
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

/// What a statement of `002_add_relay_columns.sql` creates.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Creates<'a> {
    /// `ALTER TABLE ... ADD COLUMN [IF NOT EXISTS] <column> ...`
    Column(&'a str),
    /// `CREATE INDEX [IF NOT EXISTS] <index> ON ...`
    Index(&'a str),
    /// Anything else.
    Other,
}

/// What `stmt` creates, with the name unquoted.
pub(crate) fn creates(stmt: &str) -> Creates<'_> {
    fn name_after<'a>(stmt: &'a str, keyword: &str) -> Option<&'a str> {
        let at = stmt.to_ascii_uppercase().find(keyword)? + keyword.len();
        let mut rest = stmt[at..].trim_start();
        if rest.to_ascii_uppercase().starts_with("IF NOT EXISTS") {
            rest = rest["IF NOT EXISTS".len()..].trim_start();
        }
        let name = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
        Some(name.trim_matches(|c| matches!(c, '"' | '`' | '[' | ']')))
    }
    if let Some(c) = name_after(stmt, "ADD COLUMN ") {
        Creates::Column(c)
    } else if let Some(i) = name_after(stmt, "CREATE INDEX ") {
        Creates::Index(i)
    } else {
        Creates::Other
    }
}

/// The number of columns of the original Heytom.MQ table; the rest of
/// [`COLUMNS`] are the relay's (`002_add_relay_columns.sql`).
pub(crate) const ORIGINAL_COLUMNS: usize = 11;

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
    check_identifier("local message table", name)
}

/// [`check_table_name`] for any table of the crate's (`what` names it in
/// the error: "local message table", "inbox table").
pub(crate) fn check_identifier(what: &str, name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || !ok_rest {
        return Err(format!(
            "invalid {what} name {name:?}: use a plain SQL identifier (ASCII letters, digits and '_', not starting with a digit)"
        ));
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return Err(format!(
            "invalid {what} name {name:?}: longer than {MAX_TABLE_NAME_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No database gets an index on Status alone: the (Status, CreatedAt)
    /// one of 002 serves every query on Status, and each index is one more
    /// write per insert and per Sent mark.
    #[cfg(all(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    #[test]
    fn no_database_indexes_status_alone() {
        use crate::outbox::{mysql, postgres, sqlite};
        for d in [&postgres::DIALECT, &mysql::DIALECT, &sqlite::DIALECT] {
            let create = migration_statements(d.create_sql, "T");
            assert!(
                create.iter().any(|s| s.contains("IX_T_CreatedAt")),
                "{}: {create:?}",
                d.dir
            );
            assert!(
                create.iter().all(|s| !s.contains("IX_T_Status")),
                "{}: {create:?}",
                d.dir
            );
            let upgrade = migration_statements(d.upgrade_sql, "T");
            assert!(
                upgrade.iter().any(|s| s.contains("IX_T_Due")),
                "{}: {upgrade:?}",
                d.dir
            );
        }
    }
}
