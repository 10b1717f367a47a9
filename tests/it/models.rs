//! Deployments end to end: bad input, pending with reasons on simulated GPUs, two schedulers that
//! never overbook, and the real llama.cpp backend through deploy → running → chat → scale →
//! stop → start → delete, by API and by CLI.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::drain::edit_model;
use crate::support::{DbKind, TestServer};
use crate::workers::{SLEEPER_YAML, import_backend, llama, llama_backend_yaml, start_worker, worker_options};

both_dbs!(
    bad_deployments_name_the_field,
    scheduling_explains_and_never_overbooks,
    edits_roll_instances_one_at_a_time_when_asked,
    the_custom_backend_runs_the_deployments_own_command,
    mindie_reads_its_parameters_from_a_config_file,
    a_deployment_is_never_left_without_its_route,
    an_instance_runs_the_backend_it_was_bound_to
);

async fn bad_deployments_name_the_field(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let file = tempfile::NamedTempFile::new().expect("file");
    let path = file.path().to_str().expect("path").to_string();
    let cases = [
        (json!({"name": "a", "source": "huggingface"}), "huggingface_repo_id"),
        (json!({"name": "a", "source": "model_scope"}), "model_scope_model_id"),
        (json!({"name": "a", "source": "local_path"}), "local_path"),
        (json!({"name": "a", "source": "local_path", "local_path": "/no/such/model.gguf"}), "local_path"),
        (json!({"name": "a", "source": "local_path", "local_path": path, "backend": "nope"}), "backend"),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "vLLM", "backend_version": "v0"}),
            "backend_version",
        ),
        (json!({"name": "a", "source": "local_path", "local_path": path, "replicas": -1}), "replicas"),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "gpu_selector": {"gpu_ids": ["w9:cuda:7"]}}),
            "gpu_selector.gpu_ids",
        ),
        (json!({"name": "a", "source": "local_path", "local_path": path, "sauce": 1}), "sauce"),
        (json!({"name": "a", "source": "local_path", "local_path": path, "access_policy": "public"}), "access_policy"),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "speculative_config": {"enabled": true}}),
            "speculative_config",
        ),
        (json!({"name": "a b", "source": "local_path", "local_path": path}), "name"),
        (json!({"name": "a", "source": "ftp"}), "source"),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "vLLM",
                   "backend_parameters": ["--chat-template 'unclosed"]}),
            "backend_parameters",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "Custom",
                   "run_command": "serve {{model_path}} --port {{prot}}"}),
            "run_command",
        ),
        // Flags the server owns, and placeholders that do not exist, in the user's parameters.
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "vLLM",
                   "backend_parameters": ["--port=9999"]}),
            "backend_parameters",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "vLLM",
                   "backend_parameters": ["--host", "0.0.0.0"]}),
            "backend_parameters",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "SGLang",
                   "backend_parameters": ["--served-model-name other"]}),
            "backend_parameters",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "vLLM",
                   "backend_parameters": ["--chat-template={{model_dir}}/t.jinja"]}),
            "backend_parameters",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "Custom",
                   "run_command": "serve 'unclosed"}),
            "run_command",
        ),
        (
            json!({"name": "a", "source": "local_path", "local_path": path, "backend": "MindIE",
                   "distributed_inference_across_workers": true}),
            "distributed_inference_across_workers",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = s.post("/v2/models", body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {err}");
        assert_eq!(err["field"].as_str(), Some(field), "{body}: {err}");
    }
    let (_, list) = s.get("/v2/models").await;
    assert_eq!(list["pagination"]["total"], 0, "nothing stored");
}

