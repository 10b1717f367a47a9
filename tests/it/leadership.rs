//! Several servers on one database: the control lease and its fencing token, heartbeats shared
//! between servers, and two real servers on one PostgreSQL (one leads, the other takes over, an
//! API key's rate limit holds across both).

use std::time::{Duration, Instant};

use ferrostack::api::ClusterSpec;
use ferrostack::control::leader::{Leadership, TTL};
use ferrostack::db::lease::{CONTROL, Fence};
use ferrostack::db::{Db, DbError, Val};
use serde_json::{Value, json};

use crate::both_dbs;
use crate::repository::cluster;
use crate::support::{DbKind, TestServer, database_url, postgres_available};

both_dbs!(leases_fence_writes_and_beats_are_shared);

async fn insert_cluster(db: &Db, name: &str) -> Result<(), DbError> {
    db.insert(&cluster(name), &[("token_digest", Val::Text("d".into()))]).await.map(drop)
}

async fn leases_fence_writes_and_beats_are_shared(kind: DbKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&database_url(kind, dir.path()).await).await.expect("open");
    let minute = 60_000;
    assert_eq!(db.acquire_lease(CONTROL, "a", minute).await.expect("a takes"), Some(1));
    assert_eq!(db.acquire_lease(CONTROL, "b", minute).await.expect("b tries"), None, "a's lease runs");
    assert_eq!(db.acquire_lease(CONTROL, "a", minute).await.expect("a renews"), Some(1), "a renewal keeps the token");
    let holder = db.lease_holder(CONTROL).await.expect("holder").expect("held");
    assert_eq!((holder.holder.as_str(), holder.token), ("a", 1));
    assert!(holder.expires_in_ms > 50_000 && holder.expires_in_ms <= minute, "{holder:?}");

    let fence_a = Fence { lease: CONTROL, holder: "a".into(), token: 1 };
    insert_cluster(&db.fenced(fence_a.clone()), "by-a").await.expect("the leader writes");

    // a gives the lease up; b takes it with the next token; a cannot take it back while b's runs.
    db.release_lease(CONTROL, "a").await.expect("release");
    assert_eq!(db.lease_holder(CONTROL).await.expect("holder"), None, "released: nobody holds it");
    assert_eq!(db.acquire_lease(CONTROL, "b", minute).await.expect("b takes"), Some(2));
    assert_eq!(db.acquire_lease(CONTROL, "a", minute).await.expect("a tries"), None);
    let late = insert_cluster(&db.fenced(fence_a), "late-by-a").await;
    match kind {
        // The deposed leader's write is refused, and nothing of it is stored.
        DbKind::Postgres => {
            assert!(matches!(late, Err(DbError::Deposed { token: 1, .. })), "{late:?}");
            assert!(db.get_by_name::<ClusterSpec>("late-by-a").await.expect("get").is_none());
        }
        // One server per SQLite database: it leads alone and its writes carry no proof.
        DbKind::Sqlite => late.expect("sqlite writes are not fenced"),
    }
    let fence_b = Fence { lease: CONTROL, holder: "b".into(), token: 2 };
    insert_cluster(&db.fenced(fence_b), "by-b").await.expect("the new leader writes");

    // A lease that lapses unrenewed goes to the next holder with the next token.
    assert_eq!(db.acquire_lease("short", "b", 1).await.expect("b takes"), Some(1));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(db.acquire_lease("short", "a", minute).await.expect("a takes over"), Some(2));

    // Heartbeats: one statement records what a server heard; any server reads them back.
    db.record_beats(&[7, 8, 9]).await.expect("record");
    db.record_beats(&[8]).await.expect("record again");
    db.record_beats(&[]).await.expect("nothing heard");
    let mut beats = db.recent_beats(10_000).await.expect("recent");
    beats.sort();
    assert_eq!(beats.iter().map(|b| b.0).collect::<Vec<_>>(), [7, 8, 9]);
    assert!(beats.iter().all(|b| (0..10_000).contains(&b.1)), "ages in ms: {beats:?}");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(db.recent_beats(50).await.expect("recent").is_empty(), "older than the window");
}

