//! The handler function as `#[handler]` sees it, with signature checks that
//! need no type information (the rest are trait bounds in the generated code).

use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::ctxt::Ctxt;

/// A handler function whose shape the runtime can call.
pub struct HandlerFn<'a> {
    pub item: &'a ItemFn,
    /// The first argument's type.
    pub event: &'a Type,
    /// The types of the arguments after the event.
    pub extractors: Vec<&'a Type>,
    /// The declared return type; `None` for `()`.
    pub output: Option<&'a Type>,
}

impl<'a> HandlerFn<'a> {
    /// The model of `item`, recording every shape error in `cx`.
    pub fn from_ast(cx: &Ctxt, item: &'a ItemFn) -> Option<Self> {
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            cx.error_spanned_by(
                sig.fn_token,
                "a #[handler] must be an `async fn`: write `async fn` here",
            );
        }
        if let Some(c) = &sig.constness {
            cx.error_spanned_by(c, "a #[handler] cannot be a `const fn`");
        }
        if let syn::Safety::Unsafe(u) = &sig.safety {
            cx.error_spanned_by(u, "a #[handler] cannot be an `unsafe fn`");
        }
        if let Some(abi) = &sig.abi {
            cx.error_spanned_by(abi, "a #[handler] cannot declare an ABI");
        }
        if let Some(v) = &sig.variadic {
            cx.error_spanned_by(v, "a #[handler] cannot be variadic");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &sig.generics,
                "a #[handler] cannot be generic: the runtime needs one concrete event type and concrete extractors",
            );
        }
        let mut types = Vec::new();
        for arg in &sig.inputs {
            match arg {
                FnArg::Receiver(r) => cx.error_spanned_by(
                    r,
                    "a #[handler] is a free function, not a method: remove `self` and take the event as the first argument",
                ),
                FnArg::Typed(t) => {
                    if let Type::ImplTrait(_) = &*t.ty {
                        cx.error_spanned_by(
                            &t.ty,
                            "a #[handler] cannot take `impl Trait` arguments: name the concrete event or extractor type",
                        );
                    } else {
                        types.push(&*t.ty);
                    }
                }
            }
        }
        if sig.inputs.is_empty() {
            cx.error_spanned_by(
                &sig.ident,
                format!(
                    "a #[handler] takes the event as its first argument: `async fn {}(event: MyEvent)`",
                    sig.ident
                ),
            );
        }
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => {
                if contains_impl_trait(ty) {
                    cx.error_spanned_by(
                        ty,
                        "a #[handler] returns `()`, `bool` or `Result<(), E>`, not `impl Trait`",
                    );
                    None
                } else {
                    Some(&**ty)
                }
            }
        };
        if cx.has_errors() {
            return None;
        }
        if let Some(first) = types.first() {
            if let Some(extractor) = extractor_name(first) {
                cx.error_spanned_by(
                    first,
                    format!(
                        "the first argument of a #[handler] is the event; `{extractor}` goes after it: `async fn {}(event: MyEvent, ..)`",
                        sig.ident
                    ),
                );
                return None;
            }
        }
        let mut types = types.into_iter();
        let event = types.next()?;
        Some(HandlerFn {
            item,
            event,
            extractors: types.collect(),
            output,
        })
    }
}

/// `Context` or `State` when a type is written as one of the extractors.
fn extractor_name(ty: &Type) -> Option<&'static str> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident == "Context" && last.arguments.is_empty() {
        Some("Context")
    } else if last.ident == "State" && !last.arguments.is_empty() {
        Some("State<T>")
    } else {
        None
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn errors(item: ItemFn) -> Vec<String> {
        let cx = Ctxt::new();
        let _ = HandlerFn::from_ast(&cx, &item);
        cx.messages()
    }

    #[test]
    fn accepts_patterns_and_extractors() {
        let item: ItemFn = parse_quote! {
            /// docs
            pub async fn f(Ev { id, .. }: Ev, State(db): State<Pool>, ctx: Context) -> bool { true }
        };
        let cx = Ctxt::new();
        let h = HandlerFn::from_ast(&cx, &item).unwrap();
        assert_eq!(h.extractors.len(), 2);
        assert!(h.output.is_some());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(errors(parse_quote!(
            fn f(e: E) {}
        ))[0]
            .contains("async fn"));
        assert!(errors(parse_quote!(
            async fn f() {}
        ))[0]
            .contains("first argument"));
        assert!(errors(parse_quote!(
            async fn f<T>(e: T) {}
        ))[0]
            .contains("generic"));
        assert!(errors(parse_quote!(
            async fn f(&self, e: E) {}
        ))[0]
            .contains("not a method"));
        assert!(errors(parse_quote!(
            async fn f(e: impl Event) {}
        ))[0]
            .contains("impl Trait"));
        assert!(errors(parse_quote!(
            async fn f(e: E) -> impl Sized {}
        ))[0]
            .contains("impl Trait"));
        assert_eq!(
            errors(parse_quote!(
                unsafe fn f<T>() {}
            ))
            .len(),
            4
        );
    }
}
