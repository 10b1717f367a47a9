//! Credentials as an attacker would hold them: the cluster registration token cannot take over a
//! live worker nor read anything, rotating it disconnects no worker, and the secrets at rest are
//! readable by the server's user only (data dir 0700, database and secret files 0600, the server
//! secret out of the database).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::both_dbs;
use crate::support::{DbKind, TestServer};
use crate::workers::{start_worker, worker_options};

both_dbs!(the_cluster_token_only_makes_new_workers);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

async fn the_cluster_token_only_makes_new_workers(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("victim", (46300, 46309))).await;
    let token = std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("token").trim().to_string();
    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("worker.json")).expect("identity"))
            .expect("json");
    let credential = identity["credential"].as_str().expect("credential").to_string();
    let plain = reqwest::Client::new();

    // Registering a live worker's name with the cluster token is refused; its own credential stays valid.
    let body = json!({"name": "victim", "hostname": "attacker", "ip": "203.0.113.9", "port": 1,
                      "worker_version": "0", "status": {"cpu": {"total": 1, "utilization_rate": 0.0},
                      "memory": {"total": 1, "used": 0, "utilization_rate": 0.0},
                      "os": {"name": "linux", "version": "", "kernel": "", "arch": "x86_64"}}});
    let res = plain.post(s.url("/v2/workers")).bearer_auth(&token).json(&body).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let err: serde_json::Value = res.json().await.expect("json");
    assert_eq!(err["field"], "name", "{err}");
    assert!(err["message"].as_str().unwrap_or("").contains("own credential"), "{err}");
    let me = format!("/v2/workers/{}", worker.worker_id);
    let res = plain.get(s.url(&me)).bearer_auth(&credential).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::OK, "the real worker is not locked out");
    let (_, w) = s.get(&me).await;
    assert_eq!(w["ip"], "127.0.0.1", "{w:#}");
    assert_ne!(w["hostname"], "attacker", "{w:#}");

    // A new name registers; the token reads nothing, anywhere.
    let mut fresh = body.clone();
    fresh["name"] = json!("newcomer");
    let res = plain.post(s.url("/v2/workers")).bearer_auth(&token).json(&fresh).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::OK);
    for path in [
        "/v2/workers",
        &me,
        "/v2/models",
        "/v2/model-instances",
        "/v2/model-instances/1",
        "/v2/inference-backends",
        "/v2/gpu-devices",
        "/v2/users",
        "/v2/api-keys",
        "/v2/clusters",
    ] {
        let res = plain.get(s.url(path)).bearer_auth(&token).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "GET {path} with the cluster token");
    }

    // Rotating the token: the old one registers nothing more, registered workers keep working.
    let (status, rotated) = s.post("/v2/clusters/1/registration-token", json!({})).await;
    assert!(status.is_success(), "{rotated}");
    fresh["name"] = json!("late");
    let res = plain.post(s.url("/v2/workers")).bearer_auth(&token).json(&fresh).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = plain.get(s.url(&me)).bearer_auth(&credential).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::OK);

    // Secrets at rest.
    let data = s.dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    for file in ["cluster_token", "server_secret"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    if kind == DbKind::Sqlite {
        let db = s.database_url.trim_start_matches("sqlite://").split('?').next().expect("path").to_string();
        assert_eq!(mode(Path::new(&db)), 0o600, "{db}");
    }
    assert_eq!(
        s.db().setting("server_secret").await.expect("setting"),
        None,
        "the server secret is not in the database"
    );
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join("worker.json")), 0o600);
    worker.shutdown().await;

    // A second server on this database without the secret file refuses to start, rather than
    // deriving keys that no worker or engine knows.
    let other = tempfile::tempdir().expect("tempdir");
    let config = ferrostack::config::Config {
        data_dir: other.path().join("data"),
        host: "127.0.0.1".into(),
        port: 0,
        database_url: Some(s.database_url.clone()),
        bootstrap_password: None,
        worker_grace: std::time::Duration::from_secs(3),
        max_request_body: 1 << 20,
        trusted_proxy_header: None,
        max_watch_streams: ferrostack::config::DEFAULT_MAX_WATCH_STREAMS,
        wake_queue: ferrostack::config::DEFAULT_WAKE_QUEUE,
        wake_timeout: std::time::Duration::from_secs(ferrostack::config::DEFAULT_WAKE_TIMEOUT_SECS),
        hub: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let refused = ferrostack::server::start(config, listener).await.err().expect("refused to start");
    assert!(refused.to_string().contains("server_secret is missing"), "{refused:#}");
}

