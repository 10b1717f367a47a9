//! Tests of the container runtime: the create body as pure data, and real containers through
//! podman's Docker API where it runs (skipped, or failed under CI, without an engine).

// Tests find their engine and image in the environment the suite sets up.
#![allow(clippy::disallowed_methods)]

use super::*;

fn spec(dir: &Path) -> LaunchSpec {
    LaunchSpec {
        instance_id: 42,
        instance_name: "qwen/Qwen2.5 0.5B:q4".into(),
        program: vec!["llama-server".into()],
        args: vec!["--port".into(), "8080".into()],
        env: [("A".to_string(), "1".to_string())].into(),
        image: Some("localhost/x:1".into()),
        model_path: dir.join("m.gguf"),
        port: 8080,
        gpu_indexes: vec![],
        log_path: dir.join("log"),
        files: vec![],
    }
}

#[test]
fn names_are_docker_safe() {
    assert_eq!(container_name(3, "qwen/Qwen2.5 0.5B:q4"), "ferrostack-3-qwen-Qwen2.5-0.5B-q4");
    assert_eq!(container_name(3, "///"), "ferrostack-3");
    assert!(container_name(1, &"x".repeat(500)).len() < 130);
}

#[test]
fn create_body_follows_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("m.gguf"), b"GGUF").expect("model");
    let mut s = spec(dir.path());
    let body = create_body(&s, "localhost/x:1", Some("t"));
    assert_eq!(body.entrypoint, Some(vec!["llama-server".to_string()]));
    assert_eq!(body.cmd, Some(vec!["--port".to_string(), "8080".to_string()]));
    assert_eq!(body.env, Some(vec!["A=1".to_string()]));
    let labels = body.labels.expect("labels");
    assert_eq!(labels[LABEL_INSTANCE_ID], "42");
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_SCOPE], "t");
    let host = body.host_config.expect("host config");
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.init, Some(true));
    let d = dir.path().display();
    assert_eq!(host.binds, Some(vec![format!("{d}:{d}:ro")]));
    assert!(host.device_requests.is_none());

    s.program.clear();
    s.gpu_indexes = vec![0, 2];
    s.files = vec![(dir.path().join("c.json"), "/etc/app/config.json".into())];
    let body = create_body(&s, "localhost/x:1", None);
    let binds = body.host_config.as_ref().and_then(|h| h.binds.clone()).expect("binds");
    assert_eq!(binds, [format!("{d}:{d}:ro"), format!("{d}/c.json:/etc/app/config.json:ro")]);
    assert_eq!(body.entrypoint, None);
    assert_eq!(body.cmd, Some(vec!["--port".to_string(), "8080".to_string()]));
    assert!(!body.labels.expect("labels").contains_key(LABEL_SCOPE));
    let requests = body.host_config.and_then(|h| h.device_requests).expect("device requests");
    assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
    assert_eq!(requests[0].device_ids, Some(vec!["0".to_string(), "2".to_string()]));
}

#[test]
fn explicit_sockets_win() {
    for (given, endpoint) in [("/tmp/x.sock", "unix:///tmp/x.sock"), ("tcp://h:2375", "tcp://h:2375")] {
        assert_eq!(resolve_endpoint(Some(PathBuf::from(given))).expect("endpoint"), endpoint);
    }
}

