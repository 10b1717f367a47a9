//! The container runtime over the Docker Engine API (Docker, or Podman's compatible socket) with bollard:
//! uses an image already present or pulls it with progress, runs the rendered command with host networking,
//! the model mounted read-only, GPUs as device requests and labels that let a restarted worker find its
//! containers again, and copies the container's stdout/stderr into the instance's log file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, CreateImageInfo, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{Handle, LaunchSpec, Liveness, RuntimeError};

/// Label holding the instance id a container runs.
pub const LABEL_INSTANCE_ID: &str = "ferrostack.instance-id";
/// Label holding the instance name (for people looking at `docker ps`).
pub const LABEL_INSTANCE_NAME: &str = "ferrostack.instance-name";
/// Label marking every container this runtime created.
pub const LABEL_MANAGED: &str = "ferrostack.managed";
/// Label holding the host path of the instance's log file, so a restarted worker can follow it again.
pub const LABEL_LOG_PATH: &str = "ferrostack.log-path";
/// Label holding the runtime's scope (see [`ContainerRuntime::with_scope`]), when it has one.
pub const LABEL_SCOPE: &str = "ferrostack.scope";

/// How long `connect` waits for each of the engine's two `/version` answers: long enough for a
/// podman service on a busy machine (its Go runtime answered in over 3 s while builds ran), short
/// enough that a worker pointed at a dead socket says so at start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leftover container (an earlier run's, or one found on release) gets to stop.
const LEFTOVER_GRACE: Duration = Duration::from_secs(10);
/// Timeout for ordinary engine requests (seconds; bollard's unit).
const REQUEST_TIMEOUT_S: u64 = 120;
/// Sockets tried, in order, when neither an explicit socket nor `DOCKER_HOST` is given.
const DEFAULT_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/podman/podman.sock"];

#[derive(Debug)]
pub struct ContainerRuntime {
    docker: Docker,
    /// Where the engine was reached (for messages).
    endpoint: String,
    scope: Option<String>,
    /// Log followers by container id.
    followers: Mutex<HashMap<String, JoinHandle<()>>>,
}

/// The engine's own words for an error: its message for HTTP errors and stream errors.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        EngineError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &EngineError) -> bool {
    matches!(e, EngineError::DockerResponseServerError { status_code: 404, .. })
}

/// The engine answered with JSON bollard cannot read. Podman 4 reports a container that has just exited
/// as `"Status": "stopped"` (until its cleanup makes it `exited`), a state Docker's API does not have.
fn is_decode_error(e: &EngineError) -> bool {
    matches!(e, EngineError::JsonDataError { .. } | EngineError::JsonSerdeError { .. })
}

/// Where to reach the engine: the explicit socket, else `DOCKER_HOST`, else the first default socket
/// that exists (Docker's, rootful Podman's, then rootless Podman's under `XDG_RUNTIME_DIR`).
// DOCKER_HOST and XDG_RUNTIME_DIR: the Docker/Podman clients' own convention for finding the engine.
#[allow(clippy::disallowed_methods)]
fn resolve_endpoint(socket: Option<PathBuf>) -> Result<String, RuntimeError> {
    if let Some(path) = socket {
        let text = path.to_string_lossy().into_owned();
        return Ok(if text.contains("://") { text } else { format!("unix://{text}") });
    }
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.trim().is_empty()
    {
        return Ok(host.trim().to_string());
    }
    let mut candidates: Vec<PathBuf> = DEFAULT_SOCKETS.iter().map(PathBuf::from).collect();
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&dir).join("podman/podman.sock"));
    }
    candidates.iter().find(|p| p.exists()).map(|p| format!("unix://{}", p.display())).ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        RuntimeError::Engine(format!(
            "no container engine socket found (DOCKER_HOST is unset; tried {})",
            tried.join(", ")
        ))
    })
}

/// `ferrostack-<id>-<name>`, keeping only the characters Docker allows in names.
pub fn container_name(instance_id: i64, instance_name: &str) -> String {
    let clean: String = instance_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .take(100)
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() { format!("ferrostack-{instance_id}") } else { format!("ferrostack-{instance_id}-{clean}") }
}

