//! Tidy checks over the source tree: module layering, a `//!` line atop every file, file length.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which top-level modules each module may import (`crate::<module>`). A lower layer never
/// imports a higher one; see ARCHITECTURE.md.
const LAYERS: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("backends", &["api"]),
    ("placement", &[]),
    ("estimate", &["api", "backends", "placement"]),
    ("config", &[]),
    ("db", &["api"]),
    ("gateway", &["api"]),
    ("server", &["api", "backends", "config", "db", "estimate", "gateway", "placement"]),
    ("client", &["api"]),
    ("worker", &["api", "backends", "client"]),
    ("cli", &["api", "backends", "config", "client", "gateway", "server", "worker"]),
];

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn layers_only_import_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else { continue };
        let Some(ok) = allowed.get(module.as_str()) else { continue };
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let target: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if target != module && allowed.contains_key(target.as_str()) && !ok.contains(&target.as_str()) {
                    violations.push(format!("{}:{}: {module} imports {target}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn every_file_starts_with_a_doc_line_and_stays_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}: no //! line at the top", file.display()));
        }
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("{}: {lines} lines (max {MAX_LINES})", file.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
