//! Scale-down order (GPUStack's `StatusScorer`): the least healthy instance goes first.

/// What scale-down needs to know about one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDownView {
    pub instance_id: i64,
    pub worker_ready: bool,
    pub running: bool,
    pub error: bool,
    /// How often it was restarted: among equally healthy instances the one that crashes more goes first.
    pub restarts: u32,
}

fn status_score(v: &ScaleDownView) -> u32 {
    if v.worker_ready && v.running {
        100
    } else if !v.worker_ready || v.error {
        0
    } else {
        50
    }
}

/// Instance ids in the order to remove them: status score ascending (worker ready and instance
/// running = 100, worker not ready or instance in error = 0, anything else = 50), then more
/// restarts first, then newest id first. Delete the first `len − replicas`.
pub fn scale_down_order(instances: &[ScaleDownView]) -> Vec<i64> {
    let mut v: Vec<&ScaleDownView> = instances.iter().collect();
    v.sort_by(|a, b| {
        status_score(a).cmp(&status_score(b)).then(b.restarts.cmp(&a.restarts)).then(b.instance_id.cmp(&a.instance_id))
    });
    v.into_iter().map(|x| x.instance_id).collect()
}
