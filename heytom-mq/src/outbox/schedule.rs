//! Scheduled sends: [`Producer::send_at`], [`Producer::send_after`] and
//! the scanner's wake-up at the earliest due row.
//!
//! A scheduled message is a row of the local message table like any other,
//! written Pending and unleased (`LockedBy` NULL) with its due time in
//! `NextAttemptAt`, the column that already keeps a row from the scanners
//! until its next attempt. So the post-commit sender never sees it (only
//! rows it was handed at commit, which scheduled rows are not), and a
//! scanner of any instance on the table claims it once the database's
//! clock reaches the due time, then sends it like every other row: on
//! whatever transport its event travels on, at least once, a failed send
//! retried with the outbox's backoff. A due time in the past is sent at
//! once, as [`Producer::begin`] + `publish` would.
//!
//! After each scan the scanner asks the table how long until its next row
//! is due and sleeps until then (at most `scan_interval`); a schedule made
//! in this process for an earlier time wakes it sooner, and on PostgreSQL
//! a `NOTIFY` tells the other instances' scanners to look again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use super::relay::{OutboxRuntime, Relay};
use super::repository::Store;
use super::transaction::message_row;
use crate::error::{Error, Result};
use crate::event::{Event, EventId, Headers};
use crate::producer::Producer;

/// Shortest wait before the next scan when a row is due already but was
/// not claimed (another instance held it for a moment, or a drain skipped
/// it): soon, without spinning.
const RESCAN_DUE: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// When the scanner sleeps until, and the bell a schedule for an earlier
/// time rings.
#[derive(Default)]
pub(crate) struct WakeSchedule {
    /// The scanner's next wake-up; `None` while it scans (every schedule
    /// made meanwhile is noted).
    target: Mutex<Option<Instant>>,
    changed: Notify,
}

impl WakeSchedule {
    /// A row due at `when` (the app's clock) was committed: wake the scanner
    /// then, if it would sleep longer.
    pub(crate) fn hint(&self, when: DateTime<Utc>) {
        let wait = (when - Utc::now()).to_std().unwrap_or_default();
        let at = Instant::now() + wait;
        let mut target = lock(&self.target);
        if target.is_none_or(|t| at < t) {
            *target = Some(at);
            self.changed.notify_one();
        }
    }

    /// A scan starts: what it finds due it sends; what is scheduled from
    /// now on is noted for [`plan`](Self::plan).
    pub(super) fn scanning(&self) {
        *lock(&self.target) = None;
    }

    /// The scan found its next wake-up at `at`: the earlier of it and what
    /// was scheduled meanwhile.
    fn plan(&self, at: Instant) -> Instant {
        let mut target = lock(&self.target);
        let at = target.map_or(at, |t| t.min(at));
        *target = Some(at);
        at
    }

    fn target(&self) -> Option<Instant> {
        *lock(&self.target)
    }
}

impl Store {
    /// How long until the next row a scanner could claim is due, on the
    /// database's clock (zero when one is due already); `None` when no row
    /// waits.
    pub(crate) async fn next_due(&self, max_retry: i32) -> Result<Option<Duration>> {
        let per_status = self
            .backend
            .fetch_counts(self.table.next_due(max_retry))
            .await
            .map_err(|e| {
                Error::storage(
                    format!(
                        "reading the next due time on table {}: {e}",
                        self.table.name
                    ),
                    e,
                )
            })?;
        Ok(per_status
            .into_iter()
            .map(|(_, ms)| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            .min())
    }
}

impl Relay {
    /// Sleeps after a scan until the next row is due, `scan_interval` has
    /// passed, a row scheduled in this process is due, a `NOTIFY` (or
    /// another wake-up) arrives, or the relay stops (then `false`).
    pub(super) async fn sleep_until_due(
        &self,
        max_retry: i32,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let started = Instant::now();
        let interval_end = started + self.retry.scan_interval;
        let due = match self.store.next_due(max_retry).await {
            Ok(Some(d)) if d.is_zero() => Some(started + RESCAN_DUE),
            Ok(Some(d)) => Some(started + d),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the next due time; scanning on the interval");
                None
            }
        };
        let mut target = self
            .schedule
            .plan(due.map_or(interval_end, |d| d.min(interval_end)));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(target) => return true,
                _ = self.wake.notified() => return true,
                _ = self.schedule.changed.notified() => {
                    target = self.schedule.target().map_or(target, |t| t.min(target));
                }
                r = stop.changed() => if r.is_err() || *stop.borrow() { return false },
            }
        }
    }
}

impl OutboxRuntime {
    /// The check every scheduled send makes: only a scanner sends a row
    /// when it is due, so this app must run one.
    pub(super) fn check_schedulable(&self) -> Result<()> {
        if self.relay.retry.enabled {
            return Ok(());
        }
        Err(Error::config(
            "scheduled sends (send_at, send_after, publish_at) need the outbox's retry scanner, which sends rows when they are due: LocalMessageRetryOptions::enabled is false",
        ))
    }
}

/// `now + delay`, or a configuration error when that is past what a
/// timestamp can hold.
pub(super) fn due_after(delay: Duration) -> Result<DateTime<Utc>> {
    TimeDelta::from_std(delay)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(|| Error::config(format!("scheduled send delay {delay:?} is too large")))
}

