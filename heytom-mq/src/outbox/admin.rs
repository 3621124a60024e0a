//! Operators' queries on the local message table: counts, the send rate,
//! rows by status, type and time with paging, one row, requeue and delete.
//! The dashboard is built on these; they are public so that an operator's
//! own tooling can use them too.
//!
//! Semantics: reads see committed rows only and take no locks. A requeue
//! moves a Failed row back to Pending (retry count reset) and wakes this
//! app's relay, which sends it like any other due row. A delete never
//! removes a row a sender holds at that moment (leased in `LockedBy`): that
//! row is sent, or given back, first; delete it then.
//!
//! ```no_run
//! # async fn f(running: heytom_mq::RunningApp) -> Result<(), heytom_mq::Error> {
//! use heytom_mq::{MessageFilter, MessageStatus};
//! let admin = running.outbox_admin().expect("the app has an outbox");
//! let failed = admin
//!     .find(&MessageFilter::status(MessageStatus::Failed), 0, 50)
//!     .await?;
//! for row in &failed.messages {
//!     admin.requeue(row.id).await?;
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::dialect::{Arg, Built, DbKind};
use super::repository::Store;
use super::statements::{Params, Table};
use super::{LocalMessage, MessageStatus, Outbox, OutboxRuntime, StatusCounts};
use crate::error::{Error, Result};

/// What differs between databases in the admin queries, as data (one
/// const per database, next to its `Dialect`).
pub(crate) struct AdminSql {
    /// The bucket of a timestamp column `{col}`: whole seconds since the
    /// Unix epoch (read as UTC) minus `{since}`, divided by `{secs}` with
    /// integer division, as a 32-bit integer.
    pub(crate) bucket: &'static str,
}

/// The most message types [`OutboxAdmin::message_types`] returns.
const MAX_TYPES: i64 = 500;
/// The most rows one page holds.
const MAX_PAGE_SIZE: u32 = 1000;

/// Which rows [`OutboxAdmin::find`] returns; every field left empty
/// matches every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    /// Rows with one of these statuses (all when empty).
    pub statuses: Vec<MessageStatus>,
    /// Rows of exactly this `MessageType`.
    pub message_type: Option<String>,
    /// Rows created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Rows created before this time.
    pub created_to: Option<DateTime<Utc>>,
}

impl MessageFilter {
    /// The rows with one status.
    pub fn status(status: MessageStatus) -> Self {
        MessageFilter {
            statuses: vec![status],
            ..Self::default()
        }
    }
}

/// One page of rows, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    /// The rows of this page.
    pub messages: Vec<LocalMessage>,
    /// The rows matching the filter, on every page.
    pub total: u64,
    /// Rows skipped before this page.
    pub offset: u64,
    /// The page size asked for.
    pub limit: u32,
}

/// The rows sent per time bucket, from [`OutboxAdmin::sent_rate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRate {
    /// The start of the first bucket.
    pub since: DateTime<Utc>,
    /// The length of each bucket.
    pub bucket: Duration,
    /// Rows marked Sent in each bucket (by `UpdatedAt`), oldest first; the
    /// last bucket is the current one, still filling.
    pub counts: Vec<u64>,
}

impl SentRate {
    /// Messages per second in bucket `i`.
    pub fn per_second(&self, i: usize) -> f64 {
        let n = self.counts.get(i).copied().unwrap_or(0);
        n as f64 / self.bucket.as_secs_f64().max(0.001)
    }
}

#[derive(Clone)]
enum Source {
    /// A running app's outbox: its relay is woken after a requeue.
    Runtime(Arc<OutboxRuntime>),
    /// A table without a relay here.
    Table(Arc<Store>),
}

/// Operators' access to a local message table; from
/// [`RunningApp::outbox_admin`](crate::RunningApp::outbox_admin) or
/// [`Outbox::admin`]. Cheap to clone.
#[derive(Clone)]
pub struct OutboxAdmin {
    source: Source,
}

impl std::fmt::Debug for OutboxAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxAdmin")
            .field("store", self.store())
            .finish()
    }
}

impl Outbox {
    /// Admin access to this table, without a relay: a requeued row is sent
    /// by the next scan of whichever app instance runs the relay.
    pub fn admin(&self) -> Result<OutboxAdmin> {
        Ok(OutboxAdmin {
            source: Source::Table(Arc::new(self.store()?)),
        })
    }
}

