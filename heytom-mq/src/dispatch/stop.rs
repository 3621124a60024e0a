//! Stopping with a deadline: the stages handlers see ([`Stopping`]), the
//! signal an app, a consumer or one event's handlers send ([`StopSignal`]),
//! and [`stop_by`], which bounds a stop and abandons what is still running.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How far the stop of an app or consumer has gone, as its handlers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stopping {
    /// Running.
    No,
    /// No new delivery; a message waiting for a retry is handed back;
    /// handlers running finish.
    Draining,
    /// Past the deadline: handlers still running are abandoned and their
    /// messages handed back.
    Abandoning,
}

/// The stop signal of an app, a consumer or one event's handlers.
#[derive(Debug)]
pub(crate) struct StopSignal(watch::Sender<Stopping>);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(watch::Sender::new(Stopping::No))
    }
}

impl StopSignal {
    /// Moves to `stage` (backwards only to [`Stopping::No`], on a restart).
    pub(crate) fn set(&self, stage: Stopping) {
        self.0.send_replace(stage);
    }

    /// A receiver for handlers and dispatchers.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Stopping> {
        self.0.subscribe()
    }
}

/// The stage `rx` is at: [`Stopping::Abandoning`] once its sender is gone
/// (the app or consumer was dropped without stopping: nobody waits for the
/// handlers any more).
pub(crate) fn stage(rx: &watch::Receiver<Stopping>) -> Stopping {
    if rx.has_changed().is_err() {
        return Stopping::Abandoning;
    }
    *rx.borrow()
}

/// [`stage`] without the channel's lock while nothing was sent since
/// `seen` was read (see [`seen`]): the per-delivery check.
pub(crate) fn stage_since(rx: &watch::Receiver<Stopping>, seen: Option<Stopping>) -> Stopping {
    match (rx.has_changed(), seen) {
        (Err(_), _) => Stopping::Abandoning,
        (Ok(false), Some(seen)) => seen,
        _ => *rx.borrow(),
    }
}

/// The stage `rx` is at while it sees no change (`None` when it has
/// unseen changes already), for [`stage_since`].
pub(crate) fn seen(rx: &watch::Receiver<Stopping>) -> Option<Stopping> {
    // A send after this check makes `has_changed` true for good.
    match rx.has_changed() {
        Ok(false) => Some(*rx.borrow()),
        _ => None,
    }
}

/// Waits until `rx` reaches `stage` (at once when its sender is gone).
pub(crate) async fn reached(rx: &watch::Receiver<Stopping>, stage: Stopping) {
    let mut rx = rx.clone();
    let _ = rx.wait_for(|s| *s >= stage).await;
}

/// What [`stop_by`] got done.
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    /// The stop's output, when it finished by the deadline.
    pub(crate) output: Option<T>,
    /// Whether handlers were still running at the cut-off and were abandoned.
    pub(crate) abandoned: bool,
}

/// Runs `stop` (subscriptions stopping, waiting for their deliveries in
/// flight) against a deadline. Handlers may finish until a fifth of the
/// time before it (at most 5 s before); then `abandon` cuts off those still
/// running, whose messages are handed back, and `stop` gets half of what is
/// left to finish; the last part is the caller's (closing connections).
pub(crate) async fn stop_by<T>(
    deadline: Instant,
    abandon: impl FnOnce(),
    stop: impl Future<Output = T>,
) -> Bounded<T> {
    let reserve = deadline
        .saturating_duration_since(Instant::now())
        .div_f64(5.0)
        .min(Duration::from_secs(5));
    tokio::pin!(stop);
    if let Ok(output) = tokio::time::timeout_at(deadline - reserve, &mut stop).await {
        return Bounded {
            output: Some(output),
            abandoned: false,
        };
    }
    abandon();
    let output = tokio::time::timeout_at(deadline - reserve / 2, &mut stop)
        .await
        .ok();
    Bounded {
        output,
        abandoned: true,
    }
}
