//! Repository for inference backends: the `inference_backends` table (core columns only; the
//! backend's name is `backend_name`, unique regardless of case through `name_key`).

use super::{Db, DbError, DbResult, ListQuery, Resource};
use crate::api::Record;
use crate::api::backend::InferenceBackendSpec;

impl Resource for InferenceBackendSpec {
    const TABLE: &'static str = "inference_backends";
    const NOUN: &'static str = "inference backend";
    const NAME_FIELD: &'static str = "backend_name";
    fn name(&self) -> &str {
        &self.backend_name
    }
}

impl Db {
    /// Every stored backend, oldest first (a handful of rows: built-ins, community, custom).
    pub async fn all_backends(&self) -> DbResult<Vec<Record<InferenceBackendSpec>>> {
        Ok(self.list::<InferenceBackendSpec>(&ListQuery::default()).await?.0)
    }

    /// A backend by name (case-insensitive), or NotFound naming it.
    pub async fn backend_by_name(&self, name: &str) -> DbResult<Record<InferenceBackendSpec>> {
        self.get_by_name::<InferenceBackendSpec>(name)
            .await?
            .ok_or_else(|| DbError::NotFound { kind: InferenceBackendSpec::NOUN, id: format!("{name:?}") })
    }

    /// Inserts `spec` unless a backend of that name exists; true when it was inserted. Safe when
    /// several servers start at once on one database (a lost race is "already there").
    pub async fn insert_backend_if_missing(&self, spec: &InferenceBackendSpec) -> DbResult<bool> {
        if self.get_by_name::<InferenceBackendSpec>(&spec.backend_name).await?.is_some() {
            return Ok(false);
        }
        match self.insert(spec, &[]).await {
            Ok(_) => Ok(true),
            Err(DbError::Duplicate { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