/// A leader that stops renewing (a killed process) is replaced once its lease lapses, and the
/// writes it still tries with its old token are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_and_cannot_write() {
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&database_url(DbKind::Postgres, dir.path()).await).await.expect("open");
    let (a, b) = (Leadership::new("server-a"), Leadership::new("server-b"));
    a.try_once(&db).await;
    b.try_once(&db).await;
    let old = a.fence().expect("a leads");
    assert!(b.fence().is_none(), "b follows");
    assert_eq!(b.view().leader.as_deref(), Some("server-a"), "b knows who leads");
    // a goes silent. b keeps trying, as its loop does, until it leads.
    let silent = Instant::now();
    while b.fence().is_none() {
        assert!(silent.elapsed() < TTL + Duration::from_secs(4), "b never took over");
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.try_once(&db).await;
    }
    let took = silent.elapsed();
    assert!(took >= TTL - Duration::from_millis(600), "b took over while a's lease ran ({took:?})");
    assert!(a.fence().is_none(), "a stops acting on its own before its lease lapses");
    let new = b.fence().expect("b leads");
    assert_eq!(new.token, old.token + 1);
    let late = insert_cluster(&db.fenced(old), "late").await;
    assert!(matches!(late, Err(DbError::Deposed { .. })), "{late:?}");
    insert_cluster(&db.fenced(new), "fresh").await.expect("the new leader writes");
    // a comes back: it follows.
    a.try_once(&db).await;
    assert!(a.fence().is_none());
    assert_eq!(a.view().leader.as_deref(), Some("server-b"));
}

async fn healthz(s: &TestServer) -> Value {
    s.http.get(s.url("/healthz")).send().await.expect("healthz").json().await.expect("json")
}

async fn instances_of(s: &TestServer, model: i64) -> usize {
    let (_, body) = s.get(&format!("/v2/model-instances?model_id={model}&page=-1")).await;
    body["items"].as_array().map_or(0, Vec::len)
}

/// Two real servers on one PostgreSQL: exactly one runs the control loops, so a deployment gets
/// exactly its replicas; when the leader stops, the other leads within 10 s and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_one_leader_and_a_takeover() {
    if !postgres_available() {
        return;
    }
    let mut first = TestServer::start(DbKind::Postgres).await;
    let mut second = first.another_on_the_same_database().await;
    let (h1, h2) = (healthz(&first).await, healthz(&second).await);
    assert_eq!(h1["status"], "ok");
    assert_eq!(h1["leading"], true, "the first server to start leads: {h1}");
    assert_eq!(h2["leading"], false, "{h2}");
    assert_eq!(h2["leader"], h1["server"], "the follower names the leader: {h2} {h1}");
    let metrics = second.http.get(second.url("/metrics")).send().await.expect("metrics");
    assert!(metrics.status().is_success());

    first.login_admin().await;
    second.login_admin().await;
    let model_dir = second.dir.path().join("model");
    std::fs::create_dir_all(&model_dir).expect("model dir");
    let spec = json!({"name": "ha", "source": "local_path", "local_path": model_dir,
                      "backend": "vLLM", "replicas": 3});
    let (status, model) = second.post("/v2/models", spec).await;
    assert!(status.is_success(), "{status} {model}");
    let id = model["id"].as_i64().expect("id");
    // Each server's controller would create the missing replicas; only the leader's runs.
    let start = Instant::now();
    while instances_of(&first, id).await < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "the replicas never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instances_of(&second, id).await, 3, "exactly the replicas asked for");

    // A key's rate limit holds across the servers: 2 requests here and 2 there fill rpm 4.
    let key = first.api_key(json!({"name": "shared", "scope": ["inference"], "rpm_limit": 4})).await;
    let (status, route) = first.post("/v2/model-routes", json!({"name": "idle"})).await;
    assert!(status.is_success(), "{route}");
    let chat = async |s: &TestServer| {
        let body = json!({"model": "idle", "messages": [{"role": "user", "content": "hi"}]});
        let res = s.http.post(s.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await;
        res.expect("send").status().as_u16()
    };
    assert_eq!([chat(&first).await, chat(&first).await], [503, 503], "admitted; nothing runs the route");
    // Both servers share their counts every second; the second hears of the route by the log.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!([chat(&second).await, chat(&second).await], [503, 503]);
    assert_eq!(chat(&second).await, 429, "the first server's two count on the second");

    // The leader stops; the other server leads within 10 s and scales the deployment.
    first.stop().await;
    let stopped = Instant::now();
    while healthz(&second).await["leading"] != true {
        assert!(stopped.elapsed() < Duration::from_secs(10), "no takeover within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, current) = second.get(&format!("/v2/models/{id}")).await;
    let mut scaled = current.clone();
    scaled["replicas"] = json!(5);
    let (status, body) = second.put(&format!("/v2/models/{id}"), scaled).await;
    assert!(status.is_success(), "{status} {body}");
    let start = Instant::now();
    while instances_of(&second, id).await < 5 {
        assert!(start.elapsed() < Duration::from_secs(20), "the new leader did not scale");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(instances_of(&second, id).await, 5);
    second.stop().await;
}
