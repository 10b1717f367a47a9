//! Repositories for workers, model instances and server settings.

use sqlx::Row;

use super::{Db, DbResult, ListQuery, Resource, Val};
use crate::api::{ModelInstanceSpec, Record, WorkerSpec};

impl Resource for WorkerSpec {
    const TABLE: &'static str = "workers";
    const NOUN: &'static str = "worker";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Resource for ModelInstanceSpec {
    const TABLE: &'static str = "model_instances";
    const NOUN: &'static str = "model instance";
    const PER_WORKER: bool = true;
    fn name(&self) -> &str {
        &self.name
    }
    fn involved_workers(&self) -> Vec<i64> {
        self.binding.worker_id.into_iter().chain(self.subordinate_workers().iter().map(|s| s.worker_id)).collect()
    }
}

/// The extra columns a model instance is filtered by; written on every insert and update.
pub fn instance_columns(spec: &ModelInstanceSpec) -> Vec<(&'static str, Val)> {
    vec![
        ("model_id", Val::OptInt(spec.model_id)),
        ("worker_id", Val::OptInt(spec.binding.worker_id)),
        ("state", Val::Text(spec.status.state.as_str().to_string())),
    ]
}

impl Db {
    /// A worker's credential digest.
    pub async fn worker_token_digest(&self, worker_id: i64) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT token_digest FROM workers WHERE id = $1")
            .bind(worker_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Every instance placed on a worker.
    pub async fn instances_on_worker(&self, worker_id: i64) -> DbResult<Vec<Record<ModelInstanceSpec>>> {
        let q = ListQuery { filters: vec![("worker_id", Val::Int(worker_id))], ..Default::default() };
        Ok(self.list::<ModelInstanceSpec>(&q).await?.0)
    }

    /// Instances the worker runs a part of as a subordinate of a distributed instance (a scan:
    /// for rare events such as a worker leaving or going silent).
    pub async fn instances_with_subordinate(&self, worker_id: i64) -> DbResult<Vec<Record<ModelInstanceSpec>>> {
        Ok(self
            .all::<ModelInstanceSpec>()
            .await?
            .into_iter()
            .filter(|i| i.spec.subordinate(worker_id).is_some())
            .collect())
    }

    /// Every row of a resource (for small tables and controllers).
    pub async fn all<T: Resource>(&self) -> DbResult<Vec<Record<T>>> {
        Ok(self.list::<T>(&ListQuery::default()).await?.0)
    }

    /// Records that this server heard `workers` just now (the database's clock): one statement per
    /// thousand workers, however often they beat.
    pub async fn record_beats(&self, workers: &[i64]) -> DbResult<()> {
        let now = self.clock_sql();
        for chunk in workers.chunks(1000) {
            let values: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i}, {now})")).collect();
            let sql = format!(
                "INSERT INTO worker_beats (worker_id, seen_at) VALUES {} \
                 ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for w in chunk {
                q = q.bind(*w);
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Workers any server heard within the last `within_ms`, with how many milliseconds ago.
    pub async fn recent_beats(&self, within_ms: i64) -> DbResult<Vec<(i64, i64)>> {
        let now = self.clock_sql();
        let sql = format!("SELECT worker_id, {now} - seen_at FROM worker_beats WHERE seen_at > {now} - $1");
        let rows = sqlx::query(&sql).bind(within_ms).fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// A server-wide setting.
    pub async fn setting(&self, key: &str) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Stores a setting unless one exists; returns the value stored afterwards (the first writer's).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key.to_string())
            .bind(value.to_string())
            .execute(self.pool())
            .await?;
        Ok(self.setting(key).await?.unwrap_or_else(|| value.to_string()))
    }

    /// Removes a setting (no error when there is none).
    pub async fn delete_setting(&self, key: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1").bind(key.to_string()).execute(self.pool()).await?;
        Ok(())
    }
}
