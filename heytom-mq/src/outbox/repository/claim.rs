//! The claim of due rows, in each database's style (`ClaimStyle`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{storage, ClaimStyle, Store};
use crate::error::Result;
use crate::outbox::{LocalMessage, MessageStatus};

impl Store {
    /// Claims up to `limit` due rows (Pending first, then Failed; below
    /// `max_retry`, next attempt time reached on the database's clock) for
    /// `token` for `lease_ms`, in creation order. With `after` (the newest
    /// `CreatedAt` of the previous, full claim of a drain) and a dialect
    /// that wants it, only rows created at or after it: a due row older
    /// than that waits for the scanner's next round, which starts from the
    /// beginning again.
    pub(crate) async fn claim(
        &self,
        token: &str,
        lease_ms: i64,
        max_retry: i32,
        limit: i64,
        after: Option<DateTime<Utc>>,
    ) -> Result<Vec<LocalMessage>> {
        let after = after.filter(|_| self.table.d.claim_from_last);
        let mut rows = Vec::new();
        for status in [MessageStatus::Pending, MessageStatus::Failed] {
            let want = limit - rows.len() as i64;
            if want <= 0 {
                break;
            }
            let claimed = match self.table.d.claim {
                ClaimStyle::UpdateReturning { lock } => {
                    let q = self.table.claim_update_returning(
                        status, lease_ms, token, max_retry, want, lock, after,
                    );
                    self.backend.fetch(q).await
                }
                ClaimStyle::SelectThenUpdate => {
                    self.claim_by_ids(status, token, lease_ms, max_retry, want, after)
                        .await
                }
            }
            .map_err(storage("claiming due rows", &self.table.name))?;
            rows.extend(claimed);
        }
        for r in &mut rows {
            r.locked_by = Some(token.to_owned());
        }
        rows.sort_by_key(|r| (r.created_at, r.id));
        Ok(rows)
    }

    /// `ClaimStyle::SelectThenUpdate`: the due rows, then a lease of those
    /// still due, then the rows leased to `token`, unless the rows read
    /// are known to be as leased ([`leased_as_read`]).
    async fn claim_by_ids(
        &self,
        status: MessageStatus,
        token: &str,
        lease_ms: i64,
        max_retry: i32,
        limit: i64,
        after: Option<DateTime<Utc>>,
    ) -> std::result::Result<Vec<LocalMessage>, sqlx::Error> {
        let t = &self.table;
        let read = self
            .backend
            .fetch(t.claim_select(status, max_retry, limit, after))
            .await?;
        if read.is_empty() {
            return Ok(read);
        }
        let ids: Vec<Uuid> = read.iter().map(|r| r.id).collect();
        let lease = t.lease_due(&ids, status, max_retry, lease_ms, token);
        let leased = self.backend.execute(lease).await?;
        if leased == 0 {
            return Ok(Vec::new());
        }
        match leased_as_read(status, read, leased) {
            Some(rows) => Ok(rows),
            None => self.backend.fetch(t.held(&ids, token)).await,
        }
    }
}

/// The rows a claim read, when its lease took each of them as read: every
/// one (`leased`), all Pending with retry count 0. The lease checks the
/// status again, a Pending row's count does not change (a failure makes it
/// Failed), and a row becomes Pending again only with count 0 (a requeue),
/// so such a row is exactly as read and needs no second read (one
/// statement less per batch). Otherwise (a Failed row's count changes
/// between reads, another instance took some) `None`: read them again.
fn leased_as_read(
    status: MessageStatus,
    read: Vec<LocalMessage>,
    leased: u64,
) -> Option<Vec<LocalMessage>> {
    let whole = status == MessageStatus::Pending
        && leased as usize == read.len()
        && read.iter().all(|r| r.retry_count == 0);
    whole.then_some(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(counts: &[i32]) -> Vec<LocalMessage> {
        counts
            .iter()
            .map(|&n| {
                let mut r = LocalMessage::pending("Ping", "{}");
                r.retry_count = n;
                r
            })
            .collect()
    }

    #[test]
    fn only_a_pending_batch_leased_whole_with_count_0_skips_the_second_read() {
        let pending = MessageStatus::Pending;
        assert_eq!(
            leased_as_read(pending, rows(&[0, 0]), 2).map(|r| r.len()),
            Some(2)
        );
        // Another instance took one of them meanwhile.
        assert!(leased_as_read(pending, rows(&[0, 0]), 1).is_none());
        // A Pending row with a count (written by hand) may not be as read.
        assert!(leased_as_read(pending, rows(&[0, 2]), 2).is_none());
        // Failed rows' counts change between reads.
        assert!(leased_as_read(MessageStatus::Failed, rows(&[0, 0]), 2).is_none());
    }
}
