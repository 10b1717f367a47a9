//! Model evaluation for the server: read what a deployment's model is (local files or a hub by
//! HTTP range requests), estimate what one replica needs on its backend, and say what the
//! server will inject. The read ([`read_meta`]) is the analysis step's (`analysis.rs`) and
//! `POST /v2/model-evaluations`'; the scheduler assesses what was stored ([`assess`]).

use std::path::Path;

use crate::api::backend::InferenceBackendSpec;
use crate::api::{GpuMemoryPolicy, ModelSource, ModelSpec};
use crate::estimate::{self, Estimate, EstimateInput, ExtendedKv, InjectInput, ModelMeta, Policy};
use crate::placement::Claim;

/// Everything the scheduler needs to know about one replica of a deployment.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub meta: ModelMeta,
    pub estimate: Estimate,
    pub vram: u64,
    pub ram: u64,
    pub claim: Claim,
    pub tp_divisors: Vec<u64>,
    pub gpus_per_replica: Option<u32>,
    /// What could not be read or is wrong (the deployment can still be scheduled on estimates).
    pub problems: Vec<String>,
    /// The memory policy the replica is estimated under (`gpu_memory`, else the cluster's).
    pub policy: Policy,
    backend: String,
    backend_version: Option<String>,
    user_parameters: Vec<String>,
    extended_kv: Option<ExtendedKv>,
    /// Parking is on (`autoscaling.park_seconds`): engines with a sleep mode start with it.
    sleep_mode: bool,
}

/// A deployment's memory policy: its own `gpu_memory`, else its cluster's default.
pub fn policy_of(m: &ModelSpec, cluster_default: GpuMemoryPolicy) -> Policy {
    match m.gpu_memory.unwrap_or(cluster_default) {
        GpuMemoryPolicy::Reserve => Policy::Reserve,
        GpuMemoryPolicy::Fit => Policy::Fit { contexts: m.fit_concurrency.unwrap_or(1).max(1) },
    }
}

fn extended_kv(m: &ModelSpec) -> Option<ExtendedKv> {
    m.extended_kv_cache.as_ref().filter(|k| k.enabled).map(|k| ExtendedKv {
        ram_ratio: k.ram_ratio,
        ram_size_gib: k.ram_size,
        chunk_size: k.chunk_size,
    })
}

/// The `gpu_memory` default of cluster `cluster_id` (absent: the default cluster); `reserve` when
/// the cluster is gone.
pub async fn cluster_policy(
    db: &crate::db::Db,
    cluster_id: Option<i64>,
) -> Result<GpuMemoryPolicy, crate::db::DbError> {
    use crate::api::ClusterSpec;
    match cluster_id {
        Some(id) => match db.get::<ClusterSpec>(id).await {
            Ok(c) => Ok(c.spec.gpu_memory),
            Err(crate::db::DbError::NotFound { .. }) => Ok(GpuMemoryPolicy::Reserve),
            Err(e) => Err(e),
        },
        None => Ok(db
            .all::<ClusterSpec>()
            .await?
            .into_iter()
            .find(|c| c.spec.is_default)
            .map(|c| c.spec.gpu_memory)
            .unwrap_or_default()),
    }
}

/// How long reading a deployment's local model files may take: a hung network mount never answers,
/// and the scheduler (and `POST /v2/model-evaluations`) must go on.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Local paths being read now. A path whose read has not returned is not read again until it does,
/// so a hung mount holds one blocking thread, not one per scheduler pass.
static READING: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Reads local model files off the async threads, bounded by [`READ_TIMEOUT`]; on failure, the
/// reason and the files' size if it could be read.
async fn read_local_bounded(path: String) -> Result<ModelMeta, (String, u64)> {
    read_local_within(path, READ_TIMEOUT).await
}

