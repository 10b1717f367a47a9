//! Worker filters in GPUStack's order: cluster, manual GPU selection, labels, ready, backend framework.

use super::candidates::GpuId;
use super::{Request, Snapshot, Why, WorkerView, same};

/// Whether the backend can run on a GPU of this type (no frameworks listed = a custom backend,
/// which GPUStack does not filter).
pub(super) fn gpu_usable(req: &Request, gpu_type: &str) -> bool {
    req.frameworks.is_empty() || req.frameworks.iter().any(|f| same(f, gpu_type))
}

/// Whether a CPU-only placement is allowed at all.
pub(super) fn cpu_allowed(req: &Request) -> bool {
    req.cpu_offloading && (req.frameworks.is_empty() || req.frameworks.iter().any(|f| f == "cpu"))
}

/// Indexes of the workers that pass every filter; each removal is explained.
pub(super) fn filter(snapshot: &Snapshot, req: &Request, manual: Option<&[GpuId]>, why: &mut Why<'_>) -> Vec<usize> {
    let mut out = Vec::with_capacity(snapshot.workers.len());
    for (i, w) in snapshot.workers.iter().enumerate() {
        if w.cluster_id != req.cluster_id {
            why.add(|| format!("worker {}: in cluster {}, not cluster {}", w.name, w.cluster_id, req.cluster_id));
            continue;
        }
        if let Some(ids) = manual
            && !ids.iter().any(|id| id.worker == w.name)
        {
            why.add(|| format!("worker {}: not named in the GPU selection", w.name));
            continue;
        }
        if let Some((key, want)) = label_mismatch(w, req) {
            why.add(|| match w.labels.get(key) {
                Some(has) => format!("worker {}: label {key}={want} does not match (has {key}={has})", w.name),
                None => format!("worker {}: label {key}={want} does not match (no {key} label)", w.name),
            });
            continue;
        }
        if !w.ready {
            why.add(|| format!("worker {}: not ready", w.name));
            continue;
        }
        if !framework_ok(w, req) {
            why.add(|| framework_reason(w, req));
            continue;
        }
        out.push(i);
    }
    out
}

fn label_mismatch<'r>(w: &WorkerView, req: &'r Request) -> Option<(&'r str, &'r str)> {
    req.worker_selector.iter().find(|(k, v)| w.labels.get(*k) != Some(*v)).map(|(k, v)| (k.as_str(), v.as_str()))
}

/// A worker passes if the backend runs on one of its GPU types, or it may run on CPU.
fn framework_ok(w: &WorkerView, req: &Request) -> bool {
    w.gpus.iter().any(|g| gpu_usable(req, &g.gpu_type)) || cpu_allowed(req)
}

/// Why a worker's GPUs (or lack of them) do not suit the backend; called only when the backend may
/// not run on CPU here, so the answer never says it runs on CPU.
fn framework_reason(w: &WorkerView, req: &Request) -> String {
    let mut types: Vec<&str> = w.gpus.iter().map(|g| g.gpu_type.as_str()).collect();
    types.dedup();
    let gpus: Vec<&str> = req.frameworks.iter().map(String::as_str).filter(|f| *f != "cpu").collect();
    let gpus = match gpus.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "any".to_string(),
    };
    if types.is_empty() {
        let unless = if req.frameworks.iter().any(|f| f == "cpu") { " unless CPU offloading is on" } else { "" };
        format!("worker {}: the backend needs a GPU ({gpus}){unless}; this worker has none", w.name)
    } else {
        format!("worker {}: the backend needs a {gpus} GPU; this worker has {}", w.name, types.join(", "))
    }
}
