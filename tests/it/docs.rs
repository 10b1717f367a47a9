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

/// Every operation has an operationId of its own, and answers with its own schema: before, the
/// resources' schemas were all one `Record` (the user's fields), so 47 operations described their
/// answers as users. The user's schema belongs to the users' routes and the login (which answers
/// the logged-in user). `scripts/fuzz-api.sh` also runs openapi-spec-validator on the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_operations_are_unique_and_answer_their_own_schemas() {
    let s = crate::support::TestServer::start(crate::support::DbKind::Sqlite).await;
    let (_, doc) = s.get("/openapi.json").await;
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| match (k.as_str(), v.as_str()) {
                ("$ref", Some(r)) => out.push(r.trim_start_matches("#/components/schemas/").to_owned()),
                _ => refs(v, out),
            }),
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut ids: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut answers: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let operation = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or("(none)").to_owned();
            ids.entry(id).or_default().push(operation.clone());
            let mut named = Vec::new();
            for (status, response) in op["responses"].as_object().expect("responses") {
                if status.starts_with('2') {
                    refs(response, &mut named);
                }
            }
            answers.insert(operation, named);
        }
    }
    let shared: Vec<_> = ids.iter().filter(|(id, ops)| ops.len() > 1 || *id == "(none)").collect();
    assert!(shared.is_empty(), "operationIds not unique: {shared:?}");
    let user_schemas = ["User", "ListResponse_User"];
    let as_users: Vec<&String> = answers
        .iter()
        .filter(|(op, named)| {
            let users = op.contains(" /v2/users") || op.as_str() == "POST /auth/login";
            !users && named.iter().any(|n| user_schemas.contains(&n.as_str()))
        })
        .map(|(op, _)| op)
        .collect();
    assert!(as_users.is_empty(), "{} operations answer with the user's schema: {as_users:?}", as_users.len());
    for (op, schema, spec) in [
        ("GET /v2/users/{id}", "User", "UserSpec"),
        ("GET /v2/workers/{id}", "Worker", "WorkerSpec"),
        ("GET /v2/models/{id}", "Model", "ModelSpec"),
        ("GET /v2/model-instances/{id}", "ModelInstance", "ModelInstanceSpec"),
        ("GET /v2/clusters/{id}", "Cluster", "ClusterSpec"),
        ("GET /v2/inference-backends/{id}", "InferenceBackend", "InferenceBackendSpec"),
        ("GET /v2/workers", "ListResponse_Worker", "WorkerSpec"),
    ] {
        assert_eq!(answers.get(op).map(Vec::as_slice), Some(&[schema.to_owned()][..]), "{op}");
        let mut inner = Vec::new();
        refs(&doc["components"]["schemas"][schema], &mut inner);
        assert!(inner.iter().any(|n| n == spec), "{schema} is made of {inner:?}, not {spec}");
    }
}