impl Producer {
    /// The outbox of the app this producer belongs to, whatever its database.
    fn scheduling_runtime(&self) -> Result<Arc<OutboxRuntime>> {
        match self
            .inner
            .attachment
            .clone()
            .map(Arc::downcast::<OutboxRuntime>)
        {
            Some(Ok(rt)) => {
                rt.check_schedulable()?;
                Ok(rt)
            }
            _ => Err(Error::config(
                "send_at / send_after store the message in the local message table until it is due, and no table is configured: add AppBuilder::outbox(Outbox::postgres(..) / mysql(..) / sqlite(..))",
            )),
        }
    }

    /// Sends `event` at `when`: it is stored in the local message table now
    /// and sent by the outbox relay once `when` has come (on the database's
    /// clock), by this app or any other instance on the same table, so it
    /// survives a restart. A time in the past sends at once. Returns the
    /// event id.
    ///
    /// Needs an outbox ([`Error::Configuration`] otherwise) with its retry
    /// scanner enabled. To schedule together with your own writes, use
    /// [`OutboxTransaction::publish_at`](crate::OutboxTransaction::publish_at).
    ///
    /// ```no_run
    /// # use heytom_mq::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct PaymentReminder { order_id: String }
    /// # impl Event for PaymentReminder { const NAME: &'static str = "PaymentReminder";
    /// #   fn route() -> &'static Route { static R: Route = Route::Default; &R }
    /// #   fn partition_key(&self) -> Option<String> { None } }
    /// # async fn run(producer: Producer) -> Result<(), heytom_mq::Error> {
    /// let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    /// producer.send_at(&PaymentReminder { order_id: "o-1".into() }, tomorrow).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_at<E: Event>(&self, event: &E, when: DateTime<Utc>) -> Result<EventId> {
        let runtime = self.scheduling_runtime()?;
        let mut row = message_row(self, event, Headers::new())?;
        let id = row.id;
        let span = tracing::debug_span!("outbox.schedule", event_id = %id, event_name = E::NAME, due = %when);
        async {
            let relay = &runtime.relay;
            let store = &relay.store;
            if when <= Utc::now() && relay.dispatch_after_commit {
                // Due already: the post-commit path, under a commit lease.
                row.locked_by = Some(relay.commit_token().to_string());
                let since = std::time::Instant::now();
                let insert = store
                    .table
                    .insert(std::slice::from_ref(&row), Some(relay.lease_ms()));
                store.backend.execute(insert).await.map_err(|e| {
                    let table = &store.table.name;
                    Error::storage(format!("outbox insert into {table} failed: {e}"), e)
                })?;
                runtime.committed(vec![row], since);
                return Ok(());
            }
            row.next_attempt_at = when;
            store.save(std::slice::from_ref(&row)).await?;
            if let Some(q) = store.table.notify() {
                // A missed NOTIFY only delays other instances to their next scan.
                let _ = store.backend.execute(q).await;
            }
            relay.schedule.hint(when);
            Ok(())
        }
        .instrument(span)
        .await?;
        Ok(id)
    }

    /// Sends `event` after `delay`: [`send_at`](Self::send_at) now + `delay`.
    ///
    /// ```no_run
    /// # use heytom_mq::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct PaymentReminder { order_id: String }
    /// # impl Event for PaymentReminder { const NAME: &'static str = "PaymentReminder";
    /// #   fn route() -> &'static Route { static R: Route = Route::Default; &R }
    /// #   fn partition_key(&self) -> Option<String> { None } }
    /// # async fn run(producer: Producer) -> Result<(), heytom_mq::Error> {
    /// producer
    ///     .send_after(&PaymentReminder { order_id: "o-1".into() }, Duration::from_secs(3600))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_after<E: Event>(&self, event: &E, delay: Duration) -> Result<EventId> {
        // The outbox is checked first: its error is the one to see.
        self.scheduling_runtime()?;
        self.send_at(event, due_after(delay)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_schedule_made_during_a_scan_is_kept() {
        let s = WakeSchedule::default();
        s.scanning();
        s.hint(Utc::now() + TimeDelta::seconds(2));
        let later = Instant::now() + Duration::from_secs(30);
        let planned = s.plan(later);
        assert!(planned < later);
        assert!(planned <= Instant::now() + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_earlier_schedule_rings() {
        let s = WakeSchedule::default();
        let at = s.plan(Instant::now() + Duration::from_secs(10));
        s.hint(Utc::now() + TimeDelta::seconds(20));
        assert_eq!(s.target(), Some(at));
        s.hint(Utc::now() + TimeDelta::seconds(1));
        assert!(s.target().is_some_and(|t| t < at));
        // The bell rang once: the permit is there for the sleeping scanner.
        tokio::time::timeout(Duration::from_millis(1), s.changed.notified())
            .await
            .expect("notified");
    }

    #[test]
    fn delays_past_any_timestamp_are_a_configuration_error() {
        assert!(due_after(Duration::from_secs(1)).is_ok());
        assert!(matches!(
            due_after(Duration::MAX),
            Err(Error::Configuration(_))
        ));
    }
}
