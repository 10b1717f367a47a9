//! Repository for model deployments and the scheduling epoch.

use super::{Db, DbError, DbResult, ListQuery, Resource, Val};
use crate::api::{ModelInstanceSpec, ModelSpec, Record};

/// The `settings` key whose value every instance binding bumps (see [`Db::update_guarded`]).
pub const SCHEDULING_EPOCH: &str = "scheduling_epoch";

impl Resource for ModelSpec {
    const TABLE: &'static str = "models";
    const NOUN: &'static str = "model";
    fn name(&self) -> &str {
        &self.name
    }
}

/// The extra columns of a model row.
pub fn model_columns(spec: &ModelSpec) -> Vec<(&'static str, Val)> {
    vec![("backend", Val::OptText(spec.backend.clone()))]
}

impl Db {
    /// Every instance of a model.
    pub async fn instances_of_model(&self, model_id: i64) -> DbResult<Vec<Record<ModelInstanceSpec>>> {
        let q = ListQuery { filters: vec![("model_id", Val::Int(model_id))], ..Default::default() };
        Ok(self.list::<ModelInstanceSpec>(&q).await?.0)
    }

    /// Deployments using a backend (any version when `version` is None) with replicas > 0.
    pub async fn models_using_backend(&self, backend: &str, version: Option<&str>) -> DbResult<Vec<Record<ModelSpec>>> {
        let q = ListQuery { filters: vec![("backend", Val::Text(backend.to_string()))], ..Default::default() };
        let (models, _) = self.list::<ModelSpec>(&q).await?;
        Ok(models
            .into_iter()
            .filter(|m| m.spec.replicas > 0 && version.is_none_or(|v| m.spec.backend_version.as_deref() == Some(v)))
            .collect())
    }

    /// The current scheduling epoch.
    pub async fn scheduling_epoch(&self) -> DbResult<i64> {
        let raw = self.setting(SCHEDULING_EPOCH).await?.unwrap_or_else(|| "0".into());
        raw.parse().map_err(|_| DbError::Corrupt {
            kind: "setting",
            id: 0,
            message: format!("{SCHEDULING_EPOCH} = {raw:?}"),
        })
    }
}
