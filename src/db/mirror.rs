//! An in-memory copy of one table, kept current from the change log: after a commit only the
//! changes since the last read are applied, so a view built from every row (the GPU list, the
//! dashboard) costs what changed, not what exists.
//!
//! The copy is as fresh as the commits this process has heard of (`notify`): a read after a write
//! on this server sees the write; another server's commit is seen once the poller hears it, as a
//! watch stream sees it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::notify::Changes;
use super::{Db, DbError, DbResult, Resource};
use crate::api::{EventType, Record};

/// Changes applied one by one at most; a longer backlog reloads the table instead.
const CATCH_UP_LIMIT: i64 = 2_000;

/// Every row of `T`, kept current from the change log.
pub struct Mirror<T: Resource> {
    db: Db,
    changes: Changes,
    copy: tokio::sync::Mutex<Option<Copy<T>>>,
}

struct Copy<T> {
    /// The notifier's generation the rows reflect.
    generation: u64,
    /// The last change applied.
    seq: i64,
    rows: BTreeMap<i64, Record<T>>,
    /// `rows` in id order, shared with readers until the next change.
    shared: Arc<Vec<Record<T>>>,
}

/// How one logged change moves the copy.
#[derive(Debug)]
enum Step<T> {
    Put(Box<Record<T>>),
    Remove(i64),
}

/// The step a change log entry stands for: its data is the record as of the change.
fn step<T: Resource>(event: EventType, data: &str, seq: i64) -> DbResult<Step<T>> {
    let record: Record<T> =
        serde_json::from_str(data).map_err(|e| DbError::Corrupt { kind: "change", id: seq, message: e.to_string() })?;
    Ok(match event {
        EventType::Deleted => Step::Remove(record.id),
        _ => Step::Put(Box::new(record)),
    })
}

impl<T: Resource> Mirror<T> {
    pub fn new(db: &Db) -> Mirror<T> {
        Mirror { db: db.clone(), changes: db.subscribe(&[T::TABLE]), copy: tokio::sync::Mutex::new(None) }
    }

    /// Every row in id order, reflecting at least every commit this process had heard of when
    /// called. Concurrent callers wait for one refresh.
    pub async fn rows(&self) -> DbResult<Arc<Vec<Record<T>>>> {
        // Read before the log: a commit in between moves the generation, so the next call reads again.
        let generation = self.changes.generation();
        let mut copy = self.copy.lock().await;
        if let Some(c) = copy.as_ref()
            && c.generation == generation
        {
            return Ok(c.shared.clone());
        }
        let caught_up = match copy.as_mut() {
            Some(c) => self.catch_up(c).await?,
            None => false,
        };
        if !caught_up {
            let (seq, rows) = self.db.snapshot::<T>(&[]).await?;
            let rows: BTreeMap<i64, Record<T>> = rows.into_iter().map(|r| (r.id, r)).collect();
            *copy = Some(Copy { generation, seq, rows, shared: Arc::default() });
        }
        let Some(c) = copy.as_mut() else { return Ok(Arc::default()) };
        c.generation = generation;
        c.shared = Arc::new(c.rows.values().cloned().collect());
        Ok(c.shared.clone())
    }

