//! `#[handler]`: options and signature -> shim + registration.

pub mod ast;
pub mod attr;
pub mod expand;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::Parser;
use syn::ItemFn;

use crate::ctxt::Ctxt;
use crate::meta;

/// The whole attribute macro: the function plus its registration, or the
/// function unchanged plus the errors.
pub fn handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(err) => {
            let mut out = syn::Error::new(
                err.span(),
                "#[handler] goes on an `async fn` that takes the event as its first argument",
            )
            .to_compile_error();
            out.extend(input);
            return out;
        }
    };
    let cx = Ctxt::new();
    let opts = match meta::parse_list.parse2(args) {
        Ok(entries) => attr::read(&cx, entries),
        Err(err) => {
            cx.syn_error(err);
            attr::Options::default()
        }
    };
    let model = ast::HandlerFn::from_ast(&cx, &item);
    match model {
        Some(h) if !cx.has_errors() => expand::expand(&h, &opts),
        _ => {
            // Keep the function so its body still type-checks and callers still resolve.
            let mut out = cx.into_compile_errors();
            out.extend(item.into_token_stream());
            out
        }
    }
}
