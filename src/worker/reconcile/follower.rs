//! The subordinate side of distributed instances. A part starts only once the main worker's
//! server is starting (its rendezvous port is known), stops whenever the main server is not up
//! (so a restart of the instance restarts every part), and reports its own state into the
//! instance's `distributed_servers`; a failed part makes the main worker fail the instance.

use std::collections::BTreeSet;

use super::{DownloadPoll, PortLease, Reconciler, STOP_GRACE};
use crate::api::{InstanceState, ModelInstance, SubordinateStatusReport, SubordinateWorker, WAITING_FOR_MAIN};
use crate::backends::distributed::Role;
use crate::client::ClientError;
use crate::worker::logs;
use crate::worker::runtime::{Handle, Liveness};

/// A part this worker runs.
#[derive(Debug, Clone)]
pub(in crate::worker) struct Part {
    pub handle: Handle,
    pub port: u16,
    /// The host-wide hold on `port` (none for an adopted part).
    pub _lease: Option<std::sync::Arc<PortLease>>,
    /// The instance's restart count when the part started: a newer one means start again.
    pub main_restarts: u32,
    /// The part's command as launched (empty for a part adopted after a restart): sent with every
    /// running report, so a first report refused as stale does not leave it unknown.
    pub command: Vec<String>,
}

/// What a part reports.
struct PartReport {
    state: InstanceState,
    message: Option<String>,
    handle: Option<Handle>,
    command: Option<Vec<String>>,
}

impl PartReport {
    fn state(state: InstanceState, message: impl Into<Option<String>>) -> PartReport {
        PartReport { state, message: message.into(), handle: None, command: None }
    }
}

impl Reconciler {
    /// One pass over the instances this worker is a subordinate of.
    pub(super) async fn tick_parts(&self) {
        let mine: Vec<ModelInstance> = self
            .cache
            .instances
            .lock()
            .await
            .values()
            .filter(|i| i.spec.subordinate(self.worker_id).is_some())
            .cloned()
            .collect();
        let present: BTreeSet<i64> = mine.iter().map(|i| i.id).collect();
        let gone: Vec<(i64, Part)> = {
            let mut parts = self.parts.lock().await;
            let ids: Vec<i64> = parts.keys().filter(|id| !present.contains(id)).copied().collect();
            ids.into_iter().filter_map(|id| parts.remove(&id).map(|p| (id, p))).collect()
        };
        for (id, part) in gone {
            tracing::info!(instance = id, "distributed instance gone: stopping this worker's part");
            self.runtime.stop(&part.handle, STOP_GRACE).await;
            self.runtime.release(id).await;
            let _ = std::fs::remove_dir_all(self.root.join(id.to_string()));
        }
        for i in mine {
            if let Err(e) = self.step_part(&i).await {
                tracing::warn!(instance = i.id, error = %e, "reconciling a distributed part failed");
            }
            logs::enforce_bounds(&self.root, i.id);
        }
    }

    async fn step_part(&self, i: &ModelInstance) -> Result<(), ClientError> {
        let subordinates = i.spec.subordinate_workers();
        let Some(index) = subordinates.iter().position(|s| s.worker_id == self.worker_id) else { return Ok(()) };
        let me = &subordinates[index];
        let rank = index as u32 + 1;
        // Unreachable is the server's view of the main worker's heartbeat, not of the server
        // process: a network blip must not tear down a running instance.
        let main_up = matches!(
            i.spec.status.state,
            InstanceState::Starting | InstanceState::Running | InstanceState::Unreachable
        ) && i.spec.status.ports.len() >= 2
            && i.spec.binding.worker_ip.is_some();
        // Not started yet in this run of the instance (the server resets parts on a new run).
        let fresh = matches!(me.state, InstanceState::Scheduled | InstanceState::Pending | InstanceState::Downloading);
        let part = self.parts.lock().await.get(&i.id).cloned();
        match part {
            Some(p) if !main_up || p.main_restarts != i.spec.status.restart_count => {
                tracing::info!(instance = i.id, "the main server is not up (or restarted): stopping this part");
                self.stop_part(i.id, &p).await;
                if fresh {
                    Ok(())
                } else {
                    self.report_part(i, PartReport::state(InstanceState::Scheduled, waiting())).await
                }
            }
            Some(p) => {
                if let Liveness::Exited(how) = self.runtime.liveness(&p.handle).await {
                    let tail = self.last_lines(i.id);
                    self.stop_part(i.id, &p).await;
                    let message = format!("rank {rank} {how}; last log lines:\n{tail}");
                    return self.fail_part(i, message).await;
                }
                if me.state != InstanceState::Running {
                    let command = (!p.command.is_empty()).then(|| p.command.clone());
                    let report = PartReport {
                        handle: Some(p.handle),
                        command,
                        ..PartReport::state(InstanceState::Running, None)
                    };
                    return self.report_part(i, report).await;
                }
                Ok(())
            }
            None if !main_up => {
                // Left over from before a worker restart while the instance restarts: stop it.
                if let Some(handle) = self.managed_part(i.id).await {
                    self.runtime.stop(&handle, STOP_GRACE).await;
                    self.runtime.release(i.id).await;
                }
                // Fetch the model files meanwhile: the main server's startup deadline runs while
                // the parts get ready.
                match (fresh, self.poll_download(i)) {
                    (true, DownloadPoll::Progress(p, _)) => self.report_download(i, me, p).await,
                    (true, DownloadPoll::Failed(msg)) => self.fail_part(i, format!("download failed: {msg}")).await,
                    _ => Ok(()),
                }
            }
            None if fresh => match self.managed_part(i.id).await {
                // A worker restart between starting the part and reporting it.
                Some(handle) => self.adopt_part(i, handle).await,
                None => self.launch_part(i, me, rank).await,
            },
            // The main worker fails the instance for this; the next run starts every part again.
            None if me.state == InstanceState::Error => Ok(()),
            None => match self.managed_part(i.id).await {
                Some(handle) => self.adopt_part(i, handle).await,
                // Started in this run but gone here (the worker restarted without it, or its exit
                // was never reported): the instance is broken, and must restart whole.
                None => {
                    let message = format!("rank {rank}'s process is gone from worker {}", self.cfg.name);
                    self.fail_part(i, message).await
                }
            },
        }
    }

