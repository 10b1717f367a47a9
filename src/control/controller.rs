//! The model controller: compares each deployment's desired replicas with its instances and acts.
//! Creates pending instances, removes the least healthy on scale-down, rolls instances one at a
//! time when a run-affecting field changes, and keeps `ready_replicas` current. Serving instances
//! it removes drain first, and it stops draining ones when they are idle (`drain.rs`). Steppable:
//! `tick`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::{
    Binding, DEFAULT_DRAIN_TIMEOUT, InstanceState, InstanceStatus, ModelInstance, ModelInstanceSpec, ModelSource,
    ModelSpec, ModelState, Record, WorkerSpec, WorkerState,
};
use crate::control::drain;
use crate::control::leader::Leadership;
use crate::control::park;
use crate::control::replicas::{self, Action, Desired, InstanceFacts};
use crate::db::{Db, DbError, instance_columns, model_columns};
use crate::gateway::Gateway;
use crate::server::auth::random_token;

/// Fingerprint of the fields that change how an instance runs. Every field of a deployment is
/// named here, in the fingerprint or deliberately out of it, so a new field does not build until
/// someone decides whether changing it affects running instances.
pub fn spec_hash(m: &ModelSpec) -> String {
    let ModelSpec {
        source,
        huggingface_repo_id,
        huggingface_filename,
        model_scope_model_id,
        model_scope_file_path,
        local_path,
        backend,
        backend_version,
        backend_parameters,
        env,
        gpu_selector,
        worker_selector,
        cpu_offloading,
        distributed_inference_across_workers,
        extended_kv_cache,
        image_name,
        run_command,
        placement_strategy,
        restart_on_error,
        cluster_id,
        gpu_memory,
        fit_concurrency,
        // Not run-affecting: changing them never restarts anything.
        name: _,
        description: _,
        replicas: _,
        ready_replicas: _,
        categories: _,
        meta: _,
        analysis: _,
        enable_model_route: _,
        access_policy: _,
        generic_proxy: _,
        state: _,
        state_message: _,
        spec_digest: _,
        rollout_digest: _,
        drain_timeout: _,
        autoscaling: _,
        scaling_schedule: _,
        scaling_message: _,
        // Computed when answered (requests held in wake queues); never stored.
        queued: _,
    } = m;
    let relevant = serde_json::json!({
        "source": source, "hf": huggingface_repo_id, "hf_file": huggingface_filename,
        "ms": model_scope_model_id, "ms_file": model_scope_file_path, "local": local_path,
        "backend": backend, "version": backend_version, "params": backend_parameters, "env": env,
        "gpus": gpu_selector, "workers": worker_selector, "cpu": cpu_offloading,
        "distributed": distributed_inference_across_workers, "kv": extended_kv_cache,
        "image": image_name, "cmd": run_command, "strategy": placement_strategy,
        "restart": restart_on_error, "cluster": cluster_id,
    });
    let mut relevant = relevant;
    // Added later: only when set, so the digest of deployments that set neither stays as it was.
    if let Some(map) = relevant.as_object_mut() {
        if let Some(policy) = gpu_memory {
            map.insert("gpu_memory".into(), serde_json::json!(policy));
        }
        if let Some(n) = fit_concurrency {
            map.insert("fit_concurrency".into(), serde_json::json!(n));
        }
    }
    hex::encode(&Sha256::digest(relevant.to_string().as_bytes())[..8])
}

/// A deployment's state from its replicas and instances (GPUStack's `ModelStateEnum`).
pub fn model_state(desired: usize, instances: &[&ModelInstance]) -> (Option<ModelState>, Option<String>) {
    let ready = instances.iter().filter(|i| i.spec.status.state == InstanceState::Running).count();
    // Failed, or restarting after a failure: counted as failing until it runs again, so a crash
    // loop does not flip the deployment between error and pending (and its version with it).
    let failing = instances
        .iter()
        .filter(|i| {
            i.spec.status.state == InstanceState::Error
                || (i.spec.status.restart_count > 0 && i.spec.status.state != InstanceState::Running)
        })
        .count();
    if desired == 0 {
        (None, None)
    } else if ready >= desired {
        (Some(ModelState::Running), None)
    } else if failing > 0 {
        (Some(ModelState::Error), Some(format!("{failing} of {desired} replicas failing; the instances say why")))
    } else if ready > 0 {
        (Some(ModelState::Partial), Some(format!("{ready} of {desired} replicas running")))
    } else {
        (Some(ModelState::Pending), None)
    }
}

