//! The command line as a shell user meets it: output into a pipe that closes early.

use std::process::Stdio;

use serde_json::json;

use crate::support::{DbKind, TestServer};

/// `ferrostack ps | head -0` and friends: a closed pipe ends a client command quietly (no panic,
/// no "Broken pipe" message), whatever it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_client_commands_quietly() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "pipe"})).await;
    for args in [&["ps"][..], &["api-keys", "list"], &["users", "me"], &["version"], &["backend", "list"]] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env("FERROSTACK_SERVER_URL", &s.base)
            .env("FERROSTACK_API_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ferrostack");
        // The reader goes away before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        let killed_by_sigpipe = std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(13);
        assert!(out.status.success() || killed_by_sigpipe, "{args:?}: {:?} {stderr}", out.status);
    }
}

/// Built in a git checkout, `ferrostack version` names the commit (not "unknown").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_git_commit() {
    let in_checkout = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !in_checkout {
        assert!(std::env::var("CI").is_err(), "CI runs from a git checkout: the commit must be known");
        eprintln!("skipped: not built in a git checkout");
        return;
    }
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "version"})).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
        .arg("version")
        .env("FERROSTACK_SERVER_URL", &s.base)
        .env("FERROSTACK_API_KEY", &key)
        .output()
        .await
        .expect("run ferrostack");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("unknown"), "{text}");
    // "server 0.1.0 (abc123…), client 0.1.0 (abc123…)"
    let commit = text.split(['(', ')']).nth(1).expect("a commit in parentheses");
    let known = std::process::Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(known, "{commit} is no commit of this checkout: {text}");
}

/// Runs the binary with only `env` from the FERROSTACK_* variables, `stdin` piped in.
async fn ferrostack(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in ["FERROSTACK_SERVER_URL", "FERROSTACK_API_KEY", "FERROSTACK_CREDENTIALS", "XDG_CONFIG_HOME"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("run ferrostack");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("wait");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `ferrostack login` keeps a key for this machine in the user's config (0600); later commands
/// use it without --api-key, on the server logged in to; `logout` revokes it and removes the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keeps_a_key_that_later_commands_use_and_logout_revokes() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let config = tempfile::tempdir().expect("tempdir");
    let xdg = config.path().to_str().expect("path");
    let env = [("XDG_CONFIG_HOME", xdg)];
    let file = config.path().join("ferrostack/credentials");

    // A wrong password stores nothing.
    let login = ["login", "--username", "admin", "--password-stdin", "--server-url", &s.base];
    let (ok, _, err) = ferrostack(&login, &env, "wrong password\n").await;
    assert!(!ok && err.contains("invalid username or password"), "{err}");
    assert!(!file.exists());

    let password = format!("{}\n", crate::support::ADMIN_PASSWORD);
    let (ok, out, err) = ferrostack(&login, &env, &password).await;
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::metadata(&file).expect("credentials").permissions().mode() & 0o777, 0o600);
    let (_, keys) = s.get("/v2/api-keys").await;
    let made: Vec<&serde_json::Value> = keys["items"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["name"].as_str().unwrap_or("").starts_with("ferrostack login: admin@"))
        .collect();
    assert_eq!(made.len(), 1, "{keys}");

    // No --server-url, no --api-key: the stored login is used.
    let (ok, out, err) = ferrostack(&["users", "me"], &env, "").await;
    assert!(ok && out.contains("\"admin\""), "{out}{err}");
    // The key is not sent to another server.
    let (ok, _, err) = ferrostack(&["users", "me", "--server-url", "http://127.0.0.1:9"], &env, "").await;
    assert!(!ok, "{err}");

    let (ok, out, err) = ferrostack(&["logout"], &env, "").await;
    assert!(ok && out.contains("revoked"), "{out}{err}");
    assert!(!file.exists());
    let (_, keys) = s.get("/v2/api-keys").await;
    assert!(!keys.to_string().contains("ferrostack login: admin@"), "{keys}");
    let (ok, _, _) = ferrostack(&["users", "me", "--server-url", &s.base], &env, "").await;
    assert!(!ok, "no key after logout");
}

/// `deploy` of a GPU backend on a CPU-only cluster (the README's vLLM example on a laptop): the
/// wait prints why the instance is pending and gives up at once instead of waiting 900 s; `ps`
/// shows the reason, not just "No suitable workers.".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_says_why_it_is_pending_and_stops_when_waiting_cannot_help() {
    use crate::workers::{import_backend, start_worker, worker_options};
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "pending"})).await;
    import_backend(&s, crate::models::SLEEPY_GPU_YAML).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("cpu-only", (45860, 45869))).await;
    let model = tempfile::NamedTempFile::new().expect("file");
    model.as_file().set_len(1 << 20).expect("size");
    let path = model.path().to_str().expect("path");
    let env = [("FERROSTACK_SERVER_URL", s.base.as_str()), ("FERROSTACK_API_KEY", key.as_str())];
    let deploy = ["deploy", "stuck", "--local-path", path, "--backend", "gpu-sleeper-custom", "--timeout", "600"];
    let (ok, out, err) = ferrostack(&deploy, &env, "").await;
    assert!(!ok, "{out}{err}");
    assert!(err.contains("instance stuck-") && err.contains("cannot be placed"), "{err}");
    assert!(err.contains("worker cpu-only:") && err.contains("undeploy stuck"), "{err}");
    let (ok, out, err) = ferrostack(&["ps"], &env, "").await;
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.contains("pending")).unwrap_or_default();
    assert!(row.contains("No suitable workers: worker cpu-only:"), "{out}");
    worker.shutdown().await;
}
