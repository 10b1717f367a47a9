//! What GPUStack 2.3's own SDK (`gpustack.client.ClientSet`) relies on, checked without Python (the
//! compatibility suite, `scripts/compat-gpustack.sh`, drives the SDK itself): watch streams in its
//! line framing, HTTP Basic on `/v2`, what a regular user may list, route-target edits without
//! `route_id`, and model evaluations that answer the claim the scheduler reserves.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{ADMIN_PASSWORD, DbKind, SseReader, TestServer, read};
use crate::workers::{import_backend, start_worker, wait_instance, worker_options};

both_dbs!(
    watch_speaks_gpustack_lines_unless_sse_is_asked_for,
    basic_auth_works_on_v2_only_and_is_throttled,
    a_regular_user_lists_backends_and_clusters_but_no_machines,
    evaluations_answer_what_the_scheduler_claims,
    an_engine_is_given_only_its_vendors_device_variable,
    a_selection_over_two_workers_runs_distributed,
);

/// Reads newline-terminated JSON lines from a streaming answer, skipping blank keep-alive lines.
struct Lines {
    res: reqwest::Response,
    buf: String,
}

impl Lines {
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=pos).collect();
                if line.trim().is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(line.trim()).expect("one JSON object per line"));
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk.expect("stream")?));
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn watch_speaks_gpustack_lines_unless_sse_is_asked_for(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    // GPUStack's SDK sends `Accept: */*`: one JSON object per line, integer types, the row's id.
    let res = s.http.get(s.url("/v2/clusters?watch=true")).header("accept", "*/*").send().await.expect("watch");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let mut lines = Lines { res, buf: String::new() };
    let first = lines.next(Duration::from_secs(10)).await.expect("replay");
    assert_eq!((first["type"].clone(), first["data"]["name"].clone()), (json!(1), json!("default")), "{first}");
    assert_eq!(first["id"], first["data"]["id"], "the row's id, as GPUStack's Event has it: {first}");
    let (_, c) = s.post("/v2/clusters", json!({"name": "watched"})).await;
    let id = c["id"].clone();
    s.put(&format!("/v2/clusters/{id}"), json!({"description": "changed"})).await;
    s.delete(&format!("/v2/clusters/{id}")).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = lines.next(Duration::from_secs(10)).await.expect("a change");
        assert_eq!(e.as_object().map(|o| o.len()), Some(3), "exactly type, data and id: {e}");
        seen.push((e["type"].clone(), e["id"].clone()));
    }
    assert_eq!(seen, vec![(json!(1), id.clone()), (json!(2), id.clone()), (json!(3), id)]);

    // A client that asks for SSE (the UI's EventSource, our own client) still gets it.
    let res =
        s.http.get(s.url("/v2/clusters?watch=true")).header("accept", "text/event-stream").send().await.expect("sse");
    assert!(res.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    let (_, first) = SseReader::new(res).next(Duration::from_secs(10)).await.expect("replay");
    assert_eq!(first["type"], "CREATED", "{first}");
}

