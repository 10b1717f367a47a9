//! Placement: (cluster snapshot, request) → where one replica goes, or why it fits nowhere.
//! Pure, synchronous, no IO; the scheduler builds the snapshot and applies the decision.
//!
//! Pipeline (GPUStack's, see gpustack-notes §4.3–4.9): filters (`filters.rs`) → candidate
//! strategies, first non-empty wins (`candidates.rs`) → scores (`score.rs`). When nothing fits,
//! the same pipeline runs again in "explain" mode to collect one reason per worker or GPU, so the
//! fast path never formats a string. Scale-down ordering lives in `scale_down.rs`.

use std::collections::BTreeMap;

mod candidates;
mod filters;
mod scale_down;
mod score;
#[cfg(test)]
mod tests;

pub use candidates::gpus_per_replica_auto;
pub use scale_down::{ScaleDownView, scale_down_order};

/// One GPU as placement sees it: capacity and what existing instances already claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuView {
    pub index: u32,
    /// `cuda`, `rocm`, `cann`, `dtk`, … (the `<type>` of `<worker>:<type>:<index>`).
    pub gpu_type: String,
    pub total: u64,
    pub allocated: u64,
    /// Instances of the model being placed that use this GPU (spread scoring, per-GPU term).
    pub instances_of_model: u32,
    /// Instances of other models that use this GPU.
    pub instances_other: u32,
}

/// One worker as placement sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerView {
    pub id: i64,
    pub name: String,
    pub cluster_id: i64,
    pub labels: BTreeMap<String, String>,
    /// Only ready workers (not in maintenance) take new instances.
    pub ready: bool,
    pub gpus: Vec<GpuView>,
    pub ram_total: u64,
    pub ram_allocated: u64,
    /// Instances of the model being placed already on this worker (spread scoring).
    pub instances_of_model: u32,
    /// Instances of other models on this worker.
    pub instances_other: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub workers: Vec<WorkerView>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    #[default]
    Spread,
    Binpack,
}

/// What each used GPU claims.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim {
    /// A fraction of each used GPU's total (vLLM `--gpu-memory-utilization`, SGLang
    /// `--mem-fraction-static`, MindIE `npu_memory_fraction`); a GPU qualifies only if
    /// allocatable/total ≥ the fraction, and Σ claims must cover `Request::vram`.
    Fraction(f64),
    /// The estimate itself, split evenly over the used GPUs (llama.cpp, custom backends, non-LLMs).
    Estimate,
}

/// What one replica needs and where it may go.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub cluster_id: i64,
    pub strategy: Strategy,
    /// Every label here must match exactly; empty matches all.
    pub worker_selector: BTreeMap<String, String>,
    /// Manual GPU selection, as `<worker>:<type>:<index>`; empty = automatic.
    pub gpu_ids: Vec<String>,
    /// GPUs per replica when set by the user (manual) or by parallelism flags (world size).
    pub gpus_per_replica: Option<u32>,
    /// Estimated VRAM of one replica in bytes (weights + KV cache + overhead).
    pub vram: u64,
    /// Estimated RAM of one replica in bytes.
    pub ram: u64,
    pub claim: Claim,
    /// Numbers a tensor-parallel size must divide (attention heads, vocabulary size); empty = any.
    pub tp_divisors: Vec<u64>,
    /// GPU types the backend version can run on; `cpu` means it can run without a GPU.
    pub frameworks: Vec<String>,
    pub cpu_offloading: bool,
    pub distributed: bool,
    /// How many replicas the deployment wants (overcommit is only allowed for one).
    pub replicas: u32,
}

/// GPUs on a secondary worker of a distributed placement.
#[derive(Debug, Clone, PartialEq)]
pub struct SubPlacement {
    pub worker_id: i64,
    pub gpu_indexes: Vec<u32>,
    pub vram_claim: BTreeMap<u32, u64>,
}

