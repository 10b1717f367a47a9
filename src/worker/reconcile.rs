//! The instance lifecycle on the worker, one `tick` at a time: scheduled → initializing → starting
//! → running; health checks; error with the last log lines; restart with a backoff stored on the
//! instance; stop and free the port on delete; reattach after a worker restart; reap orphans. What
//! each pass does is decided in `decide` (pure, table-tested); this file observes and executes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::time::Instant;

mod decide;
mod follower;

use decide::{HEALTH_FAILURES, Health, Step, Verdict, backoff_step};

use super::WorkerConfig;
use super::agent::Cache;
use super::download::{Downloader, HubSource};
use super::logs;
use super::ports::{self, PortLease};
use super::runtime::{Handle, LaunchSpec, Liveness, Runtime};
use crate::api::RuntimeKind;
use crate::api::backend::InferenceBackendSpec;
use crate::api::{InstanceState, InstanceStatusReport, InstanceTransition, ModelInstance, ModelSource};
use crate::backends::config_file;
use crate::backends::distributed::{self, Launch, Role, Topology};
use crate::backends::render::{API_KEY_FILE_IN_CONTAINER, API_KEY_MASK, engine_api_key};
use crate::backends::{DeploymentOverrides, RenderContext, render_command};
use crate::client::{Client, ClientError};

/// How long a stopping workload gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The message of an instance its worker stopped on a clean shutdown.
pub const STOPPED_WITH_WORKER: &str = "stopped with its worker; it starts again when the worker does";
/// Lines of log quoted in an error message.
const LOG_LINES_IN_ERRORS: usize = 15;

/// The restart backoff: `min(10·2^(n−1), 300)` seconds before the n-th restart.
pub fn backoff(n: u32) -> Duration {
    let n = n.max(1);
    let secs = 10u64.saturating_mul(1u64 << (n - 1).min(20));
    Duration::from_secs(secs.min(300))
}

/// What the worker knows locally about an instance it runs.
#[derive(Debug, Clone)]
struct Local {
    handle: Handle,
    /// HTTP port, then (distributed instances) the rendezvous port.
    ports: Vec<u16>,
    /// The host-wide hold on `ports` (none for an adopted workload, whose engine listens on them).
    _leases: Arc<Vec<PortLease>>,
    health: Health,
    health_path: Option<String>,
    /// The command as launched (for an adopted workload: the one the server has): sent again when
    /// the instance turns running, so a lost first report does not leave it unknown.
    command: Vec<String>,
}

impl Local {
    fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or_default()
    }
}

pub struct Reconciler {
    client: Client,
    worker_id: i64,
    /// The token the server presents to this worker: engine keys are derived from it.
    server_token: String,
    cfg: WorkerConfig,
    runtime: Runtime,
    root: PathBuf,
    cache: Arc<Cache>,
    local: Mutex<HashMap<i64, Local>>,
    http: reqwest::Client,
    downloader: Arc<Downloader>,
    downloads: Arc<std::sync::Mutex<HashMap<i64, Download>>>,
    /// Parts of distributed instances this worker runs as a subordinate.
    parts: Mutex<HashMap<i64, follower::Part>>,
}

/// A hub download an instance waits for.
#[derive(Debug, Clone)]
enum Download {
    /// Fraction done and bytes written.
    Running(f64, u64),
    Done(PathBuf),
    Failed(String),
}

/// Why a launch could not be prepared.
#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("cannot render the launch command: {0}")]
    Render(#[from] crate::backends::RenderError),
    #[error("cannot write the backend's config file: {0}")]
    Config(String),
    #[error("cannot write the engine's key file: {0}")]
    KeyFile(String),
}

/// What `poll_download` found.
enum DownloadPoll {
    Ready(PathBuf),
    /// Fraction done and bytes written.
    Progress(f64, u64),
    Failed(String),
}

