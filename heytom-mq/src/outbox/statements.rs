//! Every statement of the local message table, built once for all
//! dialects from the `Dialect`'s quoting and placeholders.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::dialect::{
    migration_statements, Arg, Built, Dialect, Placeholder, COLUMNS, MAX_ERROR_LEN,
};
use super::{LocalMessage, MessageStatus};

/// Builds a statement, numbering placeholders as arguments are added.
struct Stmt<'d> {
    d: &'d Dialect,
    sql: String,
    args: Vec<Arg>,
}

impl<'d> Stmt<'d> {
    fn new(d: &'d Dialect) -> Self {
        Stmt {
            d,
            sql: String::with_capacity(256),
            args: Vec::new(),
        }
    }

    fn sql(&mut self, s: &str) -> &mut Self {
        self.sql.push_str(s);
        self
    }

    fn arg(&mut self, a: Arg) -> &mut Self {
        self.args.push(a);
        match self.d.placeholder {
            Placeholder::Dollar => {
                self.sql.push('$');
                self.sql.push_str(&self.args.len().to_string());
            }
            Placeholder::Question => self.sql.push('?'),
        }
        self
    }

    fn id(&mut self, id: Uuid) -> &mut Self {
        self.arg(Arg::Text(id.to_string()));
        self.sql.push_str(self.d.id_param_cast);
        self
    }

    fn id_list(&mut self, ids: &[Uuid]) -> &mut Self {
        self.sql.push('(');
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.id(*id);
        }
        self.sql.push(')');
        self
    }

    fn build(self) -> Built {
        Built {
            sql: self.sql,
            args: self.args,
        }
    }
}

/// The statements of one table in one dialect.
pub(crate) struct Table {
    pub(crate) d: &'static Dialect,
    pub(crate) name: String,
    t: String,
    c: Vec<String>,
    select_list: String,
}

impl Table {
    pub(crate) fn new(d: &'static Dialect, name: &str) -> Self {
        let q = |s: &str| format!("{}{s}{}", d.open_quote, d.close_quote);
        let c: Vec<String> = COLUMNS.iter().map(|s| q(s)).collect();
        let mut select_list = format!("{}{}", c[0], d.id_select_cast);
        for col in &c[1..] {
            select_list.push_str(", ");
            select_list.push_str(col);
        }
        Table {
            d,
            name: name.to_owned(),
            t: q(name),
            c,
            select_list,
        }
    }

    fn col(&self, name: &str) -> &str {
        let i = COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
        &self.c[i]
    }

    /// The NOTIFY channel of this table.
    pub(crate) fn channel(&self) -> String {
        format!("heytom_outbox_{}", self.name.to_ascii_lowercase())
    }

    /// The statements of the create migration, for this table.
    pub(crate) fn create_statements(&self) -> Vec<String> {
        migration_statements(self.d.create_sql, &self.name)
    }

    /// The statements that add the relay's columns, for this table.
    pub(crate) fn upgrade_statements(&self) -> Vec<String> {
        migration_statements(self.d.upgrade_sql, &self.name)
    }

    pub(crate) fn probe(&self) -> Built {
        Built {
            sql: format!("SELECT {} FROM {} WHERE 1 = 0", self.select_list, self.t),
            args: Vec::new(),
        }
    }