/// A new pending instance of a model: what runs is the deployment's [`ModelSpec::run_spec`];
/// the binding and the status start empty.
pub fn new_instance(model: &Record<ModelSpec>) -> ModelInstanceSpec {
    let m = &model.spec;
    let model_path = match m.source {
        ModelSource::LocalPath => m.local_path.clone().unwrap_or_default(),
        ModelSource::Huggingface => m.huggingface_repo_id.clone().unwrap_or_default(),
        ModelSource::ModelScope => m.model_scope_model_id.clone().unwrap_or_default(),
    };
    ModelInstanceSpec {
        name: format!("{}-{}", m.name, random_token(5).to_lowercase()),
        model_id: Some(model.id),
        model_name: m.name.clone(),
        model_path,
        spec_hash: Some(spec_hash(m)),
        run: m.run_spec(),
        binding: Binding::default(),
        status: InstanceStatus::default(),
    }
}

/// How often the controller looks again while an instance drains (the gateways' counts change
/// without a commit).
pub const DRAIN_POLL: Duration = Duration::from_millis(250);

pub struct ModelController {
    pub db: Db,
    /// This server's gateway: what it and the other servers' gateways say about draining
    /// instances. Without one, a draining instance stops at the next pass.
    pub gateway: Option<Gateway>,
    /// Instances still draining after the last pass.
    pub draining: AtomicUsize,
    /// Asks a drained instance's engine whether it still runs requests (ones that did not come
    /// through a gateway) before it is stopped; without it, the gateways' word is enough.
    pub engines: Option<EngineProbe>,
    /// Where deployments run, noted for the scheduler (`scheduler::WarmWorkers`).
    pub warm: Option<Arc<crate::control::scheduler::WarmWorkers>>,
    /// Puts parked instances' engines to sleep and wakes them (`park.rs`); without it, a parked
    /// instance stays awake and one found asleep is replaced.
    pub parking: Option<park::Parking>,
}

/// How the controller reaches engines: a client, and the server secret their keys derive from.
#[derive(Clone)]
pub struct EngineProbe {
    pub http: reqwest::Client,
    pub server_secret: Arc<String>,
}

impl ModelController {
    pub fn new(db: Db, gateway: Option<Gateway>) -> ModelController {
        ModelController { db, gateway, draining: AtomicUsize::new(0), engines: None, warm: None, parking: None }
    }

