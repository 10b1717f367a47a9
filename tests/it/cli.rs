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
