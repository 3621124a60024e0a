//! Waking the scanners of other instances when rows become due without the
//! post-commit send (`dispatch_after_commit(false)`, follow-ups in that
//! mode, scheduled sends): PostgreSQL `NOTIFY`, sent after the commit by one
//! task and coalesced — at most one per 10 ms, any number of commits
//! meanwhile ask for one more — instead of inside every transaction, where each `NOTIFY`
//! makes the commits of the whole database queue for one lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::relay::Relay;

/// The shortest time between two `NOTIFY`s of one app: what other
/// instances' scanners may wait longer (this instance's is woken at once),
/// against a statement on its own connection after every commit.
const NOTIFY_SPACING: Duration = Duration::from_millis(10);

/// Requests to wake other instances' scanners, for the notifier task.
pub(crate) struct WakeOthers {
    /// The table's database can wake other instances (PostgreSQL).
    enabled: bool,
    /// A commit asked for a `NOTIFY` that has not been sent yet.
    pending: AtomicBool,
    wake: Notify,
}

impl WakeOthers {
    pub(crate) fn new(enabled: bool) -> Self {
        WakeOthers {
            enabled,
            pending: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }
}

impl Relay {
    /// Rows committed just now are due (or a due time changed): wakes this
    /// instance's scanner when `local`, and the other instances' soon after
    /// (a missed wake-up only delays them to their next scan).
    pub(crate) fn wake_scanners(&self, local: bool) {
        if local {
            self.wake.notify_one();
        }
        let others = &self.wake_others;
        if others.enabled && !others.pending.swap(true, Ordering::AcqRel) {
            others.wake.notify_one();
        }
    }

    /// Sends the requested `NOTIFY`s, one at a time and at most one per
    /// [`NOTIFY_SPACING`], until stopped; sends a last one if a commit
    /// asked for it before the stop.
    pub(super) async fn notify_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.wake_others.enabled {
            return;
        }
        loop {
            let stopping = tokio::select! {
                _ = self.wake_others.wake.notified() => false,
                r = stop.changed() => r.is_err() || *stop.borrow(),
            };
            self.send_notify().await;
            if stopping {
                return;
            }
            // Commits meanwhile ask for one more, sent after the pause.
            tokio::select! {
                _ = tokio::time::sleep(NOTIFY_SPACING) => {}
                _ = stop.changed() => {
                    self.send_notify().await;
                    return;
                }
            }
        }
    }

    /// One `NOTIFY`, if a commit asked for it (taken before the statement:
    /// a commit meanwhile asks again).
    async fn send_notify(&self) {
        if !self.wake_others.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Some(q) = self.store.table.notify() {
            if let Err(e) = self.store.backend.execute(q).await {
                tracing::debug!(error = %e, "outbox NOTIFY failed; other instances scan on their interval");
            }
        }
    }
}
