//! Foundation acceptance: auth, API keys, optimistic concurrency, watch resume, bad input — on
//! SQLite and PostgreSQL alike.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{DbKind, SseReader, TestServer};

both_dbs!(
    login_and_api_keys,
    revoked_and_expired_keys_are_refused,
    wrong_password_does_not_reveal_users,
    concurrent_updates_conflict,
    watch_resumes_with_exactly_the_missed_changes,
    bad_input_is_a_4xx_naming_the_field,
    users_are_managed_by_admins_only,
    clusters_and_registration_tokens,
    restart_keeps_everything,
);

async fn login_and_api_keys(kind: DbKind) {
    let s = TestServer::start(kind).await;
    let (status, body) = s.get("/v2/users").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "Unauthorized");

    s.login_admin().await;
    let (status, me) = s.get("/v2/users/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["is_admin"], true);

    let key = s.api_key(json!({"name": "ci", "scope": ["management"]})).await;
    let plain = reqwest::Client::new();
    for (header, value) in [("authorization", format!("Bearer {key}")), ("x-api-key", key.clone())] {
        let res = plain.get(s.url("/v2/users/me")).header(header, value).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::OK, "{header}");
    }
    // The stored key shows only its masked value; the secret is never listed.
    let (_, list) = s.get("/v2/api-keys").await;
    let listed = list["items"][0].to_string();
    assert!(!listed.contains(key.rsplit('_').next().expect("secret")), "{listed}");
    assert_eq!(list["pagination"]["total"], 1);

    // An inference-only key cannot use the management API.
    let inference = s.api_key(json!({"name": "inf", "scope": ["inference"]})).await;
    let res = plain.get(s.url("/v2/users/me")).bearer_auth(&inference).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn revoked_and_expired_keys_are_refused(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let plain = reqwest::Client::new();
    let key = s.api_key(json!({"name": "to-revoke"})).await;
    let (_, list) = s.get("/v2/api-keys").await;
    let id = list["items"][0]["id"].as_i64().expect("id");
    assert_eq!(s.delete(&format!("/v2/api-keys/{id}")).await.0, StatusCode::OK);
    let res = plain.get(s.url("/v2/users/me")).bearer_auth(&key).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let key = s.api_key(json!({"name": "short", "expires_in": 3600})).await;
    let res = plain.get(s.url("/v2/users/me")).bearer_auth(&key).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    // Move its expiry into the past, as time would.
    let (_, list) = s.get("/v2/api-keys").await;
    let id = list["items"][0]["id"].as_i64().expect("id");
    s.db()
        .modify::<ferrostack::api::ApiKeySpec, ferrostack::db::DbError, _>(id, None, |k| {
            k.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
            Ok(vec![])
        })
        .await
        .expect("expire");
    let res = plain.get(s.url("/v2/users/me")).bearer_auth(&key).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (_, body) = crate::support::read(res).await;
    assert!(body["message"].as_str().unwrap_or("").contains("expired"), "{body}");

    // Garbage keys are refused the same way.
    for bad in ["nonsense", "fs_nope_nope", ""] {
        let res = plain.get(s.url("/v2/users/me")).header("x-api-key", bad).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
    }
}

