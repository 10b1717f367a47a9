//! The agent's outer shell: registration (credential kept in the data dir), the worker API,
//! heartbeats, status reports, the watch on this worker's instances, and the reconcile loop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use super::reconcile::Reconciler;
use super::runtime::{Runtime, container::ContainerRuntime, process::ProcessRuntime};
use super::status::StatusCollector;
use super::{RuntimeChoice, WorkerConfig, api, gpu};
use crate::api::{
    EventType, ModelInstance, WatchEvent, Worker, WorkerRegister, WorkerRegistered, WorkerShutdown, WorkerStatusReport,
};
use crate::client::{Client, ClientError, SseParser};

/// What a worker keeps in its data dir to rejoin as itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub worker_id: i64,
    pub credential: String,
    pub server_token: String,
    pub server_url: String,
}

const IDENTITY_FILE: &str = "worker.json";

/// How long the worker's server may take to answer a call before the next server is tried.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn load_identity(dir: &Path) -> Option<Identity> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(IDENTITY_FILE)).ok()?).ok()
}

fn save_identity(dir: &Path, id: &Identity) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(IDENTITY_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(serde_json::to_string_pretty(id)?.as_bytes())?;
    Ok(())
}

/// The shared cache of this worker's instances, fed by the watch stream.
#[derive(Default)]
pub struct Cache {
    pub instances: Mutex<HashMap<i64, ModelInstance>>,
    pub changed: Notify,
}

/// A started worker; dropping the stop sender ends it.
pub struct RunningWorker {
    pub worker_id: i64,
    /// Where the worker's API listens (`--bind-address`, `--worker-port`).
    pub api_addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    client: Client,
    cache: Arc<Cache>,
    /// `--shutdown-drain-timeout`; zero when `--leave-running` (the engines stay up).
    drain_timeout: Duration,
}

