//! Every statement of the local message table, written once for all
//! dialects: each is one `format!` over the dialect's quoted names and
//! placeholders, so the whole statement reads (and greps) as SQL.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::dialect::{migration_statements, Arg, Built, Dialect, COLUMNS, MAX_ERROR_LEN};
use super::MessageStatus;

/// The quoted column names of one dialect.
struct Cols {
    id: String,
    mq_type: String,
    topic: String,
    routing_key: String,
    message_type: String,
    message_body: String,
    status: String,
    created_at: String,
    updated_at: String,
    retry_count: String,
    error_message: String,
    headers: String,
    partition_key: String,
    next_attempt_at: String,
    locked_by: String,
}

/// The statements of one table in one dialect.
pub(crate) struct Table {
    pub(crate) d: &'static Dialect,
    pub(crate) name: String,
    /// The quoted table name.
    pub(super) t: String,
    c: Cols,
    /// Every column, in [`COLUMNS`] order (the row mapping reads them by position).
    pub(super) select_list: String,
    /// The one-row insert: without, with the commit lease.
    insert_one: [std::sync::Arc<str>; 2],
}

impl Table {
    pub(crate) fn new(d: &'static Dialect, name: &str) -> Self {
        let q = |s: &str| format!("{}{s}{}", d.open_quote, d.close_quote);
        let select_list = COLUMNS
            .iter()
            .map(|c| {
                let cast = match *c {
                    "Id" => d.id_select_cast,
                    "CreatedAt" | "UpdatedAt" => d.time_select_cast,
                    _ => "",
                };
                format!("{}{cast}", q(c))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut table = Table {
            d,
            name: name.to_owned(),
            t: q(name),
            c: Cols {
                id: q("Id"),
                mq_type: q("MQType"),
                topic: q("Topic"),
                routing_key: q("RoutingKey"),
                message_type: q("MessageType"),
                message_body: q("MessageBody"),
                status: q("Status"),
                created_at: q("CreatedAt"),
                updated_at: q("UpdatedAt"),
                retry_count: q("RetryCount"),
                error_message: q("ErrorMessage"),
                headers: q("Headers"),
                partition_key: q("PartitionKey"),
                next_attempt_at: q("NextAttemptAt"),
                locked_by: q("LockedBy"),
            },
            select_list,
            insert_one: Default::default(),
        };
        table.insert_one = [
            table.insert_sql(1, false).into(),
            table.insert_sql(1, true).into(),
        ];
        table
    }

    /// The NOTIFY channel of this table.
    pub(crate) fn channel(&self) -> String {
        format!("heytom_outbox_{}", self.name.to_ascii_lowercase())
    }

    /// The statements of the create migration, for this table.
    pub(crate) fn create_statements(&self) -> Vec<String> {
        migration_statements(self.d.create_sql, &self.name)
    }

    /// The storage settings of a table this crate has just created.
    pub(crate) fn created_statements(&self) -> Vec<String> {
        self.d
            .created_sql
            .map(|sql| migration_statements(sql, &self.name))
            .unwrap_or_default()
    }

    /// The statements that add the relay's columns, for this table.
    pub(crate) fn upgrade_statements(&self) -> Vec<String> {
        migration_statements(self.d.upgrade_sql, &self.name)
    }

    /// Selects every column the statements use, no row: fails when one
    /// cannot be read.
    pub(crate) fn probe(&self) -> Built {
        let (t, cols) = (&self.t, &self.select_list);
        Params::new(self.d).build(format!("SELECT {cols} FROM {t} WHERE 1 = 0"))
    }

    /// The claim as one statement (`ClaimStyle::UpdateReturning`): lease up
    /// to `limit` due rows of one status (oldest first) to `token` and
    /// return them. Due and lease are read off the database's clock. One
    /// status at a time, so `(Status, CreatedAt)` yields rows already in
    /// order and the scan stops at the limit instead of sorting.
    /// With `after`, only rows created at or after it (see [`Claim`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim_update_returning(
        &self,
        status: MessageStatus,
        lease_ms: i64,
        token: &str,
        max_retry: i32,
        limit: i64,
        lock: &str,
        after: Option<DateTime<Utc>>,
    ) -> Built {
        let Cols {
            id,
            status: status_col,
            retry_count,
            next_attempt_at,
            locked_by,
            created_at,
            ..
        } = &self.c;
        let (t, cols, status, now) = (&self.t, &self.select_list, status as i32, self.d.now_ms);
        let mut p = Params::new(self.d);
        let (lease, token) = (p.p(Arg::BigInt(lease_ms)), p.p(Arg::Text(token.to_owned())));
        let max_retry = p.p(Arg::Int(max_retry));
        let after = self.after(&mut p, after);
        let limit = p.p(Arg::BigInt(limit));
        p.build(format!(
            "UPDATE {t} SET {next_attempt_at} = {now} + {lease}, {locked_by} = {token} \
             WHERE {} RETURNING {cols}",
            self.id_in_select(format!(
                "SELECT {id} FROM {t} \
                 WHERE {status_col} = {status} AND {retry_count} < {max_retry} AND {next_attempt_at} <= {now}{after} \
                 ORDER BY {created_at}, {id} LIMIT {limit}{lock}"
            ))
        ))
    }

    /// `Id IN (<select>)`, or where ids are matched as an array (see
    /// `Params::id_in`) `Id = ANY(ARRAY(<select>))`: the rows the select
    /// picks are then looked up by primary key, never found by a scan of
    /// the whole table joined to the select.
    fn id_in_select(&self, select: String) -> String {
        match self.d.id_array_cast {
            Some(_) => format!("{} = ANY(ARRAY({select}))", self.c.id),
            None => format!("{} IN ({select})", self.c.id),
        }
    }

    /// ` AND CreatedAt >= <after>`, or nothing; its placeholder comes
    /// between the retry count's and the limit's, as in the text.
    fn after(&self, p: &mut Params, after: Option<DateTime<Utc>>) -> String {
        match after {
            Some(t) => format!(" AND {} >= {}", self.c.created_at, p.p(Arg::Time(t))),
            None => String::new(),
        }
    }

    /// The first step of `ClaimStyle::SelectThenUpdate`: due rows, oldest
    /// first, read whole without locking anything (see `Store::claim_by_ids`).
    pub(crate) fn claim_select(
        &self,
        status: MessageStatus,
        max_retry: i32,
        limit: i64,
        after: Option<DateTime<Utc>>,
    ) -> Built {
        let Cols {
            id,
            status: status_col,
            retry_count,
            next_attempt_at,
            created_at,
            ..
        } = &self.c;
        let (t, cols, status, now) = (&self.t, &self.select_list, status as i32, self.d.now_ms);
        let mut p = Params::new(self.d);
        let max_retry = p.p(Arg::Int(max_retry));
        let after = self.after(&mut p, after);
        let limit = p.p(Arg::BigInt(limit));
        p.build(format!(
            "SELECT {cols} FROM {t} \
             WHERE {status_col} = {status} AND {retry_count} < {max_retry} AND {next_attempt_at} <= {now}{after} \
             ORDER BY {created_at}, {id} LIMIT {limit}"
        ))
    }

    /// The second step of `ClaimStyle::SelectThenUpdate`: leases those of
    /// `ids` that are still due (the same conditions as the select, checked
    /// again on each row's latest version under its lock), so a row another
    /// scanner leased, or that was sent, meanwhile is left alone.
    pub(crate) fn lease_due(
        &self,
        ids: &[Uuid],
        status: MessageStatus,
        max_retry: i32,
        lease_ms: i64,
        token: &str,
    ) -> Built {
        let Cols {
            id,
            status: status_col,
            retry_count,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, status, now) = (&self.t, status as i32, self.d.now_ms);
        let mut p = Params::new(self.d);
        let (lease, token) = (p.p(Arg::BigInt(lease_ms)), p.p(Arg::Text(token.to_owned())));
        let by_id = p.id_in(id, ids);
        let max_retry = p.p(Arg::Int(max_retry));
        p.build(format!(
            "UPDATE {t} SET {next_attempt_at} = {now} + {lease}, {locked_by} = {token} \
             WHERE {by_id} AND {status_col} = {status} AND {retry_count} < {max_retry} AND {next_attempt_at} <= {now}"
        ))
    }

    /// Moves committed rows from the commit lease `from` (still held by it:
    /// a row is marked or given back with `LockedBy` NULL) to the send lease
    /// `token`: a row a scanner took meanwhile is not taken back. Every
    /// token-fenced statement reads rows by primary key only, so that on
    /// MySQL it locks nothing but those rows (a scan under REPEATABLE READ
    /// would lock rows a concurrent claim then skips, out of order).
    pub(crate) fn take_over(&self, ids: &[Uuid], from: &str, token: &str, lease_ms: i64) -> Built {
        let Cols {
            id,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, now) = (&self.t, self.d.now_ms);
        let mut p = Params::new(self.d);
        let (token, lease) = (p.p(Arg::Text(token.to_owned())), p.p(Arg::BigInt(lease_ms)));
        let by_id = p.id_in(id, ids);
        let from = p.p(Arg::Text(from.to_owned()));
        p.build(format!(
            "UPDATE {t} SET {locked_by} = {token}, {next_attempt_at} = {now} + {lease} \
             WHERE {by_id} AND {locked_by} = {from}"
        ))
    }

    /// The rows of `ids` that `token` holds.
    pub(crate) fn held(&self, ids: &[Uuid], token: &str) -> Built {
        let Cols { id, locked_by, .. } = &self.c;
        let (t, cols) = (&self.t, &self.select_list);
        let mut p = Params::new(self.d);
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "SELECT {cols} FROM {t} WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    /// Extends the lease of rows `token` still holds (a send in flight).
    pub(crate) fn renew(&self, ids: &[Uuid], token: &str, lease_ms: i64) -> Built {
        let Cols {
            id,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, now) = (&self.t, self.d.now_ms);
        let mut p = Params::new(self.d);
        let lease = p.p(Arg::BigInt(lease_ms));
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "UPDATE {t} SET {next_attempt_at} = {now} + {lease} \
             WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    /// Gives rows back after the transport was unavailable: due again after
    /// `backoff_ms`, with the reason, without counting a retry.
    pub(crate) fn release(
        &self,
        ids: &[Uuid],
        token: &str,
        error: &str,
        now: DateTime<Utc>,
        backoff_ms: i64,
    ) -> Built {
        let Cols {
            id,
            error_message,
            updated_at,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, db_now) = (&self.t, self.d.now_ms);
        let mut p = Params::new(self.d);
        let (error, now, backoff) = (
            p.p(Arg::Text(truncate(error))),
            p.p(Arg::Time(now)),
            p.p(Arg::BigInt(backoff_ms)),
        );
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "UPDATE {t} SET {error_message} = {error}, {updated_at} = {now}, \
             {next_attempt_at} = {db_now} + {backoff}, {locked_by} = NULL \
             WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    /// Marks rows Sent that `token` still holds.
    pub(crate) fn mark_sent(&self, ids: &[Uuid], token: &str, now: DateTime<Utc>) -> Built {
        let Cols {
            id,
            status,
            updated_at,
            locked_by,
            ..
        } = &self.c;
        let t = &self.t;
        let mut p = Params::new(self.d);
        let now = p.p(Arg::Time(now));
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "UPDATE {t} SET {status} = 1, {updated_at} = {now}, {locked_by} = NULL \
             WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    /// Deletes rows that `token` still holds: a confirmed send with a
    /// retention of zero (`Outbox::retention(Duration::ZERO)`), one write
    /// instead of marking the row Sent and deleting it on the next scan.
    pub(crate) fn delete_sent(&self, ids: &[Uuid], token: &str) -> Built {
        let Cols { id, locked_by, .. } = &self.c;
        let t = &self.t;
        let mut p = Params::new(self.d);
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "DELETE FROM {t} WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    /// Marks rows Failed that `token` still holds (never a Sent one), one
    /// more retry counted, due again after `backoff_ms`.
    pub(crate) fn mark_failed(
        &self,
        ids: &[Uuid],
        token: &str,
        error: &str,
        now: DateTime<Utc>,
        backoff_ms: i64,
    ) -> Built {
        let Cols {
            id,
            status,
            retry_count,
            error_message,
            updated_at,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, db_now) = (&self.t, self.d.now_ms);
        let mut p = Params::new(self.d);
        let (error, now, backoff) = (
            p.p(Arg::Text(truncate(error))),
            p.p(Arg::Time(now)),
            p.p(Arg::BigInt(backoff_ms)),
        );
        let by_id = p.id_in(id, ids);
        let token = p.p(Arg::Text(token.to_owned()));
        p.build(format!(
            "UPDATE {t} SET {status} = 2, {retry_count} = {retry_count} + 1, {error_message} = {error}, \
             {updated_at} = {now}, {next_attempt_at} = {db_now} + {backoff}, {locked_by} = NULL \
             WHERE {by_id} AND {locked_by} = {token}"
        ))
    }

    pub(crate) fn update_status(
        &self,
        row: Uuid,
        new_status: MessageStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Built {
        let Cols {
            id,
            status,
            error_message,
            updated_at,
            locked_by,
            ..
        } = &self.c;
        let t = &self.t;
        let mut p = Params::new(self.d);
        // The enum's integer, written as a literal (it appears twice).
        let new_status = new_status as i32;
        let (error, now) = (p.p(Arg::OptText(error.map(truncate))), p.p(Arg::Time(now)));
        let row = p.id(row);
        // A Sent row never goes back to Pending or Failed.
        p.build(format!(
            "UPDATE {t} SET {status} = {new_status}, {error_message} = {error}, {updated_at} = {now}, \
             {locked_by} = NULL WHERE {id} = {row} AND ({status} <> 1 OR {new_status} = 1)"
        ))
    }

    pub(crate) fn requeue(&self, row: Uuid, now: DateTime<Utc>) -> Built {
        let Cols {
            id,
            status,
            retry_count,
            next_attempt_at,
            locked_by,
            error_message,
            updated_at,
            ..
        } = &self.c;
        let t = &self.t;
        let mut p = Params::new(self.d);
        let now = p.p(Arg::Time(now));
        let row = p.id(row);
        p.build(format!(
            "UPDATE {t} SET {status} = 0, {retry_count} = 0, {next_attempt_at} = 0, {locked_by} = NULL, \
             {error_message} = NULL, {updated_at} = {now} WHERE {status} = 2 AND {id} = {row}"
        ))
    }

    pub(crate) fn counts(&self) -> Built {
        let (t, status) = (&self.t, &self.c.status);
        Params::new(self.d).build(format!(
            "SELECT {status}, COUNT(*) FROM {t} GROUP BY {status}"
        ))
    }

    pub(crate) fn list(&self, wanted: MessageStatus, limit: i64) -> Built {
        let Cols {
            id,
            status,
            created_at,
            ..
        } = &self.c;
        let (t, cols) = (&self.t, &self.select_list);
        let mut p = Params::new(self.d);
        let (wanted, limit) = (p.p(Arg::Int(wanted as i32)), p.p(Arg::BigInt(limit)));
        p.build(format!(
            "SELECT {cols} FROM {t} WHERE {status} = {wanted} ORDER BY {created_at}, {id} LIMIT {limit}"
        ))
    }

    pub(crate) fn get(&self, row: Uuid) -> Built {
        let (t, cols, id) = (&self.t, &self.select_list, &self.c.id);
        let mut p = Params::new(self.d);
        let row = p.id(row);
        p.build(format!("SELECT {cols} FROM {t} WHERE {id} = {row}"))
    }

    /// Deletes at most `limit` rows with `status` created before `before`.
    pub(crate) fn delete_before(
        &self,
        wanted: MessageStatus,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Built {
        let Cols {
            id,
            status,
            created_at,
            ..
        } = &self.c;
        let t = &self.t;
        let mut p = Params::new(self.d);
        let (wanted, before, limit) = (
            p.p(Arg::Int(wanted as i32)),
            p.p(Arg::Time(before)),
            p.p(Arg::BigInt(limit)),
        );
        let sql = if self.d.delete_with_limit {
            format!(
                "DELETE FROM {t} WHERE {status} = {wanted} AND {created_at} < {before} \
                 ORDER BY {created_at}, {id} LIMIT {limit}"
            )
        } else {
            let select = format!(
                "SELECT {id} FROM {t} WHERE {status} = {wanted} AND {created_at} < {before} LIMIT {limit}"
            );
            format!("DELETE FROM {t} WHERE {}", self.id_in_select(select))
        };
        p.build(sql)
    }

    pub(crate) fn notify(&self) -> Option<Built> {
        self.d.notify.map(|sql| Built {
            sql: sql.to_owned(),
            args: vec![Arg::Text(self.channel())],
        })
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[path = "params.rs"]
mod params;
#[cfg(test)]
use params::padded_len;
pub(super) use params::Params;

#[path = "insert_sql.rs"]
mod insert_sql;
pub(crate) use insert_sql::insert_args;

#[path = "schedule_sql.rs"]
mod schedule_sql;

#[cfg(test)]
#[path = "statements_tests.rs"]
mod tests;