async fn wrong_password_does_not_reveal_users(kind: DbKind) {
    let s = TestServer::start(kind).await;
    let mut messages = Vec::new();
    for (user, password) in [("admin", "wrong-password"), ("nobody", "wrong-password")] {
        let res = s
            .http
            .post(s.url("/auth/login"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .expect("login");
        let (status, body) = crate::support::read(res).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        messages.push(body["message"].clone());
    }
    assert_eq!(messages[0], messages[1]);
    let res = s.http.post(s.url("/auth/login")).json(&json!({"username": "admin"})).send().await.expect("login");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn concurrent_updates_conflict(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let (status, created) = s.post("/v2/clusters", json!({"name": "race"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_i64().expect("id");
    let path = format!("/v2/clusters/{id}");
    let a = s.put(&path, json!({"description": "from a", "version": 1}));
    let b = s.put(&path, json!({"description": "from b", "version": 1}));
    let ((sa, ba), (sb, bb)) = tokio::join!(a, b);
    let mut statuses = [sa, sb];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{ba} / {bb}");
    let loser = if sa == StatusCode::CONFLICT { &ba } else { &bb };
    assert_eq!(loser["reason"], "VersionConflict");
    let winner = if sa == StatusCode::OK { &ba } else { &bb };
    let (_, now) = s.get(&path).await;
    assert_eq!(now["description"], winner["description"], "the stored row is the winner's");
    assert_eq!(now["version"], 2);
}

async fn watch_resumes_with_exactly_the_missed_changes(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let res =
        s.http.get(s.url("/v2/clusters?watch=true")).header("accept", "text/event-stream").send().await.expect("watch");
    let mut events = SseReader::new(res);
    let (snapshot_id, first) = events.next(Duration::from_secs(10)).await.expect("replay");
    assert_eq!(first["type"], "CREATED");
    assert_eq!(first["data"]["name"], "default");

    let (_, c) = s.post("/v2/clusters", json!({"name": "seen"})).await;
    let (seen_id, seen) = events.next(Duration::from_secs(10)).await.expect("live event");
    assert!(seen_id > snapshot_id);
    assert_eq!(seen["data"]["name"], "seen");
    drop(events);

    // While disconnected: one create, one update, one delete.
    let (_, missed) = s.post("/v2/clusters", json!({"name": "missed"})).await;
    let missed_id = missed["id"].as_i64().expect("id");
    s.put(&format!("/v2/clusters/{missed_id}"), json!({"description": "changed"})).await;
    s.delete(&format!("/v2/clusters/{}", c["id"])).await;

    let res = s
        .http
        .get(s.url("/v2/clusters?watch=true"))
        .header("Last-Event-ID", seen_id.to_string())
        .send()
        .await
        .expect("resume");
    let mut events = SseReader::new(res);
    let mut got = Vec::new();
    while let Some((_, e)) = events.next(Duration::from_millis(1500)).await {
        got.push((e["type"].as_str().unwrap_or("").to_string(), e["data"]["name"].as_str().unwrap_or("").to_string()));
    }
    let want: Vec<(String, String)> = [("CREATED", "missed"), ("UPDATED", "missed"), ("DELETED", "seen")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
}

async fn bad_input_is_a_4xx_naming_the_field(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let raw = |body: &'static str, ct: &'static str| {
        s.http.post(s.url("/v2/clusters")).header("content-type", ct).body(body).send()
    };
    let cases: Vec<(&str, &str, u16, Option<&str>)> = vec![
        ("{\"name\": ", "application/json", 400, None),
        ("{\"name\": \"ok\", \"colour\": 1}", "application/json", 400, Some("colour")),
        ("{\"name\": 5}", "application/json", 400, Some("name")),
        ("{\"description\": \"x\"}", "application/json", 400, Some("name")),
        ("{\"name\": \"has space\"}", "application/json", 400, Some("name")),
        ("name=x", "text/plain", 415, None),
    ];
    for (body, ct, want, field) in cases {
        let (status, json) = crate::support::read(raw(body, ct).await.expect("post")).await;
        assert_eq!(status.as_u16(), want, "{body}: {json}");
        assert_eq!(json["field"].as_str(), field, "{body}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    }
    // Oversized body. (The server answers before reading it all and closes: don't reuse the connection.)
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let res = s
        .http
        .post(s.url("/v2/clusters"))
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Bad pagination.
    for (query, field) in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("perPage=0", "perPage"),
        ("perPage=5000", "perPage"),
        ("sort_by=secret", "sort_by"),
        ("watch=perhaps", "watch"),
    ] {
        let (status, json) = s.get(&format!("/v2/clusters?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
        assert_eq!(json["field"], field, "{query}");
    }
    // Bad path parameter and unknown route.
    assert_eq!(s.get("/v2/clusters/abc").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.get("/v2/clusters/999").await.0, StatusCode::NOT_FOUND);
    let (status, json) = s.get("/v2/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["reason"], "NotFound");
    // Nothing stored was changed by any of it.
    let (_, list) = s.get("/v2/clusters").await;
    assert_eq!(list["pagination"]["total"], 1);
}

async fn users_are_managed_by_admins_only(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let (status, user) = s.post("/v2/users", json!({"username": "alice", "password": "alice-password"})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let (status, dup) = s.post("/v2/users", json!({"username": "ALICE", "password": "alice-password"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    let (status, short) = s.post("/v2/users", json!({"username": "bob", "password": "short"})).await;
    assert_eq!((status, short["field"].as_str()), (StatusCode::BAD_REQUEST, Some("password")));

    // Pagination, search and sorting.
    for name in ["carol", "dave", "erin"] {
        s.post("/v2/users", json!({"username": name, "password": "long-enough-1"})).await;
    }
    let (_, page) = s.get("/v2/users?page=2&perPage=2&sort_by=name").await;
    let names: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(names, ["carol", "dave"]);
    assert_eq!(page["pagination"], json!({"page": 2, "perPage": 2, "total": 5, "totalPage": 3}));
    let (_, found) = s.get("/v2/users?search=RI").await;
    assert_eq!(found["items"][0]["username"], "erin");
    let (_, all) = s.get("/v2/users?page=-1&sort_by=-name").await;
    assert_eq!(all["items"][0]["username"], "erin");
    assert_eq!(all["pagination"]["total"], 5);

    // Alice is not an administrator.
    let alice = reqwest::Client::builder().cookie_store(true).build().expect("client");
    let res = alice
        .post(s.url("/auth/login"))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(alice.get(s.url("/v2/users")).send().await.expect("list").status(), StatusCode::FORBIDDEN);
    assert_eq!(alice.get(s.url("/v2/users/me")).send().await.expect("me").status(), StatusCode::OK);
    // GPUStack's self-update: her name, yes; her own object sent back whole (GPUStack's UI and SDK
    // do), yes; her password only with the current one; her role or anything privileged, never: a
    // 400 naming the field, not a 200 that quietly changes nothing.
    let me = |body: serde_json::Value| alice.put(s.url("/v2/users/me")).json(&body).send();
    let mut whole: serde_json::Value =
        alice.get(s.url("/v2/users/me")).send().await.expect("me").json().await.expect("json");
    whole["full_name"] = json!("Alice A.");
    for (field, value) in
        [("avatar_url", json!(null)), ("source", json!("Local")), ("role", json!(null)), ("is_system", json!(false))]
    {
        whole[field] = value;
    }
    let res = me(whole.clone()).await.expect("put");
    assert_eq!(res.status(), StatusCode::OK, "{whole}");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!((body["full_name"].as_str(), body["is_admin"].as_bool()), (Some("Alice A."), Some(false)), "{body}");
    for (body, field) in [
        (json!({"full_name": "Alice B.", "avatar_url": null, "is_admin": true}), "is_admin"),
        (json!({"is_active": false}), "is_active"),
        (json!({"username": "root"}), "username"),
        (json!({"require_password_change": true}), "require_password_change"),
        (json!({"role": "Cluster"}), "role"),
        (json!({"source": "OIDC"}), "source"),
        (json!({"cluster_id": 1}), "cluster_id"),
        (json!({"password": "alice-other-password"}), "current_password"),
        (json!({"password": "alice-other-password", "current_password": "wrong"}), "current_password"),
        (json!({"avatar_url": "https://example.invalid/a.png"}), "avatar_url"),
    ] {
        let res = me(body.clone()).await.expect("put");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: serde_json::Value = res.json().await.expect("json");
        assert_eq!(err["field"], field, "{err}");
    }
    let err: serde_json::Value = me(json!({"is_admin": true})).await.expect("put").json().await.expect("json");
    assert!(err["message"].as_str().is_some_and(|m| m.contains("is_admin: may not be changed here")), "{err}");
    let (_, stored) = s.get(&format!("/v2/users/{}", whole["id"])).await;
    assert_eq!(
        (&stored["full_name"], &stored["is_admin"], &stored["is_active"], &stored["username"]),
        (&json!("Alice A."), &json!(false), &json!(true), &json!("alice")),
        "{stored}"
    );
    // She changes her password: the old one stops working.
    let res = alice
        .post(s.url("/auth/update-password"))
        .json(&json!({"current_password": "alice-password", "new_password": "alice-new-password"}))
        .send()
        .await
        .expect("update");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let relogin = |pw: &'static str| {
        reqwest::Client::new().post(s.url("/auth/login")).form(&[("username", "alice"), ("password", pw)]).send()
    };
    assert_eq!(relogin("alice-password").await.expect("login").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(relogin("alice-new-password").await.expect("login").status(), StatusCode::OK);

    // Deactivated users cannot log in; logout ends a session.
    let id = user["id"].as_i64().expect("id");
    let (status, _) = s.put(&format!("/v2/users/{id}"), json!({"is_active": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(relogin("alice-new-password").await.expect("login").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.http.post(s.url("/auth/logout")).send().await.expect("logout").status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get("/v2/users/me").await.0, StatusCode::UNAUTHORIZED);
}

async fn clusters_and_registration_tokens(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let token_file = s.dir.path().join("data/cluster_token");
    let first = std::fs::read_to_string(&token_file).expect("token file");
    let (_, list) = s.get("/v2/clusters").await;
    let default = &list["items"][0];
    assert_eq!(default["is_default"], true);
    assert!(first.starts_with(default["token_hint"].as_str().expect("hint")));
    assert!(!list.to_string().contains(first.trim()), "the token is never listed");

    let id = default["id"].as_i64().expect("id");
    let (status, fresh) = s.post(&format!("/v2/clusters/{id}/registration-token"), Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let token = fresh["registration_token"].as_str().expect("token");
    assert_ne!(token, first.trim());
    let found = s.db().cluster_by_token_digest(&ferrostack::server::auth::digest(token)).await.expect("lookup");
    assert_eq!(found.map(|c| c.id), Some(id));
    let (status, body) = s.delete(&format!("/v2/clusters/{id}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["reason"], "RuleViolation");
}

async fn restart_keeps_everything(kind: DbKind) {
    let mut s = TestServer::start(kind).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "survivor"})).await;
    s.stop().await;
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
    let again = TestServer::start_with(dir, s.database_url.clone()).await;
    let res = reqwest::Client::new().get(again.url("/v2/users")).bearer_auth(&key).send().await.expect("get");
    let (status, users) = crate::support::read(res).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(users["pagination"]["total"], 1, "bootstrap ran once: {users}");
}
