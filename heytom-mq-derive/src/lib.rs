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

/// Implements `heytom_mq::Event` and registers the event type.
///
/// Configured by `#[kafka(..)]`, `#[rabbitmq(..)]` (at most one of them) and
/// `#[event(name = "..")]`; see `heytom_mq::Event`.
#[proc_macro_derive(Event, attributes(kafka, rabbitmq, event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::derive(&input).into()
}

/// Registers an `async fn` as a handler of its first argument's event type.
///
/// Options: `name = ".."`, `group = ".."`, `max_attempts = N`, `concurrency = N`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    handler::handler(args.into(), input.into()).into()
}