    async fn managed_part(&self, id: i64) -> Option<Handle> {
        self.runtime.managed().await.into_iter().find(|(i, _)| *i == id).map(|(_, h)| h)
    }

    async fn adopt_part(&self, i: &ModelInstance, handle: Handle) -> Result<(), ClientError> {
        tracing::info!(instance = i.id, "reattached to this worker's distributed part");
        let part =
            Part { handle, port: 0, _lease: None, main_restarts: i.spec.status.restart_count, command: Vec::new() };
        self.parts.lock().await.insert(i.id, part);
        Ok(())
    }

    async fn report_download(&self, i: &ModelInstance, me: &SubordinateWorker, p: f64) -> Result<(), ClientError> {
        let message = format!("downloading the model files: {:.0} %", p * 100.0);
        if me.state == InstanceState::Downloading && me.state_message.as_deref() == Some(message.as_str()) {
            return Ok(());
        }
        self.report_part(i, PartReport::state(InstanceState::Downloading, message)).await
    }

    async fn launch_part(&self, i: &ModelInstance, me: &SubordinateWorker, rank: u32) -> Result<(), ClientError> {
        let model_path = match self.poll_download(i) {
            DownloadPoll::Ready(path) => path,
            DownloadPoll::Progress(p, _) => return self.report_download(i, me, p).await,
            DownloadPoll::Failed(msg) => return self.fail_part(i, format!("download failed: {msg}")).await,
        };
        if !model_path.exists() {
            let message = format!("model_path {:?} does not exist on worker {}", model_path.display(), self.cfg.name);
            return self.fail_part(i, message).await;
        }
        let backend = match self.backend_of(i).await {
            Ok(b) => b,
            Err(e) => return self.fail_part(i, format!("backend {:?}: {e}", i.spec.run.backend)).await,
        };
        let Some(lease) = self.take_port(&[]).await else {
            let (a, b) = self.cfg.port_range;
            return self.fail_part(i, format!("no free port in {a}-{b}")).await;
        };
        let port = lease.port();
        let rendezvous = i.spec.status.ports.get(1).copied().unwrap_or_default();
        let role = Role::Follower { rank };
        let spec = match self.launch_spec(
            i,
            &backend,
            model_path,
            port,
            &me.gpu_indexes,
            Some((role, rendezvous)),
            i.spec.status.restart_count,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                return self.fail_part(i, e.to_string()).await;
            }
        };
        let argv = self.shown_argv(i.id, &spec);
        tracing::info!(instance = i.id, rank, command = ?argv, "starting this worker's distributed part");
        let handle = match self.runtime.start(&spec).await {
            Ok(h) => h,
            Err(e) => return self.fail_part(i, e.to_string()).await,
        };
        let _lease = Some(std::sync::Arc::new(lease));
        let part = Part {
            handle: handle.clone(),
            port,
            _lease,
            main_restarts: i.spec.status.restart_count,
            command: argv.clone(),
        };
        self.parts.lock().await.insert(i.id, part);
        let report =
            PartReport { handle: Some(handle), command: Some(argv), ..PartReport::state(InstanceState::Running, None) };
        self.report_part(i, report).await
    }

    async fn stop_part(&self, id: i64, part: &Part) {
        self.runtime.stop(&part.handle, STOP_GRACE).await;
        self.runtime.release(id).await;
        self.parts.lock().await.remove(&id);
    }

    async fn fail_part(&self, i: &ModelInstance, message: String) -> Result<(), ClientError> {
        self.report_part(i, PartReport::state(InstanceState::Error, message)).await
    }

    /// Writes this worker's entry in the instance's `distributed_servers`; keeps the cache current.
    /// A report about an earlier run of the instance is refused (409) and dropped: the next pass
    /// sees the current run.
    async fn report_part(&self, i: &ModelInstance, r: PartReport) -> Result<(), ClientError> {
        let body = SubordinateStatusReport {
            restart_count: i.spec.status.restart_count,
            state: r.state,
            state_message: r.message.map(|m| m.trim_end().to_string()),
            pid: r.handle.as_ref().and_then(Handle::pid),
            container_id: r.handle.as_ref().and_then(Handle::container_id),
            command: r.command,
        };
        let path = format!("/v2/model-instances/{}/subordinate-status", i.id);
        let updated: ModelInstance = match self.client.put(&path, &body).await {
            Err(ClientError::Api(e)) if e.code == 409 => return Ok(()),
            other => other?,
        };
        self.remember(updated).await;
        Ok(())
    }
}

fn waiting() -> String {
    WAITING_FOR_MAIN.into()
}
