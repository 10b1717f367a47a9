//! Inference backends over HTTP and the CLI, on SQLite and PostgreSQL: seeding, GPUStack's YAML
//! examples, refusals that name the rule (and change nothing), round trips, list shapes.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, SseReader, TestServer};

both_dbs!(
    built_ins_and_community_are_seeded_once,
    every_seed_example_imports_or_names_the_rule,
    bad_yaml_is_a_400_naming_the_field_and_changes_nothing,
    delete_rules,
    names_are_immutable_and_unique,
    built_ins_take_custom_versions_only,
    list_all_and_watch_shapes,
    cli_apply_list_export,
    saving_an_engine_without_a_key_answers_a_warning,
);

const BASE: &str = "/v2/inference-backends";
const BUILT_IN: [&str; 4] = ["vLLM", "SGLang", "MindIE", "VoxBox"];
const COMMUNITY: [&str; 4] = ["llama.cpp", "TensorRT-LLM", "Kokoro-FastAPI", "Text-Embeddings-Inference"];

async fn admin(kind: DbKind) -> TestServer {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    s
}

async fn all(s: &TestServer) -> Vec<Value> {
    let (status, body) = s.get(&format!("{BASE}/all")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("/all is an array").clone()
}

async fn by_name(s: &TestServer, name: &str) -> Value {
    let (status, body) = s.get(&format!("{BASE}/backend_name/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    body
}

async fn export(s: &TestServer, id: i64) -> String {
    let res = s.http.get(s.url(&format!("{BASE}/{id}/yaml"))).send().await.expect("get yaml");
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("text/yaml"), "{ct}");
    res.text().await.expect("yaml text")
}

/// The resource's own fields: the answer without id, version and timestamps.
fn fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        // `warnings` is in what a save answers, not in a read.
        for key in ["id", "version", "created_at", "updated_at", "warnings"] {
            map.remove(key);
        }
    }
    v
}

