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
            let linger = tokio::time::sleep(MARK_LINGER);
            tokio::pin!(linger);
            while count < MARK_BATCH {
                tokio::select! {
                    biased;
                    m = marks.recv() => match m {
                        Some(m) => {
                            count += m.ids.len();
                            batch.push(m);
                        }
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            self.mark_sent(batch).await;
        }
    }

    pub(super) async fn mark_sent(&self, marks: Vec<Mark>) {
        let mut by_token: HashMap<Arc<str>, Vec<Uuid>> = HashMap::new();
        for m in marks {
            by_token.entry(m.token).or_default().extend(m.ids);
        }
        for (token, ids) in by_token {
            match retry_storage(|| self.store.mark_sent(&ids, &token)).await {
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