impl RunningWorker {
    /// The first half of a clean stop that loses no request: asks the server to move this worker's
    /// instances to other workers and drain them (maintenance until it starts again), then waits
    /// until none is left on it, at most `--shutdown-drain-timeout`. Its loops keep running
    /// meanwhile: each engine stops as its drain ends. [`RunningWorker::shutdown`] stops the rest.
    pub async fn drain(&self) {
        if self.drain_timeout.is_zero() {
            return;
        }
        let path = format!("/v2/workers/{}/shutdown", self.worker_id);
        if let Err(e) = self.client.put::<_, Worker>(&path, &WorkerShutdown { stopping: true }).await {
            tracing::warn!(error = %e, "cannot ask the server to drain this worker's instances; stopping them now");
            return;
        }
        let started = tokio::time::Instant::now();
        let mut said = usize::MAX;
        loop {
            let left = self.cache.instances.lock().await.values().filter(|i| on_worker(i, self.worker_id)).count();
            if left == 0 {
                tracing::info!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "worker drained: no instance left on it"
                );
                return;
            }
            if started.elapsed() >= self.drain_timeout {
                tracing::warn!(
                    left,
                    timeout_s = self.drain_timeout.as_secs(),
                    "worker drain timed out; stopping the instances left"
                );
                return;
            }
            if left != said {
                tracing::info!(
                    left,
                    timeout_s = self.drain_timeout.as_secs(),
                    "worker draining: its instances move to other workers and finish their requests first (a second signal stops at once)"
                );
                said = left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the loops; instances are stopped too unless `leave_running`.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn pick_runtime(cfg: &WorkerConfig, instances_root: PathBuf) -> anyhow::Result<Runtime> {
    let socket = cfg.docker_host.clone().map(PathBuf::from);
    match cfg.runtime {
        RuntimeChoice::Process => Ok(Runtime::Process(ProcessRuntime::new(instances_root))),
        RuntimeChoice::Container => Ok(Runtime::Container(
            ContainerRuntime::connect(socket)
                .await
                .context("--runtime container: no container engine answers")?
                .with_scope(&cfg.name),
        )),
        // Scoped by worker name: workers sharing an engine never take each other's containers.
        RuntimeChoice::Auto => match ContainerRuntime::connect(socket).await {
            Ok(rt) => Ok(Runtime::Container(rt.with_scope(&cfg.name))),
            Err(_) => Ok(Runtime::Process(ProcessRuntime::new(instances_root))),
        },
    }
}

async fn register(
    cfg: &WorkerConfig,
    status: crate::api::WorkerStatus,
    port: u16,
    runtime: &Runtime,
) -> anyhow::Result<Identity> {
    let token = cfg.token.clone().context(
        "this worker has not joined yet: pass the cluster's registration token with --token (an admin finds it in the UI, or in the server's data dir as cluster_token)",
    )?;
    let client = Client::new(&cfg.server_url, Some(token));
    let mut body = WorkerRegister {
        name: cfg.name.clone(),
        labels: cfg.labels.clone(),
        hostname: super::hostname(),
        ip: cfg.advertise_address.clone(),
        ifname: cfg.ifname.clone(),
        port,
        runtime: runtime.kind(),
        status,
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    // A name the operator gave is theirs to fix when taken; the default (the host name) gets the
    // first free `-2`, `-3`, … so a second worker on one machine never collides with the first.
    let tries = if cfg.name_is_default { 9 } else { 1 };
    let mut attempt = 1;
    let registered: WorkerRegistered = loop {
        match client.post("/v2/workers", &body).await {
            Ok(r) => break r,
            Err(e) if e.status() == Some(409) && attempt < tries => {
                attempt += 1;
                body.name = format!("{}-{attempt}", cfg.name);
            }
            Err(e) => {
                return Err(match e.status() {
                    Some(401) => anyhow::anyhow!("the server refused the registration token (401): check --token"),
                    Some(409) => anyhow::anyhow!("cannot register as {:?}: {e}", body.name),
                    _ => anyhow::anyhow!("registering with {}: {e}", cfg.server_url),
                });
            }
        }
    };
    if body.name != cfg.name {
        tracing::info!(name = %body.name, "the host name is taken by another worker: joined under this name");
    }
    Ok(Identity {
        worker_id: registered.worker.id,
        credential: registered.credential,
        server_token: registered.server_token,
        server_url: cfg.server_url.clone(),
    })
}

/// Joins (or rejoins) the cluster and starts every loop in the background.
pub async fn start(cfg: WorkerConfig) -> anyhow::Result<RunningWorker> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Its credential and instance logs are the worker's alone.
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", cfg.data_dir.display()))?;
    }
    let instances_root = cfg.data_dir.join("instances");
    let runtime = pick_runtime(&cfg, instances_root.clone()).await?;
    let gpus = gpu::detect(cfg.simulate_gpus.as_deref()).await.context("GPU detection")?;
    let cfg = WorkerConfig { gpu_type: gpus.first().map(|g| g.gpu_type.as_str().to_owned()), ..cfg };
    let mut collector = StatusCollector::default();
    let status = collector.sample(gpus.clone());

    let listener = tokio::net::TcpListener::bind((cfg.bind_address, cfg.worker_port)).await.with_context(|| {
        format!("cannot listen on {}:{} (--bind-address, --worker-port)", cfg.bind_address, cfg.worker_port)
    })?;
    let api_addr = listener.local_addr()?;
    let api_port = api_addr.port();

    // Rejoin with the stored credential if the server still accepts it; else register.
    let mut identity = match load_identity(&cfg.data_dir) {
        Some(id) => {
            let client = Client::new(&cfg.server_url, Some(id.credential.clone()));
            match client.get::<Worker>(&format!("/v2/workers/{}", id.worker_id)).await {
                Ok(_) => Some(id),
                Err(ClientError::Api(body)) if body.code == 401 || body.code == 404 => None,
                Err(e) => return Err(anyhow::anyhow!("cannot reach the server at {}: {e}", cfg.server_url)),
            }
        }
        None => None,
    };
    if identity.is_none() {
        let id = register(&cfg, status.clone(), api_port, &runtime).await?;
        save_identity(&cfg.data_dir, &id)?;
        identity = Some(id);
    }
    let identity = identity.context("no identity")?;
    // A server that does not answer within a few seconds (stalled, or cut off from its database
    // and refusing) is left for the next one.
    let client = Client::new(&cfg.server_url, Some(identity.credential.clone())).with_answer_timeout(ANSWER_TIMEOUT);
    let report = WorkerStatusReport {
        status,
        ip: Some(cfg.advertise_address.clone()),
        ifname: Some(cfg.ifname.clone()),
        port: Some(api_port),
    };
    client.put::<_, Worker>(&format!("/v2/workers/{}/status", identity.worker_id), &report).await?;
    tracing::info!(worker = %cfg.name, id = identity.worker_id, runtime = ?runtime.kind(), gpus = gpus.len(), "worker joined");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_api = api::WorkerApi {
        instances_root: instances_root.clone(),
        server_token: Arc::new(identity.server_token.clone()),
    };
    let mut api_stop = stopped.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, api::router(worker_api))
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = serve {
            tracing::error!(error = %e, "worker API stopped");
        }
    });

    let worker_id = identity.worker_id;
    // Started again: a maintenance that its own clean stop began ends here.
    let path = format!("/v2/workers/{worker_id}/shutdown");
    if let Err(e) = client.put::<_, Worker>(&path, &WorkerShutdown { stopping: false }).await {
        tracing::warn!(error = %e, "cannot end the maintenance of an earlier clean stop");
    }
    let drain_client = client.clone();
    let cache = Arc::new(Cache::default());
    spawn_heartbeat(client.clone(), worker_id, cfg.heartbeat_interval, stopped.clone());
    spawn_status(client.clone(), worker_id, collector, gpus, cfg.clone(), api_port, cache.clone(), stopped.clone());
    spawn_watch(client.clone(), cache.clone(), stopped.clone());
    let reconciler = Reconciler::new(
        client,
        worker_id,
        identity.server_token.clone(),
        cfg.clone(),
        runtime,
        instances_root,
        cache.clone(),
    );
    let leave_running = cfg.leave_running;
    let drain_timeout = if leave_running { Duration::ZERO } else { cfg.shutdown_drain_timeout };
    let drain_cache = cache.clone();
    let mut loop_stop = stopped;
    let task = tokio::spawn(async move {
        reconciler.reap_orphans().await;
        loop {
            reconciler.tick().await;
            let next = reconciler.next_pass_in().await;
            tokio::select! {
                _ = cache.changed.notified() => {}
                _ = tokio::time::sleep(next) => {}
                _ = loop_stop.wait_for(|s| *s) => break,
            }
        }
        if !leave_running {
            reconciler.stop_all().await;
        }
    });
    Ok(RunningWorker { worker_id, api_addr, stop, task, client: drain_client, cache: drain_cache, drain_timeout })
}

