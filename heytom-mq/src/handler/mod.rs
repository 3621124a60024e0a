//! Handlers: the `Context` and `State<T>` extractors, handler results, the
//! `EventHandler` trait for handler types, and the registry `#[handler]` fills.

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::BoxError;
use crate::event::{Envelope, Event, Route};
use crate::retry::RetryPolicy;

mod context;
mod scope;
mod type_name;

pub(crate) use context::HandlerInfo;
pub use context::{Context, Publisher};
pub(crate) use scope::require_no_inbox;
pub use scope::TransactionRequirement;
#[cfg(feature = "_outbox")]
pub(crate) use scope::TxScope;
pub(crate) use type_name::readable_type_name;

/// The error a handler fails with: any `Send + Sync` error, boxed.
///
/// `?` converts every error type into it, and `"text".into()` works too.
pub type HandlerError = BoxError;

/// Shared application state, handed to handlers that take `State<T>`.
///
/// Register it with `AppBuilder::state(value)`; any `Clone + Send + Sync + 'static` type.
///
/// ```
/// # use heytom_mq::prelude::*;
/// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct Ping;
/// #[derive(Clone)]
/// struct Counter(std::sync::Arc<std::sync::atomic::AtomicU32>);
///
/// #[handler]
/// async fn count(_event: Ping, State(counter): State<Counter>) {
///     counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
/// }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

/// The state registered on an app, by type.
#[derive(Default, Clone)]
pub struct StateMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a value.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// A clone of the value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    /// Whether a value of this type is present.
    pub fn contains(&self, id: TypeId) -> bool {
        self.values.contains_key(&id)
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap")
            .field("len", &self.values.len())
            .finish()
    }
}

/// A state type a handler needs, checked when the app is built.
#[derive(Debug, Clone, Copy)]
pub struct StateRequirement {
    /// `TypeId::of::<T>()`
    pub type_id: TypeId,
    /// The type's name for messages: as written in the handler's signature
    /// when `#[handler]` registered it (`sqlx::PgPool`), otherwise
    /// `type_name::<T>()` without module paths (`Pool<Postgres>`).
    pub type_name: &'static str,
}

impl StateRequirement {
    /// The requirement for `T`.
    pub fn of<T: 'static>() -> Self {
        StateRequirement {
            type_id: TypeId::of::<T>(),
            type_name: readable_type_name::<T>(),
        }
    }
}

/// Why an extractor could not produce its value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// A handler argument after the event: `Context`, `State<T>` or `Tx<DB>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "after the event, a handler takes `Context` and/or `State<T>` (T registered with AppBuilder::state)"
)]
pub trait FromContext: Sized + Send + 'static {
    /// Produces the argument.
    fn from_context(ctx: &Context, state: &StateMap) -> Result<Self, ExtractError>;
    /// The state this extractor needs, checked at startup.
    fn requirement() -> Option<StateRequirement> {
        None
    }
    /// The transaction this extractor needs (`Tx<DB>`), checked at startup.
    #[doc(hidden)]
    fn transaction() -> Option<TransactionRequirement> {
        None
    }
}

impl FromContext for Context {
    fn from_context(ctx: &Context, _state: &StateMap) -> Result<Self, ExtractError> {
        Ok(ctx.clone())
    }
}

impl<T: Clone + Send + Sync + 'static> FromContext for State<T> {
    fn from_context(_ctx: &Context, state: &StateMap) -> Result<Self, ExtractError> {
        state.get::<T>().map(State).ok_or_else(|| {
            ExtractError(format!(
                "State<{}> was not registered with AppBuilder::state",
                readable_type_name::<T>()
            ))
        })
    }
    fn requirement() -> Option<StateRequirement> {
        Some(StateRequirement::of::<T>())
    }
}

/// What a handler may return: `()`, `bool` (`false` is a failure) or
/// `Result<(), E>` with `E` convertible into a boxed error.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler result",
    label = "unsupported return type",
    note = "a handler returns `()`, `bool` or `Result<(), E>` where `E: Into<Box<dyn std::error::Error + Send + Sync>>`"
)]
pub trait IntoHandlerResult {
    /// Converts into the runtime's result.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl IntoHandlerResult for bool {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        if self {
            Ok(())
        } else {
            Err("handler returned false".into())
        }
    }
}

