//! The attacks of the outside security review, kept as a table: one row per attack with the status
//! it must get, so a regression names the attack. Attacks that need a sequence (a cache primed
//! first, a lockout, a flood) are their own tests below the table.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_dbs;
use crate::support::{ADMIN_PASSWORD, DbKind, TestServer};

/// Who sends an attack.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Nobody: no credential.
    Anonymous,
    /// The admin's browser: the session cookie.
    AdminCookie,
    /// A key restricted to one model, with limits and an expiry.
    RestrictedKey,
}

struct Attack {
    name: &'static str,
    who: Who,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
    want: u16,
}

fn attack(name: &'static str, who: Who, method: Method, path: impl Into<String>, want: u16) -> Attack {
    Attack { name, who, method, path: path.into(), headers: vec![], body: None, want }
}

impl Attack {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Attack {
        self.headers.push((name, value.into()));
        self
    }

    fn json(mut self, body: Value) -> Attack {
        self.body = Some(("application/json", body.to_string()));
        self
    }

    fn text(mut self, body: &str) -> Attack {
        self.body = Some(("text/plain", body.to_string()));
        self
    }
}

both_dbs!(every_attack_is_refused);

async fn every_attack_is_refused(kind: DbKind) {
    let s = TestServer::start(kind).await;
    s.login_admin().await;
    let restricted_body = json!({"name": "narrow", "allowed_model_names": ["m1"], "rpm_limit": 10,
                                 "tpm_limit": 1000, "expires_in": 3600});
    let (status, narrow) = s.post("/v2/api-keys", restricted_body).await;
    assert_eq!(status, StatusCode::OK, "{narrow}");
    let narrow_id = narrow["id"].as_i64().expect("id");
    let narrow_key = narrow["value"].as_str().expect("value").to_string();
    let (_, backends) = s.get("/v2/inference-backends?perPage=1").await;
    let backend_id = backends["items"][0]["id"].as_i64().expect("a backend");
    let evil = "https://evil.example";
    let own = s.base.clone();

    let attacks = vec![
        // Row 7: a restricted key mints or widens keys beyond its own bounds.
        attack("7: restricted key mints an unrestricted key", Who::RestrictedKey, Method::POST, "/v2/api-keys", 403)
            .json(json!({"name": "wide"})),
        attack(
            "7: restricted key mints a key for another model",
            Who::RestrictedKey,
            Method::POST,
            "/v2/api-keys",
            403,
        )
        .json(json!({"name": "other", "allowed_model_names": ["m2"], "rpm_limit": 10, "tpm_limit": 1000,
                         "expires_in": 60})),
        attack("7: restricted key mints a key without expiry", Who::RestrictedKey, Method::POST, "/v2/api-keys", 403)
            .json(json!({"name": "forever", "allowed_model_names": ["m1"], "rpm_limit": 10, "tpm_limit": 1000})),
        attack(
            "7: restricted key widens its own models",
            Who::RestrictedKey,
            Method::PUT,
            format!("/v2/api-keys/{narrow_id}"),
            403,
        )
        .json(json!({"allowed_model_names": ["m1", "m2"]})),
        attack(
            "7: restricted key raises its own rpm",
            Who::RestrictedKey,
            Method::PUT,
            format!("/v2/api-keys/{narrow_id}"),
            403,
        )
        .json(json!({"rpm_limit": 100000})),
        attack(
            "7 (control): restricted key mints a key within its bounds",
            Who::RestrictedKey,
            Method::POST,
            "/v2/api-keys",
            200,
        )
        .json(json!({"name": "within", "allowed_model_names": ["m1"], "rpm_limit": 5, "tpm_limit": 100,
                         "expires_in": 60})),
        // Row 8: cross-site requests carried by the admin's cookie.
        attack("8: foreign origin restarts a deployment", Who::AdminCookie, Method::POST, "/v2/models/1/restart", 403)
            .header("origin", evil),
        attack(
            "8: foreign origin rotates the registration token",
            Who::AdminCookie,
            Method::POST,
            "/v2/clusters/1/registration-token",
            403,
        )
        .header("origin", evil),
        attack(
            "8: foreign origin enables a backend",
            Who::AdminCookie,
            Method::POST,
            format!("/v2/inference-backends/{backend_id}/enable"),
            403,
        )
        .header("origin", evil),
        attack(
            "8: foreign referer enables a backend",
            Who::AdminCookie,
            Method::POST,
            format!("/v2/inference-backends/{backend_id}/enable"),
            403,
        )
        .header("referer", format!("{evil}/page")),
        attack(
            "8: sandboxed page (Origin: null)",
            Who::AdminCookie,
            Method::POST,
            format!("/v2/inference-backends/{backend_id}/enable"),
            403,
        )
        .header("origin", "null"),
        attack("8: foreign origin logs the admin out", Who::AdminCookie, Method::POST, "/auth/logout", 403)
            .header("origin", evil),
        attack("8: foreign login form", Who::Anonymous, Method::POST, "/auth/login", 403)
            .header("origin", evil)
            .body_form("username=admin&password=x"),
        attack("8: /v1 by cookie without a content type", Who::AdminCookie, Method::POST, "/v1/chat/completions", 415),
        attack("8: /v1 by cookie as text/plain", Who::AdminCookie, Method::POST, "/v1/chat/completions", 415)
            .text(r#"{"model":"m1","messages":[]}"#),
        attack(
            "8: /model/proxy by cookie as text/plain, foreign origin",
            Who::AdminCookie,
            Method::POST,
            "/model/proxy/m1/completion",
            403,
        )
        .header("origin", evil)
        .text("{}"),
        attack(
            "8 (control): own origin enables a backend",
            Who::AdminCookie,
            Method::POST,
            format!("/v2/inference-backends/{backend_id}/enable"),
            200,
        )
        .header("origin", own.clone()),
    ];

    let cookie = &s.http;
    let plain = reqwest::Client::new();
    let mut failures = Vec::new();
    for a in &attacks {
        let client = if matches!(a.who, Who::AdminCookie) { cookie } else { &plain };
        let mut req = client.request(a.method.clone(), s.url(&a.path));
        if matches!(a.who, Who::RestrictedKey) {
            req = req.bearer_auth(&narrow_key);
        }
        for (k, v) in &a.headers {
            req = req.header(*k, v);
        }
        if let Some((content_type, body)) = &a.body {
            req = req.header("content-type", *content_type).body(body.clone());
        }
        let res = req.send().await.expect("send");
        let got = res.status().as_u16();
        if got != a.want {
            failures.push(format!("{}: got {got}, want {} ({})", a.name, a.want, res.text().await.unwrap_or_default()));
        }
    }
    assert!(failures.is_empty(), "attacks that got through:\n{}", failures.join("\n"));

    // Every answer says it may not be framed.
    let res = plain.get(s.url("/")).send().await.expect("get");
    let csp: Vec<_> = res.headers().get_all("content-security-policy").iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(csp.iter().any(|v| v.contains("frame-ancestors 'none'")), "{csp:?}");
    assert_eq!(res.headers().get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
}

trait FormBody {
    fn body_form(self, form: &str) -> Attack;
}

impl FormBody for Attack {
    fn body_form(mut self, form: &str) -> Attack {
        self.body = Some(("application/x-www-form-urlencoded", form.to_string()));
        self
    }
}

/// Row 1: the gateway's key cache is keyed by the credential that authenticated, never by an
/// `Authorization` value that played no part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_cache_is_keyed_by_the_key_that_authenticated() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let key = s.api_key(json!({"name": "victim"})).await;
    let plain = reqwest::Client::new();
    for auth in ["Bearer", "Bearer ", "Basic YWRtaW46eA==", "null", "Token x"] {
        for path in ["/v1/models", "/model/proxy/nothing/health"] {
            // Primed: a valid X-API-Key next to an Authorization header that is not a bearer token.
            let res = plain.get(s.url(path)).header("authorization", auth).header("x-api-key", &key).send().await;
            let primed = res.expect("send").status();
            assert_ne!(primed, StatusCode::UNAUTHORIZED, "{auth:?} {path}: the real key works");
            // The same Authorization value alone, or with a wrong key, is nobody.
            let res = plain.get(s.url(path)).header("authorization", auth).send().await.expect("send");
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?} {path} alone was served");
            let res = plain
                .get(s.url(path))
                .header("authorization", auth)
                .header("x-api-key", "fs_wrong_key")
                .send()
                .await
                .expect("send");
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?} {path} with a wrong key was served");
        }
    }
}

