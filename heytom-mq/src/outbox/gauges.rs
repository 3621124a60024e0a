//! The outbox gauges (feature `metrics`): rows per status and the age of
//! the oldest Pending row, counted by the scanner after each scan.

use super::relay::Relay;
use super::MessageStatus;
use crate::telemetry::metrics;

impl Relay {
    /// Counts the table's rows for [`metrics::outbox_rows`]; a failed
    /// count leaves the gauges as they were (logged at debug).
    pub(super) async fn refresh_gauges(&self) {
        if !metrics::outbox_gauges_enabled() {
            return;
        }
        let (mut pending, mut sent, mut failed) = (0u64, 0u64, 0u64);
        match self.store.counts().await {
            Ok(counts) => {
                for (status, n) in counts {
                    let n = u64::try_from(n).unwrap_or(0);
                    match MessageStatus::try_from(status) {
                        Ok(MessageStatus::Pending) => pending += n,
                        Ok(MessageStatus::Sent) => sent += n,
                        Ok(MessageStatus::Failed) => failed += n,
                        Err(_) => {}
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "counting outbox rows for the gauges failed");
                return;
            }
        }
        let oldest = match self.store.list(MessageStatus::Pending, 1).await {
            Ok(rows) => rows.first().map_or(0.0, |r| {
                (chrono::Utc::now() - r.created_at)
                    .to_std()
                    .map_or(0.0, |d| d.as_secs_f64())
            }),
            Err(e) => {
                tracing::debug!(error = %e, "reading the oldest pending outbox row failed");
                return;
            }
        };
        metrics::outbox_rows(pending, sent, failed, oldest);
    }
}
