//! The repository suite: the generic store's contract, run unchanged on SQLite and PostgreSQL.

use ferrostack::api::{ClusterSpec, ModelInstanceSpec};
use std::collections::HashMap;
use std::sync::Arc;

use ferrostack::db::{Db, DbError, ListQuery, SortKey, Val, instance_columns};

use crate::both_dbs;
use crate::support::{DbKind, database_url};

both_dbs!(
    store_contract,
    migrations_rerun_and_refuse_newer_schema,
    concurrent_writers_never_leave_a_gap,
    read_then_write_transactions_never_fail_under_contention
);

pub fn cluster(name: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        description: None,
        is_default: false,
        token_hint: String::new(),
        token_nonce: None,
        gpu_memory: Default::default(),
    }
}

async fn store_contract(kind: DbKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&database_url(kind, dir.path()).await).await.expect("open");
    let token = || [("token_digest", Val::Text("d".into()))];
    let a = db.insert(&cluster("Alpha"), &token()).await.expect("insert");
    assert_eq!(a.version, 1);
    let dup = db.insert(&cluster("alpha"), &token()).await;
    assert!(matches!(dup, Err(DbError::Duplicate { .. })), "{dup:?}");
    for name in ["beta", "gamma", "delta_x", "delta%y"] {
        db.insert(&cluster(name), &token()).await.expect("insert");
    }

    let page = |page, desc| ListQuery {
        page: Some(page),
        per_page: 2,
        sort: vec![(SortKey::Name, desc)],
        ..Default::default()
    };
    for (q, want) in
        [(page(1, false), vec!["Alpha", "beta"]), (page(3, false), vec!["gamma"]), (page(1, true), vec!["gamma"])]
    {
        let (items, total) = db.list::<ClusterSpec>(&q).await.expect("list");
        assert_eq!(total, 5);
        let names: Vec<_> = items.iter().map(|c| c.spec.name.as_str()).collect();
        assert_eq!(names[..want.len()], want[..], "{q:?}");
    }
    // Wildcards in a search are literal.
    let q = ListQuery { search: Some("a%".into()), ..Default::default() };
    let (items, _) = db.list::<ClusterSpec>(&q).await.expect("search");
    assert_eq!(items.iter().map(|c| c.spec.name.as_str()).collect::<Vec<_>>(), ["delta%y"]);

    let updated = db.update(a.id, 1, &cluster("alpha2"), &[]).await.expect("update");
    assert_eq!(updated.version, 2);
    let stale = db.update(a.id, 1, &cluster("alpha3"), &[]).await;
    assert!(matches!(stale, Err(DbError::VersionConflict { expected: 1, actual: 2, .. })), "{stale:?}");
    assert_eq!(db.get::<ClusterSpec>(a.id).await.expect("get").spec.name, "alpha2");

    let deleted = db.delete::<ClusterSpec>(a.id).await.expect("delete");
    assert_eq!(deleted.spec.name, "alpha2");
    assert!(matches!(db.get::<ClusterSpec>(a.id).await, Err(DbError::NotFound { .. })));
    assert!(matches!(db.delete::<ClusterSpec>(a.id).await, Err(DbError::NotFound { .. })));

    // The change log saw every write, in order.
    let changes = db.changes_since("clusters", 0, 100, None).await.expect("changes");
    let kinds: Vec<_> = changes.iter().map(|c| c.event.as_str()).collect();
    assert_eq!(kinds, ["CREATED", "CREATED", "CREATED", "CREATED", "CREATED", "UPDATED", "DELETED"]);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    db.close().await;
}

async fn migrations_rerun_and_refuse_newer_schema(kind: DbKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(kind, dir.path()).await;
    let db = Db::open(&url).await.expect("first open");
    let supported = db.supported_schema_version();
    db.close().await;
    let db = Db::open(&url).await.expect("re-open applies nothing new");
    assert_eq!(db.schema_version().await.expect("version"), supported);
    // Pretend a newer binary migrated this database.
    let checksum = match kind {
        DbKind::Sqlite => "X'00'",
        DbKind::Postgres => "decode('00', 'hex')",
    };
    sqlx::query(&format!(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99999, 'from the future', CURRENT_TIMESTAMP, TRUE, {checksum}, 0)"
    ))
    .execute(&sqlx::AnyPool::connect(&url).await.expect("pool"))
    .await
    .expect("insert future migration");
    db.close().await;
    match Db::open(&url).await {
        Err(e @ DbError::SchemaTooNew { found: 99999, .. }) => {
            assert!(e.to_string().contains("newer than this binary"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a database from the future"),
    }
}

/// Servers that start together on a fresh PostgreSQL database migrate it once: sqlx's migrator
/// takes an advisory lock, the others wait and find nothing left to apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    if !crate::support::postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(DbKind::Postgres, dir.path()).await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Db::open(&url).await })
        })
        .collect();
    let mut dbs = Vec::new();
    for open in opens {
        dbs.push(open.await.expect("join").expect("every server opens the database"));
    }
    let supported = dbs[0].supported_schema_version();
    let pool = sqlx::AnyPool::connect(&url).await.expect("pool");
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, COUNT(*) FROM _sqlx_migrations GROUP BY version ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("migrations");
    assert_eq!(rows.len() as i64, supported, "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "a migration applied twice: {rows:?}");
}

