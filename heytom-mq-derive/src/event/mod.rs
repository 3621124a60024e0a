//! `#[derive(Event)]`: ast -> attr -> check -> expand.

pub mod ast;
pub mod attr;
pub mod check;
pub mod expand;

use proc_macro2::TokenStream;
use syn::DeriveInput;

use crate::ctxt::Ctxt;

/// The whole derive: the impl, or the errors plus a stub impl.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let Some(cont) = ast::Container::from_ast(&cx, input) else {
        return cx.into_compile_errors();
    };
    let attrs = attr::read(&cx, &input.attrs);
    let model = check::check(&cx, &cont, &attrs);
    if cx.has_errors() {
        let stub = expand::stub(&cont);
        let mut out = cx.into_compile_errors();
        out.extend(stub);
        return out;
    }
    expand::expand(&cont, &model)
}
