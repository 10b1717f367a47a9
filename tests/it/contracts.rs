//! Wire contracts pinned as files: the OpenAPI document (docs/openapi.json, the source of the
//! UI's and any client's types) and snapshots of the list envelope, a watch event and a model
//! evaluation. A change to any of them is a change to what clients parse: it shows as a diff.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{DbKind, SseReader, TestServer};

const OPENAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// docs/openapi.json is the document the server serves. After an API change, rewrite it with
/// `FERROSTACK_BLESS=1 cargo test --test it contracts` and commit the diff with the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_openapi_document_is_the_served_one() {
    let s = TestServer::start(DbKind::Sqlite).await;
    let (_, doc) = s.get("/openapi.json").await;
    let served = serde_json::to_string_pretty(&doc).expect("json") + "\n";
    if std::env::var_os("FERROSTACK_BLESS").is_some() {
        std::fs::write(OPENAPI, &served).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(OPENAPI).unwrap_or_default();
    if committed != served {
        let first = committed.lines().zip(served.lines()).position(|(a, b)| a != b);
        panic!(
            "docs/openapi.json differs from the served document (first difference at line {}); \
             rewrite it with `FERROSTACK_BLESS=1 cargo test --test it contracts` and commit it",
            first.map_or_else(|| "end".to_string(), |n| (n + 1).to_string())
        );
    }
}

/// Values that differ from run to run (times, secrets, temp paths) replaced by their kind.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let stamp = key.ends_with("_at") || key.ends_with("_time") || key == "timestamp";
                if stamp && value.is_string() {
                    *value = json!("[timestamp]");
                } else if key.contains("path") && value.is_string() {
                    *value = json!("[path]");
                } else if (key.contains("token") || key == "hash") && value.is_string() {
                    *value = json!("[secret]");
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if s.contains("/tmp/") => *s = "[text naming a temp path]".into(),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_envelope_watch_event_and_evaluation_contracts() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;

    let (_, mut list) = s.get("/v2/clusters?page=1&perPage=10").await;
    redact(&mut list);
    insta::assert_json_snapshot!("list_envelope_clusters", list);

    // GPUStack's own watch format (what its SDK reads): one JSON event per line.
    let mut lines = s.http.get(s.url("/v2/clusters?watch=true")).send().await.expect("watch");
    let mut text = String::new();
    while !text.contains('\n') {
        let chunk = tokio::time::timeout(Duration::from_secs(5), lines.chunk()).await.expect("a line in time");
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("stream open")));
    }
    let mut line: Value = serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a JSON line");
    redact(&mut line);
    insta::assert_json_snapshot!("watch_line_initial", line);
    drop(lines);

    // Server-sent events, when asked for.
    let res =
        s.http.get(s.url("/v2/clusters?watch=true")).header("accept", "text/event-stream").send().await.expect("watch");
    let mut events = SseReader::new(res);
    let (_, mut first) = events.next(Duration::from_secs(5)).await.expect("the current rows come first");
    redact(&mut first);
    insta::assert_json_snapshot!("watch_event_initial", first);
    let (status, body) = s.post("/v2/clusters", json!({"name": "snap", "description": "pinned"})).await;
    assert!(status.is_success(), "{body}");
    let (_, mut created) = events.next(Duration::from_secs(5)).await.expect("a created event");
    redact(&mut created);
    insta::assert_json_snapshot!("watch_event_created", created);

    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(7 << 30).expect("size");
    let spec = json!({"model_specs": [{"name": "big", "source": "local_path", "local_path": model.path(),
                                       "backend": "vLLM"}]});
    let (status, mut eval) = s.post("/v2/model-evaluations", spec).await;
    assert!(status.is_success(), "{eval}");
    redact(&mut eval);
    insta::assert_json_snapshot!("model_evaluation_no_worker", eval);
}