fn spawn_heartbeat(client: Client, worker_id: i64, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let path = format!("/v2/workers/{worker_id}/heartbeat");
        loop {
            if let Err(e) = client.post::<_, serde_json::Value>(&path, &serde_json::Value::Null).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn spawn_status(
    client: Client,
    worker_id: i64,
    mut collector: StatusCollector,
    gpus: Vec<crate::api::GpuDevice>,
    cfg: WorkerConfig,
    api_port: u16,
    cache: Arc<Cache>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let path = format!("/v2/workers/{worker_id}/status");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let devices = if cfg.simulate_gpus.is_some() {
                gpus.clone()
            } else {
                let mut devices = gpu::detect(None).await.unwrap_or_else(|_| gpus.clone());
                count_external(&mut devices, worker_id, &cache).await;
                devices
            };
            let report = WorkerStatusReport {
                status: collector.sample(devices),
                ip: Some(cfg.advertise_address.clone()),
                ifname: Some(cfg.ifname.clone()),
                port: Some(api_port),
            };
            if let Err(e) = client.put::<_, Worker>(&path, &report).await {
                tracing::warn!(error = %e, "status report failed");
            }
        }
    });
}

/// Sets each device's `memory_external`: what processes that are not this worker's instances (nor
/// their children, nor in their containers) use on it (`gpu::external`).
async fn count_external(devices: &mut [crate::api::GpuDevice], worker_id: i64, cache: &Cache) {
    use crate::api::GpuVendor;
    use gpu::external::{descends_from, external_by_device, in_containers, nvidia_processes, proc_parent};
    // Vendors whose processes can be listed: NVIDIA (NVML) and Ascend (npu-smi's process table).
    let listed = |v: GpuVendor| matches!(v, GpuVendor::Nvidia | GpuVendor::Ascend);
    if !devices.iter().any(|d| listed(d.vendor)) {
        return;
    }
    let ascend = if devices.iter().any(|d| d.vendor == GpuVendor::Ascend) {
        gpu::probe::ascend_processes().await
    } else {
        Vec::new()
    };
    let nvidia = devices.iter().any(|d| d.vendor == GpuVendor::Nvidia);
    let (mut roots, mut containers) = (std::collections::HashSet::from([std::process::id()]), Vec::new());
    for i in cache.instances.lock().await.values() {
        let parts = std::iter::once((i.spec.binding.worker_id, i.spec.status.pid, &i.spec.status.container_id))
            .chain(i.spec.subordinate_workers().iter().map(|s| (Some(s.worker_id), s.pid, &s.container_id)));
        for (_, pid, container) in parts.filter(|p| p.0 == Some(worker_id)) {
            roots.extend(pid);
            containers.extend(container.clone());
        }
    }
    // A worker has one vendor's devices (detection stops at the first vendor found).
    let external = tokio::task::spawn_blocking(move || {
        let procs = if nvidia { nvidia_processes() } else { ascend };
        external_by_device(&procs, |pid| descends_from(pid, &roots, proc_parent) || in_containers(pid, &containers))
    })
    .await
    .unwrap_or_default();
    for d in devices.iter_mut().filter(|d| listed(d.vendor)) {
        d.memory_external = external.get(&d.index).copied().unwrap_or(0).min(d.memory_total);
    }
}