/// The hub source of an instance, if its model comes from a hub.
fn hub_source(i: &ModelInstance) -> Option<HubSource> {
    match i.spec.run.source? {
        ModelSource::Huggingface => Some(HubSource::Huggingface {
            repo: i.spec.run.huggingface_repo_id.clone()?,
            file: i.spec.run.huggingface_filename.clone(),
        }),
        ModelSource::ModelScope => Some(HubSource::ModelScope {
            model: i.spec.run.model_scope_model_id.clone()?,
            file: i.spec.run.model_scope_file_path.clone(),
        }),
        ModelSource::LocalPath => None,
    }
}

impl Reconciler {
    pub fn new(
        client: Client,
        worker_id: i64,
        server_token: String,
        cfg: WorkerConfig,
        runtime: Runtime,
        root: PathBuf,
        cache: Arc<Cache>,
    ) -> Reconciler {
        // Engines are probed directly, never through a proxy the worker's environment names.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build().unwrap_or_default();
        let cache_dir = cfg.data_dir.join("cache");
        let downloader = Arc::new(Downloader::new(cache_dir, cfg.hub.clone()));
        Reconciler {
            client,
            worker_id,
            server_token,
            cfg,
            runtime,
            root,
            cache,
            local: Mutex::new(HashMap::new()),
            http,
            downloader,
            downloads: Arc::default(),
            parts: Mutex::new(HashMap::new()),
        }
    }

    /// Stops workloads left by an earlier run whose instances no longer exist on the server.
    pub async fn reap_orphans(&self) {
        for (id, handle) in self.runtime.managed().await {
            match self.client.get::<ModelInstance>(&format!("/v2/model-instances/{id}")).await {
                Err(ClientError::Api(body)) if body.code == 404 || body.code == 403 => {
                    tracing::info!(instance = id, "reaping an orphaned workload");
                    self.runtime.stop(&handle, STOP_GRACE).await;
                    self.runtime.release(id).await;
                }
                _ => {}
            }
        }
    }

    /// Stops everything this worker runs (worker shutdown without --leave-running). A stop the
    /// operator asked for is not a crash: each instance goes back to `scheduled`, so the next start
    /// of this worker launches it at once, with no restart counted and no backoff.
    pub async fn stop_all(&self) {
        let running: Vec<(i64, Local)> = self.local.lock().await.drain().collect();
        // Said first, so the gateway stops sending requests before the engines stop.
        for (id, _) in &running {
            let Some(i) = self.cache.instances.lock().await.get(id).cloned() else { continue };
            let stopped = InstanceTransition::Scheduled { message: STOPPED_WITH_WORKER.into() };
            if let Err(e) = self.report(&i, stopped).await {
                // Expected when the server stops too (the embedded worker of `start` stops after
                // its server stopped accepting): the next start reconciles the instance.
                tracing::info!(instance = id, error = %e, "the server did not take the stop report; the next start reconciles it");
            }
        }
        for (id, l) in running {
            self.runtime.stop(&l.handle, STOP_GRACE).await;
            self.runtime.release(id).await;
        }
        for (id, part) in self.parts.lock().await.drain() {
            self.runtime.stop(&part.handle, STOP_GRACE).await;
            self.runtime.release(id).await;
        }
    }

    /// One reconcile pass over every instance placed here.
    /// When the next pass is due if nothing changes: soon while a workload starts (so a ready
    /// engine is seen within [`decide::STARTING_EVERY`]), else [`decide::IDLE_PASS`].
    pub async fn next_pass_in(&self) -> Duration {
        let local = self.local.lock().await;
        local.values().map(|l| l.health.next_pass()).min().unwrap_or(decide::IDLE_PASS)
    }

