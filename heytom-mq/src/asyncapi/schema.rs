//! The payload schema of an event, when it also derives
//! `schemars::JsonSchema` (feature `schemars`).
//!
//! `#[derive(Event)]` registers a function that calls
//! `heytom_mq::__private::event_schema!(Type)`. With the `schemars`
//! feature the macro asks, by autoref specialization, whether the type
//! implements `JsonSchema` (the user opts in by deriving it, nothing
//! more); without the feature it is `None`.

use std::marker::PhantomData;

use serde_json::Value;

/// Where a payload schema's definitions go: the document's
/// `components.schemas`, so that the `$ref`s resolve in the document.
pub const DEFINITIONS_PATH: &str = "/components/schemas";

/// The payload schema of `T` (draft-07, the dialect of AsyncAPI 3.0
/// schemas), its definitions under `components.schemas` of the value.
#[cfg(feature = "schemars")]
pub fn payload_schema<T: schemars::JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.definitions_path = DEFINITIONS_PATH.into();
    settings.meta_schema = None;
    settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// The probe the macro calls `.schema()` on, as `&&SchemaProbe<T>`.
pub struct SchemaProbe<T>(PhantomData<fn() -> T>);

impl<T> SchemaProbe<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        SchemaProbe(PhantomData)
    }
}

impl<T> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Chosen when `T: JsonSchema` (it matches one reference more).
#[cfg(feature = "schemars")]
pub trait ViaJsonSchema {
    /// The payload schema.
    fn schema(&self) -> Option<Value>;
}

#[cfg(feature = "schemars")]
impl<T: schemars::JsonSchema> ViaJsonSchema for &SchemaProbe<T> {
    fn schema(&self) -> Option<Value> {
        Some(payload_schema::<T>())
    }
}

/// Chosen otherwise.
pub trait ViaNothing {
    /// No schema.
    fn schema(&self) -> Option<Value>;
}

impl<T> ViaNothing for SchemaProbe<T> {
    fn schema(&self) -> Option<Value> {
        None
    }
}

/// The payload schema of an event type, or `None` when it does not
/// implement `schemars::JsonSchema` (or the `schemars` feature is off).
#[cfg(feature = "schemars")]
#[doc(hidden)]
#[macro_export]
macro_rules! __heytom_event_schema {
    ($t:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::schema::{ViaJsonSchema as _, ViaNothing as _};
        (&&$crate::__private::schema::SchemaProbe::<$t>::new()).schema()
    }};
}

/// The payload schema of an event type: always `None` without the
/// `schemars` feature.
#[cfg(not(feature = "schemars"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __heytom_event_schema {
    ($t:ty) => {{
        let _ = ::core::marker::PhantomData::<$t>;
        ::core::option::Option::<$crate::__private::serde_json::Value>::None
    }};
}
