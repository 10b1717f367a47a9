//! `gpu_memory: fit` (issue 27): small models share GPUs by what they need. On simulated 80 GiB
//! GPUs: fitted 1.5 B deployments pack eight to a GPU with binpack and the ninth opens the next,
//! `reserve` keeps one per GPU, memory used outside the cluster is never booked, and the cluster
//! default applies to deployments that set none. With real llama.cpp: two fitted instances on one
//! simulated GPU both answer.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::models::wait_models_instances;
use crate::support::{DbKind, TestServer};
use crate::workers::{llama, start_worker, worker_options};

both_dbs!(fitted_small_models_pack_and_reserve_does_not, memory_used_outside_the_cluster_is_never_booked);

const GIB: u64 = 1 << 30;

/// A Qwen2.5-1.5B-shaped model directory: its config.json facts and one sparse BF16 tensor of its
/// weight size (nothing is written to disk).
pub fn qwen_1_5b(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("qwen2.5-1.5b");
    std::fs::create_dir_all(&path).expect("dir");
    let config = json!({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536, "num_attention_heads": 12,
                        "num_key_value_heads": 2, "num_hidden_layers": 28, "vocab_size": 151936,
                        "max_position_embeddings": 32768, "torch_dtype": "bfloat16", "intermediate_size": 8960});
    std::fs::write(path.join("config.json"), config.to_string()).expect("config");
    let bytes: u64 = 3_087_467_520;
    let header =
        json!({"model.embed_tokens.weight": {"dtype": "BF16", "shape": [bytes / 2], "data_offsets": [0, bytes]}})
            .to_string();
    let mut data = (header.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(header.as_bytes());
    let file = path.join("model.safetensors");
    std::fs::write(&file, &data).expect("header");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(data.len() as u64 + bytes)
        .expect("size");
    path
}

/// vLLM with a version that runs a sleeper (`sh -c 'exec sleep 300'` takes the engine's flags as
/// its `$0…`): placements and rendered commands are real, no engine is needed.
async fn vllm_sleeper_version(s: &TestServer) -> String {
    let (status, vllm) = s.get("/v2/inference-backends/backend_name/vLLM").await;
    assert_eq!(status, StatusCode::OK, "{vllm}");
    let mut body = vllm.clone();
    for k in ["id", "created_at", "updated_at", "version"] {
        body.as_object_mut().expect("object").remove(k);
    }
    body["version_configs"]["0.11.0-custom"] = json!({"image_name": "busybox", "entrypoint": "sh",
        "run_command": "-c 'exec sleep 300'", "custom_framework": "cuda"});
    let (status, res) = s.put(&format!("/v2/inference-backends/{}", vllm["id"]), body).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    "0.11.0-custom".into()
}

fn deployment(name: &str, model: &Path, version: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "source": "local_path", "local_path": model, "backend": "vLLM",
                          "backend_version": version, "placement_strategy": "binpack", "replicas": 1});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

/// Every instance of the cluster, bound or not, once `pred` holds over them.
async fn all_instances(s: &TestServer, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, list) = s.get("/v2/model-instances?perPage=100").await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if pred(&items) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {items:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gpu_of(i: &Value) -> String {
    format!("{}:{}", i["worker_name"].as_str().unwrap_or("-"), i["gpu_indexes"])
}

fn claim_of(i: &Value) -> u64 {
    i["computed_resource_claim"]["vram"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_u64()).sum()
}

fn flag_value<'a>(args: &'a [Value], flag: &str) -> Option<&'a str> {
    args.iter().filter_map(Value::as_str).find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