    /// One multi-row insert (at most [`ROWS_PER_STATEMENT`] rows).
    pub(crate) fn insert(&self, rows: &[LocalMessage]) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!("INSERT INTO {} (", self.t));
        let cols = [
            "Id",
            "MQType",
            "Topic",
            "RoutingKey",
            "MessageType",
            "MessageBody",
            "Status",
            "CreatedAt",
            "RetryCount",
            "Headers",
            "PartitionKey",
            "NextAttemptAt",
            "LockedBy",
        ];
        let list = cols
            .iter()
            .map(|c| self.col(c))
            .collect::<Vec<_>>()
            .join(", ");
        s.sql(&list).sql(") VALUES ");
        for (i, m) in rows.iter().enumerate() {
            if i > 0 {
                s.sql(", ");
            }
            s.sql("(").id(m.id);
            s.sql(", ").arg(Arg::Text(m.mq_type.clone()));
            s.sql(", ").arg(Arg::Text(m.topic.clone()));
            s.sql(", ").arg(Arg::OptText(m.routing_key.clone()));
            s.sql(", ").arg(Arg::Text(m.message_type.clone()));
            s.sql(", ").arg(Arg::Text(m.message_body.clone()));
            s.sql(", ").arg(Arg::Int(m.status as i32));
            s.sql(", ").arg(Arg::Time(m.created_at));
            s.sql(", ").arg(Arg::Int(m.retry_count));
            s.sql(", ").arg(Arg::OptText(m.headers.clone()));
            s.sql(", ").arg(Arg::OptText(m.partition_key.clone()));
            s.sql(", ")
                .arg(Arg::BigInt(m.next_attempt_at.timestamp_millis()));
            s.sql(", ").arg(Arg::OptText(m.locked_by.clone()));
            s.sql(")");
        }
        s.build()
    }

    /// One status at a time, so `(Status, CreatedAt)` yields rows already in
    /// order and the scan stops at the limit instead of sorting the backlog.
    fn due_filter(&self, s: &mut Stmt<'_>, status: MessageStatus, now_ms: i64, max_retry: i32) {
        s.sql(&format!(
            " WHERE {} = {} AND {} < ",
            self.col("Status"),
            status as i32,
            self.col("RetryCount")
        ))
        .arg(Arg::Int(max_retry))
        .sql(&format!(" AND {} <= ", self.col("NextAttemptAt")))
        .arg(Arg::BigInt(now_ms));
    }

    fn order(&self) -> String {
        format!(" ORDER BY {}, {}", self.col("CreatedAt"), self.col("Id"))
    }

    /// The claim as one statement (`ClaimStyle::UpdateReturning`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim_update_returning(
        &self,
        status: MessageStatus,
        now_ms: i64,
        lease_until_ms: i64,
        owner: &str,
        max_retry: i32,
        limit: i64,
        lock: &str,
    ) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "UPDATE {} SET {} = ",
            self.t,
            self.col("NextAttemptAt")
        ))
        .arg(Arg::BigInt(lease_until_ms))
        .sql(&format!(", {} = ", self.col("LockedBy")))
        .arg(Arg::Text(owner.to_owned()))
        .sql(&format!(
            " WHERE {} IN (SELECT {} FROM {}",
            self.col("Id"),
            self.col("Id"),
            self.t
        ));
        self.due_filter(&mut s, status, now_ms, max_retry);
        s.sql(&self.order()).sql(" LIMIT ").arg(Arg::BigInt(limit));
        s.sql(lock);
        s.sql(&format!(") RETURNING {}", self.select_list));
        s.build()
    }

    /// The select half of `ClaimStyle::SelectForUpdate`.
    pub(crate) fn claim_select(
        &self,
        status: MessageStatus,
        now_ms: i64,
        max_retry: i32,
        limit: i64,
    ) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!("SELECT {} FROM {}", self.select_list, self.t));
        self.due_filter(&mut s, status, now_ms, max_retry);
        s.sql(&self.order()).sql(" LIMIT ").arg(Arg::BigInt(limit));
        s.sql(" FOR UPDATE SKIP LOCKED");
        s.build()
    }

    /// The update half of `ClaimStyle::SelectForUpdate`.
    pub(crate) fn lease(&self, ids: &[Uuid], lease_until_ms: i64, owner: &str) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "UPDATE {} SET {} = ",
            self.t,
            self.col("NextAttemptAt")
        ))
        .arg(Arg::BigInt(lease_until_ms))
        .sql(&format!(", {} = ", self.col("LockedBy")))
        .arg(Arg::Text(owner.to_owned()))
        .sql(&format!(" WHERE {} IN ", self.col("Id")))
        .id_list(ids);
        s.build()
    }

    pub(crate) fn mark_sent(&self, ids: &[Uuid], now: DateTime<Utc>) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "UPDATE {} SET {} = 1, {} = ",
            self.t,
            self.col("Status"),
            self.col("UpdatedAt")
        ))
        .arg(Arg::Time(now))
        .sql(&format!(
            ", {} = NULL WHERE {} IN ",
            self.col("LockedBy"),
            self.col("Id")
        ))
        .id_list(ids);
        s.build()
    }

    pub(crate) fn mark_failed(
        &self,
        ids: &[Uuid],
        error: &str,
        now: DateTime<Utc>,
        next_ms: i64,
    ) -> Built {
        let mut s = Stmt::new(self.d);
        let rc = self.col("RetryCount");
        s.sql(&format!(
            "UPDATE {} SET {} = 2, {rc} = {rc} + 1, {} = ",
            self.t,
            self.col("Status"),
            self.col("ErrorMessage")
        ))
        .arg(Arg::Text(truncate(error)))
        .sql(&format!(", {} = ", self.col("UpdatedAt")))
        .arg(Arg::Time(now))
        .sql(&format!(", {} = ", self.col("NextAttemptAt")))
        .arg(Arg::BigInt(next_ms))
        .sql(&format!(
            ", {} = NULL WHERE {} IN ",
            self.col("LockedBy"),
            self.col("Id")
        ))
        .id_list(ids);
        s.build()
    }

    pub(crate) fn update_status(
        &self,
        id: Uuid,
        status: MessageStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!("UPDATE {} SET {} = ", self.t, self.col("Status")))
            .arg(Arg::Int(status as i32))
            .sql(&format!(", {} = ", self.col("ErrorMessage")))
            .arg(Arg::OptText(error.map(truncate)))
            .sql(&format!(", {} = ", self.col("UpdatedAt")))
            .arg(Arg::Time(now))
            .sql(&format!(
                ", {} = NULL WHERE {} = ",
                self.col("LockedBy"),
                self.col("Id")
            ))
            .id(id);
        s.build()
    }

    pub(crate) fn requeue(&self, id: Uuid, now: DateTime<Utc>) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "UPDATE {} SET {} = 0, {} = 0, {} = 0, {} = NULL, {} = NULL, {} = ",
            self.t,
            self.col("Status"),
            self.col("RetryCount"),
            self.col("NextAttemptAt"),
            self.col("LockedBy"),
            self.col("ErrorMessage"),
            self.col("UpdatedAt")
        ))
        .arg(Arg::Time(now))
        .sql(&format!(
            " WHERE {} = 2 AND {} = ",
            self.col("Status"),
            self.col("Id")
        ))
        .id(id);
        s.build()
    }

    pub(crate) fn counts(&self) -> Built {
        Built {
            sql: format!(
                "SELECT {s}, COUNT(*) FROM {} GROUP BY {s}",
                self.t,
                s = self.col("Status")
            ),
            args: Vec::new(),
        }
    }

    pub(crate) fn list(&self, status: MessageStatus, limit: i64) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "SELECT {} FROM {} WHERE {} = ",
            self.select_list,
            self.t,
            self.col("Status")
        ))
        .arg(Arg::Int(status as i32))
        .sql(&self.order())
        .sql(" LIMIT ")
        .arg(Arg::BigInt(limit));
        s.build()
    }

    pub(crate) fn get(&self, id: Uuid) -> Built {
        let mut s = Stmt::new(self.d);
        s.sql(&format!(
            "SELECT {} FROM {} WHERE {} = ",
            self.select_list,
            self.t,
            self.col("Id")
        ))
        .id(id);
        s.build()
    }

    /// Deletes at most `limit` rows with `status` created before `before`.
    pub(crate) fn delete_before(
        &self,
        status: MessageStatus,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Built {
        let mut s = Stmt::new(self.d);
        let filter = |s: &mut Stmt<'_>| {
            s.sql(&format!(" WHERE {} = ", self.col("Status")))
                .arg(Arg::Int(status as i32))
                .sql(&format!(" AND {} < ", self.col("CreatedAt")))
                .arg(Arg::Time(before));
        };
        if self.d.delete_with_limit {
            s.sql(&format!("DELETE FROM {}", self.t));
            filter(&mut s);
            s.sql(&self.order()).sql(" LIMIT ").arg(Arg::BigInt(limit));
        } else {
            s.sql(&format!(
                "DELETE FROM {} WHERE {} IN (SELECT {} FROM {}",
                self.t,
                self.col("Id"),
                self.col("Id"),
                self.t
            ));
            filter(&mut s);
            s.sql(" LIMIT ").arg(Arg::BigInt(limit)).sql(")");
        }
        s.build()
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
