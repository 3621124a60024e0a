//! Error collection across one macro invocation (serde_derive's `Ctxt`).

use std::cell::RefCell;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Collects every error of one macro invocation so all of them are reported at once.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    /// A context with no errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error spanned at `tokens`.
    pub fn error_spanned_by<T: ToTokens, M: std::fmt::Display>(&self, tokens: T, message: M) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records a ready error (e.g. a parse error).
    pub fn syn_error(&self, err: syn::Error) {
        self.errors.borrow_mut().push(err);
    }

    /// Whether any error was recorded so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    /// The recorded errors, as `compile_error!` invocations.
    pub fn into_compile_errors(self) -> TokenStream {
        self.errors
            .into_inner()
            .into_iter()
            .map(|e| e.to_compile_error())
            .collect()
    }

    /// The recorded errors, for tests.
    #[cfg(test)]
    pub fn messages(self) -> Vec<String> {
        self.errors
            .into_inner()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }
}
