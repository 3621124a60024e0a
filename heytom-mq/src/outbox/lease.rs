//! What keeps a row in flight at one sender only: the leases this instance
//! holds (renewed while their sends are in flight, so they expire soon
//! after the instance dies and never while it is sending), and the
//! transport's availability (a broker that is down makes the relay back
//! off instead of using up the rows' retries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Longest time a lease or backoff adds to the database's clock, so that
/// `now + lease` stays far from the 64-bit limit whatever was configured.
const MAX_MILLIS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// First wait after the transport was unavailable; doubles up to [`MAX_UNAVAILABLE_BACKOFF`].
pub(crate) const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts while the transport is unavailable.
pub(crate) const MAX_UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(15);

/// A duration in milliseconds for the database's clock, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(MAX_MILLIS)
        .min(MAX_MILLIS)
}

/// A fresh lease token: the `LockedBy` of one claim. Unique per claim, so
/// a row claimed again (by anyone, this instance included) is fenced off
/// from the sender that held it before.
pub(crate) fn token() -> Arc<str> {
    Arc::from(Uuid::now_v7().to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The rows this instance holds, by lease token, until their outcome is written.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<Arc<str>, Vec<Uuid>>>,
}

impl Leases {
    pub(crate) fn hold(&self, token: &Arc<str>, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        lock(&self.held)
            .entry(token.clone())
            .or_default()
            .extend_from_slice(ids);
    }

    /// The outcome of `ids` is written (or given up): stop renewing them.
    pub(crate) fn forget(&self, token: &str, ids: &[Uuid]) {
        let mut held = lock(&self.held);
        if let Some(rows) = held.get_mut(token) {
            if ids.len() <= 8 {
                rows.retain(|id| !ids.contains(id));
            } else {
                // A whole batch (1000 ids): linear, not quadratic.
                let done: std::collections::HashSet<&Uuid> = ids.iter().collect();
                rows.retain(|id| !done.contains(id));
            }
            if rows.is_empty() {
                held.remove(token);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(Arc<str>, Vec<Uuid>)> {
        lock(&self.held)
            .iter()
            .map(|(t, ids)| (t.clone(), ids.clone()))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.held).is_empty()
    }
}

struct Down {
    since: Instant,
    until: Instant,
    backoff: Duration,
}

/// Whether each transport answers (keyed by the rows' `MQType`): one log
/// line when one stops and one when it is back, not one per row, and a
/// broker that is down holds back only its own rows.
#[derive(Default)]
pub(crate) struct Availability {
    down: Mutex<HashMap<String, Down>>,
}

impl Availability {
    /// How long to wait before the next attempt on `transport` (zero when available).
    pub(crate) fn wait(&self, transport: &str) -> Duration {
        lock(&self.down)
            .get(transport)
            .map(|d| d.until.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// `transport` was unavailable: back off (doubling); returns the wait.
    pub(crate) fn failed(&self, transport: &str, reason: &str) -> Duration {
        let mut down = lock(&self.down);
        let now = Instant::now();
        let (since, backoff) = match down.get(transport) {
            Some(d) => (d.since, (d.backoff * 2).min(MAX_UNAVAILABLE_BACKOFF)),
            None => {
                tracing::warn!(transport, error = %reason, "transport unavailable: the outbox relay backs off and retries its rows without counting retries");
                (now, UNAVAILABLE_BACKOFF)
            }
        };
        down.insert(
            transport.to_owned(),
            Down {
                since,
                until: now + backoff,
                backoff,
            },
        );
        backoff
    }

    /// A send on `transport` reached the broker (confirmed or refused by it).
    pub(crate) fn answered(&self, transport: &str) {
        if let Some(d) = lock(&self.down).remove(transport) {
            tracing::info!(
                transport,
                after = ?d.since.elapsed(),
                "transport available again: the outbox relay resumes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
    }

    #[test]
    fn leases_forget_what_is_done() {
        let l = Leases::default();
        let t = token();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        l.hold(&t, &[a, b]);
        l.forget(&t, &[a]);
        assert_eq!(l.snapshot(), vec![(t.clone(), vec![b])]);
        l.forget(&t, &[b]);
        assert!(l.is_empty());
    }

    #[tokio::test]
    async fn availability_backs_off_per_transport_and_recovers() {
        let a = Availability::default();
        assert_eq!(a.wait("RabbitMQ"), Duration::ZERO);
        assert_eq!(a.failed("RabbitMQ", "x"), UNAVAILABLE_BACKOFF);
        assert_eq!(a.failed("RabbitMQ", "x"), UNAVAILABLE_BACKOFF * 2);
        for _ in 0..20 {
            a.failed("RabbitMQ", "x");
        }
        let wait = a.wait("RabbitMQ");
        assert!(wait <= MAX_UNAVAILABLE_BACKOFF && wait > MAX_UNAVAILABLE_BACKOFF / 2);
        // Another transport answering does not reset this one.
        a.answered("Kafka");
        assert_eq!(a.wait("Kafka"), Duration::ZERO);
        assert!(a.wait("RabbitMQ") > Duration::ZERO);
        a.answered("RabbitMQ");
        assert_eq!(a.wait("RabbitMQ"), Duration::ZERO);
    }
}
