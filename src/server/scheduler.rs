//! The scheduler: places pending instances. For each it evaluates the model (what it needs),
//! builds a snapshot of the cluster (capacity minus existing claims), asks `placement`, and binds
//! the instance with its claim in one transaction guarded by the scheduling epoch, so two
//! schedulers can never book the same memory twice. A miss leaves the instance pending with a
//! message that says, per worker and GPU, why. Steppable: `tick`.

use std::collections::{BTreeMap, HashMap};

use crate::api::backend::InferenceBackendSpec;
use crate::api::{
    DistributedServers, InstanceState, ModelInstance, ModelInstanceSpec, ModelSource, ModelSpec, PlacementStrategy,
    Record, ResourceClaim, SubordinateWorker, WorkerSpec, WorkerState,
};
use crate::db::{Db, DbError, ListQuery, SCHEDULING_EPOCH, Val, instance_columns, model_columns};
use crate::placement::{GpuView, Placement, Request, Snapshot, Strategy, WorkerView, place};
use crate::server::deployment::{BackendLookupError, backend_for};
use crate::server::evaluate::{Evaluation, evaluate};

/// Binding attempts per instance when other schedulers keep winning the epoch.
const BIND_ATTEMPTS: usize = 8;

/// What one scheduling pass knows: each deployment it met (with its backend and evaluation) and
/// one view of the cluster, kept current with its own bindings.
#[derive(Default)]
struct Pass {
    deployments: HashMap<i64, (Record<ModelSpec>, InferenceBackendSpec, Evaluation)>,
    view: Option<View>,
}

/// The cluster as of scheduling epoch `epoch`.
struct View {
    epoch: i64,
    workers: Vec<Record<WorkerSpec>>,
    instances: Vec<ModelInstance>,
}

pub struct Scheduler {
    pub db: Db,
}