/// Where one replica goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub worker_id: i64,
    /// Empty for a CPU-only placement.
    pub gpu_indexes: Vec<u32>,
    /// Claimed bytes per GPU index on the main worker.
    pub vram_claim: BTreeMap<u32, u64>,
    pub ram_claim: u64,
    pub subordinates: Vec<SubPlacement>,
    pub score: f64,
    /// Manual selection that does not really fit (allowed for a single replica only).
    pub overcommit: bool,
    /// A note for the instance (e.g. the overcommit warning).
    pub message: Option<String>,
}

impl Snapshot {
    /// Books `p` here, as a bound instance of it would count when the snapshot is built again:
    /// each worker it spans (main and subordinates) holds the replica's RAM and one instance, each
    /// GPU its claim and one instance. `same_model`: the placed replica belongs to the model this
    /// snapshot is for (spread scoring counts those apart).
    pub fn apply(&mut self, p: &Placement, same_model: bool) {
        let parts = std::iter::once((p.worker_id, &p.gpu_indexes, &p.vram_claim))
            .chain(p.subordinates.iter().map(|s| (s.worker_id, &s.gpu_indexes, &s.vram_claim)));
        for (worker_id, indexes, claims) in parts {
            let Some(w) = self.workers.iter_mut().find(|w| w.id == worker_id) else { continue };
            w.ram_allocated = w.ram_allocated.saturating_add(p.ram_claim);
            *(if same_model { &mut w.instances_of_model } else { &mut w.instances_other }) += 1;
            for g in w.gpus.iter_mut() {
                if indexes.contains(&g.index) {
                    *(if same_model { &mut g.instances_of_model } else { &mut g.instances_other }) += 1;
                }
                g.allocated = g.allocated.saturating_add(claims.get(&g.index).copied().unwrap_or(0));
            }
        }
    }
}

/// Why nothing fits: one line per worker or GPU that was considered.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    pub reasons: Vec<String>,
}

/// Place one replica: filters, then the first candidate strategy that yields anything, then the
/// best score (first wins ties). On failure, every worker and GPU that was considered says why.
pub fn place(snapshot: &Snapshot, req: &Request) -> Result<Placement, NoFit> {
    if let Some(placement) = run(snapshot, req, &mut Why(None), true) {
        return Ok(placement);
    }
    let mut reasons = Vec::new();
    let again = run(snapshot, req, &mut Why(Some(&mut reasons)), false);
    debug_assert!(again.is_none(), "explain mode must decide like the fast path");
    let mut seen = std::collections::HashSet::new();
    reasons.retain(|r| seen.insert(r.clone()));
    if reasons.is_empty() {
        reasons.push("no worker can take this replica".to_string());
    }
    Err(NoFit { reasons })
}

/// As [`place`], but on the first of `warm` that takes the replica and holds none of the
/// deployment's yet: workers that ran it lately, most recent first, whose disk (downloaded files)
/// and page cache likely still hold its weights, so it starts faster there. Manual GPU selection
/// and distributed placements are left to [`place`].
pub fn place_preferring(snapshot: &Snapshot, req: &Request, warm: &[i64]) -> Result<Placement, NoFit> {
    if req.gpu_ids.is_empty() {
        for id in warm {
            let Some(w) = snapshot.workers.iter().find(|w| w.id == *id && w.instances_of_model == 0) else { continue };
            let alone = Snapshot { workers: vec![w.clone()] };
            if let Some(p) =
                run(&alone, req, &mut Why(None), true).filter(|p| p.subordinates.is_empty() && !p.overcommit)
            {
                return Ok(p);
            }
        }
    }
    place(snapshot, req)
}