/// The host path to bind: a model directory as is; a model file's directory (so split GGUF parts and
/// sibling files resolve), unless that is `/`.
fn model_mount(model_path: &Path) -> Option<PathBuf> {
    if model_path.as_os_str().is_empty() || !model_path.is_absolute() || !model_path.exists() {
        return None;
    }
    if model_path.is_dir() {
        return Some(model_path.to_path_buf());
    }
    match model_path.parent() {
        Some(parent) if parent != Path::new("/") => Some(parent.to_path_buf()),
        _ => Some(model_path.to_path_buf()),
    }
}

/// The create-container body for a launch spec (pure, so it is tested without an engine).
fn create_body(spec: &LaunchSpec, image: &str, scope: Option<&str>) -> ContainerCreateBody {
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE_ID.to_string(), spec.instance_id.to_string()),
        (LABEL_INSTANCE_NAME.to_string(), spec.instance_name.clone()),
        (LABEL_LOG_PATH.to_string(), spec.log_path.to_string_lossy().into_owned()),
    ]);
    if let Some(scope) = scope {
        labels.insert(LABEL_SCOPE.to_string(), scope.to_string());
    }
    // A non-empty program replaces the image's entrypoint; otherwise the args follow the image's own.
    let (entrypoint, cmd) = if spec.program.is_empty() {
        (None, (!spec.args.is_empty()).then(|| spec.args.clone()))
    } else {
        (Some(spec.program.clone()), Some(spec.args.clone()))
    };
    let mut binds: Vec<String> =
        model_mount(&spec.model_path).map(|p| format!("{}:{}:ro", p.display(), p.display())).into_iter().collect();
    binds.extend(spec.files.iter().map(|(host, inside)| format!("{}:{inside}:ro", host.display())));
    let binds = (!binds.is_empty()).then_some(binds);
    let device_requests = (!spec.gpu_indexes.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(spec.gpu_indexes.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint,
        cmd,
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            // Host networking: the backend's `--port {{port}}` is reachable on the host as rendered.
            network_mode: Some("host".into()),
            binds,
            device_requests,
            // A tiny init as PID 1 forwards SIGTERM and reaps, so `stop` is honoured.
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One line for a pull progress message, e.g. `a1b2c3: Downloading 12.0/98.0 MB`.
fn describe_progress(info: &CreateImageInfo) -> Option<String> {
    let status = info.status.as_deref()?.trim();
    let mut line = match info.id.as_deref() {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status.to_string(),
    };
    if let Some(detail) = &info.progress_detail
        && let (Some(current), Some(total)) = (detail.current, detail.total)
        && total > 0
    {
        let mb = |b: i64| b as f64 / 1_000_000.0;
        line.push_str(&format!(" {:.1}/{:.1} MB", mb(current), mb(total)));
    }
    Some(line)
}

/// Appends one line to the instance's log (best effort: the log is for people).
fn append_line(log_path: &Path, line: &str) {
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(log_path).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        tracing::warn!(path = %log_path.display(), "cannot write to the instance log: {e}");
    }
}

fn now_unix() -> i32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i32).unwrap_or(0)
}

