//! The relay's helpers that write outcomes: the marker (confirmed rows
//! marked Sent in batches, fenced by their lease) and the lease keeper.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::relay::Relay;
use crate::error::Result;

/// How long the marker waits for more confirmed ids before writing: a
/// stream of small commits costs one status write per this period, not one
/// per commit (the rows stay leased, and renewed, until they are marked).
const MARK_LINGER: Duration = Duration::from_millis(50);
/// Ids marked Sent per update at most.
const MARK_BATCH: usize = 1000;

/// Sent rows of one lease, for the marker.
pub(super) struct Mark {
    pub(super) token: Arc<str>,
    pub(super) ids: Vec<Uuid>,
}

impl Relay {
    /// Renews the leases of rows in flight every third of the lease, so a
    /// slow send (a broker blocking publishers) keeps its rows, and the rows
    /// of an instance that died are free again one lease after it.
    pub(super) async fn keep_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let every = (self.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
            for (token, ids) in self.leases.snapshot() {
                match self.store.renew(&ids, &token, self.lease_ms()).await {
                    Ok(n) if (n as usize) < ids.len() => tracing::debug!(
                        held = ids.len(),
                        renewed = n,
                        "some leased rows were written meanwhile or taken by another sender"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, count = ids.len(), "could not renew outbox leases")
                    }
                }
            }
        }
    }

    /// Marks confirmed rows Sent, merging what arrives within a few
    /// milliseconds into one update per lease: one write per batch, not
    /// per commit.
    pub(super) async fn mark_loop(
        self: Arc<Self>,
        mut marks: mpsc::Receiver<Mark>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                m = marks.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = stop.changed() => {
                    marks.close();
                    let mut all = Vec::new();
                    while let Ok(m) = marks.try_recv() {
                        all.push(m);
                    }
                    self.mark_sent(all).await;
                    return;
                }
            };
            let mut count = first.ids.len();
            let mut batch = vec![first];
            if count < MARK_BATCH {
                // Not woken by every sent batch: what arrives meanwhile is
                // taken after the linger, or once a sender sees the queue
                // filling up (`Relay::queue_mark`).
                tokio::select! {
                    _ = tokio::time::sleep(MARK_LINGER) => {}
                    _ = self.mark_now.notified() => {}
                }
            }
            while count < MARK_BATCH {
                match marks.try_recv() {
                    Ok(m) => {
                        count += m.ids.len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            self.mark_sent(batch).await;
        }
    }

    /// Queues sent rows for the marker; wakes it early when a full batch
    /// may be waiting or its queue is half full.
    pub(super) async fn queue_mark(&self, mark: Mark) {
        let big = mark.ids.len() >= MARK_BATCH / 4;
        match self.marks.send(mark).await {
            Ok(()) if big || self.marks.capacity() <= self.marks.max_capacity() / 2 => {
                self.mark_now.notify_one()
            }
            Ok(()) => {}
            // The marker has stopped: mark here.
            Err(mpsc::error::SendError(mark)) => self.mark_sent(vec![mark]).await,
        }
    }

    pub(super) async fn mark_sent(&self, marks: Vec<Mark>) {
        let mut by_token: HashMap<Arc<str>, Vec<Uuid>> = HashMap::new();
        for m in marks {
            by_token.entry(m.token).or_default().extend(m.ids);
        }
        // With a retention of zero a confirmed row is deleted at once: one
        // write, not a Sent mark and then a delete on the next scan.
        let delete = self.retention == Some(Duration::ZERO);
        for (token, ids) in by_token {
            let written = if delete {
                retry_storage(|| self.store.delete_sent(&ids, &token)).await
            } else {
                retry_storage(|| self.store.mark_sent(&ids, &token)).await
            };
            match written {
                Ok(n) if (n as usize) < ids.len() => tracing::warn!(
                    count = ids.len() - n as usize,
                    "sent outbox rows had been taken over by another sender (their lease expired while sending): they may be sent twice"
                ),
                Ok(_) => {}
                // The rows keep their lease and are sent again after it: at least once.
                Err(e) => {
                    tracing::error!(error = %e, count = ids.len(), "could not mark outbox rows sent")
                }
            }
            self.leases.forget(&token, &ids);
        }
    }
}

/// Retries a status update a few times: a lost update means a resend after
/// the lease (a deadlock victim on MySQL, a busy SQLite file).
pub(super) async fn retry_storage<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= 4 => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "outbox status update failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
        }
    }
}