/// The whole decision; `why` collects reasons only in explain mode. `fast` takes the streaming
/// single-GPU path (same answer as the candidate list, without building it).
fn run(snapshot: &Snapshot, req: &Request, why: &mut Why<'_>, fast: bool) -> Option<Placement> {
    let manual = if req.gpu_ids.is_empty() { None } else { Some(candidates::parse_gpu_ids(&req.gpu_ids, why)) };
    let workers = filters::filter(snapshot, req, manual.as_deref(), why);
    if workers.is_empty() {
        why.add(|| "no worker passed the filters".to_string());
        return None;
    }
    let mut cands = Cands::default();
    if let Some(ids) = &manual {
        candidates::manual(snapshot, req, &workers, ids, &mut cands, why);
        if let Some((i, score)) = score::best(snapshot, req, &cands, |c| !c.overcommit) {
            return Some(cands.placement(snapshot, req, i, score, None));
        }
        let over = cands.list.iter().any(|c| c.overcommit);
        if over && req.replicas <= 1 {
            let i = cands.most_effective_vram(snapshot)?;
            let score = score::score_of(snapshot, req, &cands, |c| c.overcommit, i);
            let mut issues = Vec::new();
            candidates::manual_issues(snapshot, req, &cands, &cands.list[i], &mut Why(Some(&mut issues)));
            let message = format!("overcommit: {}", issues.join("; "));
            return Some(cands.placement(snapshot, req, i, score, Some(message)));
        }
        if over {
            for c in &cands.list {
                candidates::manual_issues(snapshot, req, &cands, c, why);
            }
            why.add(|| format!("overcommit is only allowed for a single replica ({} requested)", req.replicas));
        }
        return None;
    }
    if fast {
        if let Some((wi, pos, claim, score)) = score::best_single_gpu(snapshot, req, &workers) {
            cands.push_single(wi, pos, claim);
            return Some(cands.placement(snapshot, req, 0, score, None));
        }
    } else {
        candidates::single_gpu(snapshot, req, &workers, &mut cands, why);
    }
    if cands.list.is_empty() {
        candidates::multi_gpu(snapshot, req, &workers, &mut cands, why);
        cands.keep_min_gpu_count();
    }
    if cands.list.is_empty() {
        if req.distributed {
            candidates::multi_worker(snapshot, req, &workers, &mut cands, why);
            cands.keep_min_gpu_count();
        } else {
            why.add(|| "across workers: distributed inference is off".to_string());
        }
    }
    if cands.list.is_empty() {
        candidates::cpu_only(snapshot, req, &workers, &mut cands, why);
    }
    let (i, score) = score::best(snapshot, req, &cands, |_| true)?;
    Some(cands.placement(snapshot, req, i, score, None))
}

/// Reason sink: `Some` only in explain mode, so the fast path never formats.
struct Why<'a>(Option<&'a mut Vec<String>>);

impl Why<'_> {
    fn add(&mut self, reason: impl FnOnce() -> String) {
        if let Some(out) = self.0.as_deref_mut() {
            out.push(reason());
        }
    }
}

/// A candidate, light enough to build thousands per placement: GPUs live in `Cands::gpus`.
#[derive(Debug, Clone)]
struct Cand {
    /// Index into `Snapshot::workers`.
    worker: usize,
    /// Range into `Cands::gpus` (main worker).
    gpus: std::ops::Range<usize>,
    /// Range into `Cands::subs`.
    subs: std::ops::Range<usize>,
    /// All GPUs used, main and subordinates.
    gpu_count: usize,
    overcommit: bool,
}

#[derive(Debug, Clone)]
struct Sub {
    worker: usize,
    gpus: std::ops::Range<usize>,
}

/// Candidates plus their arenas.
#[derive(Debug, Default)]
struct Cands {
    list: Vec<Cand>,
    /// (position in `WorkerView::gpus`, claimed bytes).
    gpus: Vec<(usize, u64)>,
    subs: Vec<Sub>,
}

impl Cands {
    /// Add a candidate on one worker (subordinates are added with `push_sub` before this call
    /// and passed as `subs`).
    fn push(&mut self, worker: usize, gpus: &[(usize, u64)], subs: std::ops::Range<usize>, overcommit: bool) {
        let start = self.gpus.len();
        self.gpus.extend_from_slice(gpus);
        let sub_gpus: usize = self.subs[subs.clone()].iter().map(|s| s.gpus.len()).sum();
        self.list.push(Cand {
            worker,
            gpus: start..self.gpus.len(),
            subs,
            gpu_count: gpus.len() + sub_gpus,
            overcommit,
        });
    }

