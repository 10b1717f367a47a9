//! Model analysis, the step before scheduling: the leader reads each deployment's model (local
//! files, or a hub by HTTP range requests) once per source, in tasks of its own, and stores what
//! it found on the deployment (`analysis`, and `categories` when none were named). The scheduler
//! places replicas from the stored result and never waits on a read: a slow or hung hub delays
//! only that deployment's replicas, which are `analyzing` meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::api::{ModelAnalysis, ModelSpec};
use crate::control::evaluate::read_meta;
use crate::control::leader::Leadership;
use crate::db::{Db, DbError, model_columns};
use crate::estimate::ModelMeta;

/// A read that found problems (an unreachable hub, a missing file) is tried again after this long,
/// while the deployment still wants replicas.
pub const RETRY_FAILED: Duration = Duration::from_secs(300);
/// Reads at once: a hung mount or hub holds one slot, not the step.
const AT_ONCE: usize = 4;
/// Looks again this often without a change (failed reads come due).
const IDLE: Duration = Duration::from_secs(30);

/// Fingerprint of the fields that say where the model is read from.
pub fn source_digest(m: &ModelSpec) -> String {
    let source = serde_json::json!([
        m.source,
        m.local_path,
        m.huggingface_repo_id,
        m.huggingface_filename,
        m.model_scope_model_id,
        m.model_scope_file_path,
    ]);
    hex::encode(&Sha256::digest(source.to_string().as_bytes())[..8])
}

/// The stored analysis, if it was read from the deployment's current source.
pub fn stored(m: &ModelSpec) -> Option<(ModelMeta, Vec<String>)> {
    let a = m.analysis.as_ref().filter(|a| a.source_digest == source_digest(m))?;
    let meta = serde_json::from_value(a.model.clone()).ok()?;
    Some((meta, a.problems.clone()))
}

/// Whether the model must be read (again): never read, read from another source, stored in a
/// shape this build cannot read, or read with problems over [`RETRY_FAILED`] ago while replicas
/// are wanted.
pub fn needs_reading(m: &ModelSpec, now: DateTime<Utc>) -> bool {
    match &m.analysis {
        // One this build cannot read (stored by another version) is read again, not waited on.
        Some(a) if a.source_digest == source_digest(m) && stored(m).is_some() => {
            let retry = chrono::Duration::from_std(RETRY_FAILED).unwrap_or_default();
            !a.problems.is_empty() && m.replicas > 0 && now - a.analyzed_at >= retry
        }
        _ => true,
    }
}

/// Reads `m`'s model and stores the result on it, unless its source changed meanwhile (the next
/// pass reads the new one).
pub async fn analyze(db: &Db, hub: &crate::config::HubAccess, id: i64, m: &ModelSpec) -> Result<(), DbError> {
    let (meta, problems) = read_meta(m, hub).await;
    let digest = source_digest(m);
    let category = meta.category.as_str().to_owned();
    let analysis = ModelAnalysis {
        source_digest: digest.clone(),
        analyzed_at: Utc::now(),
        model: serde_json::to_value(&meta).unwrap_or_default(),
        problems,
    };
    let res = db
        .modify::<ModelSpec, Unstored, _>(id, None, |cur| {
            if source_digest(cur) != digest {
                return Err(Unstored::SourceChanged);
            }
            cur.analysis = Some(analysis.clone());
            // Named once, from the model, for a deployment that names none (seed 004).
            if cur.categories.is_empty() {
                cur.categories = vec![category.clone()];
            }
            Ok(model_columns(cur))
        })
        .await;
    match res {
        Ok(_)
        | Err(Unstored::SourceChanged | Unstored::Db(DbError::NotFound { .. } | DbError::VersionConflict { .. })) => {
            Ok(())
        }
        Err(Unstored::Db(e)) => Err(e),
    }
}

/// Why a read's result is not stored: its deployment now names another source, or the store said no.
enum Unstored {
    SourceChanged,
    Db(DbError),
}

impl From<DbError> for Unstored {
    fn from(e: DbError) -> Unstored {
        Unstored::Db(e)
    }
}