/// Writers commit concurrently (on PostgreSQL, really in parallel) while a reader follows the log
/// by number as a watch does: the reader ends with every change, and each row's changes in the
/// order they were written (a number never appears below one already read).
async fn concurrent_writers_never_leave_a_gap(kind: DbKind) {
    const WRITERS: usize = 6;
    const WRITES: i64 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&database_url(kind, dir.path()).await).await.expect("open"));
    let token = || [("token_digest", Val::Text("d".into()))];
    let done = Arc::new(tokio::sync::Notify::new());
    let reader = {
        let (db, done) = (db.clone(), done.clone());
        tokio::spawn(async move {
            let (mut read, mut cursor, mut finished) = (Vec::new(), 0, false);
            loop {
                let batch = db.changes_since("clusters", cursor, 1000, None).await.expect("changes");
                if let Some(last) = batch.last() {
                    cursor = last.seq;
                }
                read.extend(batch);
                if finished {
                    return read;
                }
                // One more read after the writers are done: anything committed is numbered by then.
                finished = tokio::time::timeout(std::time::Duration::from_millis(2), done.notified()).await.is_ok();
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut row = db.insert(&cluster(&format!("w{w}")), &token()).await.expect("insert");
            for i in 0..WRITES {
                row = db.update(row.id, row.version, &cluster(&format!("w{w}-{i}")), &[]).await.expect("update");
            }
            row.id
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.notify_one();
    let read = reader.await.expect("reader");
    let all = db.changes_since("clusters", 0, 100_000, None).await.expect("changes");
    assert_eq!(all.len(), WRITERS * (WRITES as usize + 1), "one change per write");
    let seqs: Vec<i64> = read.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, all.iter().map(|c| c.seq).collect::<Vec<_>>(), "the follower missed or reordered changes");
    let mut versions: HashMap<i64, i64> = HashMap::new();
    for c in &read {
        let v: serde_json::Value = serde_json::from_str(&c.data).expect("json");
        let (id, version) = (v["id"].as_i64().expect("id"), v["version"].as_i64().expect("version"));
        let last = versions.insert(id, version).unwrap_or(0);
        assert_eq!(version, last + 1, "row {id}: version {version} after {last}");
    }
    db.close().await;
}

/// A write transaction that reads before it writes (an instance's update reads the workers it
/// concerned) never fails with `database is locked` (SQLITE_BUSY_SNAPSHOT) because another writer
/// committed in between: writers on distinct rows all succeed, however they interleave.
async fn read_then_write_transactions_never_fail_under_contention(kind: DbKind) {
    const WRITERS: usize = 8;
    const WRITES: usize = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&database_url(kind, dir.path()).await).await.expect("open"));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut spec: ModelInstanceSpec = serde_json::from_value(serde_json::json!({
                "name": format!("m-{w}"), "model_name": "m", "model_path": "/m", "backend": "b", "state": "pending",
            }))
            .expect("instance");
            let mut row = db.insert(&spec, &instance_columns(&spec)).await.expect("insert");
            for i in 0..WRITES {
                spec.status.restart_count = i as u32;
                row = db.update(row.id, row.version, &spec, &instance_columns(&spec)).await.expect("update");
            }
            row.version
        }));
    }
    for w in writers {
        assert_eq!(w.await.expect("writer"), WRITES as i64 + 1);
    }
    db.close().await;
}

/// A writer that holds SQLite's write lock longer than the busy timeout (5 s) delays a write; it
/// does not fail it with "database is locked" (the write transaction tries to begin again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sqlite_writer_delays_other_writes_without_failing_them() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(DbKind::Sqlite, dir.path()).await;
    let db = Db::open(&url).await.expect("open");
    let mut holder = sqlx::AnyConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("take the write lock");
    let write = {
        let db = db.clone();
        tokio::spawn(async move { db.insert(&cluster("waits"), &[("token_digest", Val::Text("d".into()))]).await })
    };
    // Past one busy timeout, then the lock is given back.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    sqlx::query("COMMIT").execute(&mut holder).await.expect("commit");
    let written = write.await.expect("join").expect("the write waited, then succeeded");
    assert_eq!(written.spec.name, "waits");

    // A writer that never lets go: after every try the write is refused as busy (a 503 with
    // Retry-After at the API), never an internal error.
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("take the write lock again");
    let refused = db.insert(&cluster("refused"), &[("token_digest", Val::Text("e".into()))]).await;
    assert!(matches!(refused, Err(ferrostack::db::DbError::Busy)), "{refused:?}");
    let api = ferrostack::server::error::ApiError::from(ferrostack::db::DbError::Busy);
    assert_eq!(api.code.status().as_u16(), 503);
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("rollback");
    db.close().await;
}
