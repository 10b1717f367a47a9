//! Upgrades: a database made by each released binary (kept as SQL in tests/fixtures/schema by
//! `scripts/make-schema-fixture.sh`) is loaded, and today's server migrates it forward on start
//! and keeps serving what was in it: the admin's password, a user, an API key, a backend from
//! YAML, a deployment and its route; then it takes new writes. On SQLite and PostgreSQL. A
//! migration file edited after its release fails here (the stored checksums stop matching).

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::both_dbs;
use crate::support::{DbKind, TestServer, database_url};

both_dbs!(released_schemas_migrate_forward_and_keep_serving);

/// The schema versions of released binaries that have a fixture.
const RELEASED: &[i64] = &[7];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema")
}

async fn released_schemas_migrate_forward_and_keep_serving(kind: DbKind) {
    let dialect = match kind {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    };
    for version in RELEASED {
        let facts: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("v{version}.json"))).expect("facts"))
                .expect("json");
        let dir = tempfile::tempdir().expect("tempdir");
        let url = database_url(kind, dir.path()).await;
        sqlx::any::install_default_drivers();
        // One connection of its own: the PostgreSQL dump empties its search_path.
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        let script = std::fs::read_to_string(fixtures().join(format!("v{version}-{dialect}.sql"))).expect("dump");
        sqlx::raw_sql(&script).execute(&mut conn).await.expect("load the released database");
        let table = if kind == DbKind::Postgres { "public._sqlx_migrations" } else { "_sqlx_migrations" };
        let made_by: Option<i64> = sqlx::query_scalar(&format!("SELECT MAX(version) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .expect("schema version");
        conn.close().await.expect("close");
        assert_eq!(made_by, Some(*version), "the fixture is schema {version}");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::copy(fixtures().join(format!("v{version}-server_secret")), data.join("server_secret"))
            .expect("secret");

        let s = TestServer::start_with(dir, url).await;
        let now = s.db().schema_version().await.expect("schema");
        assert_eq!(now, s.db().supported_schema_version(), "migrated from {version} to the newest");

        let res = s
            .http
            .post(s.url("/auth/login"))
            .form(&[("username", "admin"), ("password", facts["admin_password"].as_str().expect("password"))])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::OK, "the admin's password survives the upgrade");
        let (_, users) = s.get("/v2/users").await;
        assert!(users.to_string().contains(facts["user"].as_str().expect("user")), "{users}");
        let (_, backends) = s.get("/v2/inference-backends?page=-1").await;
        assert!(backends.to_string().contains(facts["backend"].as_str().expect("backend")), "{backends}");
        let (_, models) = s.get("/v2/models").await;
        let model = models["items"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == facts["model"]).cloned())
            .unwrap_or_else(|| panic!("the deployment is gone: {models}"));
        assert_eq!(model["backend"], facts["backend"]);
        let (_, routes) = s.get("/v2/model-routes").await;
        assert!(routes.to_string().contains(facts["model"].as_str().expect("model")), "{routes}");
        let key = facts["api_key"][dialect].as_str().expect("key");
        let res = reqwest::Client::new().get(s.url("/v1/models")).bearer_auth(key).send().await.expect("models");
        assert_eq!(res.status(), StatusCode::OK, "the API key made before the upgrade still works");

        // New writes land next to the old rows.
        let mut edited = model.clone();
        edited["description"] = json!("edited after the upgrade");
        let (status, body) = s.put(&format!("/v2/models/{}?version={}", model["id"], model["version"]), edited).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let spec = json!({"name": "after-upgrade", "source": "local_path", "local_path": "/",
                          "backend": facts["backend"], "replicas": 0});
        let (status, body) = s.post("/v2/models", spec).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
