//! [`RunningApp`]: a started app, and its bounded shutdown.

use crate::dispatch::{stop_by, StopSignal, Stopping};
use crate::error::{Error, Result};
use crate::health::{Health, HealthCheck};
use crate::producer::Producer;
use crate::transport::memory::InMemoryBroker;
use crate::transport::SubscriptionHandle;

use super::App;

/// A started app: consumers running, producer ready.
pub struct RunningApp {
    pub(super) app: App,
    pub(super) subscriptions: Vec<Box<dyn SubscriptionHandle>>,
    /// What each subscription consumes, for operators (the dashboard).
    pub(super) topology: Vec<super::SubscriptionInfo>,
    pub(super) stop: StopSignal,
    pub(super) health: HealthCheck,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("app", &self.app)
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl RunningApp {
    /// The producer (cloneable).
    pub fn producer(&self) -> Producer {
        self.app.producer.clone()
    }

    /// The app's health: transports, subscriptions, outbox; see
    /// [`heytom_mq::health`](crate::health). Reads what the app already
    /// knows (no round trip), so it is cheap to call from a probe.
    ///
    /// ```no_run
    /// # async fn demo(running: heytom_mq::RunningApp) {
    /// assert!(running.health().is_ready());
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        self.health.health()
    }

    /// A cloneable handle reading this app's health, for serving it from
    /// another task; it stays valid after shutdown (then not ready).
    pub fn health_check(&self) -> HealthCheck {
        self.health.clone()
    }

    /// The in-memory broker, when the app uses one.
    pub fn in_memory_broker(&self) -> Option<&InMemoryBroker> {
        self.app.broker.as_ref()
    }

    /// Stops taking messages, lets in-flight handlers finish (messages
    /// waiting for a retry are handed back), stops the outbox relay and
    /// closes the transports, all within the
    /// [`shutdown_timeout`](crate::AppBuilder::shutdown_timeout).
    ///
    /// A handler still running when its time is up is abandoned: its
    /// message is handed back, never acknowledged, and delivered again
    /// (to another instance, or this app's next start). Then the relay is
    /// stopped and the transports closed all the same, and the result is
    /// [`Error::Shutdown`].
    pub async fn shutdown(self) -> Result<()> {
        let timeout = self.app.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.health.stopping();
        self.stop.set(Stopping::Draining);
        let stops = futures::future::join_all(self.subscriptions.into_iter().map(|s| s.stop()));
        let stopped = stop_by(deadline, || self.stop.set(Stopping::Abandoning), stops).await;
        let mut first_err = None;
        match stopped.output {
            Some(results) => {
                for r in results {
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
            }
            None => {
                tracing::warn!(?timeout, "consumers did not stop in time; closing their connections hands back what they hold")
            }
        }
        // Whether or not the consumers stopped in time.
        #[cfg(feature = "_outbox")]
        if let Some(outbox) = &self.app.outbox {
            // Polled at least once, so the relay is told to stop in any case.
            if tokio::time::timeout_at(deadline, outbox.stop())
                .await
                .is_err()
            {
                tracing::warn!(
                    ?timeout,
                    "the outbox relay did not stop in time; its leased rows are sent again later"
                );
            }
        }
        #[cfg(feature = "_outbox")]
        if let Some(inbox) = &self.app.inbox {
            inbox.stop().await;
        }
        for t in self.app.router.all() {
            match tokio::time::timeout_at(deadline, t.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    tracing::warn!(transport = %t.kind(), "transport did not close in time; its connections drop with the app")
                }
            }
        }
        if stopped.abandoned {
            tracing::warn!(?timeout, "shutdown timed out with handlers still running; they were abandoned and their messages handed back");
            return Err(Error::Shutdown);
        }
        first_err.map_or(Ok(()), Err)
    }
}
