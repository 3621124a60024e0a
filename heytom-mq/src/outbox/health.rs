//! The outbox's part of [`RunningApp::health`](crate::RunningApp::health):
//! after every scan the scanner counts the Pending and Failed rows and
//! notes the oldest Pending row, so that a health check reads a snapshot
//! instead of counting the table on every probe.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::relay::Relay;
use super::MessageStatus;

/// The outbox's health: the last scan's counts and outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxHealth {
    /// The local message table.
    pub table: String,
    /// Whether the retry scanner runs
    /// ([`LocalMessageRetryOptions::enabled`](crate::LocalMessageRetryOptions::enabled));
    /// without it there are no counts.
    pub scanner_enabled: bool,
    /// Pending rows at the last successful scan.
    pub pending: Option<u64>,
    /// Failed rows (retried, or out of retries) at the last successful scan.
    pub failed: Option<u64>,
    /// How old the oldest Pending row is now, in seconds (from the last
    /// successful scan; `None` when there was none).
    pub oldest_pending_age_seconds: Option<f64>,
    /// When the scanner last finished a scan without an error.
    pub last_successful_scan: Option<DateTime<Utc>>,
    /// The error of the last scan, when it failed.
    pub last_error: Option<String>,
    /// Set when the scanner is not healthy: its last scan failed, or none
    /// succeeded for [`stale_after`](OutboxHealth::stale_after_seconds).
    pub problem: Option<String>,
    /// How long without a successful scan counts as stalled, in seconds:
    /// three scan intervals, at least a minute.
    pub stale_after_seconds: f64,
}

impl OutboxHealth {
    /// Whether the scanner works (or is off, which is no failure).
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// What the scanner records after each scan.
#[derive(Debug)]
pub(crate) struct ScanHealth(Mutex<ScanState>);

#[derive(Debug)]
struct ScanState {
    started: DateTime<Utc>,
    pending: Option<u64>,
    failed: Option<u64>,
    oldest_pending: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    last_error: Option<String>,
    counted_at: Option<Instant>,
}

/// The least time between two counts of the table.
const COUNT_EVERY: Duration = Duration::from_secs(5);

impl Default for ScanHealth {
    fn default() -> Self {
        ScanHealth(Mutex::new(ScanState {
            started: Utc::now(),
            pending: None,
            failed: None,
            oldest_pending: None,
            last_success: None,
            last_error: None,
            counted_at: None,
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    /// After a scan: on success counts the rows and notes the oldest
    /// Pending one; on failure keeps the error (and the last counts).
    pub(super) async fn scanned(&self, failure: Option<String>) {
        // Scans woken by notifications may follow each other closely: the
        // rows are counted at most once per COUNT_EVERY.
        let counted = lock(&self.scan_health.0).counted_at;
        let fresh = counted.is_some_and(|t| t.elapsed() < COUNT_EVERY);
        let outcome = match failure {
            Some(e) => Err(e),
            None if fresh => Ok(None),
            None => self.count_rows().await.map(Some).map_err(|e| e.to_string()),
        };
        let mut state = lock(&self.scan_health.0);
        match outcome {
            Ok(counts) => {
                if let Some((pending, failed, oldest)) = counts {
                    state.pending = Some(pending);
                    state.failed = Some(failed);
                    state.oldest_pending = oldest;
                    state.counted_at = Some(Instant::now());
                }
                state.last_success = Some(Utc::now());
                state.last_error = None;
            }
            Err(e) => state.last_error = Some(e),
        }
    }

    async fn count_rows(&self) -> crate::Result<(u64, u64, Option<DateTime<Utc>>)> {
        let (mut pending, mut failed) = (0, 0);
        for (status, n) in self.store.counts().await? {
            let n = u64::try_from(n).unwrap_or(0);
            match MessageStatus::try_from(status) {
                Ok(MessageStatus::Pending) => pending += n,
                Ok(MessageStatus::Failed) => failed += n,
                _ => {}
            }
        }
        let oldest = self
            .store
            .list(MessageStatus::Pending, 1)
            .await?
            .first()
            .map(|r| r.created_at);
        Ok((pending, failed, oldest))
    }

    /// The outbox's health now.
    pub(crate) fn health(&self) -> OutboxHealth {
        let state = lock(&self.scan_health.0);
        let now = Utc::now();
        let stale_after = (self.retry.scan_interval * 3).max(Duration::from_secs(60));
        let since_success = (now - state.last_success.unwrap_or(state.started))
            .to_std()
            .unwrap_or_default();
        let problem = if !self.retry.enabled {
            None
        } else if let Some(e) = &state.last_error {
            Some(format!("the last outbox scan failed: {e}"))
        } else if since_success > stale_after {
            Some(format!(
                "no outbox scan succeeded for {}s",
                since_success.as_secs()
            ))
        } else {
            None
        };
        OutboxHealth {
            table: self.store.table.name.clone(),
            scanner_enabled: self.retry.enabled,
            pending: state.pending,
            failed: state.failed,
            oldest_pending_age_seconds: state
                .oldest_pending
                .map(|t| (now - t).to_std().unwrap_or_default().as_secs_f64()),
            last_successful_scan: state.last_success,
            last_error: state.last_error.clone(),
            problem,
            stale_after_seconds: stale_after.as_secs_f64(),
        }
    }
}