/// A client bound to its own loopback address (the whole 127/8 is this host's), so the server
/// sees logins from several addresses.
fn client_from(last_octet: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
        .cookie_store(true)
        .build()
        .expect("client")
}

async fn login(client: &reqwest::Client, s: &TestServer, user: &str, password: &str) -> StatusCode {
    let res = client.post(s.url("/auth/login")).form(&[("username", user), ("password", password)]).send().await;
    res.expect("login").status()
}

/// Row 3: guesses from one address do not lock the real user out elsewhere, and an admin clears
/// a lockout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_cannot_lock_the_admin_out() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let attacker = client_from(66);
    for _ in 0..8 {
        let status = login(&attacker, &s, "admin", "wrong-guess").await;
        assert!(matches!(status, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS), "{status}");
    }
    assert_eq!(login(&attacker, &s, "admin", ADMIN_PASSWORD).await, StatusCode::TOO_MANY_REQUESTS, "held back");
    let admin_elsewhere = client_from(77);
    assert_eq!(login(&admin_elsewhere, &s, "admin", ADMIN_PASSWORD).await, StatusCode::OK, "locked out elsewhere");
    // An administrator clears the count; the attacker's address may try again.
    let (status, cleared) = s.delete("/v2/login-throttle?username=admin").await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared["cleared"].as_u64().unwrap_or(0) >= 1, "{cleared}");
    assert_eq!(login(&attacker, &s, "admin", ADMIN_PASSWORD).await, StatusCode::OK);
    let (status, _) = s.delete("/v2/login-throttle?user=admin").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown parameter is named");
}

