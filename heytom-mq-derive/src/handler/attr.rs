//! `#[handler(name = "..", group = "..", max_attempts = N, concurrency = N, idempotent)]`.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Token};

use crate::ctxt::Ctxt;
use crate::meta::{self, did_you_mean, list, Spanned};

/// The options `#[handler]` accepts.
pub const HANDLER_KEYS: &[&str] = &["name", "group", "max_attempts", "concurrency", "idempotent"];

/// The options that may stand alone (`idempotent` = `idempotent = true`).
const FLAGS: &[&str] = &["idempotent"];

/// One option: `key = value`, or a bare `key` (a flag).
pub struct Entry {
    pub key: Ident,
    pub value: Option<Expr>,
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // Keywords as keys, so `type = ..` reports "unknown option".
        let key = input.call(Ident::parse_any)?;
        if !input.peek(Token![=]) {
            return Ok(Entry { key, value: None });
        }
        input.parse::<Token![=]>()?;
        Ok(Entry {
            key,
            value: Some(input.parse()?),
        })
    }
}

/// Parses the comma separated options.
pub fn parse_entries(input: ParseStream) -> syn::Result<Vec<Entry>> {
    Ok(Punctuated::<Entry, Token![,]>::parse_terminated(input)?
        .into_iter()
        .collect())
}

/// The options of one handler.
#[derive(Default)]
pub struct Options {
    pub name: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub max_attempts: Option<u32>,
    pub concurrency: Option<usize>,
    pub idempotent: bool,
}

/// Reads the options, recording unknown, duplicate and invalid ones.
pub fn read(cx: &Ctxt, entries: Vec<Entry>) -> Options {
    let mut out = Options::default();
    let mut seen: Vec<String> = Vec::new();
    for Entry { key, value } in entries {
        let name = key.to_string();
        if !HANDLER_KEYS.contains(&name.as_str()) {
            let mut msg = format!("unknown #[handler] option `{name}`");
            if let Some(close) = did_you_mean(&name, HANDLER_KEYS) {
                msg.push_str(&format!("; did you mean `{close}`?"));
            }
            msg.push_str(&format!("\nallowed options: {}", list(HANDLER_KEYS)));
            cx.error_spanned_by(&key, msg);
            continue;
        }
        if seen.contains(&name) {
            cx.error_spanned_by(
                &key,
                format!("duplicate #[handler] option `{name}`; give each option once"),
            );
            continue;
        }
        seen.push(name.clone());
        let value = match value {
            Some(v) => v,
            None if FLAGS.contains(&name.as_str()) => {
                out.idempotent = true;
                continue;
            }
            None => {
                cx.error_spanned_by(&key, format!("expected `{name} = <value>`"));
                continue;
            }
        };
        match name.as_str() {
            "idempotent" => {
                if let Some(b) = meta::expect_bool(cx, &key, &value) {
                    out.idempotent = b.value;
                }
            }
            "name" | "group" => {
                if let Some(s) = meta::expect_str(cx, &key, &value, "\"billing\"") {
                    if s.value.trim().is_empty() {
                        s.error(cx, format!("`{name}` cannot be empty"));
                    } else if name == "name" {
                        out.name = Some(s);
                    } else {
                        out.group = Some(s);
                    }
                }
            }
            "max_attempts" => {
                if let Some(n) = meta::expect_int(cx, &key, &value, "5") {
                    match u32::try_from(n.value) {
                        Ok(v) if v >= 1 => out.max_attempts = Some(v),
                        _ => n.error(
                            cx,
                            format!(
                                "`max_attempts` counts deliveries including the first: it must be between 1 and {}, found {}",
                                u32::MAX,
                                n.value
                            ),
                        ),
                    }
                }
            }
            "concurrency" => {
                if let Some(n) = meta::expect_int(cx, &key, &value, "4") {
                    match u32::try_from(n.value) {
                        Ok(v) if v >= 1 => out.concurrency = Some(v as usize),
                        _ => n.error(
                            cx,
                            format!(
                                "`concurrency` must be between 1 and {}, found {}",
                                u32::MAX,
                                n.value
                            ),
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse::Parser;

    fn read_str(tokens: proc_macro2::TokenStream) -> (Options, Vec<String>) {
        let entries = parse_entries.parse2(tokens).unwrap();
        let cx = Ctxt::new();
        let o = read(&cx, entries);
        (o, cx.messages())
    }

    #[test]
    fn reads_all_options() {
        let (o, errs) = read_str(quote::quote!(
            name = "billing",
            group = "g",
            max_attempts = 3,
            concurrency = 8,
            idempotent
        ));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(o.name.unwrap().value, "billing");
        assert_eq!(o.group.unwrap().value, "g");
        assert_eq!(o.max_attempts, Some(3));
        assert_eq!(o.concurrency, Some(8));
        assert!(o.idempotent);
        let (o, errs) = read_str(quote::quote!(idempotent = false));
        assert!(errs.is_empty(), "{errs:?}");
        assert!(!o.idempotent);
    }

    #[test]
    fn reports_bad_flags() {
        let (_, errs) = read_str(quote::quote!(
            idempotent = "yes",
            name,
            idempotnt,
            idempotent
        ));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("`idempotent` expects `true` or `false`"));
        assert!(errs[1].contains("expected `name = <value>`"));
        assert!(errs[2].contains("did you mean `idempotent`"));
        assert!(errs[3].contains("duplicate #[handler] option `idempotent`"));
    }

    #[test]
    fn reports_every_bad_option() {
        let (_, errs) = read_str(quote::quote!(
            nam = "x",
            name = "",
            max_attempts = 0,
            concurrency = true,
            name = "y"
        ));
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[0].contains("did you mean `name`"));
        assert!(errs[1].contains("cannot be empty"));
        assert!(errs[2].contains("between 1 and"));
        assert!(errs[3].contains("expects an integer literal"));
        assert!(errs[4].contains("duplicate #[handler] option `name`"));
    }
}