/// [`read_local_bounded`] with its bound as a parameter (tests pass a short one).
async fn read_local_within(path: String, bound: std::time::Duration) -> Result<ModelMeta, (String, u64)> {
    let reading = || READING.lock().unwrap_or_else(|e| e.into_inner());
    // Another evaluation reading the same files (two schedulers, an API evaluation) is waited for,
    // then the files are read again: only a read that does not return within the bound is given up.
    let waited = tokio::time::Instant::now();
    while !reading().insert(path.clone()) {
        if waited.elapsed() >= bound {
            return Err(("an earlier read of these files has not returned (a hung mount?)".into(), 0));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let p = path.clone();
    let task = tokio::task::spawn_blocking(move || {
        let res = estimate::read_local(Path::new(&p)).map_err(|e| e.to_string());
        let size = if res.is_err() { std::fs::metadata(&p).map(|md| md.len()).unwrap_or(0) } else { 0 };
        READING.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
        (res, size)
    });
    match tokio::time::timeout(bound, task).await {
        Ok(Ok((Ok(meta), _))) => Ok(meta),
        Ok(Ok((Err(e), size))) => Err((e, size)),
        Ok(Err(e)) => {
            reading().remove(&path);
            Err((e.to_string(), 0))
        }
        Err(_) => Err((format!("reading the model files took over {} s (a hung mount?)", bound.as_secs()), 0)),
    }
}

/// Reads the model's metadata: local files directly (bounded: [`READ_TIMEOUT`]); hub sources via `HF_ENDPOINT` (range
/// requests, never the weights). Unreadable sources fall back to "an LLM of unknown size".
pub async fn read_meta(m: &ModelSpec, hub: &crate::config::HubAccess) -> (ModelMeta, Vec<String>) {
    let mut problems = Vec::new();
    let mut size = 0;
    let read = match m.source {
        ModelSource::LocalPath => {
            read_local_bounded(m.local_path.clone().unwrap_or_default()).await.map_err(|(e, bytes)| {
                size = bytes;
                e
            })
        }
        ModelSource::Huggingface => {
            let (base, token) = (&hub.hf_endpoint, hub.hf_token.as_deref());
            let repo = m.huggingface_repo_id.clone().unwrap_or_default();
            let client =
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(15)).build().unwrap_or_default();
            estimate::read_remote(base, &repo, "main", token, &client).await.map_err(|e| e.to_string())
        }
        ModelSource::ModelScope => Err("reading ModelScope metadata is not supported yet".to_string()),
    };
    let meta = match read {
        Ok(meta) => meta,
        Err(e) => {
            problems.push(format!("cannot read the model's metadata: {e}"));
            ModelMeta { weight_bytes: size, kv_bytes_per_elem: 2, ..Default::default() }
        }
    };
    (meta, problems)
}

/// Evaluates one replica of `m` on `backend`; `cluster_default` is the `gpu_memory` of its
/// cluster, for a deployment that sets none.
pub async fn evaluate(
    m: &ModelSpec,
    backend: &InferenceBackendSpec,
    cluster_default: GpuMemoryPolicy,
    hub: &crate::config::HubAccess,
) -> Evaluation {
    let (meta, problems) = read_meta(m, hub).await;
    assess(m, backend, cluster_default, meta, problems)
}

/// Evaluates one replica of `m` on `backend` from metadata already read (`meta`, and the
/// `problems` reading it found): no IO, so the scheduler can call it on every pass.
pub fn assess(
    m: &ModelSpec,
    backend: &InferenceBackendSpec,
    cluster_default: GpuMemoryPolicy,
    mut meta: ModelMeta,
    mut problems: Vec<String>,
) -> Evaluation {
    let policy = policy_of(m, cluster_default);
    if let Some(category) = m.categories.first().and_then(|c| estimate::Category::parse(c)) {
        meta.category = category;
    }
    // A backend version that only runs on CPU is estimated for CPU (everything in RAM).
    let version = m.backend_version.clone().or_else(|| backend.default_version.clone());
    let frameworks: Vec<String> =
        version.as_ref().and_then(|v| backend.version_configs.get(v)).map(|vc| vc.frameworks()).unwrap_or_default();
    let cpu_only = !frameworks.is_empty() && frameworks.iter().all(|f| f == "cpu");
    let input = EstimateInput {
        backend: &backend.backend_name,
        backend_parameters: &m.backend_parameters,
        gpu_total_memory: None,
        n_gpus: u32::from(!cpu_only),
        extended_kv: extended_kv(m),
        policy,
    };
    let est = match estimate::estimate(&meta, &input) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("backend_parameters: {e}"));
            let no_params = EstimateInput { backend_parameters: &[], ..input };
            match estimate::estimate(&meta, &no_params) {
                Ok(e) => e,
                Err(_) => Estimate {
                    vram: meta.weight_bytes,
                    ram: 0,
                    weights: meta.weight_bytes,
                    kv_cache: 0,
                    overhead: 0,
                    context_length: 0,
                    claim: Claim::Estimate,
                    tp_divisors: Vec::new(),
                    gpus_per_replica: None,
                    injected_parameters: Vec::new(),
                    notes: Vec::new(),
                    fit: None,
                },
            }
        }
    };
    Evaluation {
        vram: est.vram,
        ram: est.ram,
        claim: est.claim,
        tp_divisors: est.tp_divisors.clone(),
        gpus_per_replica: est.gpus_per_replica,
        meta,
        estimate: est,
        problems,
        policy,
        backend_version: version,
        backend: backend.backend_name.clone(),
        user_parameters: m.backend_parameters.clone(),
        extended_kv: extended_kv(m),
        sleep_mode: m.autoscaling.as_ref().is_some_and(|a| a.park_seconds.is_some()),
    }
}