/// Row 9: a login flood from many addresses is answered 401 or 429 (never 500), the admin's
/// requests are served meanwhile; watch streams are bounded per credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_bounded() {
    let s = TestServer::start(DbKind::Sqlite).await;
    s.login_admin().await;
    let mut flood = Vec::new();
    for i in 0..120u8 {
        let client = client_from(100 + i);
        let url = s.url("/auth/login");
        flood.push(tokio::spawn(async move {
            let res = client.post(url).form(&[("username", format!("user{i}")), ("password", "x".into())]).send().await;
            let res = res.expect("login");
            (res.status(), res.headers().contains_key("retry-after"))
        }));
    }
    let (status, _) = s.get("/v2/users/me").await;
    assert_eq!(status, StatusCode::OK, "the admin is served during the flood");
    let mut counts = std::collections::BTreeMap::new();
    for f in flood {
        let (status, retry_after) = f.await.expect("join");
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after, "a 429 says when to come back");
        }
        *counts.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert!(counts.keys().all(|c| *c == 401 || *c == 429), "{counts:?}");
    assert!(counts.get(&429).copied().unwrap_or(0) > 0, "the hashing queue refused some: {counts:?}");

    // Watch streams: one credential holds at most its share; another still watches.
    let hog = s.api_key(json!({"name": "hog"})).await;
    let other = s.api_key(json!({"name": "other"})).await;
    let plain = reqwest::Client::new();
    let mut open = Vec::new();
    let per_credential = ferrostack::server::streams::PER_CREDENTIAL;
    for _ in 0..per_credential {
        let res = plain.get(s.url("/v2/api-keys?watch=true")).bearer_auth(&hog).send().await.expect("watch");
        assert_eq!(res.status(), StatusCode::OK);
        open.push(res);
    }
    let res = plain.get(s.url("/v2/api-keys?watch=true")).bearer_auth(&hog).send().await.expect("watch");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "one over the credential's bound");
    assert!(res.headers().contains_key("retry-after"));
    let res = plain.get(s.url("/v2/api-keys?watch=true")).bearer_auth(&other).send().await.expect("watch");
    assert_eq!(res.status(), StatusCode::OK, "another credential is not held back");
    drop(open);
    // Closed streams give their slots back: the server notices a closed socket when it next
    // writes to it, so make a change the streams carry.
    s.api_key(json!({"name": "wake-the-streams"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = plain.get(s.url("/v2/api-keys?watch=true")).bearer_auth(&hog).send().await.expect("watch");
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