    pub async fn tick(&self) {
        let instances: Vec<ModelInstance> = self
            .cache
            .instances
            .lock()
            .await
            .values()
            .filter(|i| i.spec.binding.worker_id == Some(self.worker_id))
            .cloned()
            .collect();
        let present: BTreeSet<i64> = instances.iter().map(|i| i.id).collect();
        let gone: Vec<(i64, Local)> = {
            let mut local = self.local.lock().await;
            let ids: Vec<i64> = local.keys().filter(|id| !present.contains(id)).copied().collect();
            ids.into_iter().filter_map(|id| local.remove(&id).map(|l| (id, l))).collect()
        };
        for (id, l) in gone {
            tracing::info!(instance = id, "instance deleted: stopping it");
            self.runtime.stop(&l.handle, STOP_GRACE).await;
            self.runtime.release(id).await;
            let _ = std::fs::remove_dir_all(self.root.join(id.to_string()));
        }
        for instance in instances {
            if let Err(e) = self.step(&instance).await {
                tracing::warn!(instance = instance.id, error = %e, "reconcile step failed");
            }
            logs::enforce_bounds(&self.root, instance.id);
        }
        self.tick_parts().await;
    }

    async fn step(&self, i: &ModelInstance) -> Result<(), ClientError> {
        let local = self.local.lock().await.get(&i.id).cloned();
        let s = &i.spec;
        match (
            decide::step(
                s.status.state,
                local.is_some(),
                s.run.restart_on_error,
                s.status.next_restart_time,
                Utc::now(),
            ),
            local,
        ) {
            (Step::Launch, _) => self.launch(i, false).await,
            (Step::Restart, _) => self.launch(i, true).await,
            (Step::AdoptOrFail, _) => self.adopt_or_fail(i).await,
            (Step::Stop, Some(l)) => {
                self.drop_local(i.id, &l).await;
                Ok(())
            }
            (Step::Watch, Some(l)) => self.watch_over(i, l).await,
            (Step::Stop | Step::Watch | Step::Idle, _) => Ok(()),
        }
    }

    /// After a worker restart: take back a workload that still runs, or fail the instance.
    async fn adopt_or_fail(&self, i: &ModelInstance) -> Result<(), ClientError> {
        let found = self.runtime.managed().await.into_iter().find(|(id, _)| *id == i.id);
        match (found, i.spec.status.port) {
            (Some((_, handle)), Some(port)) => {
                tracing::info!(instance = i.id, "reattached to a running workload");
                let health_path = self.backend_of(i).await.ok().and_then(|b| b.health_check_path);
                let ports =
                    if i.spec.status.ports.first() == Some(&port) { i.spec.status.ports.clone() } else { vec![port] };
                let health = Health::new(Instant::now());
                let command = i.spec.status.command.clone();
                let l = Local { handle, ports, _leases: Arc::default(), health, health_path, command };
                self.local.lock().await.insert(i.id, l);
                Ok(())
            }
            _ => self.fail(i, "the inference server is gone (its worker restarted without it)".into(), None).await,
        }
    }

