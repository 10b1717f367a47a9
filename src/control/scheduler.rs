//! The scheduler: places pending instances. For each it assesses the model from the analysis
//! stored on its deployment (`analysis.rs`; no read here: until there is one, the instance is
//! `analyzing`), takes a snapshot of the cluster (capacity minus existing claims, booked with the pass's own
//! bindings), asks `placement`, and binds instances with their claims in batches, each one
//! transaction guarded by the scheduling epoch, so two schedulers can never book the same memory
//! twice. A miss leaves the instance pending with a
//! message that says, per worker and GPU, why. Steppable: `tick`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::backend::InferenceBackendSpec;
use crate::api::{
    DistributedServers, InstanceState, ModelInstance, ModelInstanceSpec, ModelSource, ModelSpec, PlacementStrategy,
    Record, ResourceClaim, SubordinateWorker, WorkerSpec, WorkerState,
};
use crate::control::deployment::{BackendLookupError, backend_for};
use crate::control::evaluate::{Evaluation, assess};
use crate::db::{Db, DbError, ListQuery, SCHEDULING_EPOCH, Val, instance_columns};
use crate::placement::{GpuView, Placement, Request, Snapshot, Strategy, WorkerView, place_preferring};

/// What an instance says while its deployment's model is read.
pub const ANALYZING: &str = "reading the model's metadata";
/// Binding attempts per batch when other schedulers keep winning the epoch.
const BIND_ATTEMPTS: usize = 8;
/// Bindings written per transaction.
const BATCH: usize = 500;

/// What a pass decided for one pending instance.
enum Decision {
    /// Bind it so (booked in the pass's view).
    Bind(Box<ModelInstanceSpec>),
    /// It stays pending, for this reason (written once the view proves current).
    Wait(String),
    /// Its deployment's model is still being read (the instance is `analyzing`).
    Analyzing,
    /// Nothing to do (its deployment is gone).
    Skip,
}

/// What one scheduling pass knows: each deployment it met (with its backend and evaluation) and
/// one view of the cluster, kept current with its own bindings.
#[derive(Default)]
struct Pass {
    /// `None`: its model is still being read.
    deployments: HashMap<i64, Option<(Record<ModelSpec>, InferenceBackendSpec, Evaluation)>>,
    view: Option<View>,
}

/// The cluster as of scheduling epoch `epoch`, plus what this pass booked since.
struct View {
    epoch: i64,
    workers: Vec<Record<WorkerSpec>>,
    instances: Vec<ModelInstance>,
    /// A placement snapshot per deployment met, each booked with every binding of the pass.
    snapshots: HashMap<i64, Snapshot>,
}

impl View {
    fn snapshot(&mut self, model_id: i64) -> &Snapshot {
        let (workers, instances) = (&self.workers, &self.instances);
        self.snapshots.entry(model_id).or_insert_with(|| snapshot(workers, instances, Some(model_id)))
    }

    /// Books a binding: every snapshot takes its claim, and a snapshot built later counts it.
    fn book(&mut self, model_id: i64, p: &Placement, bound: ModelInstance) {
        for (m, s) in &mut self.snapshots {
            s.apply(p, *m == model_id);
        }
        self.instances.push(bound);
    }
}

pub struct Scheduler {
    pub db: Db,
    /// Where each deployment ran lately (the leader's memory): a new replica goes there first.
    pub warm: Arc<WarmWorkers>,
}

impl Scheduler {
    pub fn new(db: Db) -> Scheduler {
        Scheduler { db, warm: Arc::default() }
    }
}

/// The workers each deployment ran on lately, most recent first (at most [`WARM_KEPT`]): their
/// disks hold its downloaded files and their page caches likely its weights, so a replica (above
/// all a wake from zero) starts faster there. Kept in the leader's memory only; a new leader
/// starts without it and places as usual.
#[derive(Debug, Default)]
pub struct WarmWorkers {
    by_model: std::sync::Mutex<HashMap<i64, Vec<i64>>>,
}

/// Workers remembered per deployment.
pub const WARM_KEPT: usize = 4;