impl<E: Into<BoxError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// A handler that is a type, like the original `IEventHandler<T>`.
///
/// ```
/// # use heytom_mq::prelude::*;
/// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct Ping;
/// struct PingHandler;
///
/// impl EventHandler<Ping> for PingHandler {
///     async fn handle(&self, _event: Ping, ctx: Context) -> Result<(), HandlerError> {
///         println!("ping {}", ctx.event_id());
///         Ok(())
///     }
/// }
/// # async fn run() -> Result<(), heytom_mq::Error> {
/// let app = App::builder().handler::<Ping, _>(PingHandler).build().await?;
/// # Ok(()) }
/// ```
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Handles one event; an error goes to the retry policy.
    fn handle(
        &self,
        event: E,
        ctx: Context,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Why one handler invocation did not succeed.
#[derive(Debug)]
pub enum HandlerFailure {
    /// The payload does not decode as the handler's event type: never retried.
    Decode(String),
    /// The handler failed (error, `false`, or panic): retried per policy.
    Failed(HandlerError),
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerFailure::Decode(e) => write!(f, "payload does not decode: {e}"),
            HandlerFailure::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A type-erased handler the runtime can call.
pub trait ErasedHandler: Send + Sync + 'static {
    /// Decodes the payload and runs the handler.
    fn call(
        &self,
        envelope: &Envelope,
        ctx: Context,
        state: &StateMap,
    ) -> BoxFuture<'static, Result<(), HandlerFailure>>;
}

/// The signature `#[handler]` generates for a function handler.
pub type HandlerFn =
    fn(&Envelope, Context, &StateMap) -> BoxFuture<'static, Result<(), HandlerFailure>>;

struct FnHandler(HandlerFn);

impl ErasedHandler for FnHandler {
    fn call(
        &self,
        envelope: &Envelope,
        ctx: Context,
        state: &StateMap,
    ) -> BoxFuture<'static, Result<(), HandlerFailure>> {
        (self.0)(envelope, ctx, state)
    }
}

struct TypeHandler<E, H> {
    handler: Arc<H>,
    _event: PhantomData<fn(E)>,
}

impl<E: Event, H: EventHandler<E>> ErasedHandler for TypeHandler<E, H> {
    fn call(
        &self,
        envelope: &Envelope,
        ctx: Context,
        _state: &StateMap,
    ) -> BoxFuture<'static, Result<(), HandlerFailure>> {
        let event = match decode::<E>(envelope) {
            Ok(e) => e,
            Err(e) => return Box::pin(futures::future::ready(Err(e))),
        };
        let handler = self.handler.clone();
        Box::pin(async move {
            handler
                .handle(event, ctx)
                .await
                .map_err(HandlerFailure::Failed)
        })
    }
}

struct ClosureHandler<E, F> {
    f: F,
    _event: PhantomData<fn(E)>,
}

impl<E, F, Fut, R> ErasedHandler for ClosureHandler<E, F>
where
    E: Event,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoHandlerResult,
{
    fn call(
        &self,
        envelope: &Envelope,
        _ctx: Context,
        _state: &StateMap,
    ) -> BoxFuture<'static, Result<(), HandlerFailure>> {
        let event = match decode::<E>(envelope) {
            Ok(e) => e,
            Err(e) => return Box::pin(futures::future::ready(Err(e))),
        };
        let fut = (self.f)(event);
        Box::pin(async move {
            fut.await
                .into_handler_result()
                .map_err(HandlerFailure::Failed)
        })
    }
}

/// Decodes an envelope's payload as `E`, as a handler failure on error.
pub fn decode<E: Event>(envelope: &Envelope) -> Result<E, HandlerFailure> {
    envelope
        .decode::<E>()
        .map_err(|e| HandlerFailure::Decode(format!("not a valid `{}`: {e}", E::NAME)))
}

/// A handler as the runtime sees it: its metadata and the callable.
#[derive(Clone)]
pub struct HandlerEntry {
    /// The handler's name (function name or `#[handler(name = ...)]`).
    pub(crate) name: String,
    /// Where it was defined, for error messages.
    pub(crate) function: String,
    /// The `NAME` of the event it handles.
    pub(crate) event_name: &'static str,
    /// The event's route.
    pub(crate) route: &'static Route,
    /// A consumer group / queue override.
    pub(crate) group: Option<String>,
    /// A retry policy override.
    pub(crate) retry: Option<RetryPolicy>,
    /// Parallel deliveries for this handler (where the transport allows).
    pub(crate) concurrency: Option<usize>,
    /// State types the handler needs.
    pub(crate) requires: Vec<StateRequirement>,
    /// `#[handler(idempotent)]`: runs once per message id, through the inbox.
    pub(crate) idempotent: bool,
    /// The transactions its arguments take (`Tx<DB>`).
    pub(crate) transactions: Vec<TransactionRequirement>,
    /// The callable.
    pub(crate) handler: Arc<dyn ErasedHandler>,
}

impl fmt::Debug for HandlerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerEntry")
            .field("name", &self.name)
            .field("function", &self.function)
            .field("event_name", &self.event_name)
            .field("group", &self.group)
            .finish()
    }
}