    async fn watch_over(&self, i: &ModelInstance, l: Local) -> Result<(), ClientError> {
        if let Liveness::Exited(how) = self.runtime.liveness(&l.handle).await {
            let tail = self.last_lines(i.id);
            self.drop_local(i.id, &l).await;
            return self.fail_run(i, format!("the inference server {how}; last log lines:\n{tail}"), &l).await;
        }
        // A distributed instance is whole or broken: a failed part fails it (and restarts all).
        if let Some(part) = i.spec.subordinate_workers().iter().find(|p| p.state == InstanceState::Error) {
            self.drop_local(i.id, &l).await;
            let name = part.worker_name.clone().unwrap_or_else(|| part.worker_id.to_string());
            let why = part.state_message.clone().unwrap_or_default();
            return self.fail(i, format!("its part on subordinate worker {name} failed: {why}"), None).await;
        }
        let now = Instant::now();
        // Draining is running as far as health goes: nothing to report while it answers.
        let stored_running =
            matches!(i.spec.status.state, InstanceState::Running | InstanceState::Draining | InstanceState::Parked);
        if !l.health.probe_due(stored_running, now) {
            return Ok(());
        }
        let healthy = self.probe(i.id, l.port(), l.health_path.as_deref()).await;
        let (health, verdict) = l.health.after_probe(healthy, stored_running, now, self.cfg.startup_timeout);
        let next = Local { health, ..l.clone() };
        match verdict {
            Verdict::Keep => {}
            Verdict::NowRunning => {
                tracing::info!(instance = i.id, port = l.port(), "instance is running");
                // What runs here and where it listens are this worker's to say, whatever its
                // cached copy of the instance holds (it may predate the launch's report).
                let running = InstanceTransition::Running {
                    ports: l.ports.clone(),
                    pid: l.handle.pid(),
                    container_id: l.handle.container_id(),
                    command: l.command.clone(),
                };
                self.report(i, running).await?;
            }
            Verdict::StartupTimedOut => {
                let tail = self.last_lines(i.id);
                self.drop_local(i.id, &l).await;
                let secs = self.cfg.startup_timeout.as_secs();
                let msg = format!("not healthy within the startup deadline ({secs} s); last log lines:\n{tail}");
                return self.fail(i, msg, None).await;
            }
            Verdict::Unhealthy => {
                let tail = self.last_lines(i.id);
                self.drop_local(i.id, &l).await;
                let msg = format!("health check failed {HEALTH_FAILURES} times in a row; last log lines:\n{tail}");
                return self.fail_run(i, msg, &l).await;
            }
        }
        self.local.lock().await.insert(i.id, next);
        Ok(())
    }

    /// Asks the engine's health path where the gateway will reach it: the worker's advertised
    /// address (what `{{worker_ip}}` renders to). Loopback is one more address of this host: an
    /// engine bound only there (a template saying `--host 127.0.0.1`) is healthy for this worker,
    /// though only a gateway on the same host reaches it.
    async fn probe(&self, instance_id: i64, port: u16, path: Option<&str>) -> bool {
        let Some(path) = path else { return true };
        let key = engine_api_key(&self.server_token, instance_id);
        for (n, host) in probe_hosts(&self.cfg.advertise_address).into_iter().enumerate() {
            let url = format!("http://{host}:{port}{path}");
            // The key goes only to the advertised address the engine was told to listen on: on
            // loopback another local user could be listening on the same port.
            let req = if n == 0 { self.http.get(&url).bearer_auth(&key) } else { self.http.get(&url) };
            if matches!(req.send().await, Ok(r) if r.status().is_success()) {
                return true;
            }
        }
        false
    }

    async fn drop_local(&self, id: i64, l: &Local) {
        self.runtime.stop(&l.handle, STOP_GRACE).await;
        self.runtime.release(id).await;
        self.local.lock().await.remove(&id);
    }

    /// The backend the instance was bound to (frozen on it at binding); for an instance bound by
    /// an older server, the stored backend of that name.
    async fn backend_of(&self, i: &ModelInstance) -> Result<InferenceBackendSpec, ClientError> {
        use crate::backends::catalog::{BackendChoice, choose_backend};
        let s = &i.spec;
        if let Some(frozen) = &s.binding.resolved_backend {
            return Ok(frozen.clone());
        }
        match choose_backend(Some(&s.run.backend), s.run.image_name.as_deref(), s.run.run_command.as_deref(), None, &[])
        {
            BackendChoice::Custom(backend) => Ok(*backend),
            BackendChoice::Stored(name) => self.backend(&name).await,
        }
    }

    async fn backend(&self, name: &str) -> Result<InferenceBackendSpec, ClientError> {
        let path = format!("/v2/inference-backends/backend_name/{}", urlencode(name));
        let record: crate::api::Record<InferenceBackendSpec> = self.client.get(&path).await?;
        Ok(record.spec)
    }