impl StatusCounts {
    /// Adds up `(status, count)` pairs as the database returned them.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (i32, i64)>) -> Self {
        let mut c = StatusCounts::default();
        for (status, n) in pairs {
            let n = u64::try_from(n).unwrap_or(0);
            match MessageStatus::try_from(status) {
                Ok(MessageStatus::Pending) => c.pending += n,
                Ok(MessageStatus::Sent) => c.sent += n,
                Ok(MessageStatus::Failed) => c.failed += n,
                Err(_) => c.other += n,
            }
        }
        c
    }

    /// Every row counted.
    pub fn total(&self) -> u64 {
        self.pending + self.sent + self.failed + self.other
    }
}

impl MessageStatus {
    /// `Pending`, `Sent` or `Failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "Pending",
            MessageStatus::Sent => "Sent",
            MessageStatus::Failed => "Failed",
        }
    }
}

fn storage<'a>(what: &'static str, table: &'a str) -> impl FnOnce(sqlx::Error) -> Error + 'a {
    move |e| Error::storage(format!("{what} on table {table}: {e}"), e)
}

impl OutboxAdmin {
    pub(crate) fn from_runtime(runtime: Arc<OutboxRuntime>) -> Self {
        OutboxAdmin {
            source: Source::Runtime(runtime),
        }
    }

    fn store(&self) -> &Store {
        match &self.source {
            Source::Runtime(r) => &r.relay.store,
            Source::Table(s) => s,
        }
    }

    fn table(&self) -> &Table {
        &self.store().table
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table().name
    }

    /// `PostgreSQL`, `MySQL/MariaDB` or `SQLite`.
    pub fn database(&self) -> &'static str {
        self.store().kind().as_str()
    }

    async fn fetch(&self, what: &'static str, q: Built) -> Result<Vec<LocalMessage>> {
        let name = self.table_name();
        self.store()
            .backend
            .fetch(q)
            .await
            .map_err(storage(what, name))
    }

    async fn counts_of(&self, what: &'static str, q: Built) -> Result<Vec<(i32, i64)>> {
        let name = self.table_name();
        let b = &self.store().backend;
        b.fetch_counts(q).await.map_err(storage(what, name))
    }

    /// Rows per status.
    pub async fn status_counts(&self) -> Result<StatusCounts> {
        let q = self.table().counts();
        Ok(StatusCounts::from_pairs(
            self.counts_of("counting rows", q).await?,
        ))
    }

    /// When the oldest Pending row was created (`None`: nothing pending).
    pub async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        let q = self.table().list(MessageStatus::Pending, 1);
        let rows = self.fetch("reading the oldest pending row", q).await?;
        Ok(rows.first().map(|r| r.created_at))
    }

    /// Rows marked Sent per `bucket` over the last `window`, by their
    /// `UpdatedAt` (written from the sending app's clock). `bucket` is
    /// whole seconds, at least one; the window is rounded up to buckets.
    pub async fn sent_rate(&self, window: Duration, bucket: Duration) -> Result<SentRate> {
        let secs = bucket.as_secs().max(1);
        let n = window.as_secs().div_ceil(secs).clamp(1, 10_000);
        let now = Utc::now().timestamp();
        let start = (now / secs as i64 - n as i64 + 1) * secs as i64;
        let since = DateTime::from_timestamp(start, 0).unwrap_or(DateTime::UNIX_EPOCH);
        let t = self.table();
        let sql = admin_sql(t.d.kind);
        let q = |c: &str| format!("{}{c}{}", t.d.open_quote, t.d.close_quote);
        let mut p = Params::new(t.d);
        let bucket_expr = sql
            .bucket
            .replace("{col}", &q("UpdatedAt"))
            .replace("{since}", &p.p(Arg::BigInt(start)))
            .replace("{secs}", &secs.to_string());
        let from = p.p(Arg::Time(since));
        let built = p.build(format!(
            "SELECT {bucket_expr}, COUNT(*) FROM {} WHERE {} = 1 AND {} >= {from} GROUP BY 1",
            t.t,
            q("Status"),
            q("UpdatedAt")
        ));
        let mut counts = vec![0; n as usize];
        for (b, c) in self.counts_of("counting sent rows", built).await? {
            if let Some(slot) = usize::try_from(b).ok().and_then(|b| counts.get_mut(b)) {
                *slot += u64::try_from(c).unwrap_or(0);
            }
        }
        Ok(SentRate {
            since,
            bucket: Duration::from_secs(secs),
            counts,
        })
    }

    /// The distinct `MessageType`s in the table (at most 500), sorted.
    pub async fn message_types(&self) -> Result<Vec<String>> {
        let t = self.table();
        let col = format!("{}MessageType{}", t.d.open_quote, t.d.close_quote);
        let mut p = Params::new(t.d);
        let limit = p.p(Arg::BigInt(MAX_TYPES));
        let q = p.build(format!(
            "SELECT DISTINCT {col} FROM {} ORDER BY {col} LIMIT {limit}",
            t.t
        ));
        let name = self.table_name();
        let b = &self.store().backend;
        b.fetch_names(q)
            .await
            .map_err(storage("listing message types", name))
    }

    /// The rows matching `filter`, newest first: `limit` (1 to 1000) from
    /// `offset` on, with the total count.
    pub async fn find(
        &self,
        filter: &MessageFilter,
        offset: u64,
        limit: u32,
    ) -> Result<MessagePage> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let t = self.table();
        let q = |c: &str| format!("{}{c}{}", t.d.open_quote, t.d.close_quote);
        let (created, id, status) = (q("CreatedAt"), q("Id"), q("Status"));

        let mut p = Params::new(t.d);
        let wh = where_clause(t, &mut p, filter);
        let count = p.build(format!(
            "SELECT {status}, COUNT(*) FROM {}{wh} GROUP BY {status}",
            t.t
        ));
        let total = StatusCounts::from_pairs(self.counts_of("counting rows", count).await?).total();

        let mut p = Params::new(t.d);
        let wh = where_clause(t, &mut p, filter);
        let (lim, off) = (
            p.p(Arg::BigInt(i64::from(limit))),
            p.p(Arg::BigInt(i64::try_from(offset).unwrap_or(i64::MAX))),
        );
        let rows = p.build(format!(
            "SELECT {} FROM {}{wh} ORDER BY {created} DESC, {id} DESC LIMIT {lim} OFFSET {off}",
            t.select_list, t.t
        ));
        Ok(MessagePage {
            messages: self.fetch("listing rows", rows).await?,
            total,
            offset,
            limit,
        })
    }

    /// One row by id.
    pub async fn message(&self, id: Uuid) -> Result<Option<LocalMessage>> {
        self.store().get(id).await
    }

    /// Puts a Failed row back to Pending, retry count and error cleared,
    /// and wakes this app's relay to send it. `false`: no Failed row has
    /// this id (sent, deleted, or requeued already).
    pub async fn requeue(&self, id: Uuid) -> Result<bool> {
        let done = self.store().requeue(id).await?;
        if done {
            if let Source::Runtime(r) = &self.source {
                r.wake_scanner();
            }
        }
        Ok(done)
    }

    /// Deletes one row, unless a sender holds it right now. `false`: no
    /// such row, or it is being sent (look again in a moment).
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let t = self.table();
        let q = |c: &str| format!("{}{c}{}", t.d.open_quote, t.d.close_quote);
        let mut p = Params::new(t.d);
        let row = p.id(id);
        let built = p.build(format!(
            "DELETE FROM {} WHERE {} = {row} AND ({} IS NULL OR {} <= {})",
            t.t,
            q("Id"),
            q("LockedBy"),
            q("NextAttemptAt"),
            t.d.now_ms
        ));
        let name = self.table_name();
        let n = self
            .store()
            .backend
            .execute(built)
            .await
            .map_err(storage("deleting a row", name))?;
        Ok(n > 0)
    }
}