/// Bad actors' small tools: guessing passwords, an inference key changing a password, odd env
/// names, a body far larger than any prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_slowed_and_bad_input_refused() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let plain = reqwest::Client::new();
    let login = async |password: &str| {
        plain
            .post(s.url("/auth/login"))
            .form(&[("username", "admin"), ("password", password)])
            .send()
            .await
            .expect("login")
    };
    for _ in 0..5 {
        assert_eq!(login("wrong").await.status(), StatusCode::UNAUTHORIZED);
    }
    // The sixth try, even with the right password, waits.
    let res = login(crate::support::ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(login(crate::support::ADMIN_PASSWORD).await.status(), StatusCode::OK, "the wait is over");

    let inference = s.api_key(json!({"name": "inf", "scope": ["inference"]})).await;
    let body = json!({"current_password": crate::support::ADMIN_PASSWORD, "new_password": "another-password-9"});
    let res =
        plain.post(s.url("/auth/update-password")).bearer_auth(&inference).json(&body).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // A management-only key cannot widen itself into one that calls models.
    let (status, k) = s.post("/v2/api-keys", json!({"name": "mgmt", "scope": ["management"]})).await;
    assert_eq!(status, StatusCode::OK, "{k}");
    let url = s.url(&format!("/v2/api-keys/{}", k["id"]));
    let value = k["value"].as_str().expect("value");
    let res = plain.put(&url).bearer_auth(value).json(&json!({"scope": ["*"]})).send().await.expect("put");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let file = tempfile::NamedTempFile::new().expect("file");
    for bad in ["A=B", "", "1X", "BAD NAME", "NUL\u{0}"] {
        let body = json!({"name": "m", "source": "local_path", "local_path": file.path(), "env": {bad: "v"}});
        let (status, err) = s.post("/v2/models", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {err}");
        assert_eq!(err["field"], format!("env.{bad}"), "{err}");
    }

    // A body declared over the limit is refused before it is read (a client writing 40 MB would
    // race the early answer, so this one declares the length and sends a few bytes).
    let key = s.api_key(json!({"name": "big"})).await;
    let addr = s.url("/").trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"model\":",
        40u64 << 20
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut conn, &mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

both_dbs!(hub_ids_that_would_leave_the_cache_are_refused);

/// A hub id or file name is a path under the worker's download cache: only `owner/name` ids and
/// relative file names without `..` are admitted, on create and on update, naming the field.
async fn hub_ids_that_would_leave_the_cache_are_refused(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let hf = |id: &str| json!({"name": "hub", "source": "huggingface", "huggingface_repo_id": id});
    let ms = |id: &str| json!({"name": "hub", "source": "model_scope", "model_scope_model_id": id});
    let cases = [
        (hf("../../../tmp/pwn"), "huggingface_repo_id"),
        (hf("/etc/passwd"), "huggingface_repo_id"),
        (hf("owner/.."), "huggingface_repo_id"),
        (hf("a/b/c"), "huggingface_repo_id"),
        (hf("-owner/name"), "huggingface_repo_id"),
        (ms("../x"), "model_scope_model_id"),
        (ms("/abs/path"), "model_scope_model_id"),
        (
            json!({"name": "hub", "source": "huggingface", "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                   "huggingface_filename": "../../../../etc/cron.d/x"}),
            "huggingface_filename",
        ),
        (
            json!({"name": "hub", "source": "huggingface", "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                   "huggingface_filename": "/etc/passwd"}),
            "huggingface_filename",
        ),
        (
            json!({"name": "hub", "source": "model_scope", "model_scope_model_id": "qwen/Qwen2.5-0.5B",
                   "model_scope_file_path": "a/../../b"}),
            "model_scope_file_path",
        ),
    ];
    for (body, field) in &cases {
        let (status, err) = s.post("/v2/models", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["field"], *field, "{body}: {err}");
    }
    let (status, list) = s.get("/v2/models").await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{list}");

    // A good id is admitted (replicas 0: nothing downloads); the same bad ids are refused on PUT.
    let mut good = hf("HuggingFaceTB/SmolLM2-135M-Instruct");
    good["replicas"] = json!(0);
    let (status, model) = s.post("/v2/models", good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let path = format!("/v2/models/{}", model["id"]);
    for (body, field) in &cases {
        let mut body = body.clone();
        body["replicas"] = json!(0);
        let (status, err) = s.put(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PUT {body}: {err}");
        assert_eq!(err["field"], *field, "PUT {body}: {err}");
    }
    let (_, kept) = s.get(&path).await;
    assert_eq!(kept["huggingface_repo_id"], "HuggingFaceTB/SmolLM2-135M-Instruct", "{kept}");
}

/// The engine key stays off the command line: llama.cpp (the community backend, run here by the
/// llama-server stand-in) reads it from a 0600 file; `/proc/<pid>/cmdline` does not hold it; the
/// gateway still reaches the engine and a direct call without the key is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_key_is_not_on_the_command_line() {
    let Some((server, gguf)) = crate::workers::llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let (status, mut llama) = s.get("/v2/inference-backends/backend_name/llama.cpp").await;
    assert_eq!(status, StatusCode::OK, "{llama}");
    llama["enabled"] = json!(true);
    llama["version_configs"]["cpu"]["entrypoint"] = json!(server);
    let (status, body) = s.put(&format!("/v2/inference-backends/{}", llama["id"]), llama.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("keyed", (46400, 46409))).await;
    let body = json!({"name": "smol", "source": "local_path", "local_path": gguf, "backend": "llama.cpp",
                      "backend_parameters": ["-c 1024", "-t 1", "-np 1"], "replicas": 1});
    let (status, model) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let instance = loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={}", model["id"])).await;
        if let Some(i) = list["items"].as_array().and_then(|a| a.first()).filter(|i| i["state"] == "running") {
            break i.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never running: {list:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let secret = std::fs::read_to_string(s.dir.path().join("data/server_secret")).expect("server secret");
    let token = ferrostack::server::auth::server_token(secret.trim(), worker.worker_id);
    let key = ferrostack::backends::render::engine_api_key(&token, instance["id"].as_i64().expect("id"));

    let pid = instance["pid"].as_i64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert!(!argv.iter().any(|a| a.contains(&key)), "the key is on the command line: {argv:?}");
    let at = argv.iter().position(|a| a == "--api-key-file").expect("--api-key-file");
    let file = Path::new(&argv[at + 1]);
    assert!(file.starts_with(dir.path()), "{} is in the worker's directory", file.display());
    assert_eq!(mode(file), 0o600, "{}", file.display());
    assert_eq!(std::fs::read_to_string(file).expect("key file"), format!("{key}\n"));
    let shown = instance["command"].as_array().expect("command").iter().filter_map(|a| a.as_str()).collect::<Vec<_>>();
    assert!(!shown.iter().any(|a| a.contains(&key)), "{shown:?}");

    // Directly: refused without the key, served with it.
    let url =
        format!("http://{}:{}/v1/chat/completions", instance["worker_ip"].as_str().expect("ip"), instance["port"]);
    let chat = json!({"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]});
    let plain = reqwest::Client::new();
    let res = plain.post(&url).json(&chat).send().await.expect("direct");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = plain.post(&url).bearer_auth("not-the-key").json(&chat).send().await.expect("direct");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = plain.post(&url).bearer_auth(&key).json(&chat).send().await.expect("direct");
    assert_eq!(res.status(), StatusCode::OK);

    // Through the gateway, with a user's API key (its routing view follows within seconds).
    let api = s.api_key(json!({"name": "app", "scope": ["inference"]})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = plain.post(s.url("/v1/chat/completions")).bearer_auth(&api).json(&chat).send().await.expect("chat");
        if res.status() == StatusCode::OK {
            break;
        }
        let status = res.status();
        assert!(tokio::time::Instant::now() < deadline, "gateway: {status} {}", res.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    worker.shutdown().await;
}