impl HandlerEntry {
    /// The handler's name (function name or `#[handler(name = ...)]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was defined (a function path or a type), for messages.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The `NAME` of the event it handles.
    pub fn event_name(&self) -> &'static str {
        self.event_name
    }

    /// The event's route.
    pub fn route(&self) -> &'static Route {
        self.route
    }

    /// The consumer group / queue it asked for, if any.
    pub fn group_override(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Its own retry policy, if any.
    pub fn retry_override(&self) -> Option<RetryPolicy> {
        self.retry
    }

    /// The parallel deliveries it asked for, if any.
    pub fn concurrency_override(&self) -> Option<usize> {
        self.concurrency
    }

    /// The state types it needs, checked when the app is built.
    pub fn requires(&self) -> &[StateRequirement] {
        &self.requires
    }

    /// An entry for an [`EventHandler`] type.
    pub fn from_type<E: Event, H: EventHandler<E>>(name: impl Into<String>, handler: H) -> Self {
        let name = name.into();
        HandlerEntry {
            function: type_name::<H>().to_owned(),
            name,
            event_name: E::NAME,
            route: E::route(),
            group: None,
            retry: None,
            concurrency: None,
            requires: Vec::new(),
            idempotent: false,
            transactions: Vec::new(),
            handler: Arc::new(TypeHandler::<E, H> {
                handler: Arc::new(handler),
                _event: PhantomData,
            }),
        }
    }

    /// An entry for a closure `Fn(E) -> impl Future<Output = R>`.
    pub fn from_closure<E, F, Fut, R>(name: impl Into<String>, f: F) -> Self
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult,
    {
        let name = name.into();
        HandlerEntry {
            function: name.clone(),
            name,
            event_name: E::NAME,
            route: E::route(),
            group: None,
            retry: None,
            concurrency: None,
            requires: Vec::new(),
            idempotent: false,
            transactions: Vec::new(),
            handler: Arc::new(ClosureHandler::<E, F> {
                f,
                _event: PhantomData,
            }),
        }
    }

    /// An entry from a `#[handler]` registration.
    pub fn from_registration(reg: &HandlerRegistration) -> Self {
        HandlerEntry {
            name: reg.name.to_owned(),
            function: reg.function.to_owned(),
            event_name: reg.event_name,
            route: (reg.route)(),
            group: reg.group.map(str::to_owned),
            retry: reg
                .max_attempts
                .map(|n| RetryPolicy::default().max_attempts(n)),
            concurrency: reg.concurrency,
            requires: reg
                .requires
                .iter()
                .filter_map(|(requirement, written)| {
                    requirement().map(|r| StateRequirement {
                        type_name: written,
                        ..r
                    })
                })
                .collect(),
            idempotent: reg.idempotent,
            transactions: reg.transactions.iter().filter_map(|t| t()).collect(),
            handler: Arc::new(FnHandler(reg.call)),
        }
    }

    /// Overrides the consumer group / queue.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Overrides the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets how many deliveries may run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.max(1));
        self
    }

    /// Makes the handler idempotent (like `#[handler(idempotent)]`): it
    /// runs in the inbox's transaction, once per message id; the app needs
    /// an inbox (`AppBuilder::inbox`).
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Whether it runs once per message id, through the inbox.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The transactions its arguments take (`Tx<DB>`).
    pub fn transactions(&self) -> &[TransactionRequirement] {
        &self.transactions
    }
}

/// A function handler, registered by `#[handler]` through `inventory`.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// Handler name.
    pub name: &'static str,
    /// Module path and function name.
    pub function: &'static str,
    /// The event's `NAME`.
    pub event_name: &'static str,
    /// The event's route.
    pub route: fn() -> &'static Route,
    /// `#[handler(group = "...")]`
    pub group: Option<&'static str>,
    /// `#[handler(max_attempts = N)]`
    pub max_attempts: Option<u32>,
    /// `#[handler(concurrency = N)]`
    pub concurrency: Option<usize>,
    /// `#[handler(idempotent)]`
    pub idempotent: bool,
    /// One function per extractor argument; those that take the inbox's
    /// transaction (`Tx<DB>`) return what they need.
    pub transactions: &'static [fn() -> Option<TransactionRequirement>],
    /// One function per extractor argument (those that need state return
    /// it), with the state type as written in the signature.
    pub requires: &'static [StateArg],
    /// The generated call shim.
    pub call: HandlerFn,
}

/// An extractor's state requirement, with the state type as written.
pub type StateArg = (fn() -> Option<StateRequirement>, &'static str);

inventory::collect!(HandlerRegistration);

/// Every `#[handler]` linked into this binary.
pub fn registered_handlers() -> impl Iterator<Item = &'static HandlerRegistration> {
    inventory::iter::<HandlerRegistration>.into_iter()
}