    /// Applies the changes logged after the copy's; false when they cannot all be read (pruned
    /// from the log, or too many): the caller reloads.
    async fn catch_up(&self, c: &mut Copy<T>) -> DbResult<bool> {
        if self.db.oldest_change().await?.is_some_and(|oldest| oldest > c.seq + 1) {
            return Ok(false);
        }
        let changes = self.db.changes_since(T::TABLE, c.seq, CATCH_UP_LIMIT + 1, None).await?;
        if changes.len() as i64 > CATCH_UP_LIMIT {
            return Ok(false);
        }
        for change in changes {
            match step::<T>(change.event, &change.data, change.seq)? {
                Step::Put(record) => {
                    c.rows.insert(record.id, *record);
                }
                Step::Remove(id) => {
                    c.rows.remove(&id);
                }
            }
            c.seq = change.seq;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterSpec;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.expect("db");
        (dir, db)
    }

    fn cluster(name: &str) -> ClusterSpec {
        serde_json::from_value(serde_json::json!({"name": name})).expect("cluster spec")
    }

    fn digest(name: &str) -> [(&'static str, crate::db::Val); 1] {
        [("token_digest", crate::db::Val::Text(format!("digest-{name}")))]
    }

    fn names(rows: &[Record<ClusterSpec>]) -> Vec<String> {
        rows.iter().map(|r| r.spec.name.clone()).collect()
    }

    #[tokio::test]
    async fn follows_inserts_updates_and_deletes_without_rereading() {
        let (_dir, db) = db().await;
        let mirror: Mirror<ClusterSpec> = Mirror::new(&db);
        let before = mirror.rows().await.expect("rows");
        let a = db.insert(&cluster("a"), &digest("a")).await.expect("a");
        let b = db.insert(&cluster("b"), &digest("b")).await.expect("b");
        let rows = mirror.rows().await.expect("rows");
        assert_eq!(rows.len(), before.len() + 2);
        assert_eq!(names(&rows[rows.len() - 2..]), ["a", "b"]);
        let mut renamed = a.spec.clone();
        renamed.description = Some("edited".into());
        let a2 = db.update(a.id, a.version, &renamed, &[]).await.expect("update");
        db.delete::<ClusterSpec>(b.id).await.expect("delete");
        let rows = mirror.rows().await.expect("rows");
        let got = rows.iter().find(|r| r.id == a.id).expect("a is there");
        assert_eq!((got.version, got.spec.description.as_deref()), (a2.version, Some("edited")));
        assert!(rows.iter().all(|r| r.id != b.id), "b was deleted");
        // The same as reading the table.
        let table = db.all::<ClusterSpec>().await.expect("all");
        assert_eq!(
            rows.iter().map(|r| (r.id, r.version)).collect::<Vec<_>>(),
            table.iter().map(|r| (r.id, r.version)).collect::<Vec<_>>()
        );
        // Unchanged: the same shared rows.
        assert!(Arc::ptr_eq(&rows, &mirror.rows().await.expect("rows")));
    }

    #[tokio::test]
    async fn reloads_when_the_log_was_pruned_past_it() {
        let (_dir, db) = db().await;
        let mirror: Mirror<ClusterSpec> = Mirror::new(&db);
        mirror.rows().await.expect("rows");
        let x = db.insert(&cluster("x"), &digest("x")).await.expect("x");
        db.insert(&cluster("y"), &digest("y")).await.expect("y");
        db.delete::<ClusterSpec>(x.id).await.expect("delete x");
        db.prune_changes(1).await.expect("prune");
        let rows = mirror.rows().await.expect("rows");
        let table = db.all::<ClusterSpec>().await.expect("all");
        assert_eq!(names(&rows), names(&table), "the insert of y and the delete of x were pruned: reloaded");
    }

    #[test]
    fn a_logged_change_is_a_put_or_a_remove() {
        let rec = serde_json::json!({"id": 4, "version": 2, "created_at": "2026-12-01T00:00:00Z",
                                     "updated_at": "2026-12-01T00:00:00Z", "name": "c"})
        .to_string();
        assert!(matches!(step::<ClusterSpec>(EventType::Created, &rec, 1), Ok(Step::Put(r)) if r.id == 4));
        assert!(matches!(step::<ClusterSpec>(EventType::Updated, &rec, 2), Ok(Step::Put(r)) if r.version == 2));
        assert!(matches!(step::<ClusterSpec>(EventType::Deleted, &rec, 3), Ok(Step::Remove(4))));
        assert!(matches!(step::<ClusterSpec>(EventType::Updated, "{", 9), Err(DbError::Corrupt { id: 9, .. })));
    }
}
