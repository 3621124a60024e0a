//! The structure `docs/architecture.md` describes, checked on the source:
//! every `crate::<module>` a file of `src/` names is in its own layer or a
//! lower one (core < transports < producer < outbox < app), and no file is
//! over 600 lines. A change that makes the core import a transport, or a
//! transport the app, fails here with the file and the import.

use std::path::{Path, PathBuf};

/// The layer of a top-level module of the crate.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "event" | "handler" | "dispatch" | "retry" | "error" | "redact" | "telemetry" => 0,
        "transport" => 1,
        "producer" => 2,
        "outbox" | "inbox" => 3,
        "app" | "consumer" | "manual" | "lib" | "prelude" | "__private" => 4,
        "testing" => 4,
        "dashboard" => 5,
        "health" | "asyncapi" => 4,
        _ => return None,
    })
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The modules named as `crate::<module>` (or `$crate::<module>`) in `text`.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.push(name);
        }
    }
    out
}

#[test]
fn no_import_runs_from_a_lower_layer_to_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    assert!(
        all.len() > 20,
        "found only {} files under {}",
        all.len(),
        src.display()
    );
    let mut upward = Vec::new();
    for file in &all {
        let own = module_of(&src, file);
        let Some(own_layer) = layer(&own) else {
            panic!(
                "{}: module `{own}` has no layer in this test",
                file.display()
            );
        };
        let text = std::fs::read_to_string(file).expect("readable");
        for line in text.lines() {
            // Doc comments show paths users write; only code counts.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for target in imports(line) {
                match layer(&target) {
                    Some(l) if l > own_layer => upward.push(format!(
                        "{} (layer {own_layer}) imports crate::{target} (layer {l}): {}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        line.trim()
                    )),
                    Some(_) => {}
                    None => panic!("{}: crate::{target} is not a known module", file.display()),
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a lower layer to a higher one:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let long: Vec<String> = all
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > 600).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job:\n{}", long.join("\n"));
}
