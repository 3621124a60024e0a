//! `#[handler]`: options and signature -> shim + registration.

pub mod ast;
pub mod attr;
pub mod expand;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::Parser;
use syn::ItemFn;

use crate::ctxt::Ctxt;

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
    let opts = match attr::parse_entries.parse2(args) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        let out = handler(args, item);
        syn::parse2::<syn::File>(out.clone()).expect("output is valid Rust");
        out.to_string()
    }

    #[test]
    fn valid_handler_keeps_the_function_and_registers_a_shim() {
        let out = expand(
            quote!(name = "billing"),
            quote!(
                pub async fn bill(e: Order, ctx: Context, State(db): State<Db>) -> bool {
                    true
                }
            ),
        );
        assert!(out.contains("pub async fn bill"));
        assert!(out.contains("fn __heytom_handler_bill"));
        assert!(out.contains("name : \"billing\""));
        assert!(out.contains(
            "< State < Db > as :: heytom_mq :: __private :: FromContext > :: requirement"
        ));
        assert!(!out.contains("compile_error"));
    }

    #[test]
    fn invalid_handler_keeps_the_function_without_registration() {
        let out = expand(
            quote!(retries = 3),
            quote!(
                fn f(e: E) {}
            ),
        );
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.contains("fn f"));
        assert!(!out.contains("inventory"));
    }
}
