//! The insert of the local message table (`Table::insert`), its one-row
//! text made once per table.

use super::{Cols, Params, Table};
use crate::outbox::dialect::{Arg, Built};
use crate::outbox::LocalMessage;

/// Parameters per inserted row (the columns an insert writes).
pub(super) const INSERT_PARAMS: usize = 13;

impl Table {
    /// One multi-row insert (at most `ROWS_PER_STATEMENT` rows). With a
    /// `lease_ms`, each row's next attempt is the database's clock plus the
    /// lease (the commit lease of `LockedBy`); without, the row's own time.
    pub(crate) fn insert(&self, rows: &[LocalMessage], lease_ms: Option<i64>) -> Built {
        let mut args = Vec::with_capacity(rows.len() * INSERT_PARAMS);
        for m in rows {
            args.extend([
                Arg::Text(m.id.to_string()),
                Arg::Text(m.mq_type.clone()),
                Arg::Text(m.topic.clone()),
                Arg::OptText(m.routing_key.clone()),
                Arg::Text(m.message_type.clone()),
                Arg::Text(m.message_body.clone()),
                Arg::Int(m.status as i32),
                Arg::Time(m.created_at),
                Arg::Int(m.retry_count),
                Arg::OptText(m.headers.clone()),
                Arg::OptText(m.partition_key.clone()),
                Arg::BigInt(lease_ms.unwrap_or_else(|| m.next_attempt_at.timestamp_millis())),
                Arg::OptText(m.locked_by.clone()),
            ]);
        }
        // The one-row text (every `publish`) is made once per table.
        let sql = match (rows.len(), lease_ms.is_some()) {
            (1, leased) => self.insert_one[usize::from(leased)].clone(),
            (n, leased) => self.insert_sql(n, leased),
        };
        Built { sql, args }
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