fn assert_refused(status: StatusCode, body: &Value, field: &str, words: &str) {
    assert!(status.is_client_error(), "{status}: {body}");
    assert_eq!(body["code"], status.as_u16(), "{body}");
    assert!(body["reason"].is_string(), "{body}");
    assert_eq!(body["field"], field, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{message:?} lacks {words:?}");
}

async fn built_ins_and_community_are_seeded_once(kind: DbKind) {
    let mut s = admin(kind).await;
    let backends = all(&s).await;
    assert_eq!(backends.len(), 8, "{backends:?}");
    for name in BUILT_IN {
        let b = by_name(&s, name).await;
        assert_eq!(
            (b["is_built_in"].clone(), b["backend_source"].clone(), b["enabled"].clone()),
            (json!(true), json!("built_in"), json!(true))
        );
        let default = b["default_version"].as_str().expect("default version");
        assert!(b["version_configs"][default]["built_in_frameworks"].is_array(), "{name}: {b}");
    }
    assert_eq!(by_name(&s, "MindIE").await["health_check_path"], "/info");
    for name in COMMUNITY {
        let b = by_name(&s, name).await;
        assert_eq!((b["backend_source"].clone(), b["enabled"].clone()), (json!("community"), json!(false)), "{b}");
    }
    // Case-insensitive lookup.
    assert_eq!(by_name(&s, "VLLM").await["backend_name"], "vLLM");

    // An operator's edit survives a restart; nothing is seeded twice.
    let vllm = by_name(&s, "vLLM").await;
    let (status, body) = s.post(&format!("{BASE}/{}/disable", vllm["id"]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.stop().await;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
    let again = TestServer::start_with(dir, s.database_url.clone()).await;
    again.login_admin().await;
    assert_eq!(all(&again).await.len(), 8);
    assert_eq!(by_name(&again, "vLLM").await["enabled"], false);
}

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backends");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_stem().and_then(|n| n.to_str()).expect("name").to_string();
            (name, std::fs::read_to_string(&p).expect("read fixture"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{} fixtures", files.len());
    files
}

/// The seed examples whose rule breaks, with the field and the words the refusal must contain.
const REFUSED: &[(&str, &str, &str)] = &[
    ("tensorrt-llm", "backend_name", "-custom"),
    ("tensorrt-llm-port-only", "backend_name", "-custom"),
    ("community-tensorrt-llm", "backend_name", "-custom"),
    ("community-llama-cpp", "default_version", "\"v1-custom\" is not one of the versions"),
];

async fn every_seed_example_imports_or_names_the_rule(kind: DbKind) {
    let s = admin(kind).await;
    let before = all(&s).await;
    for (name, content) in fixtures() {
        let (status, body) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": content })).await;
        if let Some((_, field, words)) = REFUSED.iter().find(|(n, _, _)| *n == name) {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
            assert_refused(status, &body, field, words);
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["backend_source"], "custom", "{name}");
        assert_eq!(body["is_built_in"], false, "{name}");
        // Export, delete, import the export: the same backend and the same YAML come back.
        let id = body["id"].as_i64().expect("id");
        let exported = export(&s, id).await;
        let (status, _) = s.delete(&format!("{BASE}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let (status, again) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": exported })).await;
        assert_eq!(status, StatusCode::OK, "{name}: {again}");
        assert_eq!(fields(&again), fields(&body), "{name}");
        let id = again["id"].as_i64().expect("id");
        assert_eq!(export(&s, id).await, exported, "{name}");
        // Re-importing over itself changes nothing but the row version.
        let (status, same) = s.put(&format!("{BASE}/{id}/from-yaml"), json!({ "content": exported })).await;
        assert_eq!(status, StatusCode::OK, "{name}: {same}");
        assert_eq!(fields(&same), fields(&body), "{name}");
        let (status, _) = s.delete(&format!("{BASE}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
    }
    assert_eq!(all(&s).await, before);
}

async fn bad_yaml_is_a_400_naming_the_field_and_changes_nothing(kind: DbKind) {
    let s = admin(kind).await;
    let good =
        "backend_name: demo-custom\nversion_configs:\n  v1:\n    image_name: demo:1\n    custom_framework: cpu\n";
    let (status, created) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": good })).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_i64().expect("id");
    let before = all(&s).await;
    let cases: &[(&str, &str, &str)] = &[
        ("backend_name: 'demo-custom\n", "content", "YAML syntax error at line"),
        ("backend_name: demo-custom\n  bad: indent\n", "content", "line 2"),
        ("", "content", "empty"),
        ("backend_name: [a, b]\n", "backend_name", "expected a string"),
        ("backend_name: demo-custom\ndefault_backend_param: --x\n", "default_backend_param", "expected a list"),
        ("backend_name: demo-custom\nenabled: maybe\n", "enabled", "line 2"),
        ("backend_name: demo-custom\nbackend_nam: x\n", "backend_nam", "unknown key"),
        ("backend_name: demo-custom\nversion_configs:\n  v1:\n    image: x\n", "version_configs.v1.image", "line 4"),
        (
            "backend_name: demo-custom\nversion_configs:\n  v1:\n    custom_framework: cuda\n",
            "version_configs.v1.image_name",
            "every version needs an image_name",
        ),
        (
            "backend_name: demo-custom\nversion_configs:\n  v1:\n    image_name: x\n",
            "version_configs.v1.custom_framework",
            "framework",
        ),
        ("backend_name: demo-custom\nhealth_check_path: health\n", "health_check_path", "must start with"),
    ];
    for (yaml, field, words) in cases {
        for (method, path) in [("POST", format!("{BASE}/from-yaml")), ("PUT", format!("{BASE}/{id}/from-yaml"))] {
            let body = json!({ "content": yaml });
            let (status, answer) = if method == "POST" { s.post(&path, body).await } else { s.put(&path, body).await };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {yaml:?}: {answer}");
            assert_refused(status, &answer, field, words);
        }
    }
    // The request envelope itself.
    let (status, body) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": 5 })).await;
    assert_refused(status, &body, "content", "invalid type");
    let (status, body) = s.post(&format!("{BASE}/from-yaml"), json!({ "yaml": good })).await;
    assert_refused(status, &body, "yaml", "unknown field");
    // JSON create: unknown and mistyped fields are named too.
    let (status, body) = s.post(BASE, json!({ "backend_name": "x-custom", "image": "y" })).await;
    assert_refused(status, &body, "image", "unknown field");
    let (status, body) = s.post(BASE, json!({ "backend_name": "x-custom", "enabled": "yes" })).await;
    assert_refused(status, &body, "enabled", "invalid type");
    assert_eq!(all(&s).await, before);
}

async fn delete_rules(kind: DbKind) {
    let s = admin(kind).await;
    for (name, words) in
        [("vLLM", "built_in backends cannot be deleted"), ("llama.cpp", "community backends cannot be deleted")]
    {
        let id = by_name(&s, name).await["id"].clone();
        let (status, body) = s.delete(&format!("{BASE}/{id}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_refused(status, &body, "backend_name", words);
        assert_eq!(body["reason"], "RuleViolation");
    }
    let content = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backends/kokoro-custom.yaml"),
    )
    .expect("fixture");
    let (status, created) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": content })).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (status, _) = s.delete(&format!("{BASE}/{}", created["id"])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get(&format!("{BASE}/{}", created["id"])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(all(&s).await.len(), 8);
}

fn demo(name: &str) -> Value {
    json!({
        "backend_name": name,
        "default_version": "v1",
        "default_run_command": "serve {{model_path}} --port {{port}}",
        "version_configs": {"v1": {"image_name": "demo:1", "custom_framework": "cuda"}},
    })
}

async fn names_are_immutable_and_unique(kind: DbKind) {
    let s = admin(kind).await;
    let (status, created) = s.post(BASE, demo("Demo-custom")).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["backend_source"], "custom");
    let id = created["id"].as_i64().expect("id");
    // A client cannot make its backend built-in or community.
    let mut forged = demo("forged-custom");
    forged["backend_source"] = json!("built_in");
    forged["is_built_in"] = json!(true);
    let (status, body) = s.post(BASE, forged).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["backend_source"].clone(), body["is_built_in"].clone()), (json!("custom"), json!(false)));

    // A null health path ("always ready") survives GET → PUT of the whole object, GPUStack's
    // read-only fields and all; it does not turn into the default path.
    let mut always_ready = demo("ready-custom");
    always_ready["health_check_path"] = Value::Null;
    let (status, made) = s.post(BASE, always_ready).await;
    assert_eq!((status, made["health_check_path"].clone()), (StatusCode::OK, Value::Null), "{made}");
    let (status, again) = s.put(&format!("{BASE}/{}", made["id"]), made.clone()).await;
    assert_eq!((status, again["health_check_path"].clone()), (StatusCode::OK, Value::Null), "{again}");

    let (status, body) = s.post(BASE, demo("DEMO-custom")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_refused(status, &body, "backend_name", "already used by \"Demo-custom\"");
    for name in ["vllm", "llama.cpp", "Custom"] {
        let (status, body) = s.post(BASE, demo(name)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_refused(status, &body, "backend_name", "-custom");
    }
    let before = s.get(&format!("{BASE}/{id}")).await.1;
    let (status, body) = s.put(&format!("{BASE}/{id}"), demo("renamed-custom")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_refused(status, &body, "backend_name", "cannot change after creation");
    let mut promote = demo("Demo-custom");
    promote["backend_source"] = json!("community");
    let (status, body) = s.put(&format!("{BASE}/{id}"), promote).await;
    assert_refused(status, &body, "backend_source", "set by the server");
    assert_eq!(s.get(&format!("{BASE}/{id}")).await.1, before);

    // Optimistic concurrency: a stale version is a 409, in the header or the query.
    let mut edit = demo("Demo-custom");
    edit["description"] = json!("edited");
    let (status, body) = s.put(&format!("{BASE}/{id}?version=1"), edit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    let (status, body) = s.put(&format!("{BASE}/{id}?version=1"), edit.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "VersionConflict");
    let res = s.http.put(s.url(&format!("{BASE}/{id}"))).header("if-match", "\"1\"").json(&edit).send().await;
    assert_eq!(res.expect("put").status(), StatusCode::CONFLICT);
    let res = s.http.put(s.url(&format!("{BASE}/{id}"))).header("if-match", "2").json(&edit).send().await;
    assert_eq!(res.expect("put").status(), StatusCode::OK);
}

async fn built_ins_take_custom_versions_only(kind: DbKind) {
    let s = admin(kind).await;
    let vllm = by_name(&s, "vLLM").await;
    let id = vllm["id"].as_i64().expect("id");
    let exported = export(&s, id).await;
    let path = format!("{BASE}/{id}/from-yaml");
    // Its own export goes back unchanged.
    let (status, body) = s.put(&path, json!({ "content": exported })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fields(&body), fields(&vllm));

    let add = |version: &str| {
        format!(
            "backend_name: vLLM\nversion_configs:\n  {version}:\n    image_name: vllm/vllm-openai:v0.12.0\n    custom_framework: cuda\n"
        )
    };
    let (status, body) = s.put(&path, json!({ "content": add("0.12.0") })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_refused(status, &body, "version_configs.0.12.0", "must end with \"-custom\"");
    let (status, body) = s.put(&path, json!({ "content": add("0.11.0") })).await;
    assert_refused(status, &body, "version_configs.0.11.0", "catalog versions");
    let (status, body) = s.put(&path, json!({ "content": "backend_name: vLLM\ndefault_version: 0.10.2\n" })).await;
    assert_refused(status, &body, "default_version", "maintained by the built-in catalog");
    assert_eq!(fields(&by_name(&s, "vLLM").await), fields(&vllm));

    let (status, body) = s.put(&path, json!({ "content": add("0.12.0-custom") })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version_configs"]["0.12.0-custom"]["image_name"], "vllm/vllm-openai:v0.12.0");
    assert!(body["version_configs"]["0.11.0"]["built_in_frameworks"].is_array(), "{body}");
    assert_eq!(body["default_run_command"], vllm["default_run_command"]);
    let (_, list) = s.get(&format!("{BASE}/list")).await;
    let item = list["items"].as_array().expect("items").iter().find(|i| i["backend_name"] == "vLLM").cloned();
    let versions: Vec<Value> = item.expect("vLLM listed")["versions"].as_array().expect("versions").clone();
    assert!(versions.iter().any(|v| v["version"] == "0.12.0-custom" && v["frameworks"] == json!(["cuda"])));
}

async fn list_all_and_watch_shapes(kind: DbKind) {
    let s = admin(kind).await;
    let (status, page) = s.get(&format!("{BASE}?perPage=3&page=2&sort_by=name")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["pagination"], json!({"page": 2, "perPage": 3, "total": 8, "totalPage": 3}));
    assert_eq!(page["items"].as_array().expect("items").len(), 3);
    let (_, found) = s.get(&format!("{BASE}?search=LAMA")).await;
    assert_eq!(found["items"][0]["backend_name"], "llama.cpp");

    let listed = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["backend_name"].as_str().expect("name").into())
            .collect()
    };
    let (status, list) = s.get(&format!("{BASE}/list")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(listed(&list), BUILT_IN);
    let vllm = &list["items"][0];
    for key in ["is_built_in", "backend_source", "enabled", "default_version", "default_backend_param", "default_env"] {
        assert!(vllm.get(key).is_some(), "{key} missing in {vllm}");
    }
    assert!(vllm["versions"].as_array().expect("versions").iter().any(|v| v["version"] == "0.11.0"
        && v["frameworks"].as_array().is_some_and(|f| f.contains(&json!("cuda")))));

    // Enabling a community backend makes it deployable; disabling takes it off the list again.
    let llama = by_name(&s, "llama.cpp").await;
    let (status, body) = s.post(&format!("{BASE}/{}/enable", llama["id"]), json!({})).await;
    assert_eq!((status, body["enabled"].clone()), (StatusCode::OK, json!(true)), "{body}");
    let (_, list) = s.get(&format!("{BASE}/list")).await;
    assert!(listed(&list).contains(&"llama.cpp".to_string()));
    let cpu = list["items"].as_array().expect("items").iter().find(|i| i["backend_name"] == "llama.cpp").cloned();
    assert!(cpu.expect("listed")["versions"].as_array().expect("versions").iter().any(|v| v["version"] == "cpu"));
    let mut edit = fields(&llama);
    edit["enabled"] = json!(false);
    let (status, body) = s.put(&format!("{BASE}/{}", llama["id"]), edit).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend_source"], "community");
    let (_, list) = s.get(&format!("{BASE}/list")).await;
    assert_eq!(listed(&list), BUILT_IN);

    let (_, doc) = s.get("/openapi.json").await;
    for path in
        ["", "/list", "/all", "/{id}", "/backend_name/{backend_name}", "/from-yaml", "/{id}/from-yaml", "/{id}/yaml"]
    {
        assert!(doc["paths"].get(format!("{BASE}{path}")).is_some(), "{path} missing from /openapi.json");
    }

    // Watch: the replay carries the displayed form (catalog versions merged), then the changes.
    let res = s
        .http
        .get(s.url(&format!("{BASE}?watch=true")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("watch");
    let mut events = SseReader::new(res);
    let (_, first) = events.next(Duration::from_secs(5)).await.expect("replay");
    assert_eq!(first["type"], "CREATED");
    assert!(first["data"]["version_configs"]["0.11.0"].is_object(), "{first}");
    for _ in 1..8 {
        events.next(Duration::from_secs(5)).await.expect("replay");
    }
    let (status, _) = s.post(&format!("{BASE}/{}/disable", first["data"]["id"]), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, change) = events.next(Duration::from_secs(5)).await.expect("change");
    assert_eq!((change["type"].clone(), change["data"]["enabled"].clone()), (json!("UPDATED"), json!(false)));
    assert!(change["data"]["version_configs"]["0.11.0"].is_object(), "{change}");
}

async fn cli(s: &TestServer, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
        .args(args)
        .env("FERROSTACK_SERVER_URL", &s.base)
        .env("FERROSTACK_API_KEY", key)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("run ferrostack");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn cli_apply_list_export(kind: DbKind) {
    let s = admin(kind).await;
    let key = s.api_key(json!({"name": "cli"})).await;
    let file = "tests/fixtures/backends/environment-variables.yaml";
    let (ok, out, err) = cli(&s, &key, &["backend", "apply", "-f", file]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("created backend advanced-backend-custom"), "{out}");
    let version = by_name(&s, "advanced-backend-custom").await["version"].clone();
    let (ok, out, err) = cli(&s, &key, &["backend", "apply", "-f", file]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("unchanged backend advanced-backend-custom"), "{out}");
    assert_eq!(by_name(&s, "advanced-backend-custom").await["version"], version, "an unchanged apply is a no-op");
    let changed = std::fs::read_to_string(file).expect("yaml").replace("LOG_LEVEL: info", "LOG_LEVEL: debug");
    let edited = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(edited.path(), changed).expect("write");
    let (ok, out, err) = cli(&s, &key, &["backend", "apply", "-f", &edited.path().display().to_string()]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("updated backend advanced-backend-custom"), "{out}");
    assert_ne!(by_name(&s, "advanced-backend-custom").await["version"], version);
    let (ok, out, err) = cli(&s, &key, &["backend", "apply", "-f", file]).await;
    assert!(ok, "{out}{err}");

    let (ok, out, err) = cli(&s, &key, &["backend", "list"]).await;
    assert!(ok, "{err}");
    for name in ["advanced-backend-custom", "vLLM", "llama.cpp"] {
        assert!(out.contains(name), "{name} not in {out}");
    }
    let id = by_name(&s, "advanced-backend-custom").await["id"].as_i64().expect("id");
    let (ok, out, err) = cli(&s, &key, &["backend", "export", "advanced-backend-custom"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, export(&s, id).await);

    let (ok, out, err) = cli(&s, &key, &["backend", "get", "ADVANCED-backend-custom"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["default_env"]["LOG_LEVEL"], "info");

    let (ok, _, err) = cli(&s, &key, &["backend", "enable", "llama.cpp"]).await;
    assert!(ok, "{err}");
    assert_eq!(by_name(&s, "llama.cpp").await["enabled"], true);
    let (ok, _, err) = cli(&s, &key, &["backend", "disable", "llama.cpp"]).await;
    assert!(ok, "{err}");
    assert_eq!(by_name(&s, "llama.cpp").await["enabled"], false);

    let (ok, _, err) = cli(&s, &key, &["backend", "delete", "vLLM"]).await;
    assert!(!ok);
    assert!(err.contains("built_in backends cannot be deleted"), "{err}");
    let (ok, _, err) = cli(&s, &key, &["backend", "apply", "-f", "tests/fixtures/backends/tensorrt-llm.yaml"]).await;
    assert!(!ok);
    assert!(err.contains("-custom"), "{err}");
    let (ok, out, err) = cli(&s, &key, &["backend", "delete", "advanced-backend-custom"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(all(&s).await.len(), 8);
}

/// A backend whose engine does not take `{{api_key}}` answers anyone on the worker's network: the
/// import, create and update answer `warnings` naming each such version (the UI shows them);
/// reads keep GPUStack's shape.
async fn saving_an_engine_without_a_key_answers_a_warning(kind: DbKind) {
    let s = admin(kind).await;
    let open = "backend_name: open-custom
default_version: v1
default_run_command: \"serve --port {{port}}\"
version_configs:
  v1:
    image_name: example/open:v1
    custom_framework: cpu
  v2:
    image_name: example/open:v2
    custom_framework: cpu
    run_command: \"serve --port {{port}} --api-key {{api_key}}\"
";
    let warned = |body: &Value| -> Vec<String> {
        let list = body["warnings"].as_array().unwrap_or_else(|| panic!("no warnings list: {body}"));
        list.iter().map(|w| w.as_str().expect("text").split(':').next().expect("field").to_owned()).collect()
    };
    let (status, created) = s.post(&format!("{BASE}/from-yaml"), json!({ "content": open })).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(warned(&created), ["version_configs.v1"], "{created}");
    assert!(created["warnings"][0].as_str().is_some_and(|w| w.contains("{{api_key}}")), "{created}");
    let id = created["id"].as_i64().expect("id");
    let (_, read) = s.get(&format!("{BASE}/{id}")).await;
    assert!(read.get("warnings").is_none(), "a read is GPUStack's shape: {read}");

    // Every version keyed: nothing to say, and the field is still there.
    let keyed =
        open.replace("serve --port {{port}}\"\nversion", "serve --port {{port}} --api-key {{ api_key }}\"\nversion");
    assert_ne!(keyed, open);
    let (status, updated) = s.put(&format!("{BASE}/{id}/from-yaml"), json!({ "content": keyed })).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(warned(&updated), Vec::<String>::new(), "{updated}");

    // JSON create and update answer the same way.
    let spec = json!({"backend_name": "json-custom", "version_configs": {
        "a": {"image_name": "x", "custom_framework": "cpu", "run_command": "serve"},
        "b": {"image_name": "x", "custom_framework": "cpu", "run_command": "serve", "env": {"KEY": "{{api_key}}"}}}});
    let (status, created) = s.post(BASE, spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(warned(&created), ["version_configs.a"], "{created}");
    let id = created["id"].as_i64().expect("id");
    let mut edit = spec;
    edit["version_configs"]["b"]["env"] = json!({});
    let (status, updated) = s.put(&format!("{BASE}/{id}"), edit).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(warned(&updated), ["version_configs.a", "version_configs.b"], "{updated}");

    // Engines the server gives their key: nothing to say.
    let vllm = by_name(&s, "vLLM").await;
    let mut edit = json!({"backend_name": "vLLM", "version_configs": {
        "0.99.0-custom": {"image_name": "vllm/vllm-openai:v0.99.0", "custom_framework": "cuda"}}});
    edit["version"] = vllm["version"].clone();
    let (status, updated) = s.put(&format!("{BASE}/{}", vllm["id"]), edit).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(warned(&updated), Vec::<String>::new(), "{updated}");
}
