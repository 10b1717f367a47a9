//! Documentation that must match the code: the configuration reference is the binary's own help.

#[test]
fn configuration_reference_matches_the_help_output() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).expect("doc");
    for args in [&["start", "--help"][..], &["server", "--help"], &["worker", "--help"], &["--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env_clear()
            .env("COLUMNS", "120")
            .output()
            .expect("run ferrostack");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            doc.contains(help.trim_end()),
            "docs/configuration.md is stale for `ferrostack {}`: run scripts/gen-config-docs.sh",
            args.join(" ")
        );
    }
}

/// Every `$ref` in the OpenAPI document names a schema it defines (a fuzzer or a client generator
/// skips or fails on routes whose schemas do not resolve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_reference_resolves() {
    let s = crate::support::TestServer::start(crate::support::DbKind::Sqlite).await;
    let (_, doc) = s.get("/openapi.json").await;
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_owned()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "only {} references", all.len());
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut missing: Vec<&String> = all
        .iter()
        .filter(|r| r.strip_prefix("#/components/schemas/").is_none_or(|n| !schemas.contains_key(n)))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "unresolved references: {missing:?}");
}

/// Every subcommand, flag and argument has a help line (an empty one tells a user nothing).
#[test]
fn every_flag_and_argument_says_what_it_is() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                missing.push(format!("`{path}` {id}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none_or(|a| a.to_string().trim().is_empty()) {
                missing.push(format!("`{sub_path}` (the subcommand)"));
            }
            walk(sub, &sub_path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&ferrostack::cli::Cli::command(), "ferrostack", &mut missing);
    assert!(missing.is_empty(), "without a help line:\n{}", missing.join("\n"));
}
