//! The derive input as `#[derive(Event)]` sees it.

use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::ctxt::Ctxt;

/// The type deriving `Event`.
pub struct Container<'a> {
    pub ident: &'a Ident,
    pub shape: Shape<'a>,
}

/// Which kind of type it is; only named fields can be a partition key.
pub enum Shape<'a> {
    Named(Vec<Field<'a>>),
    Tuple,
    Unit,
    Enum,
}

/// A named field.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
}

impl<'a> Container<'a> {
    /// The model of `input`, or `None` (with an error recorded) for shapes an
    /// event cannot have: unions and generic types.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let shape = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => Shape::Named(
                    named
                        .named
                        .iter()
                        .filter_map(|f| f.ident.as_ref().map(|ident| Field { ident, ty: &f.ty }))
                        .collect(),
                ),
                Fields::Unnamed(_) => Shape::Tuple,
                Fields::Unit => Shape::Unit,
            },
            Data::Enum(_) => Shape::Enum,
            Data::Union(u) => {
                cx.error_spanned_by(
                    u.union_token,
                    "#[derive(Event)] is not supported on unions: an event must be a struct or an enum that serde can (de)serialize",
                );
                return None;
            }
        };
        let generics = &input.generics;
        if !generics.params.is_empty() || generics.where_clause.is_some() {
            cx.error_spanned_by(
                generics,
                format!(
                    "#[derive(Event)] does not support generic types: an event needs one fixed NAME and route; \
                     declare a concrete type instead (e.g. `struct {}Created {{ .. }}`)",
                    input.ident
                ),
            );
            return None;
        }
        Some(Container {
            ident: &input.ident,
            shape,
        })
    }
}