/// ` WHERE ...` for a filter, or nothing.
fn where_clause(t: &Table, p: &mut Params, f: &MessageFilter) -> String {
    let q = |c: &str| format!("{}{c}{}", t.d.open_quote, t.d.close_quote);
    let mut conds = Vec::new();
    if !f.statuses.is_empty() {
        // The enum's integers, written as literals.
        let list: Vec<String> = f.statuses.iter().map(|s| (*s as i32).to_string()).collect();
        conds.push(format!("{} IN ({})", q("Status"), list.join(", ")));
    }
    if let Some(ty) = &f.message_type {
        conds.push(format!(
            "{} = {}",
            q("MessageType"),
            p.p(Arg::Text(ty.clone()))
        ));
    }
    if let Some(from) = f.created_from {
        conds.push(format!("{} >= {}", q("CreatedAt"), p.p(Arg::Time(from))));
    }
    if let Some(to) = f.created_to {
        conds.push(format!("{} < {}", q("CreatedAt"), p.p(Arg::Time(to))));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

fn admin_sql(kind: DbKind) -> &'static AdminSql {
    match kind {
        #[cfg(feature = "postgres")]
        DbKind::Postgres => &super::postgres::ADMIN,
        #[cfg(feature = "mysql")]
        DbKind::MySql => &super::mysql::ADMIN,
        #[cfg(feature = "sqlite")]
        DbKind::Sqlite => &super::sqlite::ADMIN,
        #[allow(unreachable_patterns)]
        _ => unreachable!("a store exists only for an enabled database"),
    }
}