    fn push_single(&mut self, worker: usize, pos: usize, claim: u64) {
        let start = self.gpus.len();
        self.gpus.push((pos, claim));
        self.list.push(Cand { worker, gpus: start..start + 1, subs: 0..0, gpu_count: 1, overcommit: false });
    }

    fn push_sub(&mut self, worker: usize, gpus: &[(usize, u64)]) -> usize {
        let start = self.gpus.len();
        self.gpus.extend_from_slice(gpus);
        self.subs.push(Sub { worker, gpus: start..self.gpus.len() });
        self.subs.len() - 1
    }

    fn main_gpus(&self, c: &Cand) -> &[(usize, u64)] {
        &self.gpus[c.gpus.clone()]
    }

    fn subs_of(&self, c: &Cand) -> &[Sub] {
        &self.subs[c.subs.clone()]
    }

    fn keep_min_gpu_count(&mut self) {
        if let Some(min) = self.list.iter().map(|c| c.gpu_count).min() {
            self.list.retain(|c| c.gpu_count == min);
        }
    }

    /// The overcommit candidate whose GPUs can really give the most: Σ min(claim, free).
    fn most_effective_vram(&self, snapshot: &Snapshot) -> Option<usize> {
        let mut best: Option<(usize, u128)> = None;
        for (i, c) in self.list.iter().enumerate().filter(|(_, c)| c.overcommit) {
            let mut eff = effective(&snapshot.workers[c.worker], self.main_gpus(c));
            for s in self.subs_of(c) {
                eff += effective(&snapshot.workers[s.worker], &self.gpus[s.gpus.clone()]);
            }
            if best.is_none_or(|(_, b)| eff > b) {
                best = Some((i, eff));
            }
        }
        best.map(|(i, _)| i)
    }

    fn placement(
        &self,
        snapshot: &Snapshot,
        req: &Request,
        i: usize,
        score: f64,
        message: Option<String>,
    ) -> Placement {
        let c = &self.list[i];
        let w = &snapshot.workers[c.worker];
        let (gpu_indexes, vram_claim) = indexes_and_claims(w, self.main_gpus(c));
        let subordinates = self
            .subs_of(c)
            .iter()
            .map(|s| {
                let sw = &snapshot.workers[s.worker];
                let (gpu_indexes, vram_claim) = indexes_and_claims(sw, &self.gpus[s.gpus.clone()]);
                SubPlacement { worker_id: sw.id, gpu_indexes, vram_claim }
            })
            .collect();
        Placement {
            worker_id: w.id,
            gpu_indexes,
            vram_claim,
            ram_claim: req.ram,
            subordinates,
            score,
            overcommit: c.overcommit,
            message,
        }
    }
}

fn effective(w: &WorkerView, gpus: &[(usize, u64)]) -> u128 {
    gpus.iter().map(|&(p, claim)| u128::from(claim.min(free(&w.gpus[p])))).sum()
}

fn indexes_and_claims(w: &WorkerView, gpus: &[(usize, u64)]) -> (Vec<u32>, BTreeMap<u32, u64>) {
    let mut indexes: Vec<u32> = gpus.iter().map(|&(p, _)| w.gpus[p].index).collect();
    indexes.sort_unstable();
    let claims = gpus.iter().map(|&(p, claim)| (w.gpus[p].index, claim)).collect();
    (indexes, claims)
}

/// String equality without a `memcmp` call: GPU types and framework names are a few bytes, and
/// placement compares them once per GPU.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Allocatable VRAM of one GPU.
fn free(g: &GpuView) -> u64 {
    g.total.saturating_sub(g.allocated)
}

/// Allocatable RAM of one worker.
fn ram_free(w: &WorkerView) -> u64 {
    w.ram_total.saturating_sub(w.ram_allocated)
}

/// Bytes as GiB with one decimal, for reasons.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}
