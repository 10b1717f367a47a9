//! The auth matrix: every route of the OpenAPI document × every kind of credential, the status
//! expected from the policy table (`server::policy`). A route without a row in the table fails
//! the test; so does any 5xx. Ids in paths name nothing, so nothing is changed or deleted.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use ferrostack::server::policy::{Access, Role, access};

use crate::both_dbs;
use crate::support::{DbKind, TestServer, read};
use crate::workers::{start_worker, worker_options};

both_dbs!(every_route_answers_each_credential_as_the_policy_says);

/// How a request presents itself.
#[derive(Debug, Clone)]
enum Cred {
    None,
    Bearer(String),
    Session(reqwest::Client),
}

async fn every_route_answers_each_credential_as_the_policy_says(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let (status, user) =
        s.post("/v2/users", json!({"username": "regular", "password": "regular-password-1", "is_admin": false})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let user_http = reqwest::Client::builder().cookie_store(true).build().expect("client");
    let res = user_http
        .post(s.url("/auth/login"))
        .form(&[("username", "regular"), ("password", "regular-password-1")])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let key_of = async |body: Value| {
        let (status, k) = read(user_http.post(s.url("/v2/api-keys")).json(&body).send().await.expect("key")).await;
        assert_eq!(status, StatusCode::OK, "{k}");
        k["value"].as_str().expect("value").to_string()
    };
    let user_key = key_of(json!({"name": "all"})).await;
    let inference_key = key_of(json!({"name": "inference", "scope": ["inference"]})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&s, dir.path(), &worker_options("matrix", (46310, 46319))).await;
    let identity: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("worker.json")).expect("identity"))
            .expect("json");
    let worker_cred = identity["credential"].as_str().expect("credential").to_string();
    let cluster_token =
        std::fs::read_to_string(s.dir.path().join("data/cluster_token")).expect("token").trim().to_string();

    // (name, credential, role the policy knows it as; None: refused before the policy)
    let creds: Vec<(&str, Cred, Option<Role>, StatusCode)> = vec![
        ("admin session", Cred::Session(s.http.clone()), Some(Role::Admin), StatusCode::FORBIDDEN),
        ("regular user session", Cred::Session(user_http.clone()), Some(Role::User), StatusCode::FORBIDDEN),
        ("regular user key", Cred::Bearer(user_key), Some(Role::User), StatusCode::FORBIDDEN),
        ("inference-only key", Cred::Bearer(inference_key), None, StatusCode::FORBIDDEN),
        ("worker credential", Cred::Bearer(worker_cred), Some(Role::Worker), StatusCode::FORBIDDEN),
        ("cluster token", Cred::Bearer(cluster_token), Some(Role::Registrant), StatusCode::FORBIDDEN),
        ("no credential", Cred::None, None, StatusCode::UNAUTHORIZED),
    ];
    let (_, doc) = s.get("/openapi.json").await;
    let plain = reqwest::Client::new();
    let mut tried = 0;
    let mut failures = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/v2/") {
            continue;
        }
        let concrete = path.replace("{backend_name}", "no-such-backend").replace("{id}", "999999");
        for method in ops.as_object().expect("ops").keys() {
            let method: Method = method.to_uppercase().parse().expect("method");
            let known = ferrostack::server::policy::POLICY.iter().any(|(m, p, _)| *m == method.as_str() && p == path);
            if !known {
                failures.push(format!("{method} {path}: no row in the policy table"));
                continue;
            }
            for (name, cred, role, refused) in &creds {
                let client = match cred {
                    Cred::Session(c) => c.clone(),
                    _ => plain.clone(),
                };
                let mut req = client.request(method.clone(), s.url(&concrete));
                if let Cred::Bearer(token) = cred {
                    req = req.bearer_auth(token);
                }
                if method == Method::POST || method == Method::PUT {
                    req = req.json(&json!({}));
                }
                let status = req.send().await.expect("request").status();
                tried += 1;
                let ok = match role.map(|r| access(&method, path, r)) {
                    _ if status.is_server_error() => false,
                    None => status == *refused,
                    Some(Access::Deny) => status == StatusCode::FORBIDDEN,
                    Some(Access::Own) => status != StatusCode::UNAUTHORIZED,
                    Some(Access::Allow) => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                };
                if !ok {
                    failures.push(format!("{method} {path} as {name}: {status}"));
                }
            }
        }
    }
    eprintln!("auth matrix: {tried} requests, {} failures", failures.len());
    assert!(tried > 400, "only {tried} requests");
    assert!(failures.is_empty(), "{} of {tried}:\n{}", failures.len(), failures.join("\n"));

    // What the regular user does see: their models to call, themselves, their own keys.
    for path in ["/v2/my-models", "/v2/users/me", "/v2/api-keys", "/v2/usage"] {
        let res = user_http.get(s.url(path)).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let (_, keys) = read(user_http.get(s.url("/v2/api-keys")).send().await.expect("keys")).await;
    assert_eq!(keys["pagination"]["total"], 2, "only the user's own keys: {keys:#}");
    worker.shutdown().await;
}
