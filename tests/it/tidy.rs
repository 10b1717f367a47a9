//! Tidy checks over the source tree: module layering, a `//!` line atop every file, file length,
//! and the dependency policy of deny.toml (licences, sources, no unused dependency).

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
    // The control plane: from `server` only what `CONTROL_FROM_SERVER` names.
    ("control", &["api", "backends", "config", "db", "estimate", "gateway", "placement", "server"]),
    ("server", &["api", "backends", "config", "control", "db", "estimate", "gateway", "placement"]),
    ("client", &["api"]),
    ("worker", &["api", "backends", "client"]),
    ("cli", &["api", "backends", "config", "client", "control", "gateway", "server", "worker"]),
];

/// What the control plane may use from `server` (its HTTP side): the token helpers and the
/// embedded backend catalog. Handlers, `AppState`, the router and the gateway's feed stay out.
const CONTROL_FROM_SERVER: &[&str] =
    &["server::auth::server_token", "server::auth::random_token", "server::bootstrap::catalog"];

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
            for target in imported_modules(line) {
                if target != module && allowed.contains_key(target.as_str()) && !ok.contains(&target.as_str()) {
                    violations.push(format!("{}:{}: {module} imports {target}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_control_plane_uses_only_token_helpers_and_the_catalog_from_server() {
    let control = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control");
    let mut files = Vec::new();
    rust_files(&control, &mut files);
    assert!(files.len() > 5, "src/control has its modules");
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("server::") {
                // `crate::server::…` only (not `route_snapshot::` or a word ending in server).
                if !line[..i].ends_with("crate::") {
                    continue;
                }
                let rest = &line[i..];
                if !CONTROL_FROM_SERVER.iter().any(|ok| rest.starts_with(ok)) {
                    violations.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
            if line.contains("crate::{") && imported_modules(line).iter().any(|m| m == "server") {
                violations.push(format!("{}:{}: grouped import of server: name the item", file.display(), n + 1));
            }
        }
    }
    assert!(violations.is_empty(), "the control plane uses server beyond its allowance:\n{}", violations.join("\n"));
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

/// Every top-level module a line imports: `crate::a::…` and each of `crate::{a, b::c}`.
fn imported_modules(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = list.split('}').next().unwrap_or("");
            out.extend(list.split(',').map(ident).filter(|m| !m.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out
}

#[test]
fn grouped_imports_are_seen_by_the_layer_check() {
    assert_eq!(imported_modules("use crate::{api::X, db, server::y};"), ["api", "db", "server"]);
    assert_eq!(imported_modules("let a = crate::gateway::f(crate::api::g());"), ["gateway", "api"]);
}

/// The licence expression `expr` (SPDX, with the old `/` for OR) is satisfied by `allowed`.
fn licence_ok(expr: &str, allowed: &[String]) -> bool {
    const GROUP_OK: &str = "allowed-group";
    let expr = expr.replace('/', " OR ");
    // A parenthesised group, innermost first, stands for whether it is satisfied.
    if let Some(close) = expr.find(')') {
        let open = expr[..close].rfind('(').unwrap_or(0);
        let group = if licence_ok(&expr[open + 1..close], allowed) { GROUP_OK } else { "refused-group" };
        return licence_ok(&format!("{}{group}{}", &expr[..open], &expr[close + 1..]), allowed);
    }
    expr.split(" OR ")
        .any(|any| any.split(" AND ").map(str::trim).all(|term| term == GROUP_OK || allowed.iter().any(|a| a == term)))
}

#[test]
fn licence_expressions_are_read_as_spdx_means() {
    let allowed: Vec<String> = ["MIT", "Apache-2.0", "Unicode-3.0"].map(String::from).to_vec();
    let cases = [
        ("MIT", true),
        ("MIT/Apache-2.0", true),
        ("GPL-3.0", false),
        ("GPL-3.0 OR MIT", true),
        ("MIT AND GPL-3.0", false),
        ("(MIT OR Apache-2.0) AND Unicode-3.0", true),
        ("(MIT OR Apache-2.0) AND BSD-3-Clause", false),
    ];
    for (expr, want) in cases {
        assert_eq!(licence_ok(expr, &allowed), want, "{expr}");
    }
}

/// The dependency policy in deny.toml holds: every package's licence is on its allow list, every
/// package comes from crates.io (or is this one), and every dependency Cargo.toml declares is used.
#[test]
fn dependencies_are_licensed_sourced_and_used() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deny = std::fs::read_to_string(root.join("deny.toml")).expect("deny.toml");
    let list = deny.split("allow = [").nth(1).and_then(|s| s.split(']').next()).expect("deny.toml: [licenses] allow");
    let allowed: Vec<String> =
        list.split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect();
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root)
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut problems = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = format!("{} {}", p["name"].as_str().unwrap_or("?"), p["version"].as_str().unwrap_or("?"));
        match p["license"].as_str() {
            Some(l) if licence_ok(l, &allowed) => {}
            l => problems.push(format!("{name}: licence {l:?} is not allowed by deny.toml")),
        }
        let source = p["source"].as_str();
        if source.is_some_and(|s| s != "registry+https://github.com/rust-lang/crates.io-index") {
            problems.push(format!("{name}: from {source:?}, not crates.io"));
        }
    }
    // Declared dependencies (not dev-) are named somewhere in src/ or build.rs.
    let ours = meta["packages"].as_array().expect("packages").iter().find(|p| p["name"] == "ferrostack").expect("us");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.push(root.join("build.rs"));
    let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
    for dep in ours["dependencies"].as_array().expect("deps") {
        if dep["kind"].is_null() {
            let krate = dep["name"].as_str().expect("name").replace('-', "_");
            if !text.contains(&format!("{krate}::")) && !text.contains(&format!("use {krate}")) {
                problems.push(format!("dependency {krate} is declared in Cargo.toml but nothing in src/ uses it"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Below the crate's top-level modules, a module is `pub(crate)` unless the binary, the examples or
/// these tests reach into it, so the compiler reports the dead code in it. A new `pub mod` needs a
/// reason to be here.
const PUBLIC_SUBMODULES: &[&str] = &[
    "backends::render",
    "control::autoscaler",
    "control::leader",
    "control::scheduler",
    "db::lease",
    "gateway::prefix",
    "gateway::snapshot",
    "server::auth",
    "server::error",
    "server::policy",
    "server::routing",
    "server::streams",
    "server::throttle",
    "worker::agent",
    "worker::gpu",
    "worker::gpu::simulate",
    "worker::net",
];

#[test]
fn submodules_are_crate_private_unless_reached_from_outside() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut public = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel == Path::new("lib.rs") {
            continue;
        }
        // The module path of the file's own module: `a/b/mod.rs` and `a/b.rs` are both `a::b`.
        let mut parts: Vec<String> =
            rel.with_extension("").components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let text = std::fs::read_to_string(file).expect("read");
        for line in text.lines() {
            let Some(name) = line.trim_start().strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')) else {
                continue;
            };
            public.push(format!("{}::{name}", parts.join("::")));
        }
    }
    public.sort();
    assert_eq!(public, PUBLIC_SUBMODULES, "a `pub mod` below the top level that is not listed, or listed and gone");
}
