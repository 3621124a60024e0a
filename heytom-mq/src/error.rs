//! The one error type of heytom-mq.

use crate::event::TransportKind;

/// A boxed error that is `Send + Sync`, the error type of handlers and of
/// outbox transaction closures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in heytom-mq.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The application or a transport is configured wrongly.
    #[error("configuration error: {0}")]
    Configuration(String),

    /// An event needs a transport the app does not have.
    #[error("no transport configured for {}", .0.iter().map(|(e, t)| format!("event `{e}` (needs {t})")).collect::<Vec<_>>().join(", "))]
    TransportNotConfigured(Vec<(String, TransportKind)>),

    /// Two handlers share one name.
    #[error("duplicate handler name `{name}`: used by `{first}` and `{second}`; give one of them #[handler(name = \"...\")]")]
    DuplicateHandler {
        /// The shared name.
        name: String,
        /// The first function.
        first: String,
        /// The second function.
        second: String,
    },

    /// A handler asks for `State<T>` that was never given to `AppBuilder::state`.
    #[error("handler `{handler}` needs State<{state}>, but no such state was registered with AppBuilder::state")]
    MissingState {
        /// The handler.
        handler: String,
        /// The state type.
        state: &'static str,
    },

    /// Could not connect to a broker or database.
    #[error("{transport} connection error: {message}")]
    Connection {
        /// Which transport or store.
        transport: &'static str,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// Declaring topology (exchanges, queues, topics) failed.
    #[error("{transport} topology error: {message}")]
    Topology {
        /// Which transport.
        transport: &'static str,
        /// What happened.
        message: String,
    },

    /// The broker refused or did not confirm a message.
    #[error("publish of `{event}` failed: {reason}")]
    Publish {
        /// The event's name.
        event: String,
        /// The broker's reason.
        reason: String,
    },

    /// The broker could not be reached, lost the connection, or did not
    /// confirm in time: the message may or may not have arrived. The outbox
    /// retries such sends without counting them against a row's retries.
    #[error("publish of `{event}` not confirmed, {transport} unavailable: {reason}")]
    Unavailable {
        /// Which transport.
        transport: &'static str,
        /// The event's name.
        event: String,
        /// What happened.
        reason: String,
    },

    /// An event could not be serialized.
    #[error("could not serialize `{event}`: {source}")]
    Serialization {
        /// The event's name.
        event: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The local message table failed.
    #[error("local message table error: {message}")]
    Storage {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// The user's transaction closure failed; nothing was sent.
    #[error("transaction aborted: {0}")]
    Transaction(#[source] BoxError),

    /// The app or consumer was shut down.
    #[error("shut down")]
    Shutdown,

    /// A subscription for this event already exists on this consumer.
    #[error("already subscribed to `{0}`")]
    AlreadySubscribed(String),

    /// The consumer has not been started.
    #[error("consumer not started; call start() first")]
    NotStarted,
}

impl Error {
    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Configuration(message.into())
    }

    /// A connection error with its cause.
    pub fn connection(
        transport: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Connection {
            transport,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A storage error with its cause.
    pub fn storage(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Storage {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The transport was unavailable for a publish (see [`Error::Unavailable`]).
    pub fn unavailable(
        transport: &'static str,
        event: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Unavailable {
            transport,
            event: event.into(),
            reason: reason.into(),
        }
    }

    /// Whether this error says the transport was unavailable (not reachable,
    /// connection lost, no confirm in time, shut down) rather than that the
    /// message itself was refused. The outbox retries the first kind without
    /// using up a row's retries.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Connection { .. } | Error::Unavailable { .. } | Error::Shutdown
        )
    }

    /// A publish error.
    pub fn publish(event: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Publish {
            event: event.into(),
            reason: reason.into(),
        }
    }
}

/// `Result<T, heytom_mq::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