impl ContainerRuntime {
    /// Connects to the engine at `socket` (a path or a `unix://`/`tcp://` address), else `DOCKER_HOST`,
    /// else the default Docker or Podman socket, and checks within a few seconds that it answers
    /// `/version`, agreeing on the API version (Podman 4 speaks 1.41).
    pub async fn connect(socket: Option<PathBuf>) -> Result<ContainerRuntime, RuntimeError> {
        let endpoint = resolve_endpoint(socket)?;
        let fail = |what: &str, e: &EngineError| {
            RuntimeError::Engine(format!("cannot {what} {endpoint}: {}", engine_message(e)))
        };
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, version).map_err(|e| fail("reach", &e))?
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(&endpoint, REQUEST_TIMEOUT_S, version).map_err(|e| fail("reach", &e))?
        } else {
            return Err(RuntimeError::Engine(format!(
                "unsupported container engine address {endpoint:?}: use unix:// or tcp:// (no TLS)"
            )));
        };
        let docker = match tokio::time::timeout(PROBE_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(fail("query", &e)),
            Err(_) => {
                return Err(RuntimeError::Engine(format!(
                    "{endpoint} did not answer /version within {}s",
                    PROBE_TIMEOUT.as_secs()
                )));
            }
        };
        let info = tokio::time::timeout(PROBE_TIMEOUT, docker.version())
            .await
            .map_err(|_| RuntimeError::Engine(format!("{endpoint} stopped answering")))?
            .map_err(|e| fail("query", &e))?;
        let name = info
            .components
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "Docker Engine".into());
        let engine = format!(
            "{name} {} (API {})",
            info.version.as_deref().unwrap_or("?"),
            info.api_version.as_deref().unwrap_or("?")
        );
        tracing::info!(%endpoint, %engine, "connected to the container engine");
        Ok(ContainerRuntime { docker, endpoint, scope: None, followers: Mutex::new(HashMap::new()) })
    }

    /// Labels every container with `ferrostack.scope=<scope>` and only finds (and releases) containers with
    /// that label: lets several workers, or tests, share one engine.
    pub fn with_scope(mut self, scope: impl Into<String>) -> ContainerRuntime {
        self.scope = Some(scope.into());
        self
    }

    fn label_filters(&self, extra: &str) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_MANAGED}=true"), extra.to_string()];
        if let Some(scope) = &self.scope {
            labels.push(format!("{LABEL_SCOPE}={scope}"));
        }
        labels.retain(|l| !l.is_empty());
        HashMap::from([("label".to_string(), labels)])
    }

    /// Makes sure `image` is present: used as is when it is, pulled (progress to the log) when not.
    async fn ensure_image(&self, image: &str, log_path: &Path) -> Result<(), RuntimeError> {
        let image_err = |message: String| RuntimeError::Image { image: image.to_string(), message };
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(RuntimeError::Engine(format!("cannot inspect image {image:?}: {}", engine_message(&e))));
            }
        }
        tracing::info!(image, "pulling image");
        append_line(log_path, &format!("[ferrostack] pulling image {image}"));
        let options = CreateImageOptions { from_image: Some(image.to_string()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(options), None, None);
        let (mut last_line, mut last_progress) = (String::new(), None::<Instant>);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                let message = engine_message(&e);
                append_line(log_path, &format!("[ferrostack] pull of {image} failed: {message}"));
                image_err(message)
            })?;
            let Some(line) = describe_progress(&info) else { continue };
            // Byte counters update many times a second: keep one such line a second.
            let counter = info.progress_detail.as_ref().is_some_and(|d| d.total.is_some());
            if line == last_line || (counter && last_progress.is_some_and(|t| t.elapsed() < Duration::from_secs(1))) {
                continue;
            }
            if counter {
                last_progress = Some(Instant::now());
            }
            tracing::info!(image, "pull: {line}");
            append_line(log_path, &format!("[ferrostack] pull {image}: {line}"));
            last_line = line;
        }
        match self.docker.inspect_image(image).await {
            Ok(_) => {
                append_line(log_path, &format!("[ferrostack] pulled image {image}"));
                Ok(())
            }
            Err(e) => Err(image_err(format!("the pull ended but the image is not there: {}", engine_message(&e)))),
        }
    }

    async fn remove(&self, id_or_name: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id_or_name, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Copies the container's stdout and stderr (from `since`, unix seconds; 0 = everything) into
    /// `log_path` until the container stops.
    async fn follow_logs(&self, id: &str, log_path: PathBuf, since: i32) {
        let docker = self.docker.clone();
        let container = id.to_string();
        let task = tokio::spawn(async move {
            let options = LogsOptions { follow: true, stdout: true, stderr: true, since, ..Default::default() };
            let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %log_path.display(), "cannot open the instance log: {e}");
                    return;
                }
            };
            let mut stream = docker.logs(&container, Some(options));
            while let Some(item) = stream.next().await {
                let bytes = match item {
                    Ok(
                        LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message },
                    ) => message,
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => {
                        tracing::debug!(container, "log stream ended: {}", engine_message(&e));
                        break;
                    }
                };
                if let Err(e) = file.write_all(&bytes) {
                    tracing::warn!(path = %log_path.display(), "cannot write to the instance log: {e}");
                    break;
                }
            }
        });
        if let Some(old) = self.followers.lock().await.insert(id.to_string(), task) {
            old.abort();
        }
    }

    /// Ends the log follower of a container, after letting it drain what the engine still sends.
    async fn unfollow(&self, id: &str) {
        let Some(mut task) = self.followers.lock().await.remove(id) else { return };
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            task.abort();
        }
    }

    pub async fn start(&self, spec: &LaunchSpec) -> Result<Handle, RuntimeError> {
        let program = spec.program.first().cloned().unwrap_or_else(|| "(the image's entrypoint)".into());
        let start_err = |message: String| RuntimeError::Start { program: program.clone(), message };
        let image = spec
            .image
            .as_deref()
            .filter(|i| !i.trim().is_empty())
            .ok_or_else(|| start_err("the container runtime needs an image, and none is set".into()))?;
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.ensure_image(image, &spec.log_path).await?;

        let name = container_name(spec.instance_id, &spec.instance_name);
        // A container left from an earlier run of this instance holds the name: it goes, stopped
        // first (SIGTERM, then SIGKILL after the grace), never removed by force while it runs.
        self.stop_container(&name, LEFTOVER_GRACE).await;
        self.remove(&name).await.map_err(|e| {
            RuntimeError::Engine(format!("cannot remove the stale container {name}: {}", engine_message(&e)))
        })?;
        let body = create_body(spec, image, self.scope.as_deref());
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created =
            self.docker.create_container(Some(options), body).await.map_err(|e| {
                start_err(format!("cannot create container {name} from {image}: {}", engine_message(&e)))
            })?;
        let id = created.id;
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            tracing::warn!(container = name, "engine warning: {warning}");
            append_line(&spec.log_path, &format!("[ferrostack] engine warning: {warning}"));
        }
        if let Err(e) = self.docker.start_container(&id, None).await {
            let message = format!("cannot start container {name} from {image}: {}", engine_message(&e));
            if let Err(e) = self.remove(&id).await {
                tracing::warn!(container = name, "cannot remove the container that failed to start: {e}");
            }
            return Err(start_err(message));
        }
        tracing::info!(container = name, id, image, "container started");
        self.follow_logs(&id, spec.log_path.clone(), 0).await;
        Ok(Handle::Container { id })
    }

    pub async fn liveness(&self, handle: &Handle) -> Liveness {
        let Handle::Container { id } = handle else {
            return Liveness::Exited("not a container".into());
        };
        let inspected = match self.docker.inspect_container(id, None).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Liveness::Exited(format!("container {id} is gone")),
            Err(e) if is_decode_error(&e) => return self.exit_status(id).await,
            Err(e) => return Liveness::Exited(format!("cannot inspect container {id}: {}", engine_message(&e))),
        };
        let state = inspected.state.unwrap_or_default();
        if state.running == Some(true) {
            return Liveness::Running;
        }
        let mut message = match state.exit_code {
            Some(code) => format!("exited with status {code}"),
            None => "exited".to_string(),
        };
        if state.oom_killed == Some(true) {
            message.push_str(" (killed: out of memory)");
        }
        if let Some(error) = state.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            message.push_str(": ");
            message.push_str(error);
        }
        Liveness::Exited(message)
    }

    /// How a container that is not running ended, from `wait` (used where `inspect` cannot be read: only
    /// states other than running are unknown to bollard, so the container is known not to run).
    async fn exit_status(&self, id: &str) -> Liveness {
        let options = WaitContainerOptions { condition: "not-running".into() };
        let mut wait = self.docker.wait_container(id, Some(options));
        match tokio::time::timeout(Duration::from_secs(2), wait.next()).await {
            Ok(Some(Ok(response))) => Liveness::Exited(format!("exited with status {}", response.status_code)),
            Ok(Some(Err(EngineError::DockerContainerWaitError { error, code }))) => match error.trim() {
                "" => Liveness::Exited(format!("exited with status {code}")),
                error => Liveness::Exited(format!("exited with status {code}: {error}")),
            },
            Ok(Some(Err(e))) if is_not_found(&e) => Liveness::Exited(format!("container {id} is gone")),
            Ok(Some(Err(e))) => Liveness::Exited(format!("container {id} is not running: {}", engine_message(&e))),
            Ok(None) => Liveness::Exited(format!("container {id} is not running")),
            // `wait` blocks while it runs, yet `inspect` showed a state other than running: report that.
            Err(_) => Liveness::Exited(format!("container {id} is in a state the engine API does not define")),
        }
    }

    /// Stops the container (the engine sends SIGTERM, then SIGKILL after `grace`) and removes it.
    pub async fn stop(&self, handle: &Handle, grace: Duration) {
        let Handle::Container { id } = handle else { return };
        self.stop_container(id, grace).await;
        self.unfollow(id).await;
        if let Err(e) = self.remove(id).await {
            tracing::warn!(container = id, "cannot remove container: {}", engine_message(&e));
        }
    }

    /// Asks the engine to stop a container: SIGTERM (its stop signal), SIGKILL after `grace`.
    async fn stop_container(&self, id: &str, grace: Duration) {
        let t = grace.as_secs_f64().ceil() as i32;
        let options = StopContainerOptions { t: Some(t), ..Default::default() };
        // The engine answers once the container is down: wait longer than the grace.
        let docker = self.docker.clone().with_timeout(grace + Duration::from_secs(30));
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => {}
            // 304: already stopped; 404: already gone.
            Err(EngineError::DockerResponseServerError { status_code: 304 | 404, .. }) => {}
            Err(e) => tracing::warn!(container = id, "cannot stop container: {}", engine_message(&e)),
        }
    }

    /// Running containers this runtime (in this scope) started: (instance id, handle). Each one's log is
    /// followed again from now on, into the log file recorded in its labels.
    pub async fn managed(&self) -> Vec<(i64, Handle)> {
        let options = ListContainersOptions { all: false, filters: Some(self.label_filters("")), ..Default::default() };
        let containers = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(endpoint = self.endpoint, "cannot list containers: {}", engine_message(&e));
                return Vec::new();
            }
        };
        let mut found = Vec::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let (Some(id), Some(instance)) = (c.id, labels.get(LABEL_INSTANCE_ID).and_then(|v| v.parse::<i64>().ok()))
            else {
                continue;
            };
            let following = self.followers.lock().await.get(&id).is_some_and(|t| !t.is_finished());
            if !following && let Some(path) = labels.get(LABEL_LOG_PATH).filter(|p| !p.is_empty()) {
                self.follow_logs(&id, PathBuf::from(path), now_unix()).await;
            }
            found.push((instance, Handle::Container { id }));
        }
        found.sort_by_key(|(instance, _)| *instance);
        found
    }

    /// Removes whatever container is left for `instance_id`, running or not.
    pub async fn release(&self, instance_id: i64) {
        let filters = self.label_filters(&format!("{LABEL_INSTANCE_ID}={instance_id}"));
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let mut attempt = 0;
        let containers = loop {
            attempt += 1;
            match self.docker.list_containers(Some(options.clone())).await {
                Ok(list) => break list,
                // Podman's transient "stopped" state (see is_decode_error) passes within a second or so.
                Err(e) if is_decode_error(&e) && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(instance_id, "cannot list containers to release: {}", engine_message(&e));
                    return;
                }
            }
        };
        for id in containers.into_iter().filter_map(|c| c.id) {
            // Stopped (a no-op for one that is) before it is removed.
            self.stop(&Handle::Container { id }, LEFTOVER_GRACE).await;
        }
    }
}

#[cfg(test)]
mod tests;
