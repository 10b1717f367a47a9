//! Reads built once per change: a value kept with the generation of the kinds of resource it is
//! built from (`db::notify`), rebuilt by the first request after any of them commits. On
//! PostgreSQL other servers' commits move the generation too (the poller wakes the same counters).

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::api::{ModelInstanceSpec, ModelSpec, Record, WorkerSpec};
use crate::db::mirror::Mirror;
use crate::db::notify::Changes;
use crate::db::{Db, DbError};

pub struct ByGeneration<T> {
    changes: Changes,
    built: Mutex<Option<(u64, Arc<T>)>>,
}

impl<T> ByGeneration<T> {
    /// A cache of something built from the resources of `kinds` (table names).
    pub fn new(db: &Db, kinds: &[&str]) -> ByGeneration<T> {
        ByGeneration { changes: db.subscribe(kinds), built: Mutex::new(None) }
    }

    /// The value, built by `build` when a followed kind changed since it was last built.
    pub async fn get<E, F, Fut>(&self, build: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Read before the rows: a commit in between makes the next request build again.
        let generation = self.changes.generation();
        if let Ok(built) = self.built.lock()
            && let Some((g, value)) = built.as_ref()
            && *g == generation
        {
            return Ok(value.clone());
        }
        let value = Arc::new(build().await?);
        if let Ok(mut built) = self.built.lock() {
            *built = Some((generation, value.clone()));
        }
        Ok(value)
    }
}

/// In-memory copies of the tables the cluster-wide views are built from, kept current from the
/// change log (`db::mirror`): a view rebuilt after a commit reads what changed, not every row.
pub struct Mirrors {
    pub workers: Mirror<WorkerSpec>,
    pub instances: Mirror<ModelInstanceSpec>,
    pub models: Mirror<ModelSpec>,
}

impl Mirrors {
    pub fn new(db: &Db) -> Mirrors {
        Mirrors { workers: Mirror::new(db), instances: Mirror::new(db), models: Mirror::new(db) }
    }
}

/// Workers, instances and deployments as stored: what the dashboard counts.
pub struct ClusterRows {
    pub workers: Arc<Vec<Record<WorkerSpec>>>,
    pub instances: Arc<Vec<Record<ModelInstanceSpec>>>,
    pub models: Arc<Vec<Record<ModelSpec>>>,
}

impl ClusterRows {
    pub async fn read(m: &Mirrors) -> Result<ClusterRows, DbError> {
        Ok(ClusterRows {
            workers: m.workers.rows().await?,
            instances: m.instances.rows().await?,
            models: m.models.rows().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn builds_once_per_change_of_what_it_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.expect("db");
        let cache: ByGeneration<usize> = ByGeneration::new(&db, &["clusters"]);
        let builds = AtomicUsize::new(0);
        let build = || async {
            builds.fetch_add(1, Ordering::Relaxed);
            Ok::<_, DbError>(db.all::<crate::api::ClusterSpec>().await?.len())
        };
        assert_eq!(*cache.get(build).await.expect("get"), 0);
        assert_eq!(*cache.get(build).await.expect("get"), 0);
        assert_eq!(builds.load(Ordering::Relaxed), 1, "nothing changed: built once");
        let spec = crate::api::ClusterSpec {
            name: "c".into(),
            description: None,
            is_default: false,
            token_hint: String::new(),
            token_nonce: None,
            gpu_memory: Default::default(),
        };
        db.insert(&spec, &[("token_digest", crate::db::Val::Text("d".into()))]).await.expect("insert");
        assert_eq!(*cache.get(build).await.expect("get"), 1, "a commit to what it follows rebuilds it");
        db.insert(&spec_for_users(), &[("password_hash", crate::db::Val::Text("x".into()))]).await.expect("user");
        assert_eq!(*cache.get(build).await.expect("get"), 1);
        assert_eq!(builds.load(Ordering::Relaxed), 2, "a commit to another kind does not");
    }

    fn spec_for_users() -> crate::api::UserSpec {
        serde_json::from_value(serde_json::json!({"username": "u"})).expect("user")
    }
}
