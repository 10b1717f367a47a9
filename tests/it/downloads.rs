//! Hub downloads on the worker, against a local server that speaks the Hugging Face layout: a
//! deployment from a "huggingface" source reaches running; partial files resume by Range.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::support::{DbKind, TestServer};
use crate::workers::{import_backend, llama, llama_backend_yaml, start_worker, worker_options};

#[derive(Clone)]
struct Hub {
    file: PathBuf,
    name: String,
    ranged: Arc<AtomicUsize>,
}

async fn siblings(State(hub): State<Hub>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"siblings": [{"rfilename": hub.name}]}))
}

async fn resolve(
    State(hub): State<Hub>,
    Path((_org, _repo, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if file != hub.name {
        return StatusCode::NOT_FOUND.into_response();
    }
    let bytes = tokio::fs::read(&hub.file).await.expect("model");
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
    match start {
        Some(from) if from < bytes.len() => {
            hub.ranged.fetch_add(1, Ordering::SeqCst);
            let range = format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len());
            (StatusCode::PARTIAL_CONTENT, [(header::CONTENT_RANGE, range)], bytes[from..].to_vec()).into_response()
        }
        _ => bytes.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huggingface_deployment_downloads_resumes_and_runs() {
    let Some((server, gguf)) = llama() else { return };
    let name = gguf.file_name().and_then(|n| n.to_str()).expect("name").to_string();
    let hub = Hub { file: gguf.clone(), name: name.clone(), ranged: Arc::default() };
    let app = Router::new()
        .route("/api/models/{org}/{repo}", get(siblings))
        .route("/{org}/{repo}/resolve/main/{file}", get(resolve))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&server)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // An earlier attempt left the first MiB behind: the worker resumes from there.
    let part = dir.path().join(format!("cache/huggingface/tiny/smol/{name}.part"));
    std::fs::create_dir_all(part.parent().expect("parent")).expect("mkdir");
    let original = std::fs::read(&gguf).expect("model");
    std::fs::write(&part, &original[..1 << 20]).expect("partial");
    let mut opts = worker_options("hub-worker", (45600, 45649));
    opts.hf_endpoint = endpoint;
    let worker = start_worker(&s, dir.path(), &opts).await;
    let body = json!({"name": "hubbed", "source": "huggingface", "huggingface_repo_id": "tiny/smol",
                      "huggingface_filename": name, "backend": "llama-cpp-custom"});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let running = loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
        if list["items"][0]["state"] == "running" {
            break list["items"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never running: {list:#}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let resolved = running["resolved_path"].as_str().expect("resolved path");
    assert!(resolved.ends_with(&format!("huggingface/tiny/smol/{name}")), "{resolved}");
    assert_eq!(std::fs::read(resolved).expect("downloaded"), original, "the resumed file is whole");
    assert_eq!(hub.ranged.load(Ordering::SeqCst), 1, "resumed with a Range request");
    assert_eq!(running["download_progress"], 1.0);
    worker.shutdown().await;
}
