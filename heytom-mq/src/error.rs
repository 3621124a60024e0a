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

    /// A wait ran out of time before what it waited for happened (the
    /// test harness's `TestApp::wait_handled`, ...).
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was waited for, and how far it got.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },

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

/// Range checks of configured values, shared by the option types' `validate`
/// functions: each error is an [`Error::Configuration`] that names the
/// setting, the allowed range and the value found.
pub(crate) mod check {
    use std::fmt::Display;
    use std::time::Duration;

    use super::{Error, Result};

    /// One millisecond, the shortest wait or timeout most settings take.
    #[cfg_attr(
        not(any(feature = "kafka", feature = "rabbitmq", feature = "_outbox")),
        allow(dead_code)
    )]
    pub(crate) const MILLISECOND: Duration = Duration::from_millis(1);
    /// One day, the upper bound of timeouts and waits: far below what
    /// overflows `Instant`, chrono or librdkafka's `i32` milliseconds.
    pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

    /// `value` within `min..=max`.
    pub(crate) fn duration(
        setting: &str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<()> {
        if value < min || value > max {
            return Err(Error::config(format!(
                "{setting} must be between {} and {}, found {}",
                show(min),
                show(max),
                show(value)
            )));
        }
        Ok(())
    }

    /// `value` within `min..=max`.
    pub(crate) fn int<T: Into<i128> + Copy + Display>(
        setting: &str,
        value: T,
        min: impl Into<i128>,
        max: impl Into<i128>,
    ) -> Result<()> {
        let (v, min, max): (i128, i128, i128) = (value.into(), min.into(), max.into());
        if v < min || v > max {
            return Err(Error::config(format!(
                "{setting} must be between {min} and {max}, found {value}"
            )));
        }
        Ok(())
    }

    /// A non-empty string.
    pub(crate) fn not_empty(setting: &str, value: &str) -> Result<()> {
        if value.trim().is_empty() {
            return Err(Error::config(format!("{setting} must not be empty")));
        }
        Ok(())
    }

    /// A duration for people: `0s`, `250ms`, `30s`, `5min`, `2h`, `1 day`, `365 days`.
    pub(crate) fn show(d: Duration) -> String {
        let ms = d.as_millis();
        if !d.subsec_nanos().is_multiple_of(1_000_000) || ms == 0 && !d.is_zero() {
            return format!("{d:?}");
        }
        let (day, hour, min, sec) = (86_400_000, 3_600_000, 60_000, 1000);
        match ms {
            0 => "0s".to_owned(),
            n if n % (365 * day) == 0 => match n / (365 * day) {
                1 => "365 days".to_owned(),
                k => format!("{k} years of 365 days"),
            },
            n if n % day == 0 => match n / day {
                1 => "1 day".to_owned(),
                k => format!("{k} days"),
            },
            n if n % hour == 0 => format!("{}h", n / hour),
            n if n % min == 0 => format!("{}min", n / min),
            n if n % sec == 0 => format!("{}s", n / sec),
            n => format!("{n}ms"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn messages_name_setting_range_and_value() {
            let e = duration("X::lease", Duration::MAX, MILLISECOND, DAY).unwrap_err();
            assert!(matches!(e, Error::Configuration(_)));
            let text = e.to_string();
            assert!(
                text.contains("X::lease must be between 1ms and 1 day, found"),
                "{text}"
            );
            let e = int("X::n", 0u32, 1, 10).unwrap_err().to_string();
            assert!(e.contains("X::n must be between 1 and 10, found 0"), "{e}");
            assert_eq!(show(Duration::from_secs(300)), "5min");
            assert_eq!(show(Duration::from_secs(365 * 86_400)), "365 days");
            assert_eq!(show(Duration::from_micros(1500)), "1.5ms");
        }
    }
}
