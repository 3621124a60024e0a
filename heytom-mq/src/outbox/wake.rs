//! Waking the scanners of other instances when rows become due without the
//! post-commit send (`dispatch_after_commit(false)`, follow-ups in that
//! mode, scheduled sends): PostgreSQL `NOTIFY`, sent after the commit by one
//! task and coalesced — while one is in flight, any number of commits ask
//! for one more — instead of inside every transaction, where each `NOTIFY`
//! makes the commits of the whole database queue for one lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::relay::Relay;

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

    /// Sends the requested `NOTIFY`s, one at a time, until stopped; sends
    /// a last one if a commit asked for it before the stop.
    pub(super) async fn notify_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.wake_others.enabled {
            return;
        }
        loop {
            let stopping = tokio::select! {
                _ = self.wake_others.wake.notified() => false,
                r = stop.changed() => r.is_err() || *stop.borrow(),
            };
            // Taken before the statement: a commit meanwhile asks again.
            while self.wake_others.pending.swap(false, Ordering::AcqRel) {
                if let Some(q) = self.store.table.notify() {
                    if let Err(e) = self.store.backend.execute(q).await {
                        tracing::debug!(error = %e, "outbox NOTIFY failed; other instances scan on their interval");
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}