    /// One pass over every deployment. Returns how many writes it made.
    pub async fn tick(&self) -> Result<usize, DbError> {
        let workers: BTreeMap<i64, Record<WorkerSpec>> =
            self.db.all::<WorkerSpec>().await?.into_iter().map(|w| (w.id, w)).collect();
        // Three reads a pass, however many deployments: instances are grouped here.
        let mut by_model: BTreeMap<i64, Vec<ModelInstance>> = BTreeMap::new();
        for i in self.db.all::<ModelInstanceSpec>().await? {
            if let Some(m) = i.spec.model_id {
                if let (Some(warm), Some(w), InstanceState::Running) =
                    (&self.warm, i.spec.binding.worker_id, i.spec.status.state)
                {
                    warm.note(m, w);
                }
                by_model.entry(m).or_default().push(i);
            }
        }
        let mut writes = 0;
        self.draining.store(0, Ordering::Relaxed);
        let models = self.db.all::<ModelSpec>().await?;
        if let Some(warm) = &self.warm {
            let ids: std::collections::HashSet<i64> = models.iter().map(|m| m.id).collect();
            warm.retain(|m| ids.contains(&m));
        }
        for model in models {
            let instances = by_model.remove(&model.id).unwrap_or_default();
            writes += self.reconcile(&model, instances, &workers).await?;
        }
        // Instances of a deployment that is gone: its delete marked the serving ones draining (they
        // stop when idle, bounded by the timeout they carry) and deleted the others; what that
        // missed (the server stopped meanwhile) is finished here.
        let orphans: Vec<ModelInstance> = by_model.into_values().flatten().collect();
        let (serving, rest): (Vec<&ModelInstance>, Vec<&ModelInstance>) =
            orphans.iter().partition(|i| i.spec.status.state == InstanceState::Running);
        writes += drain::begin(&self.db, &serving, DEFAULT_DRAIN_TIMEOUT, "deployment deleted").await?.len();
        let rest: Vec<ModelInstance> = rest.into_iter().cloned().collect();
        let mut doomed = self.drained(&rest, |i| i.spec.status.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT)).await;
        doomed.extend(rest.iter().filter(|i| i.spec.status.state != InstanceState::Draining).map(|i| i.id));
        for batch in doomed.chunks(500) {
            writes += self.db.delete_many::<ModelInstanceSpec>(batch).await?.len();
        }
        Ok(writes)
    }

    async fn reconcile(
        &self,
        model: &Record<ModelSpec>,
        instances: Vec<ModelInstance>,
        workers: &BTreeMap<i64, Record<WorkerSpec>>,
    ) -> Result<usize, DbError> {
        let desired = model.spec.replicas as usize;
        let hash = spec_hash(&model.spec);
        // Without a rollout an edit leaves running instances on their spec; instances that do not
        // run (yet, or any more) are replaced by ones made from the new spec.
        let rolling = model.spec.rollout_digest.as_deref() == Some(hash.as_str());
        let facts: Vec<InstanceFacts> = instances.iter().map(|i| facts(i, workers)).collect();
        let mut writes = 0;
        let mut doomed = Vec::new();
        let mut retired: BTreeMap<&'static str, Vec<&ModelInstance>> = BTreeMap::new();
        let park_secs = model.spec.autoscaling.as_ref().and_then(|a| a.park_seconds);
        let (mut parks, mut wakes) = (Vec::new(), Vec::new());
        let desired_now = Desired { replicas: desired, hash: &hash, rolling, park: park_secs.is_some() };
        for action in replicas::actions(desired_now, &facts) {
            match action {
                Action::Create(n) => {
                    // One transaction for all the new replicas (1,000 of them commit in one go).
                    let rows: Vec<_> = (0..n)
                        .map(|_| {
                            let spec = new_instance(model);
                            let columns = instance_columns(&spec);
                            (spec, columns)
                        })
                        .collect();
                    writes += self.db.insert_many(&rows).await?.len();
                }
                Action::Delete(id) => {
                    if let Some(i) = instances.iter().find(|i| i.id == id) {
                        let why = if evacuated(i, workers) {
                            "worker maintenance"
                        } else if i.spec.spec_hash.as_deref() == Some(hash.as_str()) {
                            "scale-down"
                        } else {
                            "rolling replace"
                        };
                        retired.entry(why).or_default().push(i);
                    }
                }
                Action::Park(id) => parks.extend(instances.iter().find(|i| i.id == id)),
                Action::Unpark(id) => wakes.extend(instances.iter().find(|i| i.id == id)),
            }
        }
        if !parks.is_empty()
            || !wakes.is_empty()
            || instances.iter().any(|i| i.spec.status.state == InstanceState::Parked)
        {
            let (w, gone) = park::pass(
                &self.db,
                self.parking.as_ref(),
                self.gateway.as_ref(),
                park_secs,
                &parks,
                &wakes,
                &instances,
            )
            .await?;
            writes += w;
            doomed.extend(gone);
        }
        // Serving ones drain first; the others go at once.
        for (why, list) in retired {
            writes += drain::begin(&self.db, &list, model.spec.drain_timeout, why).await?.len();
        }
        doomed.extend(self.drained(&instances, |_| model.spec.drain_timeout).await);
        // Gone already (deleted elsewhere meanwhile) is fine: `delete_many` skips it.
        for batch in doomed.chunks(500) {
            writes += self.db.delete_many::<ModelInstanceSpec>(batch).await?.len();
        }

        let ready = instances.iter().filter(|i| i.spec.status.state == InstanceState::Running).count() as u32;
        // Draining instances are on their way out: they do not make the deployment fail or wait.
        let all: Vec<&ModelInstance> = instances
            .iter()
            .filter(|i| !matches!(i.spec.status.state, InstanceState::Draining | InstanceState::Parked))
            .collect();
        let (state, state_message) = model_state(desired, &all);
        let m = &model.spec;
        let digest = Some(hash);
        if ready != m.ready_replicas || state != m.state || state_message != m.state_message || digest != m.spec_digest
        {
            // Status only: the version stays, so an edit made with the version a user read
            // does not answer 409 because replicas became ready meanwhile.
            let status = ModelSpec { ready_replicas: ready, state, state_message, spec_digest: digest, ..m.clone() };
            let res = self.db.update_status(model.id, model.version, &status, &model_columns(&status)).await;
            match res {
                Ok(_) => writes += 1,
                Err(DbError::VersionConflict { .. } | DbError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(writes)
    }
}

impl ModelController {
    /// The draining instances whose drain has ended (idle on every gateway, or timed out after
    /// `timeout(instance)` seconds); counts the others in `draining`.
    async fn drained(&self, instances: &[ModelInstance], timeout: impl Fn(&ModelInstance) -> u32) -> Vec<i64> {
        let now = chrono::Utc::now();
        let mut done = Vec::new();
        for i in instances.iter().filter(|i| i.spec.status.state == InstanceState::Draining) {
            let waited = drain::elapsed(&i.spec, now);
            let views = self.gateway.as_ref().map(|g| g.drain_views(i.id, waited)).unwrap_or_default();
            match drain::verdict(waited, Duration::from_secs(timeout(i).into()), &views) {
                drain::Verdict::Wait { .. } => {
                    self.draining.fetch_add(1, Ordering::Relaxed);
                }
                drain::Verdict::Stop(drain::Why::Drained) => {
                    // The gateways are done with it; the engine may still run requests that came
                    // another way (straight to its port).
                    if let Some(busy) = self.engine_busy(i).await.filter(|n| *n > 0) {
                        tracing::debug!(
                            instance = i.id,
                            busy,
                            "instance drained on every gateway; its engine still runs requests"
                        );
                        self.draining.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    tracing::info!(instance = i.id, name = %i.spec.name, waited_ms = waited.as_millis() as u64,
                        "instance drained: no request in flight on any gateway or in its engine; stopping it");
                    done.push(i.id);
                }
                drain::Verdict::Stop(drain::Why::TimedOut { in_flight, routing }) => {
                    tracing::warn!(instance = i.id, name = %i.spec.name, waited_ms = waited.as_millis() as u64,
                        in_flight, gateways_not_confirmed = routing,
                        "instance drain timed out; stopping it with requests in flight");
                    done.push(i.id);
                }
            }
        }
        done
    }

    /// What instance `i`'s engine says it still runs (`drain::engine_busy`); None if it does not say.
    async fn engine_busy(&self, i: &ModelInstance) -> Option<u64> {
        let probe = self.engines.as_ref()?;
        let e = crate::control::route_snapshot::endpoint(i, &probe.server_secret)?;
        let auth = e.auth.as_ref().and_then(|a| a.to_str().ok());
        drain::engine_busy(&probe.http, &e.addr, auth).await
    }
}

/// Runs the model controller and, in a loop of its own, the scheduler, on every committed change
/// and every 5 s anyway (the slow periodic scan), while this server leads, until shutdown. Each
/// pass writes through a handle fenced by the leadership it started under. The scheduler has its
/// own loop because it evaluates models (local files, hub reads): a slow or hung read delays
/// placements only, never a scale-down, a rollout, a drain or a wake.
pub fn spawn_loops(
    db: Db,
    gateway: Gateway,
    engines: EngineProbe,
    hub: Arc<crate::config::HubAccess>,
    leader: Leadership,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Deployments, their instances, the workers they run on, the backends they run with.
    const TABLES: [&str; 4] = ["models", "model_instances", "workers", "inference_backends"];
    crate::control::analysis::spawn(db.clone(), hub, leader.clone(), shutdown.clone());
    let warm = Arc::new(crate::control::scheduler::WarmWorkers::default());
    let (db2, leader2, mut shutdown2, warm2) = (db.clone(), leader.clone(), shutdown.clone(), warm.clone());
    tokio::spawn(async move {
        let mut changed = db2.subscribe(&TABLES);
        loop {
            let Some(fence) = leader2.lead(&mut shutdown2).await else { return };
            let scheduler = crate::control::scheduler::Scheduler { db: db2.fenced(fence), warm: warm2.clone() };
            match scheduler.tick().await {
                Ok(n) if n > 0 => {
                    changed.mark_seen();
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown2.wait_for(|s| *s) => return,
            }
        }
    });
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        let mut changed = db.subscribe(&TABLES);
        let calls = Arc::new(park::EngineCalls::default());
        loop {
            let Some(fence) = leader.lead(&mut shutdown).await else { return };
            let controller = ModelController {
                engines: Some(engines.clone()),
                warm: Some(warm.clone()),
                parking: Some(park::Parking { calls: calls.clone(), engines: engines.clone() }),
                ..ModelController::new(db.fenced(fence), Some(gateway.clone()))
            };
            match controller.tick().await {
                Ok(n) if n > 0 => {
                    changed.mark_seen();
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "model controller pass failed"),
            }
            // While an instance drains, its gateways' counts are looked at often.
            let wait = match controller.draining.load(Ordering::Relaxed) {
                0 => Duration::from_secs(5),
                _ => DRAIN_POLL,
            };
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

/// What the replica decision needs to know about an instance.
fn facts(i: &ModelInstance, workers: &BTreeMap<i64, Record<WorkerSpec>>) -> InstanceFacts {
    InstanceFacts {
        id: i.id,
        spec_hash: i.spec.spec_hash.clone(),
        state: i.spec.status.state,
        bound: i.spec.binding.worker_id.is_some(),
        has_message: i.spec.status.state_message.is_some(),
        worker_ready: i
            .spec
            .binding
            .worker_id
            .and_then(|w| workers.get(&w))
            .is_some_and(|w| w.spec.state == WorkerState::Ready),
        restarts: i.spec.status.restart_count,
        evacuate: evacuated(i, workers),
    }
}

/// Whether instance `i` is on a worker in maintenance that asked for its instances to move.
fn evacuated(i: &ModelInstance, workers: &BTreeMap<i64, Record<WorkerSpec>>) -> bool {
    let m = |w: i64| workers.get(&w).is_some_and(|w| w.spec.maintenance.enabled && w.spec.maintenance.drain);
    i.spec.binding.worker_id.is_some_and(m) || i.spec.subordinate_workers().iter().any(|s| m(s.worker_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelSpec {
        serde_json::from_value(serde_json::json!({"name": "m", "source": "local_path", "local_path": "/m.gguf"}))
            .expect("spec")
    }

    fn instance(state: InstanceState, message: Option<&str>) -> ModelInstance {
        let model =
            Record { id: 1, version: 1, created_at: Default::default(), updated_at: Default::default(), spec: model() };
        let mut spec = new_instance(&model);
        spec.name = "m-1".into();
        spec.status.state = state;
        spec.status.state_message = message.map(str::to_string);
        Record { id: 1, version: 1, created_at: Default::default(), updated_at: Default::default(), spec }
    }

    #[test]
    fn model_state_table() {
        use InstanceState::*;
        let run = instance(Running, None);
        let pend = instance(Pending, None);
        let err = instance(Error, Some("exit 1"));
        let mut restarting = instance(Starting, None);
        restarting.spec.status.restart_count = 2;
        type Case<'a> = (usize, Vec<&'a ModelInstance>, Option<ModelState>, Option<&'a str>);
        let cases: &[Case] = &[
            (0, vec![], None, None),
            (0, vec![&run], None, None),
            (1, vec![], Some(ModelState::Pending), None),
            (1, vec![&pend], Some(ModelState::Pending), None),
            (1, vec![&run], Some(ModelState::Running), None),
            (2, vec![&run, &pend], Some(ModelState::Partial), Some("1 of 2 replicas running")),
            (2, vec![&run, &err], Some(ModelState::Error), Some("1 of 2 replicas failing; the instances say why")),
            (
                2,
                vec![&run, &restarting],
                Some(ModelState::Error),
                Some("1 of 2 replicas failing; the instances say why"),
            ),
            (1, vec![&err, &run], Some(ModelState::Running), None),
        ];
        for (desired, instances, state, message) in cases {
            let got = model_state(*desired, instances);
            assert_eq!(got, (*state, message.map(str::to_string)), "desired {desired}, {} instances", instances.len());
        }
    }

    #[test]
    fn only_run_affecting_fields_change_the_hash() {
        let base = model();
        let same = [
            ModelSpec { replicas: 5, ..base.clone() },
            ModelSpec { description: Some("d".into()), ..base.clone() },
            ModelSpec { categories: vec!["llm".into()], ..base.clone() },
        ];
        for m in same {
            assert_eq!(spec_hash(&m), spec_hash(&base), "{m:?}");
        }
        let different = [
            ModelSpec { backend_parameters: vec!["--ctx-size=4096".into()], ..base.clone() },
            ModelSpec { env: [("A".to_string(), "1".to_string())].into(), ..base.clone() },
            ModelSpec { backend_version: Some("v2".into()), ..base.clone() },
        ];
        for m in different {
            assert_ne!(spec_hash(&m), spec_hash(&base), "{m:?}");
        }
    }
}
