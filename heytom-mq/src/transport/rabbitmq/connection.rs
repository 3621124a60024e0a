//! One AMQP connection that is re-opened, with backoff, when it drops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::transport::health::{ConnectionState, LinkState};

pub(crate) const TRANSPORT: &str = "RabbitMQ";

/// A lazily (re)connected connection, shared by the channels of one role
/// (publishing or consuming). Attempts after a failure wait out a doubling
/// backoff, so a broker outage is not hammered by every caller.
pub(crate) struct ConnectionSlot {
    uri: AMQPUri,
    /// The URL with its password hidden, for logs.
    shown_url: String,
    name: String,
    connect_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    current: Mutex<Option<Arc<Connection>>>,
    reconnect: tokio::sync::Mutex<Backoff>,
    closed: AtomicBool,
    /// A background reopen (from a health check) is running.
    reopening: AtomicBool,
    /// The last failure, until a connection is made again (for health checks).
    link: LinkState,
}

struct Backoff {
    next_attempt: Option<Instant>,
    delay: Duration,
    /// Whether a connection was ever made (a later one is a reconnect).
    connected_once: bool,
}

impl ConnectionSlot {
    pub(crate) fn new(
        uri: AMQPUri,
        shown_url: String,
        name: String,
        connect_timeout: Duration,
        backoff: (Duration, Duration),
    ) -> Self {
        ConnectionSlot {
            uri,
            shown_url,
            name,
            connect_timeout,
            backoff_initial: backoff.0,
            backoff_max: backoff.1,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Backoff {
                next_attempt: None,
                delay: backoff.0,
                connected_once: false,
            }),
            closed: AtomicBool::new(false),
            reopening: AtomicBool::new(false),
            link: LinkState::default(),
        }
    }

    fn connected(&self) -> Option<Arc<Connection>> {
        lock(&self.current)
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// The open connection, or a new one (one attempt, after the backoff).
    pub(crate) async fn get(&self) -> Result<Arc<Connection>> {
        if let Some(c) = self.connected() {
            return Ok(c);
        }
        let mut backoff = self.reconnect.lock().await;
        if let Some(c) = self.connected() {
            return Ok(c);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        if let Some(at) = backoff.next_attempt {
            tokio::time::sleep_until(at).await;
        }
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let attempt = tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_uri(self.uri.clone(), props),
        )
        .await;
        let failure = match attempt {
            Ok(Ok(conn)) => {
                let conn = Arc::new(conn);
                if backoff.connected_once {
                    tracing::info!(url = %self.shown_url, connection = %self.name, "reconnected to RabbitMQ");
                } else {
                    tracing::debug!(url = %self.shown_url, connection = %self.name, "connected to RabbitMQ");
                }
                backoff.connected_once = true;
                backoff.next_attempt = None;
                backoff.delay = self.backoff_initial;
                *lock(&self.current) = Some(conn.clone());
                self.link.ok();
                return Ok(conn);
            }
            Ok(Err(e)) => Error::connection(
                TRANSPORT,
                format!("cannot connect to {}: {}", self.shown_url, describe(&e)),
                e,
            ),
            Err(_) => Error::Connection {
                transport: TRANSPORT,
                message: format!(
                    "cannot connect to {}: no answer within {:?}",
                    self.shown_url, self.connect_timeout
                ),
                source: None,
            },
        };
        self.link.failed(Some(failure.to_string()));
        backoff.next_attempt = Some(Instant::now() + backoff.delay);
        backoff.delay = (backoff.delay * 2).min(self.backoff_max);
        tracing::warn!(connection = %self.name, error = %failure, retry_in = ?backoff.delay, "RabbitMQ connection attempt failed");
        Err(failure)
    }

    /// Connected, or reconnecting with the last error. A connection that
    /// dropped counts as down even before anyone uses it again, and is
    /// reopened in the background (one attempt at a time, after the
    /// backoff), so that an idle connection's state is current too.
    pub(crate) fn connection_state(self: &Arc<Self>) -> ConnectionState {
        if self.closed.load(Ordering::Acquire) {
            return ConnectionState::Connected;
        }
        let dropped = lock(&self.current)
            .as_ref()
            .is_some_and(|c| !c.status().connected());
        if dropped && !self.link.is_down() {
            self.link.failed(Some(format!(
                "the connection to {} was closed",
                self.shown_url
            )));
        }
        if self.link.is_down() {
            self.reopen_in_background();
        }
        self.link.state()
    }

    fn reopen_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reopening.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = self.clone();
        runtime.spawn(async move {
            let _ = slot.get().await;
            slot.reopening.store(false, Ordering::Release);
        });
    }

    /// Closes the connection; later `get` calls fail with [`Error::Shutdown`].
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let conn = lock(&self.current).take();
        if let Some(conn) = conn {
            if conn.status().connected() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), conn.close(200, "closing".into()))
                        .await;
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is a plain handle.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lapin error in words, with the broker's reply text when there is one.
pub(crate) fn describe(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            format!("{} ({})", amqp.get_message(), amqp.get_id())
        }
        _ => e.to_string(),
    }
}

/// Whether the broker refused a declaration because what exists differs.
pub(crate) fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
}
