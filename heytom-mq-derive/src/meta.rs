//! `key = value` lists, the syntax shared by `#[kafka(..)]`, `#[rabbitmq(..)]`,
//! `#[event(..)]` and `#[handler(..)]`, and typed readers for their values.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, Token, UnOp};

use crate::ctxt::Ctxt;

/// One `key = value` entry.
pub struct KeyValue {
    pub key: Ident,
    pub value: Expr,
}

impl Parse for KeyValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // Accept keywords as keys so `type = ..` reports "unknown key" rather than a parse error.
        let key = input.call(Ident::parse_any)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!("expected `{key} = <value>`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(KeyValue { key, value })
    }
}

/// Parses a comma separated `key = value` list.
pub fn parse_list(input: ParseStream) -> syn::Result<Vec<KeyValue>> {
    Ok(Punctuated::<KeyValue, Token![,]>::parse_terminated(input)?
        .into_iter()
        .collect())
}

/// A value together with the tokens it came from, to span errors at.
#[derive(Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub tokens: TokenStream,
}

impl<T> Spanned<T> {
    pub fn new(value: T, tokens: impl ToTokens) -> Self {
        Spanned {
            value,
            tokens: tokens.into_token_stream(),
        }
    }

    /// Records an error spanned at this value.
    pub fn error(&self, cx: &Ctxt, message: impl std::fmt::Display) {
        cx.error_spanned_by(&self.tokens, message);
    }
}

/// The expression inside the invisible group a `macro_rules!` `$x:expr` becomes.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => ungroup(&g.expr),
        _ => expr,
    }
}

/// What kind of literal a value is, for "expected ..., found ..." messages.
fn describe(expr: &Expr) -> &'static str {
    match ungroup(expr) {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Str(_) => "a string",
            Lit::Int(_) => "an integer",
            Lit::Bool(_) => "a boolean",
            Lit::Float(_) => "a float",
            Lit::Char(_) => "a character",
            _ => "a literal of another kind",
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) if matches!(
            &**expr,
            Expr::Lit(ExprLit {
                lit: Lit::Int(_),
                ..
            })
        ) =>
        {
            "an integer"
        }
        Expr::Path(p) if p.path.get_ident().is_some() => "an identifier",
        _ => "an expression",
    }
}

fn wrong_type(cx: &Ctxt, key: &Ident, value: &Expr, expected: &str, example: &str) {
    cx.error_spanned_by(
        value,
        format!(
            "`{key}` expects {expected}, found {}: write `{key} = {example}`",
            describe(value)
        ),
    );
}

/// The string of a string literal.
pub fn as_str(value: &Expr) -> Option<Spanned<String>> {
    match ungroup(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(Spanned::new(s.value(), s)),
        _ => None,
    }
}

/// The value of an integer literal, possibly negated.
///
/// `Err` carries a message when the literal does not fit even an `i128`.
pub fn as_int(value: &Expr) -> Option<Result<Spanned<i128>, String>> {
    let value = ungroup(value);
    let (lit, negative) = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => (i, false),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => (i, true),
            _ => return None,
        },
        _ => return None,
    };
    Some(match lit.base10_parse::<i128>() {
        Ok(v) => Ok(Spanned::new(if negative { -v } else { v }, value)),
        Err(_) => Err("integer literal is too large".to_owned()),
    })
}

/// Reads a string literal, recording an error for anything else.
pub fn expect_str(cx: &Ctxt, key: &Ident, value: &Expr, example: &str) -> Option<Spanned<String>> {
    let s = as_str(value);
    if s.is_none() {
        wrong_type(cx, key, value, "a string literal", example);
    }
    s
}

/// Reads an integer literal, recording an error for anything else.
pub fn expect_int(cx: &Ctxt, key: &Ident, value: &Expr, example: &str) -> Option<Spanned<i128>> {
    match as_int(value) {
        Some(Ok(v)) => Some(v),
        Some(Err(msg)) => {
            cx.error_spanned_by(value, format!("`{key}`: {msg}"));
            None
        }
        None => {
            wrong_type(cx, key, value, "an integer literal", example);
            None
        }
    }
}

/// Reads a boolean literal, recording an error for anything else.
pub fn expect_bool(cx: &Ctxt, key: &Ident, value: &Expr) -> Option<Spanned<bool>> {
    match ungroup(value) {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some(Spanned::new(b.value, b)),
        _ => {
            wrong_type(cx, key, value, "`true` or `false`", "true");
            None
        }
    }
}

/// Reads an identifier or a string literal naming one (`partition_key = order_id`).
pub fn expect_ident_or_str(
    cx: &Ctxt,
    key: &Ident,
    value: &Expr,
    example: &str,
) -> Option<Spanned<String>> {
    match ungroup(value) {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => match p.path.get_ident() {
            Some(ident) => Some(Spanned::new(ident.unraw().to_string(), ident)),
            None => {
                wrong_type(cx, key, value, "a field name", example);
                None
            }
        },
        _ => match as_str(value) {
            Some(s) => Some(s),
            None => {
                wrong_type(cx, key, value, "a field name", example);
                None
            }
        },
    }
}

/// Edit distance, for "did you mean" hints on misspelled keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest allowed key to a misspelled one, if any is close.
pub fn did_you_mean<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) || k.starts_with(key) || key.starts_with(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// "`a`, `b`, `c`"
pub fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    quoted.join(", ")
}

/// "`a`, `b` or `c`"
pub fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        let keys = ["topic", "retention_ms", "group_id", "acks"];
        assert_eq!(did_you_mean("topc", &keys), Some("topic"));
        assert_eq!(did_you_mean("retention", &keys), Some("retention_ms"));
        assert_eq!(did_you_mean("groupid", &keys), Some("group_id"));
        assert_eq!(did_you_mean("zzzzzzzz", &keys), None);
    }

    #[test]
    fn lists_alternatives() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn reads_negative_integers() {
        let e: Expr = syn::parse_quote!(-1);
        assert_eq!(as_int(&e).map(|r| r.map(|s| s.value)), Some(Ok(-1)));
        let e: Expr = syn::parse_quote!(86_400_000u64);
        assert_eq!(as_int(&e).map(|r| r.map(|s| s.value)), Some(Ok(86_400_000)));
        let e: Expr = syn::parse_quote!("3");
        assert!(as_int(&e).is_none());
    }

    #[test]
    fn sees_through_macro_rules_groups() {
        let inner: Expr = syn::parse_quote!(-1);
        let grouped = Expr::Group(syn::ExprGroup {
            attrs: Vec::new(),
            group_token: Default::default(),
            expr: Box::new(inner),
        });
        assert_eq!(as_int(&grouped).map(|r| r.map(|s| s.value)), Some(Ok(-1)));
    }
}