impl WarmWorkers {
    /// Notes that deployment `model` runs on `worker` now (moves it to the front).
    pub fn note(&self, model: i64, worker: i64) {
        let mut map = self.by_model.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(model).or_default();
        if list.first() == Some(&worker) {
            return;
        }
        list.retain(|w| *w != worker);
        list.insert(0, worker);
        list.truncate(WARM_KEPT);
    }

    /// Where deployment `model` ran lately, most recent first.
    pub fn of(&self, model: i64) -> Vec<i64> {
        self.by_model.lock().unwrap_or_else(|e| e.into_inner()).get(&model).cloned().unwrap_or_default()
    }

    /// Forgets deployments no longer in `alive`.
    pub fn retain(&self, alive: impl Fn(i64) -> bool) {
        self.by_model.lock().unwrap_or_else(|e| e.into_inner()).retain(|m, _| alive(*m));
    }
}

/// Per-worker capacity minus what bound instances claim and what the worker says processes it did
/// not start use (`memory_external`).
pub fn snapshot(workers: &[Record<WorkerSpec>], instances: &[ModelInstance], model_id: Option<i64>) -> Snapshot {
    let mut vram: BTreeMap<(i64, u32), u64> = BTreeMap::new();
    let mut ram: BTreeMap<i64, u64> = BTreeMap::new();
    let mut same: BTreeMap<i64, u32> = BTreeMap::new();
    let mut other: BTreeMap<i64, u32> = BTreeMap::new();
    let mut per_gpu_same: BTreeMap<(i64, u32), u32> = BTreeMap::new();
    let mut per_gpu_other: BTreeMap<(i64, u32), u32> = BTreeMap::new();
    for i in instances {
        let Some(main) = i.spec.binding.worker_id else { continue };
        let mine = i.spec.model_id.is_some() && i.spec.model_id == model_id;
        // The main worker's part, then each subordinate's: all of them hold memory.
        let parts = std::iter::once((main, &i.spec.binding.gpu_indexes, &i.spec.binding.computed_resource_claim))
            .chain(
                i.spec.subordinate_workers().iter().map(|s| (s.worker_id, &s.gpu_indexes, &s.computed_resource_claim)),
            );
        for (w, gpus, claim) in parts {
            for gpu in gpus {
                *(if mine { &mut per_gpu_same } else { &mut per_gpu_other }).entry((w, *gpu)).or_default() += 1;
            }
            if let Some(claim) = claim {
                for (gpu, bytes) in &claim.vram {
                    if let Ok(gpu) = gpu.parse::<u32>() {
                        *vram.entry((w, gpu)).or_default() += bytes;
                    }
                }
                *ram.entry(w).or_default() += claim.ram;
            }
            let counter = if mine { &mut same } else { &mut other };
            *counter.entry(w).or_default() += 1;
        }
    }
    Snapshot {
        workers: workers
            .iter()
            .map(|w| WorkerView {
                id: w.id,
                name: w.spec.name.clone(),
                cluster_id: w.spec.cluster_id,
                labels: w.spec.labels.clone(),
                ready: w.spec.state == WorkerState::Ready && !w.spec.maintenance.enabled,
                gpus: w
                    .spec
                    .status
                    .gpu_devices
                    .iter()
                    .map(|g| GpuView {
                        index: g.index,
                        gpu_type: g.gpu_type.as_str().to_string(),
                        total: g.memory_total,
                        // Claims of bound instances, and what processes outside the cluster use:
                        // memory that is taken is never booked again.
                        allocated: vram.get(&(w.id, g.index)).copied().unwrap_or(0).saturating_add(g.memory_external),
                        instances_of_model: per_gpu_same.get(&(w.id, g.index)).copied().unwrap_or(0),
                        instances_other: per_gpu_other.get(&(w.id, g.index)).copied().unwrap_or(0),
                    })
                    .collect(),
                ram_total: w.spec.status.memory.total,
                ram_allocated: ram.get(&w.id).copied().unwrap_or(0),
                instances_of_model: same.get(&w.id).copied().unwrap_or(0),
                instances_other: other.get(&w.id).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// The placement request for one replica of `model`.
pub fn request(model: &Record<ModelSpec>, backend: &InferenceBackendSpec, eval: &Evaluation) -> Request {
    let m = &model.spec;
    let version = m.backend_version.clone().or_else(|| backend.default_version.clone());
    let frameworks: Vec<String> = match version.as_ref().and_then(|v| backend.version_configs.get(v)) {
        Some(vc) => vc.frameworks(),
        None => backend.version_configs.values().flat_map(|vc| vc.frameworks()).collect(),
    };
    // A backend that only runs on CPU needs no GPU: that is not "offloading".
    let cpu_only = !frameworks.is_empty() && frameworks.iter().all(|f| f == "cpu");
    Request {
        cluster_id: m.cluster_id.unwrap_or(0),
        strategy: match m.placement_strategy {
            PlacementStrategy::Spread => Strategy::Spread,
            PlacementStrategy::Binpack => Strategy::Binpack,
        },
        worker_selector: m.worker_selector.clone(),
        gpu_ids: m.gpu_selector.as_ref().map(|s| s.gpu_ids.clone()).unwrap_or_default(),
        gpus_per_replica: m.gpu_selector.as_ref().and_then(|s| s.gpus_per_replica).or(eval.gpus_per_replica),
        vram: eval.vram,
        ram: eval.ram,
        claim: eval.claim,
        tp_divisors: eval.tp_divisors.clone(),
        frameworks,
        cpu_offloading: m.cpu_offloading || cpu_only,
        distributed: m.distributed_inference_across_workers,
        replicas: m.replicas,
    }
}

impl Scheduler {
    /// One pass over the pending instances. Returns how many it placed.
    ///
    /// Replicas of one deployment share one evaluation per pass (it reads model files or a hub),
    /// the pass keeps one view of the cluster and books each binding in it, and bindings are
    /// written [`BATCH`] at a time in one transaction guarded by the scheduling epoch: when another
    /// scheduler moved the epoch, the batch is decided again on a fresh view.
    pub async fn tick(&self) -> Result<usize, DbError> {
        let mut pending = Vec::new();
        for state in [InstanceState::Pending, InstanceState::Analyzing] {
            let q = ListQuery { filters: vec![("state", Val::Text(state.as_str().into()))], ..Default::default() };
            let (found, _) = self.db.list::<ModelInstanceSpec>(&q).await?;
            pending.extend(found.into_iter().filter(|i| i.spec.binding.worker_id.is_none()));
        }
        pending.sort_by_key(|i| i.id);
        let mut pass = Pass::default();
        let mut placed = 0;
        for chunk in pending.chunks(BATCH) {
            placed += self.bind_batch(chunk, &mut pass).await?;
        }
        Ok(placed)
    }

    async fn bind_batch(&self, chunk: &[ModelInstance], pass: &mut Pass) -> Result<usize, DbError> {
        for _ in 0..BIND_ATTEMPTS {
            if pass.view.is_none() {
                let epoch = self.db.scheduling_epoch().await?;
                let workers = self.db.all::<WorkerSpec>().await?;
                let instances = self.db.all::<ModelInstanceSpec>().await?;
                pass.view = Some(View { epoch, workers, instances, snapshots: HashMap::new() });
            }
            let mut bindings = Vec::new();
            let mut waiting = Vec::new();
            for instance in chunk {
                match self.decide(instance, pass).await? {
                    Decision::Bind(spec) => {
                        let columns = instance_columns(&spec);
                        bindings.push((instance.id, instance.version, *spec, columns));
                    }
                    Decision::Wait(why) => waiting.push((instance, InstanceState::Pending, why)),
                    Decision::Analyzing => waiting.push((instance, InstanceState::Analyzing, ANALYZING.to_owned())),
                    Decision::Skip => {}
                }
            }
            let Some(view) = pass.view.as_mut() else { continue };
            let epoch = view.epoch;
            let placed = if bindings.is_empty() {
                // Nothing to write, but the "why not" messages must come from a current view.
                if self.db.scheduling_epoch().await? != epoch {
                    pass.view = None;
                    continue;
                }
                0
            } else {
                // In id order, as every batch write takes rows (no deadlock between two servers).
                bindings.sort_by_key(|b| b.0);
                match self.db.update_many_guarded(Some((SCHEDULING_EPOCH, epoch)), &bindings).await {
                    Ok(written) => {
                        // Our own batch moved the epoch by one.
                        view.epoch = epoch + 1;
                        let bound: Vec<&ModelInstanceSpec> = written.iter().flatten().map(|r| &r.spec).collect();
                        for spec in &bound {
                            tracing::info!(instance = %spec.name, worker = ?spec.binding.worker_name, gpus = ?spec.binding.gpu_indexes, "scheduled");
                        }
                        bound.len()
                    }
                    // Another scheduler bound something meanwhile: decide again with fresh numbers.
                    Err(DbError::VersionConflict { kind: "scheduling epoch", .. }) => {
                        pass.view = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            // Written only once the view they were decided on proved current.
            for (instance, state, why) in waiting {
                self.leave_unbound(instance, state, why).await?;
            }
            return Ok(placed);
        }
        Ok(0)
    }

    /// Where `instance` goes in the pass's view (booked there), why it stays pending, or nothing
    /// (its deployment is gone).
    async fn decide(&self, instance: &ModelInstance, pass: &mut Pass) -> Result<Decision, DbError> {
        let Some(model_id) = instance.spec.model_id else { return Ok(Decision::Skip) };
        let known = match pass.deployments.get(&model_id) {
            Some(known) => known.clone(),
            None => {
                let model = match self.db.get::<ModelSpec>(model_id).await {
                    Ok(m) => m,
                    Err(DbError::NotFound { .. }) => return Ok(Decision::Skip),
                    Err(e) => return Err(e),
                };
                let backend = match backend_for(&self.db, &model.spec).await {
                    Ok(b) => b,
                    Err(BackendLookupError::Missing(name)) => {
                        return Ok(Decision::Wait(format!("backend {name:?} does not exist")));
                    }
                    Err(BackendLookupError::Db(e)) => return Err(e),
                };
                let known = match crate::control::analysis::stored(&model.spec) {
                    Some((meta, problems)) => {
                        let default = crate::control::evaluate::cluster_policy(&self.db, model.spec.cluster_id).await?;
                        let eval = assess(&model.spec, &backend, default, meta, problems);
                        Some((model, backend, eval))
                    }
                    None => None,
                };
                pass.deployments.insert(model_id, known.clone());
                known
            }
        };
        let Some((model, backend, eval)) = known else { return Ok(Decision::Analyzing) };
        let Some(view) = pass.view.as_mut() else { return Ok(Decision::Skip) };
        let snapshot = view.snapshot(model.id);
        let req = sized_request(snapshot, &model, &backend, &eval);
        let placed = place_preferring(snapshot, &req, &self.warm.of(model.id)).map(|p| {
            let taken = gpu_taken(snapshot, &p);
            (p, taken)
        });
        let (placement, taken) = match placed {
            Ok((p, taken)) => (settled(p, &req, &eval, &view.workers), taken),
            Err(nofit) => {
                let mut msg = String::from("No suitable workers.");
                if let Some(fit) = &eval.estimate.fit {
                    msg.push_str(&format!("\n- {}", fit.explain()));
                }
                for reason in nofit.reasons.iter().take(20) {
                    msg.push_str("\n- ");
                    msg.push_str(reason);
                }
                if nofit.reasons.len() > 20 {
                    msg.push_str(&format!("\n- … {} more", nofit.reasons.len() - 20));
                }
                return Ok(Decision::Wait(msg));
            }
        };
        let mut spec = bound(instance, &model.spec, &view.workers, &placement, &eval, taken);
        spec.binding.resolved_backend =
            Some(crate::backends::render::frozen(&backend, model.spec.backend_version.as_deref()));
        view.book(model.id, &placement, ModelInstance { spec: spec.clone(), ..instance.clone() });
        Ok(Decision::Bind(Box::new(spec)))
    }

    /// Leaves an instance unbound: `pending` with why it was not placed, or `analyzing`.
    async fn leave_unbound(
        &self,
        instance: &ModelInstance,
        state: InstanceState,
        message: String,
    ) -> Result<(), DbError> {
        if instance.spec.status.state != state
            || instance.spec.status.state_message.as_deref() != Some(message.as_str())
        {
            let res = self
                .db
                .modify::<ModelInstanceSpec, DbError, _>(instance.id, Some(instance.version), |i| {
                    i.status.state = state;
                    i.status.state_message = Some(message.clone());
                    Ok(instance_columns(i))
                })
                .await;
            match res {
                Ok(_) | Err(DbError::NotFound { .. } | DbError::VersionConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// [`request`] with a fraction claim sized for the GPUs of `snapshot` (the largest the engine
/// could be told on any of them, `Evaluation::claim_for_sizes`).
pub fn sized_request(
    snapshot: &crate::placement::Snapshot,
    model: &Record<ModelSpec>,
    backend: &InferenceBackendSpec,
    eval: &Evaluation,
) -> Request {
    let mut req = request(model, backend, eval);
    req.claim = eval.claim_for_sizes(snapshot.workers.iter().flat_map(|w| w.gpus.iter().map(|g| g.total)));
    req
}

/// A placement whose claims are what the engine will be told (SGLang's `--mem-fraction-static` is
/// sized for the GPUs chosen): the same GPU size and count as [`injection_for`] uses.
pub fn settled(mut p: Placement, req: &Request, eval: &Evaluation, workers: &[Record<WorkerSpec>]) -> Placement {
    let total = |worker_id: i64, index: u32| {
        let w = workers.iter().find(|w| w.id == worker_id)?;
        w.spec.status.gpu_devices.iter().find(|g| g.index == index).map(|g| g.memory_total)
    };
    let smallest = p.gpu_indexes.iter().filter_map(|i| total(p.worker_id, *i)).min();
    let told = smallest.and_then(|t| eval.fraction_for(t, p.gpu_indexes.len() as u32));
    crate::control::evaluate::settle_claim(&mut p, told, req.claim, total);
    p
}

/// The most memory already taken (claimed by other instances or used outside the cluster) on any
/// GPU of the main worker `p` chose, as `snapshot` (taken before `p` was booked) counts it.
pub fn gpu_taken(snapshot: &Snapshot, p: &Placement) -> u64 {
    let Some(w) = snapshot.workers.iter().find(|w| w.id == p.worker_id) else { return 0 };
    w.gpus.iter().filter(|g| p.gpu_indexes.contains(&g.index)).map(|g| g.allocated).max().unwrap_or(0)
}

/// What the server injects for one placement: its GPUs, the workers it spans and the size of the
/// smallest GPU it got (used by the scheduler and by evaluation, so both say the same). `taken`:
/// [`gpu_taken`].
pub fn injection_for(
    eval: &Evaluation,
    workers: &[Record<WorkerSpec>],
    p: &Placement,
    taken: u64,
) -> crate::estimate::Injection {
    let worker = workers.iter().find(|w| w.id == p.worker_id);
    let gpu_total = worker.and_then(|w| {
        w.spec.status.gpu_devices.iter().filter(|g| p.gpu_indexes.contains(&g.index)).map(|g| g.memory_total).min()
    });
    let nodes = 1 + p.subordinates.len() as u32;
    eval.injection(p.gpu_indexes.len() as u32, nodes, gpu_total, taken)
}

/// The tensor-parallel size a placement runs with: the user's, else the injected one, else one
/// per GPU of the main worker (none on CPU).
pub fn tensor_parallel_size(backend: &str, p: &Placement, injected: &[String], user: &[String]) -> Option<u32> {
    use crate::backends::kind::kind_of;
    use crate::backends::params::{find_param, parse_params};
    if p.gpu_indexes.is_empty() {
        return None;
    }
    let names = kind_of(backend).tp_flags();
    let from = |items: &[String]| {
        let params = parse_params(items).ok()?;
        names.iter().find_map(|n| find_param(&params, n)).and_then(|p| p.values.first()?.parse().ok())
    };
    from(user).or_else(|| from(injected)).or(Some(p.gpu_indexes.len() as u32))
}

/// Where a placement puts an instance and what it claims there: its worker and GPUs, and each
/// subordinate's (exactly what the scheduler's snapshot counts back).
fn place_on(spec: &mut ModelInstanceSpec, workers: &[Record<WorkerSpec>], p: &Placement) {
    let worker = workers.iter().find(|w| w.id == p.worker_id);
    let claim = |vram: &BTreeMap<u32, u64>| ResourceClaim {
        vram: vram.iter().map(|(gpu, bytes)| (gpu.to_string(), *bytes)).collect(),
        ram: p.ram_claim,
    };
    spec.binding.worker_id = Some(p.worker_id);
    spec.binding.worker_name = worker.map(|w| w.spec.name.clone());
    spec.binding.worker_ip = worker.map(|w| w.spec.ip.clone());
    spec.binding.gpu_indexes = p.gpu_indexes.clone();
    spec.binding.computed_resource_claim = Some(claim(&p.vram_claim));
    spec.binding.distributed_servers = (!p.subordinates.is_empty()).then(|| DistributedServers {
        subordinate_workers: p
            .subordinates
            .iter()
            .map(|sub| {
                let w = workers.iter().find(|w| w.id == sub.worker_id);
                SubordinateWorker {
                    worker_id: sub.worker_id,
                    worker_name: w.map(|w| w.spec.name.clone()),
                    worker_ip: w.map(|w| w.spec.ip.clone()),
                    gpu_indexes: sub.gpu_indexes.clone(),
                    // Placement checks the replica's RAM on every worker it spans: claim it there.
                    computed_resource_claim: Some(claim(&sub.vram_claim)),
                    state: InstanceState::Scheduled,
                    state_message: None,
                    pid: None,
                    container_id: None,
                    command: Vec::new(),
                }
            })
            .collect(),
    });
}

/// The instance after binding: where it goes, what it claims, the parameters injected.
fn bound(
    instance: &ModelInstance,
    model: &ModelSpec,
    workers: &[Record<WorkerSpec>],
    p: &Placement,
    eval: &Evaluation,
    taken: u64,
) -> ModelInstanceSpec {
    let mut spec = instance.spec.clone();
    place_on(&mut spec, workers, p);
    let injection = injection_for(eval, workers, p, taken);
    // The worker renders the command from the backend, these injected parameters and the user's
    // (`backends::render_command`). A backend configured by a file takes the user's parameters
    // there, not on the command line.
    spec.run.backend_parameters =
        if injection.config.is_some() { Vec::new() } else { model.backend_parameters.clone() };
    for (k, v) in injection.env {
        spec.run.env.entry(k).or_insert(v);
    }
    spec.binding.backend_config = injection.config;
    spec.binding.injected_backend_parameters = injection.args;
    spec.model_path = match model.source {
        ModelSource::LocalPath => model.local_path.clone().unwrap_or_default(),
        _ => spec.model_path,
    };
    spec.status.state = InstanceState::Scheduled;
    spec.status.state_message = p.message.clone();
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::SubPlacement;

    fn record<T>(id: i64, spec: T) -> Record<T> {
        Record { id, version: 1, created_at: Default::default(), updated_at: Default::default(), spec }
    }

    fn worker(id: i64, gpus: u32) -> Record<WorkerSpec> {
        let gpu = |index: u32| {
            serde_json::json!({"index": index, "name": "H100", "vendor": "nvidia", "type": "cuda",
                               "memory_total": 80u64 << 30, "memory_used": 0, "memory_utilization_rate": 0.0})
        };
        let spec = serde_json::json!({"name": format!("w{id}"), "cluster_id": 1, "hostname": "h", "ip": "10.0.0.1",
            "port": 1, "runtime": "process", "state": "ready", "worker_version": "t",
            "status": {"cpu": {"total": 8, "utilization_rate": 0.0},
                       "memory": {"total": 256u64 << 30, "used": 0, "utilization_rate": 0.0},
                       "os": {"name": "linux", "version": "", "kernel": "", "arch": "x86_64"},
                       "gpu_devices": (0..gpus).map(gpu).collect::<Vec<_>>()}});
        record(id, serde_json::from_value(spec).expect("worker"))
    }

    /// An instance of deployment `model` bound as `p` says (`place_on`, as `bound` does).
    fn bound_instance(id: i64, model: i64, p: &Placement, workers: &[Record<WorkerSpec>]) -> ModelInstance {
        let deployment = record(
            model,
            serde_json::from_value::<ModelSpec>(
                serde_json::json!({"name": format!("m{model}"), "source": "local_path", "local_path": "/m.gguf"}),
            )
            .expect("spec"),
        );
        let mut spec = crate::control::controller::new_instance(&deployment);
        place_on(&mut spec, workers, p);
        record(id, spec)
    }

    fn placement(worker_id: i64, gpus: &[(u32, u64)], ram: u64, subs: &[(i64, &[(u32, u64)])]) -> Placement {
        Placement {
            worker_id,
            gpu_indexes: gpus.iter().map(|g| g.0).collect(),
            vram_claim: gpus.iter().copied().collect(),
            ram_claim: ram,
            subordinates: subs
                .iter()
                .map(|(w, g)| SubPlacement {
                    worker_id: *w,
                    gpu_indexes: g.iter().map(|x| x.0).collect(),
                    vram_claim: g.iter().copied().collect(),
                })
                .collect(),
            score: 0.0,
            overcommit: false,
            message: None,
        }
    }

    /// A pass books each binding in its snapshots instead of rebuilding them: booking must give
    /// exactly the snapshot a rebuild from the bound instances gives, for the deployment being
    /// placed and for others, single-GPU, multi-GPU, CPU-only and across workers.
    #[test]
    fn booking_a_binding_equals_rebuilding_the_snapshot() {
        const G: u64 = 1 << 30;
        let workers = vec![worker(1, 2), worker(2, 4), worker(3, 0)];
        let existing = vec![bound_instance(100, 7, &placement(2, &[(0, 20 * G)], 4 * G, &[]), &workers)];
        let cases: [(&str, i64, Placement); 5] = [
            ("one GPU, same deployment", 7, placement(1, &[(1, 30 * G)], 2 * G, &[])),
            ("two GPUs, another deployment", 8, placement(2, &[(1, 40 * G), (2, 40 * G)], 8 * G, &[])),
            ("CPU only", 7, placement(3, &[], 16 * G, &[])),
            ("across workers", 9, placement(1, &[(0, 60 * G)], 3 * G, &[(2, &[(3, 60 * G)])])),
            ("on a GPU already used", 7, placement(2, &[(0, 10 * G)], G, &[])),
        ];
        for followed in [7, 8] {
            let mut booked = snapshot(&workers, &existing, Some(followed));
            let mut instances = existing.clone();
            for (i, (what, model, p)) in cases.iter().enumerate() {
                booked.apply(p, *model == followed);
                instances.push(bound_instance(200 + i as i64, *model, p, &workers));
                assert_eq!(booked, snapshot(&workers, &instances, Some(followed)), "{what}, snapshot of m{followed}");
            }
        }
    }
}

#[cfg(test)]
mod warm_tests {
    use super::*;

    #[test]
    fn the_most_recent_worker_comes_first_and_few_are_kept() {
        let warm = WarmWorkers::default();
        for w in [1, 2, 1, 3, 4, 5, 6] {
            warm.note(7, w);
        }
        assert_eq!(warm.of(7), vec![6, 5, 4, 3], "most recent first, {WARM_KEPT} kept");
        assert!(warm.of(8).is_empty());
        warm.retain(|m| m != 7);
        assert!(warm.of(7).is_empty(), "a deleted deployment is forgotten");
    }
}