async fn fitted_small_models_pack_and_reserve_does_not(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let version = vllm_sleeper_version(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = qwen_1_5b(dir.path());
    let mut opts = worker_options("pack", (48200, 48239));
    opts.simulate_gpus = Some("2xH100-80GB".into());
    let worker = start_worker(&s, &dir.path().join("w"), &opts).await;

    // The evaluation says what a fitted replica claims and how that was computed. Twelve full
    // contexts each: eight fit in 80 GiB, nine do not.
    let fit = json!({"gpu_memory": "fit", "fit_concurrency": 12});
    let (_, eval) =
        s.post("/v2/model-evaluations", json!({"model_specs": [deployment("e", &model, &version, fit.clone())]})).await;
    let r = &eval["results"][0];
    assert_eq!(r["compatible"], true, "{eval:#}");
    let says = r["scheduling_messages"].to_string();
    assert!(says.contains("gpu_memory fit: claim") && says.contains("8192 tokens × 12 contexts"), "{eval:#}");
    let claim = r["resource_claim"]["vram"].as_u64().expect("claim");
    assert!(8 * claim <= 80 * GIB && 9 * claim > 80 * GIB, "claim {claim} must fit 8 and not 9 times in 80 GiB");

    let mut ids = Vec::new();
    for n in 0..9 {
        let (status, m) = s.post("/v2/models", deployment(&format!("fit{n}"), &model, &version, fit.clone())).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        ids.push(m["id"].as_i64().expect("id"));
        // One at a time, so the order is the order they were placed in.
        wait_models_instances(&s, ids[n], "bound", |items| items.len() == 1 && !items[0]["worker_id"].is_null()).await;
    }
    let placed = all_instances(&s, "nine bound", |items| items.len() == 9).await;
    let mut by_gpu = std::collections::BTreeMap::<String, usize>::new();
    for i in &placed {
        *by_gpu.entry(gpu_of(i)).or_default() += 1;
        assert_eq!(claim_of(i), claim, "booked what evaluation said: {i:#}");
        // The engine is told the claim: its fraction of the card, and the KV cache in bytes.
        let args = i["injected_backend_parameters"].as_array().expect("args");
        let gmu: f64 = flag_value(args, "--gpu-memory-utilization").expect("gmu").parse().expect("number");
        // The claim less the engine's fixed 2 GiB (its CUDA context and graphs are outside vLLM's budget).
        let budget = (claim - 2 * GIB) as f64 / (80 * GIB) as f64;
        assert!(gmu <= budget && budget - gmu < 0.0001, "{args:?}");
        assert!(flag_value(args, "--kv-cache-memory-bytes").is_some(), "{args:?}");
    }
    assert_eq!(by_gpu, [("pack:[0]".to_string(), 8), ("pack:[1]".to_string(), 1)].into(), "{placed:#?}");
    let (_, gpus) = s.get("/v2/gpu-devices").await;
    let allocated: Vec<u64> = gpus["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| g["memory"]["allocated"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(allocated, [8 * claim, claim], "{gpus:#}");

    for id in &ids {
        let (status, _) = s.delete(&format!("/v2/models/{id}")).await;
        assert!(status.is_success());
    }
    all_instances(&s, "all gone", |items| items.is_empty()).await;

    // reserve (the default, GPUStack's rule): 0.9 of a card each, one per GPU.
    let body = deployment("reserve", &model, &version, json!({"replicas": 3}));
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "two bound, one explained", |items| {
        items.len() == 3
            && items.iter().filter(|i| !i["worker_id"].is_null()).count() == 2
            && items.iter().any(|i| i["state_message"].as_str().is_some_and(|m| m.contains("No suitable workers")))
    })
    .await;
    let mut gpus: Vec<String> = items.iter().filter(|i| !i["worker_id"].is_null()).map(gpu_of).collect();
    gpus.sort();
    assert_eq!(gpus, ["pack:[0]", "pack:[1]"]);
    assert!(items.iter().filter(|i| !i["worker_id"].is_null()).all(|i| claim_of(i) == 72 * GIB), "{items:#?}");
    let (status, _) = s.delete(&format!("/v2/models/{id}")).await;
    assert!(status.is_success());
    all_instances(&s, "reserve gone", |items| items.is_empty()).await;

    // The cluster's default: an admin sets fit, and a deployment that names no policy packs.
    let (_, clusters) = s.get("/v2/clusters").await;
    let cluster = clusters["items"][0]["id"].as_i64().expect("cluster");
    let (status, c) = s.put(&format!("/v2/clusters/{cluster}"), json!({"gpu_memory": "fit"})).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["gpu_memory"], "fit");
    let (status, m) = s.post("/v2/models", deployment("default", &model, &version, json!({"replicas": 3}))).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "three bound", |items| {
        items.len() == 3 && items.iter().all(|i| !i["worker_id"].is_null())
    })
    .await;
    assert!(items.iter().all(|i| gpu_of(i) == "pack:[0]" && claim_of(i) < 10 * GIB), "{items:#?}");
    // Bad input names the field and the rule.
    let bad = deployment("bad", &model, &version, json!({"gpu_memory": "reserve", "fit_concurrency": 2}));
    let (status, e) = s.post("/v2/models", bad).await;
    assert_eq!((status, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("fit_concurrency")), "{e}");
    let bad = deployment("bad", &model, &version, json!({"gpu_memory": "fit", "fit_concurrency": 0}));
    let (status, e) = s.post("/v2/models", bad).await;
    assert_eq!((status, e["field"].as_str()), (StatusCode::BAD_REQUEST, Some("fit_concurrency")), "{e}");
    let (status, e) = s.post("/v2/models", deployment("bad", &model, &version, json!({"gpu_memory": "half"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    worker.shutdown().await;
}

async fn memory_used_outside_the_cluster_is_never_booked(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let version = vllm_sleeper_version(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = qwen_1_5b(dir.path());
    let mut opts = worker_options("busy", (48240, 48279));
    // 30 GB of the card is taken by a program the cluster did not start.
    opts.simulate_gpus = Some("1xH100-80GB+30GB".into());
    let worker = start_worker(&s, &dir.path().join("w"), &opts).await;
    let (_, gpus) = s.get("/v2/gpu-devices").await;
    assert_eq!(gpus["items"][0]["memory_external"].as_u64(), Some(30 * GIB), "{gpus:#}");

    let fit = json!({"gpu_memory": "fit", "fit_concurrency": 12, "replicas": 6});
    let (status, m) = s.post("/v2/models", deployment("busy", &model, &version, fit)).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "placed and explained", |items| {
        items.len() == 6
            && items.iter().all(|i| {
                !i["worker_id"].is_null() || i["state_message"].as_str().is_some_and(|m| m.contains("No suitable"))
            })
    })
    .await;
    let bound: Vec<&Value> = items.iter().filter(|i| !i["worker_id"].is_null()).collect();
    let claim = claim_of(bound[0]);
    let fits = (50 * GIB / claim) as usize;
    assert_eq!(bound.len(), fits, "only the 50 GiB nobody uses is booked ({claim} each): {items:#?}");
    assert!(bound.len() < 6);
    let booked: u64 = bound.iter().map(|i| claim_of(i)).sum();
    assert!(booked + 30 * GIB <= 80 * GIB);
    let pending = items.iter().find(|i| i["worker_id"].is_null()).expect("pending");
    let why = pending["state_message"].as_str().unwrap_or("");
    assert!(why.contains("gpu_memory fit: claim") && why.contains("busy:cuda:0: needs"), "{why}");
    worker.shutdown().await;
}

/// Two real llama.cpp instances, fitted, on one simulated GPU: both run and answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fitted_llama_cpp_instances_share_a_gpu_and_serve() {
    let Some((server, gguf)) = llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    // The community llama.cpp backend, with a GPU version that runs the test's llama-server.
    let (_, b) = s.get("/v2/inference-backends/backend_name/llama.cpp").await;
    let id = b["id"].as_i64().expect("id");
    let (status, res) = s.post(&format!("/v2/inference-backends/{id}/enable"), json!({})).await;
    assert!(status.is_success(), "{res}");
    let (_, b) = s.get(&format!("/v2/inference-backends/{id}")).await;
    let mut body = b.clone();
    for k in ["id", "created_at", "updated_at", "version"] {
        body.as_object_mut().expect("object").remove(k);
    }
    body["version_configs"]["cuda-test"] = json!({"image_name": "ghcr.io/ggml-org/llama.cpp:server-cuda",
        "entrypoint": server, "custom_framework": "cuda"});
    let (status, res) = s.put(&format!("/v2/inference-backends/{id}"), body).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("llamas", (48280, 48299));
    opts.simulate_gpus = Some("2xL4-24GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    let mut ids = Vec::new();
    for name in ["smol-a", "smol-b"] {
        let body = json!({"name": name, "source": "local_path", "local_path": gguf, "backend": "llama.cpp",
                          "backend_version": "cuda-test", "gpu_memory": "fit", "fit_concurrency": 2,
                          "placement_strategy": "binpack", "backend_parameters": ["-t 1"]});
        let (status, m) = s.post("/v2/models", body).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        ids.push(m["id"].as_i64().expect("id"));
    }
    let mut running = Vec::new();
    for id in &ids {
        let items =
            wait_models_instances(&s, *id, "running", |items| items.len() == 1 && items[0]["state"] == "running").await;
        running.push(items[0].clone());
    }
    assert_eq!(gpu_of(&running[0]), "llamas:[0]", "{running:#?}");
    assert_eq!(gpu_of(&running[1]), "llamas:[0]", "both on one GPU: {running:#?}");
    for i in &running {
        // Fitted: two full contexts of the model's 8192 in one cache, two slots.
        let args = i["injected_backend_parameters"].as_array().expect("args");
        assert_eq!(flag_value(args, "--ctx-size"), Some("16384"), "{args:?}");
        assert_eq!(flag_value(args, "--parallel"), Some("2"), "{args:?}");
        assert!(claim_of(i) > 0 && claim_of(i) < 2 * GIB, "{i:#}");
    }
    let key = s.api_key(json!({"name": "packing"})).await;
    let http = reqwest::Client::new();
    for name in ["smol-a", "smol-b"] {
        let body = json!({"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let res =
                http.post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.expect("chat");
            if res.status() == StatusCode::OK {
                let v: Value = res.json().await.expect("json");
                assert!(v["choices"][0]["message"].is_object(), "{v}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}: {}", res.text().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    worker.shutdown().await;
}

/// The command line sets both: `ferrostack clusters gpu-memory NAME fit` and `deploy --gpu-memory
/// fit --fit-concurrency N`; a policy that does not exist is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_the_cluster_default_and_a_deployments_policy() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "cli"})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = qwen_1_5b(dir.path());
    let run = async |args: &[&str]| -> (bool, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env("FERROSTACK_SERVER_URL", &s.base)
            .env("FERROSTACK_API_KEY", &key)
            .output()
            .await
            .expect("run ferrostack");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, out, err) = run(&["clusters", "gpu-memory", "default", "fit"]).await;
    assert!(ok && out.contains("cluster default: gpu_memory fit"), "{out}{err}");
    let (_, clusters) = s.get("/v2/clusters").await;
    assert_eq!(clusters["items"][0]["gpu_memory"], "fit", "{clusters:#}");
    let (ok, out, err) = run(&["clusters", "list"]).await;
    assert!(ok && out.contains("GPU MEMORY") && out.contains("fit"), "{out}{err}");
    let (ok, _, err) = run(&["clusters", "gpu-memory", "default", "half"]).await;
    assert!(!ok && err.contains("half"), "{err}");
    let path = model.to_str().expect("path");
    let deploy = [
        "deploy",
        "cli-fit",
        "--local-path",
        path,
        "--backend",
        "vLLM",
        "--gpu-memory",
        "fit",
        "--fit-concurrency",
        "3",
    ];
    let (ok, out, err) = run(&[&deploy[..], &["--no-wait"]].concat()).await;
    assert!(ok, "{out}{err}");
    let (_, models) = s.get("/v2/models?search=cli-fit").await;
    let m = &models["items"][0];
    assert_eq!((m["gpu_memory"].as_str(), m["fit_concurrency"].as_u64()), (Some("fit"), Some(3)), "{m:#}");
}
