//! Test support: a real server on port 0 with a temp data dir, on SQLite or PostgreSQL, an HTTP
//! client logged in as admin, and an SSE reader.

use std::time::Duration;

use ferrostack::config::Config;
use ferrostack::server::Running;
use reqwest::StatusCode;
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// Environment variable naming a PostgreSQL server for the PostgreSQL half of the suite.
pub const ENV_TEST_PG_URL: &str = "FERROSTACK_TEST_PG_URL";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// Instantiates an `async fn(DbKind)` test once per database.
#[macro_export]
macro_rules! both_dbs {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::DbKind::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::support::postgres_available() {
                        super::$name($crate::support::DbKind::Postgres).await
                    }
                }
            }
        )*
    };
}

/// Whether the PostgreSQL half can run; under CI a missing server is a failure, not a skip.
pub fn postgres_available() -> bool {
    if std::env::var(ENV_TEST_PG_URL).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI is set but {ENV_TEST_PG_URL} is not: the PostgreSQL half of the suite must run in CI"
    );
    eprintln!("skipped: {ENV_TEST_PG_URL} not set (scripts/test.sh sets it)");
    false
}

/// A fresh, empty database URL of the given kind (PostgreSQL: a new database per call).
pub async fn database_url(kind: DbKind, dir: &std::path::Path) -> String {
    match kind {
        DbKind::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
        DbKind::Postgres => {
            let base = std::env::var(ENV_TEST_PG_URL).expect("postgres url");
            sqlx::any::install_default_drivers();
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut conn =
                <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("connect to test postgres");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("url has a database part");
            format!("{prefix}/{name}")
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub database_url: String,
}

impl TestServer {
    pub async fn start(kind: DbKind) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database_url(kind, dir.path()).await;
        Self::start_with(dir, database_url).await
    }

    /// A server listening on `host` (a test host's address) instead of loopback.
    pub async fn start_on(kind: DbKind, host: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database_url(kind, dir.path()).await;
        Self::start_at(dir, database_url, host).await
    }

    pub async fn start_with(dir: tempfile::TempDir, database_url: String) -> TestServer {
        Self::start_at(dir, database_url, "127.0.0.1").await
    }

    /// A server that reads model metadata from `hub` (a local stand-in) instead of the public hub.
    pub async fn start_with_hub(kind: DbKind, hub: ferrostack::config::HubAccess) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = database_url(kind, dir.path()).await;
        Self::start_configured(dir, database_url, "127.0.0.1", hub).await
    }

    async fn start_at(dir: tempfile::TempDir, database_url: String, host: &str) -> TestServer {
        Self::start_configured(dir, database_url, host, Default::default()).await
    }

    async fn start_configured(
        dir: tempfile::TempDir,
        database_url: String,
        host: &str,
        hub: ferrostack::config::HubAccess,
    ) -> TestServer {
        // RUST_LOG=… shows the server's and workers' logs for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let config = Config {
            data_dir: dir.path().join("data"),
            host: host.into(),
            port: 0,
            database_url: Some(database_url.clone()),
            bootstrap_password: Some(ADMIN_PASSWORD.into()),
            worker_grace: std::time::Duration::from_secs(3),
            max_request_body: 32 << 20,
            trusted_proxy_header: None,
            max_watch_streams: ferrostack::config::DEFAULT_MAX_WATCH_STREAMS,
            wake_queue: ferrostack::config::DEFAULT_WAKE_QUEUE,
            wake_timeout: std::time::Duration::from_secs(ferrostack::config::DEFAULT_WAKE_TIMEOUT_SECS),
            hub,
        };
        let listener = tokio::net::TcpListener::bind((host, 0)).await.expect("bind");
        let running = ferrostack::server::start(config, listener).await.expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            http: reqwest::Client::builder().cookie_store(true).build().expect("client"),
            running: Some(running),
            dir,
            database_url,
        }
    }

    /// A second server on this one's database, with its server secret (servers that share a
    /// database share the secret), as an HA pair runs.
    pub async fn another_on_the_same_database(&self) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::copy(self.dir.path().join("data/server_secret"), dir.path().join("data/server_secret"))
            .expect("copy the server secret");
        Self::start_with(dir, self.database_url.clone()).await
    }

    pub fn db(&self) -> &ferrostack::db::Db {
        &self.running.as_ref().expect("running").db
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs this server's cookie-carrying client in as admin.
    pub async fn login_admin(&self) {
        let res = self
            .http
            .post(self.url("/auth/login"))
            .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    }

    /// Creates an API key through the session and returns its value.
    pub async fn api_key(&self, body: Value) -> String {
        let (status, json) = self.post("/v2/api-keys", body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json["value"].as_str().expect("value").to_string()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        read(self.http.get(self.url(path)).send().await.expect("get")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        read(self.http.post(self.url(path)).json(&body).send().await.expect("post")).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        read(self.http.put(self.url(path)).json(&body).send().await.expect("put")).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        read(self.http.delete(self.url(path)).send().await.expect("delete")).await
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Status and JSON body (Null when empty) of a response.
pub async fn read(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    let text = res.text().await.expect("body");
    let json = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, json)
}

/// Reads SSE events (`id`, parsed `data`) from a streaming response.
pub struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(res: reqwest::Response) -> Self {
        assert_eq!(res.status(), StatusCode::OK);
        SseReader { res, buf: String::new() }
    }

    /// The next event with data, or None if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<(i64, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let (Some(id), false) = (id, data.is_empty()) {
                    return Some((id, serde_json::from_str(&data).expect("event json")));
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await.ok()?;
            match chunk.expect("stream") {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}

/// A gateway route `name` (id `id`) with one target serving `name` on `instances`: (instance id,
/// address). What the gateway-layer tests publish in their snapshots.
pub fn one_target_route(
    id: i64,
    name: &str,
    policy: ferrostack::gateway::snapshot::LoadBalancing,
    instances: &[(i64, String)],
) -> ferrostack::gateway::Route {
    use ferrostack::gateway::{Endpoint, Route, Target};
    Route {
        id,
        name: name.into(),
        categories: vec![],
        created: 0,
        timeout: None,
        generic_proxy: true,
        load_balancing: policy,
        targets: vec![Target {
            name: name.into(),
            weight: 100,
            served_name: name.into(),
            fallback_status_codes: vec![],
            instances: instances
                .iter()
                .map(|(id, addr)| Endpoint { instance_id: *id, addr: addr.clone(), auth: None })
                .collect(),
        }],
    }
}