async fn basic_auth_works_on_v2_only_and_is_throttled(kind: DbKind) {
    let s = TestServer::start(kind).await;
    let plain = reqwest::Client::new();
    let get = |path: &str, auth: String| plain.get(s.url(path)).header("authorization", auth).send();
    // Twice: the second call is served from the proven password (no hash), the same answer.
    for _ in 0..2 {
        let (status, me) = read(get("/v2/users/me", basic("admin", ADMIN_PASSWORD)).await.expect("me")).await;
        assert_eq!((status, me["username"].clone()), (StatusCode::OK, json!("admin")), "{me}");
    }
    let res = get("/v1/models", basic("admin", ADMIN_PASSWORD)).await.expect("v1");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no Basic on the gateway");
    let res = get("/v2/users/me", "Basic not-base64!".into()).await.expect("bad header");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Wrong passwords count like failed logins: past the free ones, 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..(ferrostack::server::throttle::PAIR_FREE + 1) {
        statuses.push(get("/v2/users/me", basic("admin", "wrong-password-1")).await.expect("wrong").status());
    }
    let free = ferrostack::server::throttle::PAIR_FREE as usize;
    assert!(statuses[..free].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    let res = get("/v2/users/me", basic("admin", "wrong-password-1")).await.expect("throttled");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(res.headers().contains_key("retry-after"));
}

async fn a_regular_user_lists_backends_and_clusters_but_no_machines(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("sdk-machine", (47700, 47719));
    opts.simulate_gpus = Some("2xH100-80GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.get("/v2/gpu-devices").await.1["items"].as_array().map_or(0, Vec::len) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the worker's GPUs never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = s.post("/v2/users", json!({"username": "deployer", "password": "deployer-pw-1"})).await;
    assert_eq!(status, StatusCode::OK);
    let plain = reqwest::Client::new();
    let as_user =
        |path: &str| plain.get(s.url(path)).header("authorization", basic("deployer", "deployer-pw-1")).send();
    for path in ["/v2/inference-backends", "/v2/inference-backends/list", "/v2/clusters"] {
        let (status, body) = read(as_user(path).await.expect("list")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body["items"].as_array().is_some_and(|i| !i.is_empty()), "{path}: {body}");
    }
    let (status, all) = read(as_user("/v2/inference-backends/all").await.expect("all")).await;
    assert!(status == StatusCode::OK && all.as_array().is_some_and(|a| !a.is_empty()), "{all}");
    for path in ["/v2/workers", "/v2/gpu-devices"] {
        let (status, body) = read(as_user(path).await.expect("list")).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!((body["items"].clone(), body["pagination"]["total"].clone()), (json!([]), json!(0)), "{path}");
    }
    for path in ["/v2/models", "/v2/clusters/1", "/v2/gpu-devices/sdk-machine:cuda:0", "/v2/users"] {
        assert_eq!(as_user(path).await.expect("denied").status(), StatusCode::FORBIDDEN, "{path}");
    }
    // `?search=` matches the GPU's name (GPUStack's) and the worker's (ours).
    let (_, gpus) = s.get("/v2/gpu-devices").await;
    let name = gpus["items"][0]["name"].as_str().expect("name").to_string();
    for (search, want) in [(name.as_str(), 2), ("sdk-machine", 2), ("no-such-gpu", 0)] {
        let (_, found) = s.get(&format!("/v2/gpu-devices?search={}", search.replace(' ', "%20"))).await;
        assert_eq!(found["items"].as_array().map(Vec::len), Some(want), "search={search}: {found}");
    }
    worker.shutdown().await;
}

/// A local Qwen2-style model of ~1.5 B parameters (config.json only).
fn small_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = json!({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
        "num_attention_heads": 12, "num_key_value_heads": 2, "num_hidden_layers": 28, "intermediate_size": 8960,
        "vocab_size": 151936, "max_position_embeddings": 32768, "torch_dtype": "bfloat16"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    dir
}

async fn evaluations_answer_what_the_scheduler_claims(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("sdk-gpus", (47720, 47739));
    opts.simulate_gpus = Some("1xH100-80GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let total = loop {
        if let Some(t) = s.get("/v2/gpu-devices").await.1["items"][0]["memory"]["total"].as_u64() {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker's GPU never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let model = small_model();
    let spec = |name: &str, backend: &str| json!({"name": name, "source": "local_path", "local_path": model.path(), "backend": backend});
    let (status, bad) = s.post("/v2/model-evaluations", json!({"cluster_id": 999, "model_specs": []})).await;
    assert_eq!((status, bad["field"].clone()), (StatusCode::BAD_REQUEST, json!("cluster_id")), "{bad}");
    let body = json!({"cluster_id": 1, "model_specs": [spec("small-vllm", "vLLM"), spec("small-sglang", "SGLang")]});
    let (status, eval) = s.post("/v2/model-evaluations", body).await;
    assert_eq!(status, StatusCode::OK, "{eval}");
    let [vllm, sglang] = [&eval["results"][0], &eval["results"][1]];
    assert_eq!((vllm["compatible"].clone(), sglang["compatible"].clone()), (json!(true), json!(true)), "{eval:#}");
    // vLLM reserves 0.9 of the GPU (GPUStack: 72 GiB on 80 GiB); the estimate has its own field.
    assert_eq!(vllm["resource_claim"]["vram"], (total as f64 * 0.9) as u64, "{vllm:#}");
    assert!(vllm["vram"].as_u64().is_some_and(|v| v < total / 4), "the estimate: {vllm:#}");
    // SGLang reserves the --mem-fraction-static the engine is told, sized for this GPU.
    let fraction: f64 = sglang["injected_parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|p| p.as_str()?.strip_prefix("--mem-fraction-static=")?.parse().ok())
        .expect("--mem-fraction-static injected");
    assert!(fraction > 0.8 && fraction < 0.88, "sized for an 80 GB GPU, not the default 0.88: {fraction}");
    let claim = (total as f64 * fraction) as u64;
    assert_eq!(sglang["resource_claim"]["vram"], claim, "{sglang:#}");

    // The scheduler claims the same on the instance it binds.
    let (status, m) = s.post("/v2/models", spec("small-sglang", "SGLang")).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let instance = loop {
        let (_, list) = s.get(&format!("/v2/models/{}/instances", m["id"])).await;
        if let Some(i) = list["items"].as_array().and_then(|a| a.first()).filter(|i| i["worker_id"].is_i64()) {
            break i.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never bound: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bound = wait_instance(&s, instance["id"].as_i64().expect("id"), "claimed", |i| {
        i["computed_resource_claim"]["vram"].as_object().is_some_and(|v| !v.is_empty())
    })
    .await;
    let claimed: u64 = bound["computed_resource_claim"]["vram"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(claimed, claim, "{bound:#}");
    let told = bound["injected_backend_parameters"].to_string();
    assert!(told.contains(&format!("--mem-fraction-static={fraction}")), "{told}");

    // A route target edited with GPUStack's ModelRouteTargetUpdate: no route_id, model_id null.
    let (_, targets) = s.get("/v2/model-route-targets").await;
    let target = targets["items"][0].clone();
    let update = json!({"overridden_model_name": null, "weight": 7, "model_id": null, "provider_id": null,
                        "max_running_requests": null});
    let (status, edited) = s.put(&format!("/v2/model-route-targets/{}", target["id"]), update).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(
        (edited["weight"].clone(), edited["route_id"].clone(), edited["model_id"].clone()),
        (json!(7), target["route_id"].clone(), target["model_id"].clone())
    );
    let (status, refused) = s.post("/v2/model-route-targets", json!({"model_id": m["id"]})).await;
    assert_eq!((status, refused["field"].clone()), (StatusCode::BAD_REQUEST, json!("route_id")), "{refused}");
    worker.shutdown().await;
}

async fn an_engine_is_given_only_its_vendors_device_variable(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(
        &s,
        "backend_name: gpu-nap-custom\ndefault_version: v1\ndefault_run_command: \"-c 'exec sleep 300'\"\n\
         health_check_path:\nversion_configs:\n  v1:\n    image_name: busybox\n    entrypoint: sh\n    \
         custom_framework: cuda\n",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("sdk-env", (47740, 47759));
    opts.simulate_gpus = Some("2xH100-80GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(1 << 30).expect("size");
    let body = json!({"name": "nap", "source": "local_path", "local_path": model.path(), "backend": "gpu-nap-custom"});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let (_, list) = s.get(&format!("/v2/models/{}/instances", m["id"])).await;
        let running = list["items"].as_array().and_then(|a| a.first()).filter(|i| i["state"] == "running");
        if let Some(pid) = running.and_then(|i| i["pid"].as_i64()) {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "never running: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.contains("VISIBLE_DEVICES="))
        .collect();
    assert_eq!(vars.len(), 1, "only the NVIDIA runtime's variable: {vars:?}");
    assert!(vars[0].starts_with("CUDA_VISIBLE_DEVICES="), "{vars:?}");
    worker.shutdown().await;
}

async fn a_selection_over_two_workers_runs_distributed(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut opts_a = worker_options("span-a", (47760, 47769));
    opts_a.simulate_gpus = Some("1xH100-80GB".into());
    let mut opts_b = worker_options("span-b", (47770, 47779));
    opts_b.simulate_gpus = Some("1xH100-80GB".into());
    let a = start_worker(&s, dir_a.path(), &opts_a).await;
    let b = start_worker(&s, dir_b.path(), &opts_b).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.get("/v2/gpu-devices").await.1["items"].as_array().map_or(0, Vec::len) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the workers' GPUs never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let model = small_model();
    // GPUStack's SDK sends `distributed_inference_across_workers: null` (our default: false).
    let spec = json!({"name": "spanning", "source": "local_path", "local_path": model.path(), "backend": "vLLM",
        "distributed_inference_across_workers": null,
        "gpu_selector": {"gpu_ids": ["span-a:cuda:0", "span-b:cuda:0"]}});
    let (status, eval) = s.post("/v2/model-evaluations", json!({"model_specs": [spec]})).await;
    assert_eq!(status, StatusCode::OK, "{eval}");
    let r = &eval["results"][0];
    assert_eq!(r["default_spec"]["distributed_inference_across_workers"], true, "{r:#}");
    let said = r["compatibility_messages"].to_string();
    assert!(said.contains("distributed_inference_across_workers: turned on"), "{said}");
    assert_eq!(r["compatible"], true, "{r:#}");
    // Within one worker nothing changes.
    let one = json!({"name": "one", "source": "local_path", "local_path": model.path(), "backend": "vLLM",
        "gpu_selector": {"gpu_ids": ["span-a:cuda:0"]}});
    let (_, eval) = s.post("/v2/model-evaluations", json!({"model_specs": [one]})).await;
    assert_eq!(eval["results"][0]["default_spec"]["distributed_inference_across_workers"], false, "{eval:#}");
    // A spec is read like a deployment's body; what is wrong is named with its place in the list.
    let bad = json!({"model_specs": [one, {"name": "bad", "source": "local_path", "replicas": "many"}]});
    let (status, refused) = s.post("/v2/model-evaluations", bad).await;
    assert_eq!((status, refused["field"].clone()), (StatusCode::BAD_REQUEST, json!("model_specs[1].replicas")));
    a.shutdown().await;
    b.shutdown().await;
}
