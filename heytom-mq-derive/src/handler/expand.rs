//! Generates the call shim and the inventory registration of a handler.
//!
//! Every use of a user-written type is spanned at that type, so a signature
//! the runtime cannot call fails at the argument or return type with the
//! `#[diagnostic::on_unimplemented]` message of the trait it misses.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;

use crate::handler::ast::HandlerFn;
use crate::handler::attr::Options;

/// The span of a type's first token (stable `Span::join` is not available).
fn first_span(tokens: &impl ToTokens) -> Span {
    tokens
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// The `T` of a `State<T>` argument as the user wrote it (`sqlx::PgPool`),
/// for startup errors; the whole type for other extractors.
pub(crate) fn state_type_as_written(ty: &syn::Type) -> String {
    let inner = match ty {
        syn::Type::Path(p) => p.path.segments.last().and_then(|seg| match &seg.arguments {
            syn::PathArguments::AngleBracketed(args)
                if seg.ident == "State" && args.args.len() == 1 =>
            {
                match &args.args[0] {
                    syn::GenericArgument::Type(t) => Some(t),
                    _ => None,
                }
            }
            _ => None,
        }),
        _ => None,
    };
    compact(&inner.unwrap_or(ty).to_token_stream().to_string())
}

/// `quote`'s spaced token text (`sqlx :: PgPool < T >`) as Rust is written.
fn compact(spaced: &str) -> String {
    let mut out = String::with_capacity(spaced.len());
    let mut chars = spaced.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ' ' {
            out.push(c);
            continue;
        }
        let prev = out.chars().last();
        let next = chars.peek().copied();
        // Keep a space only between two words (`dyn Trait`, `impl Fn`) and after a comma.
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let keep = prev == Some(',')
            || (prev.is_some_and(word) && next.is_some_and(|n| word(n) || n == '\''));
        if keep {
            out.push(' ');
        }
    }
    out
}

/// The function as written, plus its shim and registration.
pub fn expand(h: &HandlerFn, opts: &Options) -> TokenStream {
    let item = h.item;
    let fn_ident = &item.sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    let shim = format_ident!("__heytom_handler_{}", fn_ident.unraw());
    let name = opts
        .name
        .as_ref()
        .map_or_else(|| fn_name.clone(), |n| n.value.clone());

    let event_ty = h.event;
    let ev = first_span(event_ty);
    let decode = quote_spanned! {ev=>
        let __event: #event_ty = match (::heytom_mq::__private::handler_event::<#event_ty>().decode)(__envelope) {
            ::core::result::Result::Ok(event) => event,
            ::core::result::Result::Err(failure) => return ::heytom_mq::__private::fail(failure),
        };
    };

    let args: Vec<_> = (1..=h.extractors.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let extract = h.extractors.iter().zip(&args).map(|(ty, arg)| {
        quote_spanned! {first_span(ty)=>
            let #arg = match <#ty as ::heytom_mq::__private::FromContext>::from_context(&__ctx, __state) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(err) => {
                    return ::heytom_mq::__private::fail(::heytom_mq::__private::extract_failure(err))
                }
            };
        }
    });
    let requires = h.extractors.iter().map(|ty| {
        let written = state_type_as_written(ty);
        quote_spanned! {first_span(ty)=>
            ::heytom_mq::__private::state_arg(
                <#ty as ::heytom_mq::__private::FromContext>::requirement,
                #written,
            )
        }
    });

    let transactions = h.extractors.iter().map(|ty| {
        quote_spanned! {first_span(ty)=>
            <#ty as ::heytom_mq::__private::FromContext>::transaction
        }
    });
    let idempotent = opts.idempotent;

    let call = quote!(#fn_ident(__event #(, #args)*));
    // Spanned at the signature: a future that is not `Send` fails there.
    let sig_span = item.sig.ident.span();
    let into_failure = match h.output {
        Some(ret) => quote_spanned! {first_span(ret)=>
            ::heytom_mq::__private::into_failure::<#ret>(__output)
        },
        None => quote!(::heytom_mq::__private::into_failure(__output)),
    };
    let body = quote_spanned! {sig_span=>
        ::heytom_mq::__private::boxed(async move {
            let __output = #call.await;
            #into_failure
        })
    };

    let group = match &opts.group {
        Some(g) => {
            let g = &g.value;
            quote!(::core::option::Option::Some(#g))
        }
        None => quote!(::core::option::Option::None),
    };
    let max_attempts = match opts.max_attempts {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let concurrency = match opts.concurrency {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let event_name = quote_spanned!(ev=> ::heytom_mq::__private::handler_event::<#event_ty>().name);
    let event_route =
        quote_spanned!(ev=> ::heytom_mq::__private::handler_event::<#event_ty>().route);

    // `#[handler] #[cfg(..)] async fn ..`: the shim and registration follow the function.
    let cfgs: Vec<_> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();

    quote! {
        #item

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_snake_case, clippy::needless_return)]
        fn #shim(
            __envelope: &::heytom_mq::Envelope,
            __ctx: ::heytom_mq::Context,
            __state: &::heytom_mq::StateMap,
        ) -> ::heytom_mq::__private::BoxFuture<
            'static,
            ::core::result::Result<(), ::heytom_mq::__private::HandlerFailure>,
        > {
            let _ = (&__ctx, __state);
            #decode
            #(#extract)*
            #body
        }

        #(#cfgs)*
        ::heytom_mq::__private::inventory::submit! {
            ::heytom_mq::__private::HandlerRegistration {
                name: #name,
                function: ::core::concat!(::core::module_path!(), "::", #fn_name),
                event_name: #event_name,
                route: #event_route,
                group: #group,
                max_attempts: #max_attempts,
                concurrency: #concurrency,
                requires: &[#(#requires),*],
                idempotent: #idempotent,
                transactions: &[#(#transactions),*],
                call: #shim,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::state_type_as_written;

    fn written(ty: &str) -> String {
        state_type_as_written(&syn::parse_str(ty).unwrap())
    }

    #[test]
    fn state_types_read_as_written() {
        assert_eq!(written("State<sqlx::PgPool>"), "sqlx::PgPool");
        assert_eq!(
            written("State < Arc < Mutex < Vec<String> > > >"),
            "Arc<Mutex<Vec<String>>>"
        );
        assert_eq!(
            written("heytom_mq::State<(u8, &'static str)>"),
            "(u8, &'static str)"
        );
        assert_eq!(written("State<Box<dyn Fn() + Send>>"), "Box<dyn Fn()+Send>");
        assert_eq!(written("Context"), "Context");
    }
}