    /// Starts (or restarts) an instance: checks the model, renders the command, takes a port, runs it.
    async fn launch(&self, i: &ModelInstance, restart: bool) -> Result<(), ClientError> {
        let restart_count = i.spec.status.restart_count + u32::from(restart);
        let model_path = match self.hub_model(i, restart_count).await? {
            Some(path) => path,
            None => return Ok(()),
        };
        if restart {
            tracing::info!(instance = i.id, restart_count, "restarting instance");
        }
        let initializing = InstanceTransition::Initializing {
            restart_count,
            restarted_at: restart.then(Utc::now),
            download_progress: hub_source(i).map(|_| 1.0),
        };
        let i = &self.report(i, initializing).await?;
        if !model_path.exists() {
            let msg = format!("model_path {:?} does not exist on worker {}", model_path.display(), self.cfg.name);
            return self.fail(i, msg, Some(restart_count)).await;
        }
        let backend = match self.backend_of(i).await {
            Ok(b) => b,
            Err(e) => return self.fail(i, format!("backend {:?}: {e}", i.spec.run.backend), Some(restart_count)).await,
        };
        // A distributed instance also needs a rendezvous port for its subordinates.
        let wanted = if i.spec.subordinate_workers().is_empty() { 1 } else { 2 };
        let mut leases = Vec::new();
        while leases.len() < wanted {
            let taken: Vec<u16> = leases.iter().map(PortLease::port).collect();
            match self.take_port(&taken).await {
                Some(lease) => leases.push(lease),
                None => {
                    let (a, b) = self.cfg.port_range;
                    return self.fail(i, format!("no free port in {a}-{b}"), Some(restart_count)).await;
                }
            }
        }
        let ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        let port = ports[0];
        let rendezvous = ports.get(1).map(|&port| (Role::Main, port));
        let spec = match self.launch_spec(
            i,
            &backend,
            model_path,
            port,
            &i.spec.binding.gpu_indexes,
            rendezvous,
            restart_count,
        ) {
            Ok(spec) => spec,
            Err(e) => return self.fail(i, e.to_string(), Some(restart_count)).await,
        };
        let argv = self.shown_argv(i.id, &spec);
        let model_path_text = spec.model_path.display().to_string();
        let handle = match self.runtime.start(&spec).await {
            Ok(h) => h,
            Err(e) => return self.fail(i, e.to_string(), Some(restart_count)).await,
        };
        let local = Local {
            handle: handle.clone(),
            ports: ports.clone(),
            _leases: Arc::new(leases),
            health: Health::new(Instant::now()),
            health_path: backend.health_check_path.clone(),
            command: argv.clone(),
        };
        self.local.lock().await.insert(i.id, local);
        let starting = InstanceTransition::Starting {
            ports,
            pid: handle.pid(),
            container_id: handle.container_id(),
            command: argv,
            resolved_path: model_path_text,
        };
        self.report(i, starting).await.map(|_| ())
    }

