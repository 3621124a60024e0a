//! The statement the scanner asks after each scan: how long until the next
//! row is due (a child of `statements`, which owns the quoted names).

use super::{Cols, Params, Table};
use crate::outbox::dialect::{Arg, Built};

impl Table {
    /// Per status (Pending, Failed), the milliseconds from the database's
    /// clock to the earliest next attempt among the rows a scanner would
    /// claim once they are due and that no sender holds: scheduled rows,
    /// failed rows waiting for their retry, rows given back while their
    /// transport was down. Leased rows are left out: their leases are
    /// renewed while they are sent, and a dead sender's are found by the
    /// periodic scan. Negative when a row is due already.
    pub(crate) fn next_due(&self, max_retry: i32) -> Built {
        let Cols {
            status,
            retry_count,
            next_attempt_at,
            locked_by,
            ..
        } = &self.c;
        let (t, now) = (&self.t, self.d.now_ms);
        let mut p = Params::new(self.d);
        let max_retry = p.p(Arg::Int(max_retry));
        p.build(format!(
            "SELECT {status}, MIN({next_attempt_at}) - {now} FROM {t} \
             WHERE {status} IN (0, 2) AND {retry_count} < {max_retry} AND {locked_by} IS NULL \
             GROUP BY {status}"
        ))
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[test]
    fn next_due_reads_as_whole_sql() {
        let d = &crate::outbox::sqlite::DIALECT;
        let q = Table::new(d, "T").next_due(5);
        assert_eq!(
            q.sql,
            format!(
                "SELECT [Status], MIN([NextAttemptAt]) - {now} FROM [T] \
                 WHERE [Status] IN (0, 2) AND [RetryCount] < ? AND [LockedBy] IS NULL \
                 GROUP BY [Status]",
                now = d.now_ms
            )
        );
        assert!(matches!(q.args.as_slice(), [Arg::Int(5)]));
    }
}