/// One pass: starts a read for each deployment that needs one and is not being read. Steppable
/// in tests; returns the reads started.
pub async fn pass(db: &Db, hub: &Arc<crate::config::HubAccess>, reading: &Reading) -> Result<usize, DbError> {
    let now = Utc::now();
    let mut started = 0;
    for m in db.all::<ModelSpec>().await? {
        if !needs_reading(&m.spec, now) || !reading.begin(m.id) {
            continue;
        }
        started += 1;
        let (db, hub, reading) = (db.clone(), hub.clone(), reading.clone());
        tokio::spawn(async move {
            let slot = reading.slots.clone().acquire_owned().await;
            if let Err(e) = analyze(&db, &hub, m.id, &m.spec).await {
                tracing::warn!(model = %m.spec.name, error = %e, "storing the model's analysis failed");
            }
            drop(slot);
            reading.end(m.id);
        });
    }
    Ok(started)
}

/// Deployments being read, and the slots reads take.
#[derive(Clone)]
pub struct Reading {
    ids: Arc<Mutex<HashSet<i64>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Reading {
    fn default() -> Reading {
        Reading { ids: Arc::default(), slots: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)) }
    }
}

impl Reading {
    fn begin(&self, id: i64) -> bool {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
    }

    fn end(&self, id: i64) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// The analysis step's loop on the leading server.
pub fn spawn(
    db: Db,
    hub: Arc<crate::config::HubAccess>,
    leader: Leadership,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut changed = db.subscribe(&["models"]);
        let reading = Reading::default();
        loop {
            let Some(fence) = leader.lead(&mut shutdown).await else { return };
            if let Err(e) = pass(&db.fenced(fence), &hub, &reading).await {
                tracing::warn!(error = %e, "model analysis pass failed");
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelSource;

    fn model(path: &str) -> ModelSpec {
        serde_json::from_value(serde_json::json!({"name": "m", "source": "local_path", "local_path": path}))
            .expect("spec")
    }

    fn analyzed(m: &ModelSpec, problems: &[&str], at: DateTime<Utc>) -> ModelSpec {
        let meta = ModelMeta { architecture: "LlamaForCausalLM".into(), weight_bytes: 7, ..Default::default() };
        ModelSpec {
            analysis: Some(ModelAnalysis {
                source_digest: source_digest(m),
                analyzed_at: at,
                model: serde_json::to_value(meta).expect("json"),
                problems: problems.iter().map(|p| p.to_string()).collect(),
            }),
            ..m.clone()
        }
    }

    #[test]
    fn when_a_model_is_read_again() {
        let now = Utc::now();
        let base = model("/m/a.gguf");
        let long_ago = now - chrono::Duration::seconds(301);
        let moved = ModelSpec { local_path: Some("/m/b.gguf".into()), ..analyzed(&base, &[], now) };
        let to_hub = ModelSpec {
            source: ModelSource::Huggingface,
            huggingface_repo_id: Some("org/m".into()),
            ..analyzed(&base, &[], now)
        };
        let unreadable = ModelSpec {
            analysis: Some(ModelAnalysis {
                model: serde_json::json!({"weight_bytes": "many"}),
                ..analyzed(&base, &[], now).analysis.expect("analysis")
            }),
            ..base.clone()
        };
        let cases: [(&str, ModelSpec, bool); 8] = [
            ("stored in a shape this build cannot read", unreadable, true),
            ("never read", base.clone(), true),
            ("read, fine", analyzed(&base, &[], long_ago), false),
            ("read with problems just now", analyzed(&base, &["hub down"], now), false),
            ("read with problems long ago", analyzed(&base, &["hub down"], long_ago), true),
            (
                "read with problems long ago, no replicas wanted",
                ModelSpec { replicas: 0, ..analyzed(&base, &["hub down"], long_ago) },
                false,
            ),
            ("the local path changed", moved, true),
            ("the source changed", to_hub, true),
        ];
        for (what, m, expected) in cases {
            assert_eq!(needs_reading(&m, now), expected, "{what}");
        }
    }

    #[test]
    fn only_an_analysis_of_the_current_source_is_used() {
        let base = model("/m/a.gguf");
        let (meta, problems) = stored(&analyzed(&base, &["x"], Utc::now())).expect("current");
        assert_eq!((meta.architecture.as_str(), meta.weight_bytes, problems.len()), ("LlamaForCausalLM", 7, 1));
        let moved = ModelSpec { local_path: Some("/m/b.gguf".into()), ..analyzed(&base, &[], Utc::now()) };
        assert!(stored(&moved).is_none());
        assert!(stored(&base).is_none());
    }
}