    /// What to run for instance `i` on this worker: the backend's command rendered with this
    /// worker's port and GPUs, adapted to the worker's role when the instance is distributed
    /// (`rendezvous`: the role and the main worker's rendezvous port).
    #[allow(clippy::too_many_arguments)]
    fn launch_spec(
        &self,
        i: &ModelInstance,
        backend: &InferenceBackendSpec,
        model_path: PathBuf,
        port: u16,
        gpu_indexes: &[u32],
        rendezvous: Option<(Role, u16)>,
        restart_count: u32,
    ) -> Result<LaunchSpec, LaunchError> {
        let overrides = DeploymentOverrides {
            version: i.spec.run.backend_version.as_deref(),
            run_command: i.spec.run.run_command.as_deref(),
            env: Some(&i.spec.run.env),
            injected_parameters: &i.spec.binding.injected_backend_parameters,
            backend_parameters: &i.spec.run.backend_parameters,
        };
        let model_path_text = model_path.display().to_string();
        let data_dir = self.cfg.data_dir.join("cache").display().to_string();
        let api_key = engine_api_key(&self.server_token, i.id);
        let key_file = self.root.join(i.id.to_string()).join(KEY_FILE);
        let key_file_seen_as = match self.runtime.kind() {
            RuntimeKind::Container => API_KEY_FILE_IN_CONTAINER.to_string(),
            RuntimeKind::Process => key_file.display().to_string(),
        };
        let ctx = RenderContext {
            model_path: &model_path_text,
            model_name: &i.spec.model_name,
            port,
            worker_ip: &self.cfg.advertise_address,
            gpu_ids: gpu_indexes,
            data_dir: &data_dir,
            api_key: &api_key,
            api_key_file: &key_file_seen_as,
        };
        let rendered = render_command(backend, &overrides, &ctx)?;
        let mut files = Vec::new();
        if rendered.uses_key_file {
            write_key_file(&key_file, &api_key)
                .map_err(|e| LaunchError::KeyFile(format!("{}: {e}", key_file.display())))?;
            files.push((key_file, API_KEY_FILE_IN_CONTAINER.to_string()));
        }
        let image = i
            .spec
            .run
            .image_name
            .clone()
            .or_else(|| backend.version_configs.get(&rendered.version).and_then(|v| v.image_name.clone()));
        let mut launch = Launch { entrypoint: rendered.entrypoint, args: rendered.args, env: rendered.env };
        if let Some((role, rendezvous)) = rendezvous {
            let main_ip = match role {
                Role::Main => self.cfg.advertise_address.as_str(),
                Role::Follower { .. } => i.spec.binding.worker_ip.as_deref().unwrap_or_default(),
            };
            let topology = Topology {
                nodes: 1 + i.spec.subordinate_workers().len() as u32,
                main_ip,
                port: rendezvous,
                own_ip: &self.cfg.advertise_address,
            };
            launch = distributed::adapt(&i.spec.run.backend, role, &topology, launch);
        }
        let name = match rendezvous {
            Some((Role::Follower { rank }, _)) => format!("{}-part{rank}", i.spec.name),
            _ => i.spec.name.clone(),
        };
        if let Some(config) = &i.spec.binding.backend_config {
            let run_time = config_file::RunTime {
                ip: &self.cfg.advertise_address,
                port,
                devices: gpu_indexes.len() as u32,
                model_name: &i.spec.model_name,
                model_path: &model_path_text,
                multi_node_port: rendezvous.map(|(_, p)| p),
            };
            let text = serde_json::to_string_pretty(&config_file::finish_mindie(config.clone(), &run_time))
                .map_err(|e| LaunchError::Config(e.to_string()))?;
            let host = self.root.join(i.id.to_string()).join("backend-config.json");
            std::fs::create_dir_all(self.root.join(i.id.to_string()))
                .and_then(|()| std::fs::write(&host, text))
                .map_err(|e| LaunchError::Config(format!("cannot write {}: {e}", host.display())))?;
            let seen_as = match self.runtime.kind() {
                RuntimeKind::Container => config_file::MINDIE_CONFIG_PATH.to_string(),
                RuntimeKind::Process => host.display().to_string(),
            };
            launch.env.insert(config_file::MINDIE_CONFIG_ENV.into(), seen_as);
            files.push((host, config_file::MINDIE_CONFIG_PATH.to_string()));
        }
        if let Some(var) = self.cfg.gpu_type.as_deref().and_then(super::runtime::visible_devices_var)
            && !gpu_indexes.is_empty()
            && self.runtime.kind() == RuntimeKind::Process
        {
            // A process on the host: only this machine's vendor's runtime is told which devices to
            // use (a container is given its devices, numbered from 0 inside).
            let ids: Vec<String> = gpu_indexes.iter().map(u32::to_string).collect();
            launch.env.insert(var.to_string(), ids.join(","));
        }
        Ok(LaunchSpec {
            instance_id: i.id,
            instance_name: name,
            program: launch.entrypoint,
            args: launch.args,
            env: launch.env,
            image,
            model_path,
            port,
            gpu_indexes: gpu_indexes.to_vec(),
            log_path: logs::log_path(&self.root, i.id, restart_count),
            files,
        })
    }