impl Evaluation {
    /// The parameters and environment the server injects for a replica on `n_gpus` GPUs.
    /// With the GPU's size known, the estimate is made again for it (SGLang's
    /// `--mem-fraction-static` depends on it). `gpu_taken`: bytes of the chosen GPU others hold.
    pub fn injection(
        &self,
        n_gpus: u32,
        nodes: u32,
        gpu_total_memory: Option<u64>,
        gpu_taken: u64,
    ) -> estimate::Injection {
        let for_gpu = gpu_total_memory.and_then(|total| {
            let input = EstimateInput {
                backend: &self.backend,
                backend_parameters: &self.user_parameters,
                gpu_total_memory: Some(total),
                n_gpus: n_gpus.max(1),
                extended_kv: self.extended_kv,
                policy: self.policy,
            };
            estimate::estimate(&self.meta, &input).ok()
        });
        let input = InjectInput {
            backend: &self.backend,
            meta: &self.meta,
            estimate: for_gpu.as_ref().unwrap_or(&self.estimate),
            n_gpus,
            nodes,
            model_name: "{{model_name}}",
            port: "{{port}}",
            user_parameters: &self.user_parameters,
            extended_kv: self.extended_kv,
            gpu_total_memory,
            backend_version: self.backend_version.as_deref(),
            gpu_taken,
            sleep_mode: self.sleep_mode,
        };
        estimate::injected_parameters(&input).unwrap_or_default()
    }

    /// The fraction of each GPU the engine is told to take on GPUs of `gpu_total` bytes, `n_gpus`
    /// per worker (SGLang's `--mem-fraction-static` heuristic depends on both; vLLM's
    /// `--gpu-memory-utilization` does not). `None` when the claim is the estimate.
    pub fn fraction_for(&self, gpu_total: u64, n_gpus: u32) -> Option<f64> {
        let input = EstimateInput {
            backend: &self.backend,
            backend_parameters: &self.user_parameters,
            gpu_total_memory: Some(gpu_total),
            n_gpus: n_gpus.max(1),
            extended_kv: self.extended_kv,
            policy: self.policy,
        };
        match estimate::estimate(&self.meta, &input).map(|e| e.claim).unwrap_or(self.claim) {
            Claim::Fraction(f) if f > 0.0 => Some(f),
            _ => None,
        }
    }

    /// The claim to place with on a cluster whose GPUs have these sizes: a fraction claim is the
    /// largest the engine could be told on any of them (one GPU each), so the claim settled on the
    /// GPUs chosen ([`settle_claim`]) never exceeds what placement checked.
    pub fn claim_for_sizes(&self, sizes: impl IntoIterator<Item = u64>) -> Claim {
        let Claim::Fraction(_) = self.claim else { return self.claim };
        sizes
            .into_iter()
            .filter_map(|total| self.fraction_for(total, 1))
            .reduce(f64::max)
            .map_or(self.claim, Claim::Fraction)
    }

