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

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn expand(input: DeriveInput) -> String {
        let out = derive(&input);
        syn::parse2::<syn::File>(out.clone()).expect("output is valid Rust");
        out.to_string()
    }

    #[test]
    fn valid_event_expands_to_impl_and_registration() {
        let out = expand(parse_quote! {
            #[kafka(topic = "t", partition_key = id, compression_type = "lz4")]
            struct E { id: u32 }
        });
        assert!(out.contains("impl :: heytom_mq :: Event for E"));
        assert!(out.contains("CompressionType :: Lz4"));
        assert!(out.contains("inventory :: submit !"));
        assert!(!out.contains("compile_error"));
    }

    #[test]
    fn invalid_event_gets_errors_and_a_stub_impl() {
        let out = expand(parse_quote! {
            #[kafka(topic = "bad topic", acks = "2")]
            struct E { id: u32 }
        });
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        assert!(out.contains("impl :: heytom_mq :: Event for E"));
        assert!(out.contains("Route :: Default"));
        assert!(!out.contains("inventory"));
    }

    #[test]
    fn generic_event_gets_only_the_error() {
        let out = expand(parse_quote!(
            struct E<T> {
                t: T,
            }
        ));
        assert_eq!(out.matches("compile_error").count(), 1);
        assert!(!out.contains("impl"));
    }
}