    /// The last lines of an instance's log for an error message, the engine key masked.
    fn last_lines(&self, instance_id: i64) -> String {
        let key = engine_api_key(&self.server_token, instance_id);
        logs::last_lines(&self.root, instance_id, LOG_LINES_IN_ERRORS).replace(&key, API_KEY_MASK)
    }

    /// The command line as reported to the server: the engine key masked.
    fn shown_argv(&self, instance_id: i64, spec: &LaunchSpec) -> Vec<String> {
        let key = engine_api_key(&self.server_token, instance_id);
        spec.program.iter().chain(&spec.args).map(|a| a.replace(&key, API_KEY_MASK)).collect()
    }

    /// The path to load. For hub sources: starts the download (in the background, one per
    /// source), reports progress, and answers `None` until the files are there.
    async fn hub_model(&self, i: &ModelInstance, restart_count: u32) -> Result<Option<PathBuf>, ClientError> {
        let progress = match self.poll_download(i) {
            DownloadPoll::Ready(path) => return Ok(Some(path)),
            DownloadPoll::Failed(msg) => {
                self.fail(i, format!("download failed: {msg}"), Some(restart_count)).await?;
                return Ok(None);
            }
            DownloadPoll::Progress(p, bytes) => (p, bytes),
        };
        let (progress, bytes) = progress;
        let shown = i.spec.status.download_progress.unwrap_or(-1.0);
        if i.spec.status.state != InstanceState::Downloading || progress - shown >= 0.05 {
            let downloading =
                InstanceTransition::Downloading { progress: (progress * 100.0).round() / 100.0, bytes, restart_count };
            self.report(i, downloading).await?;
        }
        Ok(None)
    }

    /// Where the instance's model files stand on this worker; starts the download in the
    /// background the first time (the downloader keeps it to one per source).
    fn poll_download(&self, i: &ModelInstance) -> DownloadPoll {
        let Some(source) = hub_source(i) else { return DownloadPoll::Ready(PathBuf::from(&i.spec.model_path)) };
        let state = self.downloads.lock().ok().and_then(|d| d.get(&i.id).cloned());
        match state {
            Some(Download::Done(path)) => DownloadPoll::Ready(path),
            Some(Download::Failed(msg)) => {
                if let Ok(mut d) = self.downloads.lock() {
                    d.remove(&i.id);
                }
                DownloadPoll::Failed(msg)
            }
            Some(Download::Running(p, bytes)) => DownloadPoll::Progress(p, bytes),
            None => {
                if let Ok(mut d) = self.downloads.lock() {
                    d.insert(i.id, Download::Running(0.0, 0));
                }
                let (downloader, downloads, id) = (self.downloader.clone(), self.downloads.clone(), i.id);
                let on_progress = {
                    let downloads = downloads.clone();
                    Arc::new(move |p: f64, bytes: u64| {
                        if let Ok(mut d) = downloads.lock() {
                            d.insert(id, Download::Running(p, bytes));
                        }
                    })
                };
                tokio::spawn(async move {
                    let outcome = match downloader.ensure(&source, on_progress).await {
                        Ok(path) => Download::Done(path),
                        Err(e) => Download::Failed(e.to_string()),
                    };
                    if let Ok(mut d) = downloads.lock() {
                        d.insert(id, outcome);
                    }
                });
                DownloadPoll::Progress(0.0, 0)
            }
        }
    }