    /// The metadata as JSON, for the deployment's `meta` and the evaluation answer.
    pub fn meta_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.meta).unwrap_or_default()
    }
}

/// Makes a placement's fraction claims what the engine is told: `told` of each chosen GPU's
/// `total` (looked up by worker id and GPU index), as long as that is no more than `checked`, the
/// fraction placement checked the GPUs with; otherwise the placement's claims stand.
pub fn settle_claim(
    p: &mut crate::placement::Placement,
    told: Option<f64>,
    checked: Claim,
    total: impl Fn(i64, u32) -> Option<u64>,
) {
    let (Some(told), Claim::Fraction(checked)) = (told, checked) else { return };
    if told > checked {
        return;
    }
    let parts = std::iter::once((p.worker_id, &mut p.vram_claim))
        .chain(p.subordinates.iter_mut().map(|s| (s.worker_id, &mut s.vram_claim)));
    for (worker_id, claims) in parts {
        for (index, claim) in claims.iter_mut() {
            if let Some(t) = total(worker_id, *index) {
                *claim = (t as f64 * told) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{Placement, SubPlacement};
    use std::collections::BTreeMap;

    const GIB: u64 = 1 << 30;

    fn placement() -> Placement {
        Placement {
            worker_id: 1,
            gpu_indexes: vec![0, 1],
            vram_claim: BTreeMap::from([(0, 70 * GIB), (1, 70 * GIB)]),
            ram_claim: 0,
            subordinates: vec![SubPlacement {
                worker_id: 2,
                gpu_indexes: vec![0],
                vram_claim: BTreeMap::from([(0, 70 * GIB)]),
            }],
            score: 0.0,
            overcommit: false,
            message: None,
        }
    }

    #[test]
    fn settled_claims_are_what_the_engine_is_told() {
        let total = |_: i64, _: u32| Some(80 * GIB);
        let told = (80.0 * 0.836 * GIB as f64) as u64;
        let cases = [
            (Some(0.836), Claim::Fraction(0.88), told),
            (Some(0.9), Claim::Fraction(0.9), 72 * GIB),
            // Told more than placement checked: the checked claims stand.
            (Some(0.95), Claim::Fraction(0.88), 70 * GIB),
            (None, Claim::Fraction(0.88), 70 * GIB),
            (Some(0.5), Claim::Estimate, 70 * GIB),
        ];
        for (fraction, checked, want) in cases {
            let mut p = placement();
            settle_claim(&mut p, fraction, checked, total);
            let all: Vec<u64> = p
                .vram_claim
                .values()
                .chain(p.subordinates.iter().flat_map(|s| s.vram_claim.values()))
                .copied()
                .collect();
            assert_eq!(all, vec![want; 3], "{fraction:?} {checked:?}");
        }
    }

    #[tokio::test]
    async fn a_path_whose_read_has_not_returned_is_not_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"not a gguf").expect("write");
        let path = path.to_string_lossy().into_owned();
        // As if an earlier read of it hung: after waiting the bound for it, no second blocking
        // read is started.
        let bound = std::time::Duration::from_millis(100);
        READING.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        let (why, _) = read_local_within(path.clone(), bound).await.expect_err("not read again");
        assert!(why.contains("has not returned"), "{why}");
        // One that returns meanwhile is waited for, then the files are read again (two schedulers
        // evaluating one deployment at once must both get its real size).
        READING.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        let p = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            READING.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
        });
        let (why, size) = read_local_within(path.clone(), std::time::Duration::from_secs(5)).await.expect_err("read");
        assert!(!why.contains("has not returned") && size == 10, "waited, then read: {why} ({size} bytes)");
        // Once that read returns, the path is read again (and this file is no GGUF).
        READING.lock().unwrap_or_else(|e| e.into_inner()).remove(&path);
        let (why, size) = read_local_bounded(path.clone()).await.expect_err("not a gguf");
        assert!(!why.contains("has not returned") && size == 10, "{why} ({size} bytes)");
        assert!(!READING.lock().unwrap_or_else(|e| e.into_inner()).contains(&path), "released after the read");
    }
}