/// Per-worker capacity minus what bound instances claim.
pub fn snapshot(workers: &[Record<WorkerSpec>], instances: &[ModelInstance], model_id: Option<i64>) -> Snapshot {
    let mut vram: BTreeMap<(i64, u32), u64> = BTreeMap::new();
    let mut ram: BTreeMap<i64, u64> = BTreeMap::new();
    let mut same: BTreeMap<i64, u32> = BTreeMap::new();
    let mut other: BTreeMap<i64, u32> = BTreeMap::new();
    let mut per_gpu_same: BTreeMap<(i64, u32), u32> = BTreeMap::new();
    let mut per_gpu_other: BTreeMap<(i64, u32), u32> = BTreeMap::new();
    for i in instances {
        let Some(main) = i.spec.worker_id else { continue };
        let mine = i.spec.model_id.is_some() && i.spec.model_id == model_id;
        // The main worker's part, then each subordinate's: all of them hold memory.
        let parts = std::iter::once((main, &i.spec.gpu_indexes, &i.spec.computed_resource_claim)).chain(
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
                        allocated: vram.get(&(w.id, g.index)).copied().unwrap_or(0),
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
    pub async fn tick(&self) -> Result<usize, DbError> {
        let q = ListQuery { filters: vec![("state", Val::Text("pending".into()))], ..Default::default() };
        let (pending, _) = self.db.list::<ModelInstanceSpec>(&q).await?;
        let mut placed = 0;
        // Replicas of one deployment share one evaluation per pass (it reads model files or a hub),
        // and the pass keeps one view of the cluster, applying each binding to it: the database is
        // read again only when another scheduler moved the epoch.
        let mut pass = Pass::default();
        for instance in pending.into_iter().filter(|i| i.spec.worker_id.is_none()) {
            match self.schedule_one(&instance, &mut pass).await {
                Ok(true) => placed += 1,
                Ok(false) => {}
                Err(DbError::NotFound { .. } | DbError::VersionConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(placed)
    }

    async fn schedule_one(&self, instance: &ModelInstance, pass: &mut Pass) -> Result<bool, DbError> {
        let Some(model_id) = instance.spec.model_id else { return Ok(false) };
        let (model, backend, eval) = match pass.deployments.get(&model_id) {
            Some(known) => known.clone(),
            None => {
                let model = self.db.get::<ModelSpec>(model_id).await?;
                let backend = match backend_for(&self.db, &model.spec).await {
                    Ok(b) => b,
                    Err(BackendLookupError::Missing(name)) => {
                        return self.leave_pending(instance, format!("backend {name:?} does not exist")).await;
                    }
                    Err(BackendLookupError::Db(e)) => return Err(e),
                };
                let eval = evaluate(&model.spec, &backend).await;
                self.fill_categories(&model, &eval).await?;
                pass.deployments.insert(model_id, (model.clone(), backend.clone(), eval.clone()));
                (model, backend, eval)
            }
        };
        for _ in 0..BIND_ATTEMPTS {
            if pass.view.is_none() {
                let epoch = self.db.scheduling_epoch().await?;
                let workers = self.db.all::<WorkerSpec>().await?;
                let instances = self.db.all::<ModelInstanceSpec>().await?;
                pass.view = Some(View { epoch, workers, instances });
            }
            let Some(View { epoch, workers, instances }) = pass.view.as_mut() else { continue };
            let epoch = *epoch;
            let req = request(&model, &backend, &eval);
            let placement = match place(&snapshot(workers, instances, Some(model.id)), &req) {
                Ok(p) => p,
                Err(nofit) => {
                    let mut msg = String::from("No suitable workers.");
                    for reason in nofit.reasons.iter().take(20) {
                        msg.push_str("\n- ");
                        msg.push_str(reason);
                    }
                    if nofit.reasons.len() > 20 {
                        msg.push_str(&format!("\n- … {} more", nofit.reasons.len() - 20));
                    }
                    return self.leave_pending(instance, msg).await;
                }
            };
            let spec = bound(instance, &model.spec, workers, &placement, &eval);
            match self
                .db
                .update_guarded(
                    Some((SCHEDULING_EPOCH, epoch)),
                    instance.id,
                    instance.version,
                    &spec,
                    &instance_columns(&spec),
                )
                .await
            {
                Ok(record) => {
                    tracing::info!(instance = %spec.name, worker = ?spec.worker_name, gpus = ?spec.gpu_indexes, "scheduled");
                    // Our own binding moved the epoch by one; the view takes the new claim.
                    if let Some(view) = pass.view.as_mut() {
                        view.epoch = epoch + 1;
                        match view.instances.iter_mut().find(|i| i.id == record.id) {
                            Some(slot) => *slot = record,
                            None => view.instances.push(record),
                        }
                    }
                    return Ok(true);
                }
                // Another scheduler bound something meanwhile: look again with fresh numbers.
                Err(DbError::VersionConflict { kind: "scheduling epoch", .. }) => {
                    pass.view = None;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// A deployment that names no categories gets the one read from its model (seed 004: detected
    /// automatically), once.
    async fn fill_categories(&self, model: &Record<ModelSpec>, eval: &Evaluation) -> Result<(), DbError> {
        if !model.spec.categories.is_empty() {
            return Ok(());
        }
        let category = eval.meta.category.as_str().to_owned();
        let res = self
            .db
            .modify::<ModelSpec, DbError, _>(model.id, None, |m| {
                if m.categories.is_empty() {
                    m.categories = vec![category.clone()];
                }
                Ok(model_columns(m))
            })
            .await;
        match res {
            Ok(_) | Err(DbError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn leave_pending(&self, instance: &ModelInstance, message: String) -> Result<bool, DbError> {
        if instance.spec.state_message.as_deref() != Some(message.as_str()) {
            self.db
                .modify::<ModelInstanceSpec, DbError, _>(instance.id, Some(instance.version), |i| {
                    i.state_message = Some(message.clone());
                    Ok(instance_columns(i))
                })
                .await?;
        }
        Ok(false)
    }
}

/// What the server injects for one placement: its GPUs, the workers it spans and the size of the
/// smallest GPU it got (used by the scheduler and by evaluation, so both say the same).
pub fn injection_for(eval: &Evaluation, workers: &[Record<WorkerSpec>], p: &Placement) -> crate::estimate::Injection {
    let worker = workers.iter().find(|w| w.id == p.worker_id);
    let gpu_total = worker.and_then(|w| {
        w.spec.status.gpu_devices.iter().filter(|g| p.gpu_indexes.contains(&g.index)).map(|g| g.memory_total).min()
    });
    let nodes = 1 + p.subordinates.len() as u32;
    eval.injection(p.gpu_indexes.len() as u32, nodes, gpu_total)
}

/// The tensor-parallel size a placement runs with: the user's, else the injected one, else one
/// per GPU of the main worker (none on CPU).
pub fn tensor_parallel_size(backend: &str, p: &Placement, injected: &[String], user: &[String]) -> Option<u32> {
    use crate::backends::kind::{Kind, kind_of};
    use crate::backends::params::{find_param, parse_params};
    if p.gpu_indexes.is_empty() {
        return None;
    }
    let names: &[&str] = match kind_of(backend) {
        Kind::Vllm => &["tensor-parallel-size", "tp"],
        Kind::Sglang => &["tp-size", "tensor-parallel-size"],
        _ => &[],
    };
    let from = |items: &[String]| {
        let params = parse_params(items).ok()?;
        names.iter().find_map(|n| find_param(&params, n)).and_then(|p| p.values.first()?.parse().ok())
    };
    from(user).or_else(|| from(injected)).or(Some(p.gpu_indexes.len() as u32))
}

/// The instance after binding: where it goes, what it claims, the parameters injected.
fn bound(
    instance: &ModelInstance,
    model: &ModelSpec,
    workers: &[Record<WorkerSpec>],
    p: &Placement,
    eval: &Evaluation,
) -> ModelInstanceSpec {
    let worker = workers.iter().find(|w| w.id == p.worker_id);
    let mut spec = instance.spec.clone();
    spec.worker_id = Some(p.worker_id);
    spec.worker_name = worker.map(|w| w.spec.name.clone());
    spec.worker_ip = worker.map(|w| w.spec.ip.clone());
    spec.gpu_indexes = p.gpu_indexes.clone();
    let vram = p.vram_claim.iter().map(|(gpu, bytes)| (gpu.to_string(), *bytes)).collect();
    spec.computed_resource_claim = Some(ResourceClaim { vram, ram: p.ram_claim });
    let injection = injection_for(eval, workers, p);
    spec.distributed_servers = (!p.subordinates.is_empty()).then(|| DistributedServers {
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
                    computed_resource_claim: Some(ResourceClaim {
                        vram: sub.vram_claim.iter().map(|(gpu, bytes)| (gpu.to_string(), *bytes)).collect(),
                        // Placement checks the replica's RAM on every worker it spans: claim it there.
                        ram: p.ram_claim,
                    }),
                    state: InstanceState::Scheduled,
                    state_message: None,
                    pid: None,
                    container_id: None,
                    command: Vec::new(),
                }
            })
            .collect(),
    });
    // The worker renders the command from the backend, these injected parameters and the user's
    // (`backends::render_command`). A backend configured by a file takes the user's parameters
    // there, not on the command line.
    spec.backend_parameters = if injection.config.is_some() { Vec::new() } else { model.backend_parameters.clone() };
    for (k, v) in injection.env {
        spec.env.entry(k).or_insert(v);
    }
    spec.backend_config = injection.config;
    spec.injected_backend_parameters = injection.args;
    spec.model_path = match model.source {
        ModelSource::LocalPath => model.local_path.clone().unwrap_or_default(),
        _ => spec.model_path,
    };
    spec.state = InstanceState::Scheduled;
    spec.state_message = p.message.clone();
    spec
}