    /// A free port from the range, other than `also_taken` and those handed out already, held
    /// host-wide (other workers on this host skip it) until the lease is dropped.
    async fn take_port(&self, also_taken: &[u16]) -> Option<PortLease> {
        let mut used: BTreeSet<u16> = self.local.lock().await.values().flat_map(|l| l.ports.clone()).collect();
        used.extend(self.parts.lock().await.values().map(|p| p.port));
        used.extend(also_taken);
        ports::reserve(self.cfg.port_range, &used, &ports::lock_dir())
    }

    /// Marks a run that had started failed: a run that stayed healthy for `--backoff-reset` starts
    /// the backoff again from 10 s (as kubelet does).
    async fn fail_run(&self, i: &ModelInstance, message: String, l: &Local) -> Result<(), ClientError> {
        let healthy_long = l.health.healthy_for(self.cfg.backoff_reset, Instant::now());
        let step = backoff_step(i.spec.status.backoff_failures, healthy_long);
        self.fail_at_step(i, message, None, step).await
    }

    /// Marks an instance failed; schedules its restart if it restarts on error.
    async fn fail(&self, i: &ModelInstance, message: String, restart_count: Option<u32>) -> Result<(), ClientError> {
        self.fail_at_step(i, message, restart_count, backoff_step(i.spec.status.backoff_failures, false)).await
    }

    async fn fail_at_step(
        &self,
        i: &ModelInstance,
        message: String,
        restart_count: Option<u32>,
        step: u32,
    ) -> Result<(), ClientError> {
        let count = restart_count.unwrap_or(i.spec.status.restart_count);
        let next = i.spec.run.restart_on_error.then(|| at(backoff(step)));
        tracing::warn!(instance = i.id, %message, next_restart = ?next, "instance failed");
        let failed = InstanceTransition::Error {
            message: message.trim_end().to_string(),
            restart_count: count,
            next_restart_time: next,
            backoff_failures: step,
        };
        self.report(i, failed).await.map(|_| ())
    }

    /// Reports a transition of the instance; on a version conflict, re-reads the instance and sends
    /// it once more (the worker is the authority on what runs, and a transition carries only what
    /// it sets, nothing from a stale copy). Keeps the cache current.
    async fn report(&self, i: &ModelInstance, transition: InstanceTransition) -> Result<ModelInstance, ClientError> {
        let path = format!("/v2/model-instances/{}/status", i.id);
        let mut report = InstanceStatusReport { version: i.version, transition };
        let updated = match self.client.put::<_, ModelInstance>(&path, &report).await {
            Err(ClientError::Api(body)) if body.code == 409 => {
                let fresh: ModelInstance = self.client.get(&format!("/v2/model-instances/{}", i.id)).await?;
                report.version = fresh.version;
                self.client.put::<_, ModelInstance>(&path, &report).await?
            }
            other => other?,
        };
        self.remember(updated.clone()).await;
        Ok(updated)
    }

    /// Keeps the cache current with what the server answered, unless the watch brought newer.
    async fn remember(&self, updated: ModelInstance) {
        let mut map = self.cache.instances.lock().await;
        if map.get(&updated.id).is_none_or(|old| old.version <= updated.version) {
            map.insert(updated.id, updated);
        }
    }
}

/// Where to probe an engine on this host: the advertised address first, then loopback.
fn probe_hosts(advertise: &str) -> Vec<String> {
    let own = match advertise.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => advertise.to_owned(),
    };
    let mut hosts = vec![own];
    if !advertise.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        hosts.push("127.0.0.1".to_owned());
    }
    hosts
}

/// The instance's key file in its directory (`{{api_key_file}}`).
const KEY_FILE: &str = "engine-api-key";

/// Writes the engine key and a newline to a fresh file only the worker's user can read (0600):
/// an older file of any mode is replaced, never reused.
fn write_key_file(path: &std::path::Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(format!("{key}\n").as_bytes())
}

fn at(after: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(after).unwrap_or_default()
}

use crate::client::urlencode;

#[cfg(test)]
mod tests;