pub async fn wait_models_instances(
    s: &TestServer,
    model_id: i64,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={model_id}")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if pred(&items) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {list:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A backend that needs a CUDA GPU and never starts anything (also `cli.rs`).
pub const SLEEPY_GPU_YAML: &str = "backend_name: gpu-sleeper-custom
default_version: v1
default_run_command: \"-c 'exec sleep 300'\"
health_check_path:
version_configs:
  v1:
    image_name: busybox
    entrypoint: sh
    custom_framework: cuda
";

async fn scheduling_explains_and_never_overbooks(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPY_GPU_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("gpu1", (45300, 45349));
    opts.simulate_gpus = Some("2xL4-24GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    // A "model" of 7 GiB (a sparse file, so nothing is written): 9 GiB with overhead.
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(7 << 30).expect("size");
    let fits = json!({"model_specs": [{"name": "big", "source": "local_path", "local_path": model.path(),
                                       "backend": "gpu-sleeper-custom"}]});
    let (_, eval) = s.post("/v2/model-evaluations", fits).await;
    let r = &eval["results"][0];
    assert_eq!(r["compatible"], true, "{eval:#}");
    assert!(r["compatibility_messages"].to_string().contains("fits on worker gpu1"), "{eval:#}");
    // The spec's own name (not its backend's), GPUStack's fields, the parallelism it would use.
    assert_eq!(r["name"], "big", "{eval:#}");
    assert!(r["scheduling_messages"].to_string().contains("fits on worker gpu1"), "{eval:#}");
    assert_eq!(r["resource_claim"]["vram"], r["vram"], "{eval:#}");
    assert!(r["resource_claim"]["ram"].is_u64(), "{eval:#}");
    assert_eq!(r["tensor_parallel_size"], 1, "{eval:#}");
    assert_eq!(r["default_spec"]["backend"], "gpu-sleeper-custom", "{eval:#}");
    assert_eq!(r["default_spec"]["categories"], json!(["llm"]), "{eval:#}");
    assert_eq!(r["error"], false, "{eval:#}");
    // GPUStack's worker selector for Linux machines matches (labels `os: linux`, `arch: amd64`).
    let body = json!({"name": "big", "source": "local_path", "local_path": model.path(), "backend": "gpu-sleeper-custom",
                      "replicas": 6, "worker_selector": {"os": "linux"}});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    // No categories given: the scheduler fills them from the model once it has read it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, m) = s.get(&format!("/v2/models/{id}")).await;
        if m["categories"] == json!(["llm"]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "categories never filled: {m:#}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // 2 GPUs of 24 GB hold 2 replicas of 9 GiB each, and a fifth split over both; the last stays
    // pending and says why, per GPU.
    let items = wait_models_instances(&s, id, "5 running and 1 explained", |items| {
        let explained = |i: &&Value| {
            i["state"] == "pending" && i["state_message"].as_str().is_some_and(|m| m.contains("gpu1:cuda:1"))
        };
        items.len() == 6
            && items.iter().filter(|i| i["state"] == "running").count() == 5
            && items.iter().filter(explained).count() == 1
    })
    .await;
    let pending = items.iter().find(|i| i["state"] == "pending").expect("pending");
    assert!(pending["state_message"].as_str().unwrap_or("").contains("No suitable workers"), "{pending}");
    // No GPU is booked beyond its size.
    let mut booked = std::collections::BTreeMap::<String, u64>::new();
    for i in &items {
        for (gpu, bytes) in i["computed_resource_claim"]["vram"].as_object().into_iter().flatten() {
            *booked.entry(gpu.clone()).or_default() += bytes.as_u64().unwrap_or(0);
        }
    }
    // The up-front check answers without deploying: what fits and, for what doesn't, why.
    let huge = tempfile::NamedTempFile::new().expect("file");
    huge.as_file().set_len(60 << 30).expect("size");
    let spec = |name: &str, path: &std::path::Path| json!({"name": name, "source": "local_path", "local_path": path, "backend": "gpu-sleeper-custom"});
    let (status, eval) = s
        .post("/v2/model-evaluations", json!({"model_specs": [spec("small", model.path()), spec("huge", huge.path())]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{eval}");
    let results = eval["results"].as_array().expect("results");
    assert_eq!(results[0]["compatible"], false, "every GPU is full by now: {eval:#}");
    assert_eq!(results[1]["compatible"], false);
    assert!(results[1]["compatibility_messages"].to_string().contains("gpu1:cuda:0"), "{eval:#}");
    assert!(results[1]["vram"].as_u64().expect("vram") > 60 << 30);
    let (_, before) = s.get("/v2/models").await;
    assert_eq!(before["pagination"]["total"], 1, "evaluating deploys nothing");

    let (_, gpus) = s.get("/v2/gpu-devices").await;
    let capacity = gpus["items"][0]["memory_total"].as_u64().expect("memory_total");
    assert!(booked.values().all(|b| *b <= capacity), "{booked:?} over {capacity}");
    // Each GPU shows, in GPUStack's shape, what the scheduler claimed on it.
    for gpu in gpus["items"].as_array().expect("items") {
        let index = gpu["index"].to_string();
        assert_eq!(gpu["memory"]["allocated"].as_u64(), Some(booked[&index]), "{gpu:#}");
        assert_eq!(gpu["memory"]["total"].as_u64(), Some(capacity), "{gpu:#}");
        assert_eq!(gpu["worker_name"], "gpu1", "{gpu:#}");
    }
    // The deployment's state says 5 of 6 run; a restart replaces them all at once.
    let (_, m) = s.get(&format!("/v2/models/{id}")).await;
    assert_eq!((m["state"].as_str(), m["state_message"].as_str()), (Some("partial"), Some("5 of 6 replicas running")));
    let old: Vec<i64> = items.iter().filter_map(|i| i["id"].as_i64()).collect();
    let (status, restart) = s.post(&format!("/v2/models/{id}/restart"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{restart}");
    assert_eq!(restart["deleted_instances"].as_array().map(Vec::len), Some(6), "{restart}");
    assert_eq!(restart["restarted"], true);
    wait_models_instances(&s, id, "6 new instances", |items| {
        items.len() == 6 && items.iter().all(|i| !old.contains(&i["id"].as_i64().unwrap_or(0)))
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_place_more_than_a_gpu_holds() {
    use ferrostack::control::scheduler::Scheduler;
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPY_GPU_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = worker_options("gpu2", (45350, 45399));
    opts.simulate_gpus = Some("1xL4-24GB".into());
    let worker = start_worker(&s, dir.path(), &opts).await;
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(7 << 30).expect("size");
    let body = json!({"name": "race", "source": "local_path", "local_path": model.path(), "backend": "gpu-sleeper-custom",
                      "replicas": 5});
    let (_, m) = s.post("/v2/models", body).await;
    let id = m["id"].as_i64().expect("id");
    let items = wait_models_instances(&s, id, "placed", |items| {
        items.len() == 5
            && items.iter().all(|i| i["state"] != "scheduled" && (i["worker_id"].is_null() || i["state"] != "pending"))
            && items.iter().filter(|i| !i["worker_id"].is_null()).count() >= 2
    })
    .await;
    // Two more schedulers racing the built-in one change nothing: the one GPU holds 2.
    let a = Scheduler::new(s.db().clone());
    let b = Scheduler::new(s.db().clone());
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(ra.expect("tick") + rb.expect("tick"), 0);
    let placed = items.iter().filter(|i| !i["worker_id"].is_null()).count();
    assert_eq!(placed, 2, "{items:#?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_deployment_lifecycle_through_api_and_cli() {
    let Some((server, gguf)) = llama() else { return };
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, &llama_backend_yaml(&server)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("cpu1", (45400, 45449))).await;
    let key = s.api_key(json!({"name": "cli"})).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env("FERROSTACK_SERVER_URL", &s.base)
            .env("FERROSTACK_API_KEY", &key)
            .output()
            .expect("run cli");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ferrostack {args:?}: {text}");
        text
    };
    let gguf = gguf.to_str().expect("path").to_string();
    let out = tokio::task::spawn_blocking({
        let cli_args = ["deploy", "smol", "--local-path", &gguf, "--backend", "llama-cpp-custom"].map(String::from);
        let base = s.base.clone();
        let key = key.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
                .args(&cli_args)
                .env("FERROSTACK_SERVER_URL", base)
                .env("FERROSTACK_API_KEY", key)
                .output()
                .expect("deploy")
        }
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1/1 running"));
    let (_, models) = s.get("/v2/models").await;
    let id = models["items"][0]["id"].as_i64().expect("id");

    let chat = |port: u64| {
        let body = json!({"model": "smol", "max_tokens": 8, "temperature": 0,
                          "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]});
        async move {
            let res = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .expect("chat");
            let v: Value = res.json().await.expect("json");
            v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_lowercase()
        }
    };
    let items = wait_models_instances(&s, id, "running", |i| i.len() == 1 && i[0]["state"] == "running").await;
    assert!(chat(items[0]["port"].as_u64().expect("port")).await.contains("paris"));

    // Scale to 2 by the API (with the version read), then stop (0) and start (1) by the CLI.
    let (_, m) = s.get(&format!("/v2/models/{id}")).await;
    let mut spec = m.clone();
    for k in ["id", "version", "created_at", "updated_at"] {
        spec.as_object_mut().expect("object").remove(k);
    }
    spec["replicas"] = json!(2);
    let (status, body) = s.put(&format!("/v2/models/{id}?version={}", m["version"]), spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = s.put(&format!("/v2/models/{id}?version={}", m["version"]), spec).await;
    assert_eq!(status, StatusCode::CONFLICT, "a stale version is refused");
    let items =
        wait_models_instances(&s, id, "2 running", |i| i.len() == 2 && i.iter().all(|x| x["state"] == "running")).await;
    for i in &items {
        assert!(chat(i["port"].as_u64().expect("port")).await.contains("paris"));
    }
    let ps = cli(&["ps"]);
    assert!(ps.contains("smol") && ps.contains("2/2"), "{ps}");

    cli(&["scale", "smol", "0"]);
    wait_models_instances(&s, id, "stopped", |i| i.is_empty()).await;
    cli(&["scale", "smol", "1"]);
    wait_models_instances(&s, id, "started", |i| i.len() == 1 && i[0]["state"] == "running").await;

    cli(&["undeploy", "smol"]);
    wait_models_instances(&s, id, "deleted", |i| i.is_empty()).await;
    let (status, _) = s.get(&format!("/v2/models/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    worker.shutdown().await;
}

async fn edits_roll_instances_one_at_a_time_when_asked(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("roller", (45800, 45849))).await;
    let body = json!({"name": "rolling", "source": "local_path", "local_path": "/", "backend": "sleeper-custom", "replicas": 2});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let before =
        wait_models_instances(&s, id, "2 running", |i| i.len() == 2 && i.iter().all(|x| x["state"] == "running")).await;
    let old: Vec<i64> = before.iter().filter_map(|i| i["id"].as_i64()).collect();

    // A description change restarts nothing.
    let mut spec = m.clone();
    for k in ["id", "version", "created_at", "updated_at"] {
        spec.as_object_mut().expect("object").remove(k);
    }
    spec["description"] = json!("now described");
    assert_eq!(s.put(&format!("/v2/models/{id}"), spec.clone()).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, same) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
    let ids: Vec<i64> = same["items"].as_array().expect("items").iter().filter_map(|i| i["id"].as_i64()).collect();
    assert_eq!(ids, old, "no instance was replaced");

    // An env change, as GPUStack does by default, applies to new instances only: the running ones
    // stay, and show that they run an older spec.
    spec["env"] = json!({"GREETING": "hello"});
    let (status, edited) = s.put(&format!("/v2/models/{id}"), spec.clone()).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, kept) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
    let kept = kept["items"].as_array().cloned().unwrap_or_default();
    let ids: Vec<i64> = kept.iter().filter_map(|i| i["id"].as_i64()).collect();
    assert_eq!(ids, old, "an edit without rolling=true replaced instances");
    let digest = edited["spec_digest"].as_str().expect("spec_digest");
    assert!(kept.iter().all(|i| i["spec_hash"].as_str() != Some(digest) && i["state"] == "running"), "{kept:#?}");

    // With ?rolling=true they are replaced, one at a time: never fewer than 2 running meanwhile.
    assert_eq!(s.put(&format!("/v2/models/{id}?rolling=true"), spec).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = s.get(&format!("/v2/model-instances?model_id={id}")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let running = items.iter().filter(|i| i["state"] == "running").count();
        assert!(running >= 2, "fewer than 2 running during the roll: {list:#}");
        // A replaced instance drains (docs/draining.md) while the next extra starts: no replica.
        let replicas = items.iter().filter(|i| i["state"] != "draining").count();
        assert!(replicas <= 3, "more than one extra instance at a time: {list:#}");
        let replaced =
            items.iter().all(|i| !old.contains(&i["id"].as_i64().unwrap_or(0)) && i["env"]["GREETING"] == "hello");
        if items.len() == 2 && replaced && running == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the roll never finished: {list:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
}

async fn the_custom_backend_runs_the_deployments_own_command(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("custom1", (45850, 45899))).await;
    // Without a run command the Custom backend has nothing to run.
    let (status, err) = s
        .post("/v2/models", json!({"name": "c", "source": "local_path", "local_path": "/", "backend": "Custom"}))
        .await;
    assert_eq!((status, err["field"].as_str()), (StatusCode::BAD_REQUEST, Some("run_command")), "{err}");
    let body = json!({"name": "flex", "source": "local_path", "local_path": "/", "backend": "Custom", "cpu_offloading": true,
                      "image_name": "busybox", "run_command": "sh -c 'echo flexible {{model_name}} on {{port}}; exec sleep 300'"});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let items = wait_models_instances(&s, m["id"].as_i64().expect("id"), "running", |i| {
        i.len() == 1 && i[0]["state"] == "running"
    })
    .await;
    let command = items[0]["command"].to_string();
    assert!(command.contains("echo flexible flex on"), "{command}");
    worker.shutdown().await;
}

async fn mindie_reads_its_parameters_from_a_config_file(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    // MindIE itself needs Ascend NPUs; a custom version of the built-in backend stands in for its
    // daemon and prints the config file it was handed.
    let (_, mindie) = s.get("/v2/inference-backends/backend_name/MindIE").await;
    let id = mindie["id"].as_i64().expect("id");
    let yaml = "backend_name: MindIE\nversion_configs:\n  probe-custom:\n    image_name: busybox\n    entrypoint: sh\n    \
                run_command: \"-c 'cat $MIES_CONFIG_JSON_PATH; exec sleep 300'\"\n    custom_framework: cpu\n";
    let (status, body) = s.put(&format!("/v2/inference-backends/{id}/from-yaml"), json!({ "content": yaml })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("npu1", (46100, 46149))).await;
    let model = tempfile::tempdir().expect("model dir");
    let body = |params: &[&str]| {
        json!({"name": "mi", "source": "local_path", "local_path": model.path(), "backend": "MindIE",
               "backend_version": "probe-custom", "backend_parameters": params})
    };
    // Every documented range is checked up front.
    let (status, err) = s.post("/v2/models", body(&["--max-batch-size 0"])).await;
    assert_eq!((status, err["field"].as_str()), (StatusCode::BAD_REQUEST, Some("backend_parameters")), "{err}");
    assert!(err["message"].as_str().unwrap_or("").contains("max-batch-size"), "{err}");
    let (status, m) = s.post("/v2/models", body(&["--max-batch-size 64", "--max-seq-len 4096"])).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    // The stand-in serves no /info, so it stays `starting`: its log is what counts.
    let items = wait_models_instances(&s, m["id"].as_i64().expect("id"), "started", |i| {
        i.len() == 1 && i[0]["state"] == "starting"
    })
    .await;
    let instance = &items[0];
    // The parameters went into the config, not onto the command line.
    assert!(!instance["command"].to_string().contains("max-batch-size"), "{instance:#}");
    let mut text = String::new();
    for _ in 0..100 {
        let (_, logs) = s.get(&format!("/v2/model-instances/{}/logs?tail=400", instance["id"])).await;
        // (A log that is one JSON document comes back parsed.)
        text = logs.as_str().map(str::to_string).unwrap_or_else(|| logs.to_string());
        if text.contains("maxBatchSize") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = text.find('{').unwrap_or_else(|| panic!("no config in the log: {text:?}"));
    let config: Value = serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(config["BackendConfig"]["ScheduleConfig"]["maxBatchSize"], 64, "{config:#}");
    assert_eq!(config["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"], 4096);
    assert_eq!(config["ServerConfig"]["port"], instance["port"]);
    assert_eq!(config["ServerConfig"]["ipAddress"], "127.0.0.1");
    let model_config = &config["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0];
    assert_eq!(model_config["modelName"], "mi");
    assert_eq!(model_config["modelWeightPath"].as_str(), model.path().to_str());
    worker.shutdown().await;
}

/// A replica goes back to the worker its deployment ran on lately (its files and page cache are
/// warm there), even where spreading would pick another: scaled to zero and woken, it lands where
/// it ran; a deployment that never ran goes where spreading says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_deployment_goes_back_to_its_warm_worker() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = start_worker(&s, da.path(), &worker_options("warm", (46860, 46869))).await;
    let mut ids = Vec::new();
    for name in ["sleepy", "busy"] {
        let body = json!({"name": name, "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                          "replicas": 1});
        let (status, m) = s.post("/v2/models", body).await;
        assert_eq!(status, StatusCode::OK, "{m}");
        let id = m["id"].as_i64().expect("id");
        wait_models_instances(&s, id, "running on the only worker", |i| i.len() == 1 && i[0]["state"] == "running")
            .await;
        ids.push(id);
    }
    let b = start_worker(&s, db.path(), &worker_options("cold", (46870, 46879))).await;
    edit_model(&s, ids[0], "", |m| m["replicas"] = json!(0)).await;
    wait_models_instances(&s, ids[0], "asleep", |i| i.is_empty()).await;
    edit_model(&s, ids[0], "", |m| m["replicas"] = json!(1)).await;
    let woken = wait_models_instances(&s, ids[0], "awake", |i| i.len() == 1 && i[0]["state"] == "running").await;
    assert_eq!(woken[0]["worker_id"], a.worker_id, "not back on its warm worker: {woken:#?}");
    // The control: spreading alone sends a deployment that never ran to the emptier worker.
    let body = json!({"name": "fresh", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (_, m) = s.post("/v2/models", body).await;
    let fresh = m["id"].as_i64().expect("id");
    let placed = wait_models_instances(&s, fresh, "placed", |i| i.len() == 1 && i[0]["worker_id"].is_i64()).await;
    assert_eq!(placed[0]["worker_id"], b.worker_id, "spreading should pick the emptier worker: {placed:#?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A hub that does not answer (a stalled mirror) stalls only the deployment read from it: the model
/// is read in a step of its own (`control::analysis`), so while that read still waits on the same,
/// first connection, another deployment scales down and a third is placed and runs; the stuck
/// deployment's replica says `analyzing` meanwhile. When the read gives up (15 s), what it found
/// (nothing, and why) is stored on the deployment and its replica is placed on estimates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_hub_never_stalls_scaling() {
    // A hub that accepts connections and never answers; it counts them and which are still open.
    let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hub_addr = hub.local_addr().expect("addr");
    let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, o) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = hub.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read until the client gives up; never answer.
                while tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await.is_ok_and(|n| n > 0) {}
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let access = ferrostack::config::HubAccess { hf_endpoint: format!("http://{hub_addr}"), hf_token: None };
    let s = TestServer::start_with_hub(DbKind::Sqlite, access).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("stalled", (46890, 46899))).await;
    let body = json!({"name": "quick", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 2});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let quick = m["id"].as_i64().expect("id");
    wait_models_instances(&s, quick, "2 running", |i| i.len() == 2 && i.iter().all(|x| x["state"] == "running")).await;

    let body = json!({"name": "stuck", "source": "huggingface", "huggingface_repo_id": "org/stalled",
                      "backend": "sleeper-custom", "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let stuck_id = m["id"].as_i64().expect("id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while open.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the scheduler never asked the hub");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = accepted.load(Ordering::SeqCst);

    edit_model(&s, quick, "", |m| m["replicas"] = json!(1)).await;
    wait_models_instances(&s, quick, "scaled down", |i| i.len() == 1).await;
    assert_eq!(
        (accepted.load(Ordering::SeqCst), open.load(Ordering::SeqCst)),
        (first, 1),
        "the scale-down waited for the hub read to end"
    );
    wait_models_instances(&s, stuck_id, "analyzing", |i| i.len() == 1 && i[0]["state"] == "analyzing").await;
    let body = json!({"name": "later", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let later = m["id"].as_i64().expect("id");
    wait_models_instances(&s, later, "placed and running", |i| i.len() == 1 && i[0]["state"] == "running").await;
    let (_, m) = s.get(&format!("/v2/models/{later}")).await;
    assert!(m["analysis"]["problems"].to_string().contains("no config.json"), "read from its path: {m}");
    assert_eq!(m["categories"], json!(["llm"]), "named from the analysis: {m}");
    assert_eq!(
        (accepted.load(Ordering::SeqCst), open.load(Ordering::SeqCst)),
        (first, 1),
        "the placement waited for the hub read to end"
    );

    // Placed (its worker then downloads from the same stalled hub, which is not this test's business).
    wait_models_instances(&s, stuck_id, "placed on estimates once the read gave up", |i| {
        i.len() == 1 && !i[0]["worker_id"].is_null()
    })
    .await;
    let (_, m) = s.get(&format!("/v2/models/{stuck_id}")).await;
    let problems = m["analysis"]["problems"].to_string();
    assert!(problems.contains("cannot read the model's metadata"), "{m}");
    worker.shutdown().await;
}

/// A deployment, its route and the route's target are written in one transaction: when a later
/// write fails (here a route whose name is taken), the deployment is not left behind without it.
async fn a_deployment_is_never_left_without_its_route(kind: DbKind) {
    use ferrostack::api::ModelSpec;
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let body = json!({"name": "first", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 0});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let (_, routes) = s.get("/v2/model-routes?search=first").await;
    assert_eq!(routes["items"][0]["targets"], 1, "created with its route and target: {routes}");
    let first = s.db().get::<ModelSpec>(m["id"].as_i64().expect("id")).await.expect("stored");
    let second = ModelSpec { name: "second".into(), ..first.spec.clone() };
    let res = s
        .db()
        .insert_chain(
            (&second, &ferrostack::db::model_columns(&second)),
            |m| {
                let (mut route, _) = ferrostack::server::routing::model_route(m);
                route.name = "first".into(); // taken by the first deployment's route
                let columns = ferrostack::db::route_columns(&route);
                Some((route, columns))
            },
            ferrostack::server::routing::model_target,
        )
        .await;
    assert!(res.is_err(), "the taken route name must fail the chain");
    assert!(s.db().get_by_name::<ModelSpec>("second").await.expect("read").is_none(), "deployment left behind");
}

/// The backend is frozen on an instance when it is bound (`resolved_backend`): an edit of the
/// backend afterwards changes nothing about an instance already bound, not even when it restarts
/// after a crash; a replica bound after the edit runs the edited backend.
async fn an_instance_runs_the_backend_it_was_bound_to(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    import_backend(&s, SLEEPER_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("frozen", (47920, 47939))).await;
    let body = json!({"name": "frozen", "source": "local_path", "local_path": "/", "backend": "sleeper-custom",
                      "replicas": 1});
    let (status, m) = s.post("/v2/models", body).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let id = m["id"].as_i64().expect("id");
    let first = wait_models_instances(&s, id, "running", |i| i.len() == 1 && i[0]["state"] == "running").await;
    let first = &first[0];
    assert!(first["command"].to_string().contains("exec sleep 300"), "{first}");
    assert_eq!(first["resolved_backend"]["version_configs"].as_object().map(|v| v.len()), Some(1), "{first}");

    // Edit the backend's command.
    let (_, b) = s.get("/v2/inference-backends/backend_name/sleeper-custom").await;
    let edited = SLEEPER_YAML.replace("exec sleep 300", "exec sleep 301");
    let (status, body) =
        s.put(&format!("/v2/inference-backends/{}/from-yaml", b["id"]), json!({ "content": edited })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The bound instance crashes and is restarted (after the backoff): with the frozen backend.
    let pid = first["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let again = wait_models_instances(&s, id, "restarted", |i| {
        i.len() == 1 && i[0]["restart_count"] == 1 && i[0]["state"] == "running"
    })
    .await;
    // (The port may differ: a restart takes a free one again.)
    let command = again[0]["command"].to_string();
    assert!(command.contains("exec sleep 300") && !command.contains("301"), "restarted as bound: {:#}", again[0]);

    // A replica bound after the edit runs the edited backend.
    edit_model(&s, id, "", |m| m["replicas"] = json!(2)).await;
    let both =
        wait_models_instances(&s, id, "2 running", |i| i.len() == 2 && i.iter().all(|x| x["state"] == "running")).await;
    let new = both.iter().find(|i| i["id"] != first["id"]).expect("the new replica");
    assert!(new["command"].to_string().contains("exec sleep 301"), "{new}");
    worker.shutdown().await;
}
