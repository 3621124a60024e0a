//! The handlers of one event on one destination: decode, run each with its
//! retry policy (a panic is a failure), and stop when told to.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::watch;

use super::stop::{reached, stage, StopSignal, Stopping};
use super::{DeadLetter, Incoming, Outcome};
use crate::event::SharedEnvelope;
use crate::handler::{Context, HandlerEntry, HandlerFailure, HandlerInfo, Publisher, StateMap};
use crate::retry::RetryPolicy;
use crate::telemetry::metrics::{self, Consumed, Timer};
use crate::telemetry::{self, Source};

/// The handlers of one event on one destination, run on each delivery of
/// that event with their retry policies.
pub(crate) struct EventHandlers {
    pub(super) event_name: &'static str,
    handlers: Vec<HandlerEntry>,
    /// Per handler, what its contexts share.
    infos: Vec<Arc<HandlerInfo>>,
    state: Arc<StateMap>,
    default_retry: RetryPolicy,
    /// The app's or consumer's stop.
    stop: watch::Receiver<Stopping>,
    /// This event's own stop (unsubscribing it alone).
    own_stop: StopSignal,
    own_stop_rx: watch::Receiver<Stopping>,
}

impl std::fmt::Debug for EventHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandlers")
            .field("event_name", &self.event_name)
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl EventHandlers {
    /// The handlers of one event.
    pub(crate) fn new(
        event_name: &'static str,
        handlers: Vec<HandlerEntry>,
        state: Arc<StateMap>,
        default_retry: RetryPolicy,
        producer: Option<Arc<dyn Publisher>>,
        stop: watch::Receiver<Stopping>,
    ) -> Self {
        let own_stop = StopSignal::default();
        EventHandlers {
            event_name,
            infos: handlers
                .iter()
                .map(|h| HandlerInfo::new(&h.name, producer.clone()))
                .collect(),
            handlers,
            state,
            default_retry,
            stop,
            own_stop_rx: own_stop.subscribe(),
            own_stop,
        }
    }

    /// Stops this event's handlers alone (it was unsubscribed): `stage`.
    pub(crate) fn stop(&self, stage: Stopping) {
        self.own_stop.set(stage);
    }

    /// How far the stop has gone, the app's and this event's own.
    fn stopping(&self) -> Stopping {
        stage(&self.stop).max(stage(&self.own_stop_rx))
    }

    /// Waits until the stop reaches `stage`.
    async fn stopped(&self, stage: Stopping) {
        tokio::select! {
            _ = reached(&self.stop, stage) => {}
            _ = reached(&self.own_stop_rx, stage) => {}
        }
    }

    /// Decodes the envelope, runs every handler (each with its own retry
    /// policy) and says what to do with the message. Never panics. The
    /// [`Dispatcher`] chose this event by the message's type.
    pub(super) async fn dispatch(&self, incoming: Incoming, source: &Source) -> Outcome {
        let envelope = match incoming.into_envelope(self.event_name) {
            Ok(e) => e,
            Err(e) => {
                return Outcome::DeadLetter(DeadLetter::rejected(format!(
                    "malformed envelope: {e}"
                )))
            }
        };
        let span = telemetry::consume(source, &envelope);
        let run = async {
            if self.handlers.len() == 1 {
                return self.run_handler(0, &envelope).await;
            }
            let results = futures::future::join_all(
                (0..self.handlers.len()).map(|i| self.run_handler(i, &envelope)),
            )
            .await;
            let mut dead = Vec::new();
            let mut requeue = false;
            for r in results {
                match r {
                    Outcome::Ack => {}
                    Outcome::Requeue => requeue = true,
                    Outcome::DeadLetter(d) => dead.push(d),
                }
            }
            if let Some(first) = dead.first().cloned() {
                if dead.len() == 1 {
                    return Outcome::DeadLetter(first);
                }
                return Outcome::DeadLetter(DeadLetter {
                    reason: dead
                        .iter()
                        .map(|d| format!("{}: {}", d.handler.as_deref().unwrap_or("?"), d.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                    attempts: dead.iter().map(|d| d.attempts).max().unwrap_or(0),
                    handler: Some(
                        dead.iter()
                            .filter_map(|d| d.handler.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                });
            }
            if requeue {
                Outcome::Requeue
            } else {
                Outcome::Ack
            }
        };
        telemetry::in_span(run, span).await
    }

    async fn run_handler(&self, index: usize, envelope: &SharedEnvelope) -> Outcome {
        let entry = &self.handlers[index];
        let policy = entry.retry.unwrap_or(self.default_retry);
        let mut attempt = 1;
        loop {
            let ctx = Context::shared(envelope.clone(), self.infos[index].clone(), attempt);
            let span = telemetry::handler(&entry.name, attempt);
            let timer = Timer::start();
            let fut = entry.handler.call(envelope, ctx, &self.state);
            let called = telemetry::in_span(AssertUnwindSafe(fut).catch_unwind(), span);
            let mut called = std::pin::pin!(called);
            // A handler done at its first poll (most are) has no race with
            // the stop to set up.
            let result = match futures::poll!(called.as_mut()) {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => tokio::select! {
                    biased;
                    result = called => result,
                    () = self.stopped(Stopping::Abandoning) => {
                        tracing::warn!(handler = %entry.name, event_id = %envelope.id, attempt, "handler still running at the stop deadline: abandoned, its message handed back");
                        return Outcome::Requeue;
                    }
                },
            };
            let error = match result {
                Ok(Ok(())) => {
                    metrics::consumed(self.event_name, &entry.name, Consumed::Ack, timer);
                    return Outcome::Ack;
                }
                Ok(Err(HandlerFailure::Decode(reason))) => {
                    metrics::consumed(self.event_name, &entry.name, Consumed::DeadLetter, timer);
                    tracing::warn!(handler = %entry.name, event_id = %envelope.id, %reason, "undecodable payload dead-lettered");
                    return Outcome::DeadLetter(DeadLetter {
                        reason: format!("payload does not decode: {reason}"),
                        attempts: 0,
                        handler: Some(entry.name.clone()),
                    });
                }
                Ok(Err(HandlerFailure::Failed(e))) => e.to_string(),
                Err(panic) => format!("handler panicked: {}", panic_message(&panic)),
            };
            if attempt >= policy.max_attempts {
                metrics::consumed(self.event_name, &entry.name, Consumed::DeadLetter, timer);
                tracing::warn!(handler = %entry.name, event_id = %envelope.id, attempt, error = %error, "handler failed; dead-lettering");
                return Outcome::DeadLetter(DeadLetter {
                    reason: error,
                    attempts: attempt,
                    handler: Some(entry.name.clone()),
                });
            }
            metrics::consumed(self.event_name, &entry.name, Consumed::Retry, timer);
            let wait = policy.backoff(attempt);
            tracing::info!(handler = %entry.name, event_id = %envelope.id, attempt, error = %error, ?wait, "handler failed; retrying");
            if self.stopping() >= Stopping::Draining {
                return Outcome::Requeue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = self.stopped(Stopping::Draining) => return Outcome::Requeue,
            }
            attempt += 1;
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
