//! Checks the module layering ARCHITECTURE.md describes: each module refers only to modules of
//! lower layers (and, within `streams`, to its parent), so there are no import cycles.

use std::path::Path;

/// The modules, bottom layer first; a module may use any module of an earlier line.
const LAYERS: &[&[&str]] = &[
    &["pb", "generated", "error", "options"],
    &["range", "tls_refusal", "observe"],
    &["namespace", "transport"],
    &["types", "rpc"],
    &["streams"],
    &["client"],
    &["kv", "lease", "watch", "lock", "election", "cluster", "maintenance", "auth"],
    &["txn"],
    &["layers"],
];

fn layer(module: &str) -> usize {
    LAYERS.iter().position(|l| l.contains(&module)).unwrap_or_else(|| panic!("module {module} has no layer"))
}

/// The `crate::x` modules a source file names outside comments.
fn uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src").chain(std::fs::read_dir(src.join("streams")).expect("streams")) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    let mut wrong = Vec::new();
    for path in files {
        let module = match path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
            Some("streams") => "streams".to_owned(),
            _ => path.file_stem().and_then(|s| s.to_str()).expect("name").to_owned(),
        };
        if module == "lib" {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable");
        for used in uses(&source) {
            if used != module && layer(&used) >= layer(&module) {
                wrong.push(format!("{} uses crate::{used}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "modules using a module of their own or a higher layer:\n{}", wrong.join("\n"));
}