/// The engine from `DOCKER_HOST`, or None (test skipped, reason printed) unless
/// `FERROSTACK_REQUIRE_CONTAINERS=1`, which turns a skip into a failure.
async fn engine_or_skip(test: &str) -> Option<ContainerRuntime> {
    let required = std::env::var("FERROSTACK_REQUIRE_CONTAINERS").is_ok_and(|v| v == "1");
    let reason = match std::env::var("DOCKER_HOST") {
        Err(_) => "DOCKER_HOST is unset (run: eval \"$(scripts/setup-podman.sh)\")".to_string(),
        Ok(host) => match ContainerRuntime::connect(Some(PathBuf::from(&host))).await {
            Ok(rt) => return Some(rt),
            Err(e) => format!("no container engine at DOCKER_HOST={host}: {e}"),
        },
    };
    assert!(!required, "{test}: FERROSTACK_REQUIRE_CONTAINERS=1 but {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// Polls `check` every 100 ms until it holds, for at most `tries` times.
async fn eventually<F: std::future::Future<Output = bool>>(tries: u32, mut check: impl FnMut() -> F) -> bool {
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

#[tokio::test]
async fn runs_logs_finds_and_stops_containers() {
    let Some(rt) = engine_or_skip("runs_logs_finds_and_stops_containers").await else { return };
    let image = std::env::var("FERROSTACK_TEST_IMAGE").unwrap_or_else(|_| "localhost/ferrostack-busybox:test".into());
    let scope = format!("test-{}", std::process::id());
    let rt = rt.with_scope(scope.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let instance_id = 900_000 + i64::from(std::process::id() % 100_000);
    let spec = LaunchSpec {
        instance_id,
        instance_name: "busybox httpd".into(),
        program: vec!["/bin/sh".into(), "-c".into()],
        args: vec![format!(
            "echo hello from the container; cat /etc/ferrostack/config.json; echo to-stderr >&2; \
             exec httpd -f -p 127.0.0.1:{port}"
        )],
        env: Default::default(),
        image: Some(image.clone()),
        model_path: dir.path().to_path_buf(),
        port,
        gpu_indexes: vec![],
        log_path: dir.path().join("logs/0.log"),
        // A config file handed in (how MindIE gets its config.json).
        files: vec![(dir.path().join("config.json"), "/etc/ferrostack/config.json".into())],
    };
    std::fs::write(dir.path().join("config.json"), r#"{"handed":"in"}"#).expect("config file");
    let t0 = Instant::now();
    let handle = rt.start(&spec).await.expect("start");
    eprintln!("container started in {:?} on {}", t0.elapsed(), rt.endpoint);
    assert_eq!(rt.liveness(&handle).await, Liveness::Running);

    // Host networking: httpd answers on the host's loopback.
    let answered = eventually(50, || async { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() }).await;
    assert!(answered, "httpd in the container never listened on 127.0.0.1:{port}");
    eprintln!("container create -> listening in {:?}", t0.elapsed());

    // Its output reaches the instance log.
    let read_log = || std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    let logged = eventually(50, || async {
        read_log().contains("hello from the container")
            && read_log().contains("to-stderr")
            && read_log().contains(r#"{"handed":"in"}"#)
    })
    .await;
    assert!(logged, "log: {:?}", read_log());

    // A restarted worker (a new runtime in the same scope) finds it; another scope does not.
    let again = ContainerRuntime::connect(None).await.expect("connect again").with_scope(scope.clone());
    assert_eq!(again.managed().await, vec![(instance_id, handle.clone())]);
    let other = ContainerRuntime::connect(None).await.expect("connect").with_scope("someone-else");
    assert!(other.managed().await.is_empty());

    // Starting the same instance again replaces the stale container instead of failing on its name.
    let handle2 = rt.start(&spec).await.expect("restart over a stale container");
    assert_ne!(handle, handle2);
    assert!(matches!(rt.liveness(&handle).await, Liveness::Exited(_)));

    // Stop within the grace (httpd ignores SIGTERM as PID 1; the init forwards it), then it is gone.
    let t1 = Instant::now();
    rt.stop(&handle2, Duration::from_secs(5)).await;
    let took = t1.elapsed();
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    eprintln!("stop + remove took {took:?}");
    assert!(matches!(rt.liveness(&handle2).await, Liveness::Exited(m) if m.contains("gone")));
    assert!(rt.managed().await.is_empty());
    rt.release(instance_id).await;

    // A container that exits reports its status.
    let failing =
        LaunchSpec { args: vec!["echo dying; exit 3".into()], log_path: dir.path().join("logs/1.log"), ..spec.clone() };
    let h = rt.start(&failing).await.expect("start failing");
    eventually(50, || async { rt.liveness(&h).await != Liveness::Running }).await;
    let status = rt.liveness(&h).await;
    assert!(matches!(&status, Liveness::Exited(m) if m.contains("status 3")), "{status:?}");
    // The fallback used when Podman reports a state bollard cannot read says the same.
    let Handle::Container { id } = &h else { panic!("not a container handle") };
    assert_eq!(rt.exit_status(id).await, Liveness::Exited("exited with status 3".into()));
    rt.release(instance_id).await;
    assert!(matches!(rt.liveness(&h).await, Liveness::Exited(m) if m.contains("gone")));

    // No registry here: a missing image is an Image error naming it, and the pull failure is logged.
    let missing = "docker.io/ferrostack/does-not-exist:0.0.0";
    let err = rt
        .start(&LaunchSpec { image: Some(missing.into()), log_path: dir.path().join("logs/2.log"), ..spec.clone() })
        .await
        .expect_err("a missing image cannot start");
    match &err {
        RuntimeError::Image { image, message } => {
            assert_eq!(image, missing);
            assert!(!message.is_empty());
            eprintln!("missing image: {err}");
        }
        other => panic!("expected an Image error, got {other:?}"),
    }
    assert!(err.to_string().contains(missing));
    let log = std::fs::read_to_string(dir.path().join("logs/2.log")).unwrap_or_default();
    assert!(log.contains("pulling image"), "{log}");
}

/// The llama.cpp server (xllamacpp shim) from the image `scripts/setup-podman.sh --llama-image` builds,
/// started through this runtime, answers a chat completion on its port. Needs FERROSTACK_LLAMA_IMAGE
/// and SMOLLM2_GGUF (from scripts/setup-llm.sh); skipped without them.
#[tokio::test]
async fn serves_a_chat_completion_from_the_llama_image() {
    let test = "serves_a_chat_completion_from_the_llama_image";
    let (Ok(image), Ok(model)) = (std::env::var("FERROSTACK_LLAMA_IMAGE"), std::env::var("SMOLLM2_GGUF")) else {
        eprintln!("SKIPPED {test}: FERROSTACK_LLAMA_IMAGE or SMOLLM2_GGUF is unset");
        return;
    };
    let Some(rt) = engine_or_skip(test).await else { return };
    let rt = rt.with_scope(format!("test-llama-{}", std::process::id()));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let instance_id = 800_000 + i64::from(std::process::id() % 100_000);
    let spec = LaunchSpec {
        instance_id,
        instance_name: "smollm2".into(),
        program: vec!["llama-server".into()],
        args: ["-m", &model, "--host", "127.0.0.1", "--port", &port.to_string(), "-a", "smol", "-c", "2048"]
            .map(String::from)
            .to_vec(),
        env: Default::default(),
        image: Some(image),
        model_path: PathBuf::from(&model),
        port,
        gpu_indexes: vec![],
        log_path: dir.path().join("logs/0.log"),
        files: vec![],
    };
    let t0 = Instant::now();
    let handle = rt.start(&spec).await.expect("start");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let healthy = eventually(600, || async {
        let up = http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success());
        up || rt.liveness(&handle).await != Liveness::Running
    })
    .await;
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    assert!(healthy && rt.liveness(&handle).await == Liveness::Running, "the server never became healthy: {log}");
    eprintln!("llama container: create -> /health 200 in {:?}", t0.elapsed());
    let t1 = Instant::now();
    let body = serde_json::json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "max_tokens": 16,
        "temperature": 0
    });
    let response = http.post(format!("{base}/v1/chat/completions")).json(&body).send().await.expect("chat");
    let answer: serde_json::Value = response.json().await.expect("chat json");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
    eprintln!("chat completion in {:?}: {text:?}", t1.elapsed());
    assert!(!text.is_empty(), "{answer}");
    let t2 = Instant::now();
    rt.stop(&handle, Duration::from_secs(10)).await;
    eprintln!("stop + remove in {:?}", t2.elapsed());
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    assert!(log.contains("llama") || log.contains("server"), "the server's output is not in the log: {log}");
    rt.release(instance_id).await;
}
