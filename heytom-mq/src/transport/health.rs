//! What a transport and a subscription report about their connection, for
//! [`RunningApp::health`](crate::RunningApp::health).
//!
//! A transport answers [`Transport::connection_state`](super::Transport::connection_state)
//! from what it already knows (no network round trip): the state of its
//! connections and the last error its client reported. A subscription
//! shares a [`SubscriptionMonitor`] that its consumer task updates as it
//! loses and regains the broker.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A transport's connection to its broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionState {
    /// Connected (or, for a transport that connects on first use, nothing
    /// has failed yet).
    Connected,
    /// The connection is lost and the transport is trying again.
    Reconnecting {
        /// The last error the client reported, if any.
        last_error: Option<String>,
        /// Since when the connection is down.
        since: DateTime<Utc>,
    },
}

impl ConnectionState {
    /// Whether the transport is connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }
}

/// A running subscription's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Consuming.
    Running,
    /// Its channel or connection was lost; it resumes by itself.
    Reconnecting {
        /// Why it was lost, or why resuming failed last.
        last_error: String,
        /// Since when it is not consuming.
        since: DateTime<Utc>,
    },
    /// Stopped (the app is shutting down, or its task ended).
    Stopped,
}

impl SubscriptionState {
    /// Whether it is consuming.
    pub fn is_running(&self) -> bool {
        matches!(self, SubscriptionState::Running)
    }
}

/// The state of one subscription, shared between its consumer task (which
/// sets it) and the app's health check (which reads it). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SubscriptionMonitor(Arc<Mutex<SubscriptionState>>);

impl Default for SubscriptionMonitor {
    fn default() -> Self {
        SubscriptionMonitor(Arc::new(Mutex::new(SubscriptionState::Running)))
    }
}

impl SubscriptionMonitor {
    /// A monitor in the [`SubscriptionState::Running`] state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state.
    pub fn get(&self) -> SubscriptionState {
        lock(&self.0).clone()
    }

    /// Consuming (again).
    pub fn running(&self) {
        *lock(&self.0) = SubscriptionState::Running;
    }

    /// Not consuming since now (or since the earlier loss, which it keeps),
    /// because of `error`.
    pub fn lost(&self, error: impl Into<String>) {
        let mut state = lock(&self.0);
        let since = match &*state {
            SubscriptionState::Reconnecting { since, .. } => *since,
            _ => Utc::now(),
        };
        *state = SubscriptionState::Reconnecting {
            last_error: error.into(),
            since,
        };
    }

    /// Stopped for good.
    pub fn stopped(&self) {
        *lock(&self.0) = SubscriptionState::Stopped;
    }
}

/// A connection's state as its owner records it: failures (with the error)
/// and successes. Used by the built-in transports to answer
/// [`Transport::connection_state`](super::Transport::connection_state).
/// Only the broker transports have connections: compiled with one of them.
#[cfg(any(feature = "rabbitmq", feature = "kafka"))]
#[derive(Debug, Default)]
pub(crate) struct LinkState(Mutex<Option<(Option<String>, DateTime<Utc>)>>);

#[cfg(any(feature = "rabbitmq", feature = "kafka"))]
impl LinkState {
    /// The connection failed or dropped with `error`.
    pub(crate) fn failed(&self, error: Option<String>) {
        let mut state = lock(&self.0);
        let since = state.as_ref().map_or_else(Utc::now, |(_, since)| *since);
        // A later failure without a message keeps the earlier message.
        let error = error.or_else(|| state.as_ref().and_then(|(e, _)| e.clone()));
        *state = Some((error, since));
    }

    /// The connection works.
    pub(crate) fn ok(&self) {
        *lock(&self.0) = None;
    }

    /// Whether a failure is recorded.
    #[cfg(feature = "rabbitmq")]
    pub(crate) fn is_down(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// The state as [`ConnectionState`].
    pub(crate) fn state(&self) -> ConnectionState {
        match &*lock(&self.0) {
            None => ConnectionState::Connected,
            Some((last_error, since)) => ConnectionState::Reconnecting {
                last_error: last_error.clone(),
                since: *since,
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the state is plain data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "rabbitmq", feature = "kafka"))]
    #[test]
    fn a_link_keeps_the_first_failure_time_and_the_last_message() {
        let link = LinkState::default();
        assert_eq!(link.state(), ConnectionState::Connected);
        link.failed(Some("refused".into()));
        let ConnectionState::Reconnecting { since, .. } = link.state() else {
            panic!("down after a failure");
        };
        link.failed(None);
        assert_eq!(
            link.state(),
            ConnectionState::Reconnecting {
                last_error: Some("refused".into()),
                since
            }
        );
        link.ok();
        assert!(link.state().is_connected());
    }

    #[test]
    fn a_monitor_goes_from_running_to_reconnecting_and_back() {
        let m = SubscriptionMonitor::new();
        assert!(m.get().is_running());
        m.lost("channel closed");
        assert!(
            matches!(m.get(), SubscriptionState::Reconnecting { ref last_error, .. } if last_error == "channel closed")
        );
        m.running();
        assert!(m.get().is_running());
        m.stopped();
        assert_eq!(m.get(), SubscriptionState::Stopped);
    }
}
