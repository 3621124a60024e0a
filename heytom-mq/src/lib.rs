//! # heytom-mq
//!
//! Attribute-configured events over RabbitMQ, Kafka or an in-process broker,
//! with `#[handler]` discovery and a transactional outbox (local message
//! table) on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! ```no_run
//! use heytom_mq::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! #[kafka(topic = "user-events")]
//! pub struct UserCreated { pub user_id: i32, pub name: String }
//!
//! #[handler]
//! async fn on_user_created(event: UserCreated, ctx: Context) -> Result<(), HandlerError> {
//!     println!("{} created (event {})", event.name, ctx.event_id());
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), heytom_mq::Error> {
//!     App::from_env().run().await
//! }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// One path per public name: the modules are private and everything public
// is re-exported here (and the everyday names in `prelude`).
mod app;
pub mod asyncapi;
mod consumer;
#[cfg(feature = "dashboard")]
#[cfg_attr(docsrs, doc(cfg(feature = "dashboard")))]
pub mod dashboard;
mod dispatch;
mod error;
mod event;
mod handler;
pub mod health;
#[cfg(feature = "_outbox")]
mod inbox;
mod manual;
#[cfg(feature = "_outbox")]
mod outbox;
mod producer;
mod redact;
mod retry;
mod telemetry;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod transport;

pub use app::{App, AppBuilder, RunningApp, SubscriptionInfo};
pub use consumer::{Consumer, MessageConsumer};
pub use dispatch::{DeadLetter, Dispatcher, Incoming, Outcome, UnknownEventPolicy};
pub use error::{BoxError, Error, Result};
pub use event::headers;
pub use event::{
    registered_event, Acks, AutoOffsetReset, CompressionType, Envelope, Event, EventId, EventName,
    EventRegistration, ExchangeType, Headers, KafkaRoute, Overflow, QueueType, RabbitMqRoute,
    Route, TransportKind,
};
pub use handler::{
    registered_handlers, Context, EventHandler, ExtractError, FromContext, HandlerEntry,
    HandlerError, HandlerRegistration, IntoHandlerResult, Publisher, State, StateMap,
    StateRequirement, TransactionRequirement,
};
pub use health::{ConnectionState, Health, SubscriptionMonitor, SubscriptionState};
pub use heytom_mq_derive::{handler, Event};
pub use manual::{InMemoryConsumer, InMemoryProducer};
pub use producer::{MessageProducer, Producer};
pub use retry::RetryPolicy;
pub use telemetry::{metric_names, KAFKA_STATISTICS_INTERVAL_MS};
pub use transport::memory::{DeadLetteredMessage, InMemoryBroker, InMemoryTransport};
pub use transport::{
    EncodedBatch, Outgoing, PendingResults, Subscription, SubscriptionHandle, Transport,
    TransportConfig,
};

#[cfg(feature = "kafka")]
pub use manual::{KafkaConsumer, KafkaProducer};
#[cfg(feature = "rabbitmq")]
pub use manual::{RabbitMqConsumer, RabbitMqProducer};
#[cfg(feature = "kafka")]
pub use transport::kafka::{
    KafkaOptions, KafkaTransport, DEFAULT_DEAD_LETTER_SUFFIX, DEFAULT_GROUP_ID,
};
#[cfg(feature = "rabbitmq")]
pub use transport::rabbitmq::{
    RabbitMqOptions, RabbitMqTransport, DEFAULT_EXCHANGE, PRIORITY_HEADER,
};

#[cfg(feature = "_outbox")]
pub use inbox::{Inbox, Tx};
#[cfg(feature = "_outbox")]
pub use outbox::{
    LocalMessage, LocalMessageRepository, LocalMessageRetryOptions, MessageStatus, Outbox,
    OutboxDatabase, OutboxTransaction, StatusCounts,
};
#[cfg(feature = "_outbox")]
pub use outbox::{MessageFilter, MessagePage, OutboxAdmin, SentRate};

/// chrono, whose `DateTime<Utc>` `Producer::send_at` takes: `heytom_mq::chrono::Utc`
/// when you have no chrono of your own.
pub use chrono;
/// The sqlx this crate is built on (0.9), so that the pools and
/// transactions you hand to [`Outbox`] and [`Producer::send_with_transaction`]
/// are the same types as the library's, whatever else is in your
/// dependency tree: `use heytom_mq::sqlx;` when you have no sqlx of your own.
/// The database drivers follow this crate's `postgres`, `mysql` and `sqlite`
/// features. sqlx's compile-time checked macros (`query!`, ...) need sqlx as
/// a direct dependency; add the same major version, `sqlx = "0.9"`.
#[cfg(feature = "_outbox")]
pub use sqlx;

/// The schemars this crate's `schemars` feature is built on (1.x): derive
/// `schemars::JsonSchema` on an event with this major version and its
/// payload schema appears in [`asyncapi::document`].
#[cfg(feature = "schemars")]
pub use schemars;

// The Rust blocks of the README and of docs/*.md, compiled (and, unless
// `no_run`, run) by `cargo test --doc`, so that every snippet a user copies
// compiles as written. Each needs the features its snippets use.
#[cfg(all(doctest, feature = "rabbitmq", feature = "kafka", feature = "postgres"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(all(doctest, feature = "kafka"))]
#[doc = include_str!("../docs/kafka.md")]
struct KafkaDocDoctests;

#[cfg(all(doctest, feature = "rabbitmq", feature = "postgres"))]
#[doc = include_str!("../docs/outbox.md")]
struct OutboxDocDoctests;

#[cfg(all(doctest, feature = "rabbitmq"))]
#[doc = include_str!("../docs/rabbitmq.md")]
struct RabbitMqDocDoctests;

#[cfg(all(doctest, feature = "rabbitmq", feature = "kafka", feature = "postgres"))]
#[doc = include_str!("../docs/inbox.md")]
struct InboxDocDoctests;
#[cfg(all(doctest, feature = "testing"))]
#[doc = include_str!("../docs/testing.md")]
struct TestingDocDoctests;
#[cfg(all(doctest, feature = "opentelemetry", feature = "metrics"))]
#[doc = include_str!("../docs/observability.md")]
struct ObservabilityDocDoctests;
#[cfg(all(doctest, feature = "dashboard", feature = "sqlite"))]
#[doc = include_str!("../docs/dashboard.md")]
struct DashboardDocDoctests;
#[cfg(all(doctest, feature = "axum", feature = "schemars"))]
#[doc = include_str!("../docs/operations.md")]
struct OperationsDocDoctests;

/// The everyday names: `use heytom_mq::prelude::*;`.
pub mod prelude {
    pub use crate::{
        handler, App, BoxError, Context, Event, EventHandler, EventId, HandlerError, Headers,
        InMemoryBroker, InMemoryConsumer, InMemoryProducer, MessageConsumer, MessageProducer,
        Producer, RetryPolicy, Route, State,
    };
    #[cfg(feature = "_outbox")]
    pub use crate::{Inbox, LocalMessageRetryOptions, Outbox, Tx};
    #[cfg(feature = "kafka")]
    pub use crate::{KafkaConsumer, KafkaOptions, KafkaProducer};
    #[cfg(feature = "rabbitmq")]
    pub use crate::{RabbitMqConsumer, RabbitMqOptions, RabbitMqProducer};
}

/// Used by the code `#[derive(Event)]` and `#[handler]` generate; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__heytom_event_schema as event_schema;
    pub use crate::asyncapi::schema;
    pub use crate::event::{EventRegistration, EventSchemaRegistration};
    pub use crate::handler::{decode, FromContext, HandlerFailure, HandlerRegistration};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde_json;

    /// What a `#[handler]` needs of its event type. The shim and the
    /// registration both go through [`handler_event`], so an argument that is
    /// not an event is reported once, at that argument.
    pub struct HandlerEvent<E> {
        /// `Event::NAME`
        pub name: &'static str,
        /// `Event::route`
        pub route: fn() -> &'static crate::Route,
        /// Decodes the payload.
        pub decode: fn(&crate::Envelope) -> Result<E, HandlerFailure>,
    }

    /// The [`HandlerEvent`] of `E`.
    pub const fn handler_event<E: crate::Event>() -> HandlerEvent<E> {
        HandlerEvent {
            name: E::NAME,
            route: E::route,
            decode: decode::<E>,
        }
    }

    /// Boxes a handler's future; the `Send` bound is the check that the
    /// handler holds nothing `!Send` (like an `Rc`) across an `.await`.
    pub fn boxed<F>(f: F) -> BoxFuture<'static, Result<(), HandlerFailure>>
    where
        F: std::future::Future<Output = Result<(), HandlerFailure>> + Send + 'static,
    {
        Box::pin(f)
    }

    /// Turns a handler's return value into the runtime's result.
    pub fn into_failure<R: crate::IntoHandlerResult>(r: R) -> Result<(), HandlerFailure> {
        r.into_handler_result().map_err(HandlerFailure::Failed)
    }

    /// One entry of `HandlerRegistration::requires`.
    pub const fn state_arg(
        requirement: fn() -> Option<crate::handler::StateRequirement>,
        written: &'static str,
    ) -> crate::handler::StateArg {
        (requirement, written)
    }

    /// Boxes a ready failure.
    pub fn fail(f: HandlerFailure) -> BoxFuture<'static, Result<(), HandlerFailure>> {
        Box::pin(futures::future::ready(Err(f)))
    }

    /// An extractor failure as a handler failure.
    pub fn extract_failure(e: crate::handler::ExtractError) -> HandlerFailure {
        HandlerFailure::Failed(Box::new(e))
    }
}
