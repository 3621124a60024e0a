//! The insert of the local message table (`Table::insert`), its one-row
//! text made once per table.

use std::sync::Arc;

use super::{Cols, Params, Table};
use crate::outbox::dialect::{Arg, ArgRef, Built, Insert};
use crate::outbox::LocalMessage;

/// Parameters per inserted row (the columns an insert writes).
pub(super) const INSERT_PARAMS: usize = 13;

impl Table {
    /// One multi-row insert (at most `ROWS_PER_STATEMENT` rows). With a
    /// `lease_ms`, each row's next attempt is the database's clock plus the
    /// lease (the commit lease of `LockedBy`); without, the row's own time.
    pub(crate) fn insert(&self, rows: &[LocalMessage], lease_ms: Option<i64>) -> Built {
        let args = rows
            .iter()
            .flat_map(|m| insert_args(m, lease_ms))
            .map(ArgRef::to_owned_arg)
            .collect();
        Built {
            sql: self.insert_text(rows.len(), lease_ms.is_some()).to_string(),
            args,
        }
    }

    /// [`insert`](Self::insert), its values bound from the rows as they
    /// are (a transaction's rows are kept for the post-commit send: no
    /// copy of every text column per row).
    pub(crate) fn insert_rows<'a>(
        &self,
        rows: &'a [LocalMessage],
        lease_ms: Option<i64>,
    ) -> Insert<'a> {
        Insert {
            sql: self.insert_text(rows.len(), lease_ms.is_some()),
            rows,
            lease_ms,
        }
    }

    /// The text of an insert of `n` rows; the one-row text (every
    /// `publish`) is made once per table.
    fn insert_text(&self, n: usize, leased: bool) -> Arc<str> {
        match n {
            1 => self.insert_one[usize::from(leased)].clone(),
            n => self.insert_sql(n, leased).into(),
        }
    }

    /// The text of an insert of `n` rows, [`INSERT_PARAMS`] placeholders
    /// each in column order; `leased`: the next attempt is the database's
    /// clock plus the bound lease.
    pub(super) fn insert_sql(&self, n: usize, leased: bool) -> String {
        let Cols {
            id,
            mq_type,
            topic,
            routing_key,
            message_type,
            message_body,
            status,
            created_at,
            retry_count,
            headers,
            partition_key,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let mut p = Params::new(self.d);
        let values: Vec<String> = (0..n)
            .map(|_| {
                let mut row: Vec<String> = (0..INSERT_PARAMS).map(|_| p.p(Arg::Int(0))).collect();
                row[0].push_str(self.d.id_param_cast);
                if leased {
                    row[11] = format!("{} + {}", self.d.now_ms, row[11]);
                }
                format!("({})", row.join(", "))
            })
            .collect();
        let (t, values) = (&self.t, values.join(", "));
        format!(
            "INSERT INTO {t} ({id}, {mq_type}, {topic}, {routing_key}, {message_type}, {message_body}, \
             {status}, {created_at}, {retry_count}, {headers}, {partition_key}, {next_attempt_at}, {locked_by}) \
             VALUES {values}"
        )
    }
}

/// The values one row of an insert binds, in [`Table::insert_sql`]'s
/// column order.
pub(crate) fn insert_args(m: &LocalMessage, lease_ms: Option<i64>) -> [ArgRef<'_>; INSERT_PARAMS] {
    [
        ArgRef::Id(m.id),
        ArgRef::Text(&m.mq_type),
        ArgRef::Text(&m.topic),
        ArgRef::OptText(m.routing_key.as_deref()),
        ArgRef::Text(&m.message_type),
        ArgRef::Text(&m.message_body),
        ArgRef::Int(m.status as i32),
        ArgRef::Time(m.created_at),
        ArgRef::Int(m.retry_count),
        ArgRef::OptText(m.headers.as_deref()),
        ArgRef::OptText(m.partition_key.as_deref()),
        ArgRef::BigInt(lease_ms.unwrap_or_else(|| m.next_attempt_at.timestamp_millis())),
        ArgRef::OptText(m.locked_by.as_deref()),
    ]
}
