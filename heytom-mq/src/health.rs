//! Health of a running app: [`RunningApp::health`](crate::RunningApp::health)
//! and, with the `axum` feature, the `/health/live` and `/health/ready`
//! endpoints ([`router`]).
//!
//! A [`Health`] is read from what the app already knows, without a round
//! trip to a broker or the database, so probes may call it often:
//!
//! - each transport's connection: connected, or reconnecting with the last
//!   error its client reported (the in-memory broker is always connected);
//! - each subscription (a topic and group, a queue): running, reconnecting
//!   (its channel was lost; it resumes by itself) or stopped;
//! - the outbox, from its retry scanner's last run: Pending and Failed row
//!   counts, the age of the oldest Pending row, when a scan last succeeded,
//!   and the last scan's error.
//!
//! The app is **ready** when every transport is connected, every
//! subscription runs, the outbox scanner's last scan succeeded (and one
//! did within three scan intervals), and the app is not shutting down.
//! Failed rows do not make it unready: they wait for a person (see the
//! dashboard), not for the app. **Live** means the process answers.
//!
//! ```no_run
//! # async fn demo(running: heytom_mq::RunningApp) {
//! let health = running.health();
//! if !health.is_ready() {
//!     eprintln!("not ready: {:?}", health.problems);
//! }
//! println!("{}", serde_json::to_string_pretty(&health).unwrap());
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::TransportKind;
use crate::producer::Router;
pub use crate::transport::health::{ConnectionState, SubscriptionMonitor, SubscriptionState};

#[cfg(feature = "axum")]
mod http;
#[cfg(feature = "axum")]
pub use http::{router, LIVE_PATH, READY_PATH};

#[cfg(feature = "_outbox")]
pub use crate::outbox::OutboxHealth;

/// The health of a running app, from [`RunningApp::health`](crate::RunningApp::health).
/// Serializes to the JSON the `/health/ready` endpoint answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Whether the app is ready (no [`problems`](Health::problems)).
    pub ready: bool,
    /// Why it is not ready, one line each; empty when it is.
    pub problems: Vec<String>,
    /// Each transport's connection.
    pub transports: Vec<TransportHealth>,
    /// Each subscription.
    pub subscriptions: Vec<SubscriptionHealth>,
    /// The outbox, when the app has one.
    #[cfg(feature = "_outbox")]
    pub outbox: Option<OutboxHealth>,
    /// When this was read.
    pub checked_at: DateTime<Utc>,
}

impl Health {
    /// Whether the app is ready to take traffic: see the [module docs](self).
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

/// One transport's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransportHealth {
    /// `InMemory`, `RabbitMQ`, `Kafka` or a custom transport's name.
    pub transport: String,
    /// Connected, or reconnecting with the last error.
    #[serde(flatten)]
    pub state: ConnectionState,
}

/// One subscription: a destination consumed in a group by some handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionHealth {
    /// The transport it consumes from.
    pub transport: String,
    /// The topic (Kafka, in-memory); empty for RabbitMQ, where the queue
    /// (the group) is the whole address.
    pub destination: String,
    /// The consumer group (Kafka, in-memory) or queue (RabbitMQ).
    pub group: String,
    /// The handlers it runs.
    pub handlers: Vec<String>,
    /// Running, reconnecting or stopped.
    #[serde(flatten)]
    pub state: SubscriptionState,
}

/// A subscription as the app started it, with the monitor its transport
/// keeps (if any).
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionEntry {
    pub(crate) transport: TransportKind,
    pub(crate) destination: String,
    pub(crate) group: String,
    pub(crate) handlers: Vec<String>,
    pub(crate) monitor: Option<SubscriptionMonitor>,
}

/// A cloneable handle that reads a running app's [`Health`], for serving
/// it from another task (see [`RunningApp::health_check`](crate::RunningApp::health_check)).
/// It stays valid after the app shut down (then it reports stopped
/// subscriptions and is not ready).
#[derive(Clone)]
pub struct HealthCheck {
    inner: Arc<Inner>,
}

struct Inner {
    router: Router,
    subscriptions: Vec<SubscriptionEntry>,
    #[cfg(feature = "_outbox")]
    outbox: Option<Arc<crate::outbox::OutboxRuntime>>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck")
            .field("subscriptions", &self.inner.subscriptions)
            .finish_non_exhaustive()
    }
}

impl HealthCheck {
    pub(crate) fn new(
        router: Router,
        subscriptions: Vec<SubscriptionEntry>,
        #[cfg(feature = "_outbox")] outbox: Option<Arc<crate::outbox::OutboxRuntime>>,
    ) -> Self {
        HealthCheck {
            inner: Arc::new(Inner {
                router,
                subscriptions,
                #[cfg(feature = "_outbox")]
                outbox,
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// The app began shutting down: not ready from now on.
    pub(crate) fn stopping(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// The app's health now.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let stopping = inner.stopping.load(Ordering::Acquire);
        let mut problems = Vec::new();
        if stopping {
            problems.push("the app is shutting down".to_owned());
        }
        let transports: Vec<TransportHealth> = inner
            .router
            .all()
            .map(|t| TransportHealth {
                transport: t.kind().as_str().to_owned(),
                state: t.connection_state(),
            })
            .collect();
        for t in &transports {
            if let ConnectionState::Reconnecting { last_error, since } = &t.state {
                problems.push(format!(
                    "{} is not connected (since {}): {}",
                    t.transport,
                    since.to_rfc3339(),
                    last_error.as_deref().unwrap_or("no error reported")
                ));
            }
        }
        let subscriptions: Vec<SubscriptionHealth> = inner
            .subscriptions
            .iter()
            .map(|s| SubscriptionHealth {
                transport: s.transport.as_str().to_owned(),
                destination: s.destination.clone(),
                group: s.group.clone(),
                handlers: s.handlers.clone(),
                state: if stopping {
                    SubscriptionState::Stopped
                } else {
                    s.monitor
                        .as_ref()
                        .map_or(SubscriptionState::Running, SubscriptionMonitor::get)
                },
            })
            .collect();
        for s in &subscriptions {
            let name = subscription_name(s);
            match &s.state {
                SubscriptionState::Running => {}
                SubscriptionState::Reconnecting { last_error, .. } => {
                    problems.push(format!("{name} is reconnecting: {last_error}"))
                }
                SubscriptionState::Stopped if stopping => {}
                SubscriptionState::Stopped => problems.push(format!("{name} stopped")),
            }
        }
        #[cfg(feature = "_outbox")]
        let outbox = inner.outbox.as_ref().map(|o| o.health());
        #[cfg(feature = "_outbox")]
        if let Some(p) = outbox.as_ref().and_then(|o| o.problem.clone()) {
            problems.push(p);
        }
        Health {
            ready: problems.is_empty(),
            problems,
            transports,
            subscriptions,
            #[cfg(feature = "_outbox")]
            outbox,
            checked_at: Utc::now(),
        }
    }
}

/// "the RabbitMQ subscription `queue`" / "the Kafka subscription `topic` (group `g`)".
fn subscription_name(s: &SubscriptionHealth) -> String {
    if s.destination.is_empty() {
        format!("the {} subscription `{}`", s.transport, s.group)
    } else {
        format!(
            "the {} subscription `{}` (group `{}`)",
            s.transport, s.destination, s.group
        )
    }
}