/// Keeps `cache` equal to the server's view of this worker's instances, resuming after drops.
/// When the client moves to another server (the heartbeat found this one not serving), the watch
/// moves too: a server cut off from its database keeps a watch open but hears nothing.
fn spawn_watch(client: Client, cache: Arc<Cache>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut last_id: Option<i64> = None;
        loop {
            let res = tokio::select! {
                res = client.stream("/v2/model-instances?watch=true", last_id) => res,
                _ = stop.wait_for(|s| *s) => return,
            };
            let opened_on = client.base_url().to_string();
            match res {
                Ok(res) => {
                    let mut body = res.bytes_stream();
                    let mut parser = SseParser::default();
                    loop {
                        let chunk = tokio::select! {
                            c = body.next() => c,
                            _ = moved_from(&client, &opened_on) => {
                                tracing::info!(server = %client.base_url(), "watching instances on the server the worker moved to");
                                break;
                            }
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        let Some(Ok(bytes)) = chunk else { break };
                        for event in parser.push(&bytes) {
                            let Ok(parsed) = serde_json::from_str::<WatchEvent<ModelInstance>>(&event.data) else {
                                continue;
                            };
                            let mut map = cache.instances.lock().await;
                            match (parsed.event_type, parsed.data) {
                                (EventType::Reset, _) => map.clear(),
                                (EventType::Deleted, Some(i)) => {
                                    map.remove(&i.id);
                                }
                                // Never go back to an older version than one already seen.
                                (_, Some(i)) if map.get(&i.id).is_none_or(|old| old.version <= i.version) => {
                                    map.insert(i.id, i);
                                }
                                _ => {}
                            }
                            last_id = event.id.or(last_id);
                            drop(map);
                            cache.changed.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching instances failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// Returns once `client` calls another server than `base`.
async fn moved_from(client: &Client, base: &str) {
    while client.base_url() == base {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether instance `i` runs on worker `id`, as its main worker or a subordinate.
fn on_worker(i: &ModelInstance, id: i64) -> bool {
    i.spec.binding.worker_id == Some(id) || i.spec.subordinate(id).is_some()
}
