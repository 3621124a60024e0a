//! Type names as a reader recognises them, for error messages.

use std::any::type_name;

/// `type_name::<T>()` with every path reduced to its last segment:
/// `sqlx_core::pool::Pool<sqlx_postgres::database::Postgres>` becomes
/// `Pool<Postgres>`, which is what a reader recognises (the crate-internal
/// paths are where the type is defined, not where the user imported it).
pub(crate) fn readable_type_name<T: ?Sized>() -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // Leaked once per type (a handful of state types per app), so the result
    // can live in `&'static str` fields and errors.
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let full = type_name::<T>();
    let mut map = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(full)
        .or_insert_with(|| Box::leak(strip_paths(full).into_boxed_str()))
}

/// Keeps the last segment of every `a::b::C` path in a type name.
pub(crate) fn strip_paths(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, c) in full.char_indices() {
        let is_path_char = c.is_alphanumeric() || c == '_' || c == ':';
        if !is_path_char {
            push_last_segment(&mut out, &full[segment_start..i]);
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    push_last_segment(&mut out, &full[segment_start..]);
    out
}

fn push_last_segment(out: &mut String, path: &str) {
    out.push_str(path.rsplit("::").next().unwrap_or(path));
}

#[cfg(test)]
mod type_name_tests {
    use super::{readable_type_name, strip_paths};

    #[test]
    fn module_paths_are_dropped() {
        assert_eq!(
            strip_paths("sqlx_core::pool::Pool<sqlx_postgres::database::Postgres>"),
            "Pool<Postgres>"
        );
        assert_eq!(
            strip_paths("(alloc::sync::Arc<u8>, &str, [core::option::Option<i32>; 2])"),
            "(Arc<u8>, &str, [Option<i32>; 2])"
        );
        assert_eq!(readable_type_name::<Vec<String>>(), "Vec<String>");
        // Cached: the same pointer twice.
        assert!(std::ptr::eq(
            readable_type_name::<Vec<String>>(),
            readable_type_name::<Vec<String>>()
        ));
    }
}
