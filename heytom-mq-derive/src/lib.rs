//! Proc macros of heytom-mq: `#[derive(Event)]` and `#[handler]`.
//!
//! Use them through `heytom_mq` (`use heytom_mq::prelude::*;`); the generated
//! code names `::heytom_mq` paths.

mod ctxt;
mod event;
mod handler;
mod meta;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Implements `heytom_mq::Event` and registers the event type (through
/// `inventory`, so the outbox relay can route it by name).
///
/// ```text
/// use heytom_mq::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[kafka(topic = "order-events", partition_key = order_id, acks = "all")]
/// pub struct OrderCreated { pub order_id: String, pub amount: f64 }
/// ```
///
/// At most one transport attribute; without one the event travels on the
/// default transport.
///
/// - `#[kafka(..)]`: `topic` (required; `[A-Za-z0-9._-]`, at most 249
///   characters), `group_id`, `partition_key` (a field, `order_id` or
///   `"order_id"`; an `Option` field gives no key when `None`),
///   `num_partitions`, `replication_factor` (default: the broker's default
///   replication factor), `retention_ms`,
///   `compression_type` (`none|gzip|snappy|lz4|zstd`), `enable_idempotence`
///   (needs `acks = "all"`; default on when `acks` is `all`, off for 0 or 1),
///   `acks` (`"0"|"1"|"all"|"-1"` or `0|1|-1`; default `all`),
///   `auto_offset_reset` (`earliest|latest`), `enable_auto_commit`,
///   `session_timeout_ms`, `max_poll_records`.
/// - `#[rabbitmq(..)]`: `routing_key` (required), `exchange`, `exchange_type`
///   (`direct|topic|fanout|headers`), `queue_name`, `durable`, `message_ttl`,
///   `max_length`, `max_priority` (`1..=255`), `dead_letter_exchange`,
///   `dead_letter_routing_key`, `overflow`
///   (`drop-head|reject-publish|reject-publish-dlx`, needs `max_length`),
///   `queue_type` (`classic|quorum|stream`; quorum and stream queues are
///   durable, a quorum queue has no `max_priority` nor `reject-publish-dlx`,
///   a stream none of the per-message keys).
/// - `#[event(name = "..")]`: the message type name (default: the type's name).
///
/// Every mistake is a compile error at the offending token. Structs (named,
/// tuple, unit) and enums derive; unions and generic types do not.
#[proc_macro_derive(Event, attributes(kafka, rabbitmq, event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::derive(&input).into()
}

/// Registers an `async fn` as a handler of its first argument's event type.
///
/// ```text
/// #[handler(name = "billing", max_attempts = 5)]
/// async fn bill(event: OrderCreated, ctx: Context, State(db): State<PgPool>) -> anyhow::Result<()> {
///     Ok(())
/// }
/// ```
///
/// The first argument is the event (by value, any pattern); `Context` and
/// `State<T>` follow in any order. The return type is `()`, `bool` (`false`
/// fails) or `Result<(), E>` with `E: Into<Box<dyn Error + Send + Sync>>`,
/// and the future must be `Send`. A signature the runtime cannot call fails
/// to compile at the argument or return type at fault.
///
/// Options: `name = ".."` (default: the function name), `group = ".."`,
/// `max_attempts = N` (deliveries including the first, `N >= 1`),
/// `concurrency = N` (`N >= 1`), `idempotent` (or `idempotent = true`: the
/// handler runs once per message id, recorded in the app's inbox; see
/// `heytom_mq::Inbox`).
///
/// The function stays as written; the macro adds a hidden call shim and an
/// `inventory` registration that `App` discovers.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    handler::handler(args.into(), input.into()).into()
}
