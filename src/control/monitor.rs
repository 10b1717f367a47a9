//! Worker liveness: heartbeats renew an in-memory lease (no database write per beat); a steppable
//! monitor turns workers whose lease ran out `unreachable` when their own API does not answer
//! either (a network fault, a dead host) or `not_ready` when it does (the agent is stuck), and their
//! instances `unreachable`, except running ones whose engine still answers: silence alone does not
//! cut serving (static stability; the gateway's failures take an instance out). A monitor that
//! just took the lead or got its database back gives every worker a full grace first. The next
//! beat turns them `ready` again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};

use crate::api::{InstanceState, ModelInstanceSpec, Record, WorkerSpec, WorkerState, WorkerStatus};
use crate::control::leader::Leadership;
use crate::db::{Db, DbError, instance_columns};

/// Last heartbeat per worker id, and the workers heard since the last time this server shared
/// what it heard with the others (`share_beats`).
#[derive(Debug, Default, Clone)]
pub struct Leases(Arc<Mutex<HashMap<i64, Instant>>>, Arc<Mutex<HashSet<i64>>>);

impl Leases {
    pub fn renew(&self, worker_id: i64, now: Instant) {
        self.seen_at_least(worker_id, now);
        if let Ok(mut heard) = self.1.lock() {
            heard.insert(worker_id);
        }
    }

    /// Moves a worker's last beat forward to `at` (a beat another server heard); never back.
    fn seen_at_least(&self, worker_id: i64, at: Instant) {
        if let Ok(mut map) = self.0.lock() {
            let last = map.entry(worker_id).or_insert(at);
            *last = (*last).max(at);
        }
    }

    fn take_heard(&self) -> Vec<i64> {
        self.1.lock().map(|mut heard| heard.drain().collect()).unwrap_or_default()
    }

    /// Writes, every `SHARE_EVERY`, which workers this server heard since the last time (one
    /// statement), for the leader's monitor on whichever server leads.
    pub fn share_beats(&self, db: Db, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let leases = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SHARE_EVERY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let heard = leases.take_heard();
                if let Err(e) = db.record_beats(&heard).await {
                    tracing::warn!(error = %e, workers = heard.len(), "cannot share heartbeats with the other servers");
                    if let Ok(mut again) = leases.1.lock() {
                        again.extend(heard);
                    }
                }
            }
        });
    }

    /// Takes in the beats every server shared (the leader, before each pass).
    async fn merge_shared(&self, db: &Db, within: Duration, now: Instant) -> Result<(), DbError> {
        let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        for (worker_id, age_ms) in db.recent_beats(within_ms).await? {
            let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
            self.seen_at_least(worker_id, now.checked_sub(age).unwrap_or(now));
        }
        Ok(())
    }

    /// The last beat, recording `now` for a worker never seen (a restarted server gives each
    /// known worker a full grace period).
    fn last_seen(&self, worker_id: i64, now: Instant) -> Instant {
        match self.0.lock() {
            Ok(mut map) => *map.entry(worker_id).or_insert(now),
            Err(_) => now,
        }
    }

    pub fn forget(&self, worker_id: i64) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&worker_id);
        }
    }

    /// Gives every known worker a full grace from `now` (see [`grace_anew`]).
    fn grace_anew(&self, now: Instant) {
        if let Ok(mut map) = self.0.lock() {
            map.values_mut().for_each(|seen| *seen = (*seen).max(now));
        }
    }
}

/// A monitor that has not made a pass for this long was not leading, or could not reach the
/// database: it cannot tell the beats it missed from beats that were not sent.
pub const PASS_GAP: Duration = Duration::from_secs(5);

/// Whether this pass gives every worker a full grace before judging silence: the first pass of
/// this server's monitor, or the first after a gap (it just took the lead, or its database came
/// back). Silence it cannot explain — its own, or the database's — never takes a worker down.
pub fn grace_anew(since_last_pass: Option<Duration>) -> bool {
    since_last_pass.is_none_or(|d| d > PASS_GAP)
}

/// The latest status each worker reported, with its time: the fast-moving figures that are not
/// written to the database (see `WorkerStatus::steady`) are served from here.
#[derive(Debug, Default, Clone)]
pub struct LiveStatus(Arc<Mutex<HashMap<i64, Reported>>>);

/// A status as reported, and when.
type Reported = (WorkerStatus, DateTime<Utc>);

impl LiveStatus {
    pub fn put(&self, worker_id: i64, status: WorkerStatus, at: DateTime<Utc>) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(worker_id, (status, at));
        }
    }

    pub fn forget(&self, worker_id: i64) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&worker_id);
        }
    }

    /// The worker with its latest reported status, when that is newer than the stored one.
    pub fn overlay(&self, mut worker: Record<WorkerSpec>) -> Record<WorkerSpec> {
        let Ok(map) = self.0.lock() else { return worker };
        // The stored status is the steady part the report had (else it would have been written),
        // unless the row changed since: then the stored one wins until the next report.
        if let Some((status, at)) = map.get(&worker.id)
            && worker.spec.heartbeat_time.is_none_or(|t| t <= *at)
            && status.gpu_devices.len() == worker.spec.status.gpu_devices.len()
        {
            worker.spec.status = status.clone();
            worker.spec.heartbeat_time = Some(*at);
        }
        worker
    }
}

impl LiveStatus {
    /// Calls `f` with each worker's status: the latest reported when it is newer than the stored
    /// row (as [`LiveStatus::overlay`] decides), else the stored one. Nothing is cloned.
    pub fn each_latest(&self, workers: &[Record<WorkerSpec>], mut f: impl FnMut(&WorkerStatus)) {
        let map = self.0.lock().ok();
        for w in workers {
            let live = map.as_ref().and_then(|m| m.get(&w.id)).filter(|(status, at)| {
                w.spec.heartbeat_time.is_none_or(|t| t <= *at)
                    && status.gpu_devices.len() == w.spec.status.gpu_devices.len()
            });
            f(live.map_or(&w.spec.status, |(status, _)| status));
        }
    }

    /// GPU `index` of worker `worker_id` as last reported, when that report is newer than the
    /// stored row (`heartbeat_time`) and still lists the same number of GPUs.
    pub fn gpu(
        &self,
        worker_id: i64,
        heartbeat_time: Option<DateTime<Utc>>,
        stored_gpus: usize,
        index: u32,
    ) -> Option<crate::api::GpuDevice> {
        let map = self.0.lock().ok()?;
        let (status, at) = map.get(&worker_id)?;
        if heartbeat_time.is_some_and(|t| t > *at) || status.gpu_devices.len() != stored_gpus {
            return None;
        }
        status.gpu_devices.iter().find(|g| g.index == index).cloned()
    }
}

/// How a silent worker's host answered the monitor's probe of its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The worker serves no API (no address or port): nothing to ask.
    NoApi,
    /// The agent's API answered (it is alive but not heartbeating: stuck).
    Answered,
    /// The host refused the connection (it is there, the agent is not).
    Refused,
    /// Connected, but the agent did not answer in time (hung).
    Hung,
    /// No connection within a second (a cut link, a dead machine).
    NoRoute,
}

/// Whether the monitor marks a worker down this pass: it is ready and has been silent for longer
/// than the grace period. A worker already down stays as it is until its next heartbeat.
pub fn goes_down(state: WorkerState, silent_for: Duration, grace: Duration) -> bool {
    state == WorkerState::Ready && silent_for > grace
}

/// What a silent worker becomes: `Unreachable` when its host does not answer at all, else
/// `NotReady` (the host is there; the agent stopped, hangs, or serves no API); and the words the
/// state message adds.
pub fn silent_state(probe: Probe) -> (WorkerState, &'static str) {
    match probe {
        Probe::NoRoute => (WorkerState::Unreachable, " and its host does not answer"),
        Probe::NoApi | Probe::Answered | Probe::Refused | Probe::Hung => (WorkerState::NotReady, ""),
    }
}

/// Whether a heartbeat makes a worker `ready` again (one in maintenance stays as it is).
pub fn back_on_heartbeat(state: WorkerState, maintenance: bool) -> bool {
    matches!(state, WorkerState::NotReady | WorkerState::Unreachable) && !maintenance
}

/// Asks a silent worker's own API whether its host still answers (1 s to connect).
async fn probe(http: &reqwest::Client, worker: &WorkerSpec) -> Probe {
    if worker.port == 0 || worker.ip.is_empty() {
        return Probe::NoApi;
    }
    let host = if worker.ip.contains(':') { format!("[{}]", worker.ip) } else { worker.ip.clone() };
    match http.get(format!("http://{host}:{}/healthz", worker.port)).send().await {
        Ok(_) => Probe::Answered,
        Err(e) if refused(&e) => Probe::Refused,
        Err(e) if !e.is_connect() => Probe::Hung,
        Err(_) => Probe::NoRoute,
    }
}

/// Whether the connection was refused (the host is there, nothing listens).
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = err.source();
    }
    false
}

/// What becomes of an instance of a silent worker (`engine_answers`: whether the engine answered
/// the monitor's probe at the instance's address; None when it was not asked). Silence alone does
/// not cut serving: a running instance whose engine answers stays running and routed (the
/// gateway's own failures take it out, passive health); one whose engine does not answer becomes
/// unreachable, and so do the states the worker itself must move on (it is not there to).
pub fn on_silent_worker(state: InstanceState, engine_answers: Option<bool>) -> Option<InstanceState> {
    match (state, engine_answers) {
        (InstanceState::Running, Some(true)) => None,
        (s, _) if held_by_worker(s) => Some(InstanceState::Unreachable),
        _ => None,
    }
}

/// Asks an engine at `ip:port` whether it answers HTTP at all (any status: a keyed engine answers
/// 401 without its key), within the monitor's client's deadlines.
async fn engine_answers(http: &reqwest::Client, ip: Option<&str>, port: Option<u16>) -> bool {
    let (Some(ip), Some(port)) = (ip.filter(|ip| !ip.is_empty()), port.filter(|p| *p != 0)) else { return false };
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    http.get(format!("http://{host}:{port}/health")).send().await.is_ok()
}

/// Instance states that mean "the worker is looking after it"; they become unreachable with it.
pub fn held_by_worker(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Initializing | InstanceState::Downloading | InstanceState::Starting | InstanceState::Running
    )
}

pub struct WorkerMonitor {
    pub db: Db,
    pub leases: Leases,
    pub grace: Duration,
    /// Whether other servers may hear workers too (PostgreSQL): merge their shared beats.
    pub shared_beats: bool,
    /// Asks a silent worker's own API whether its host still answers (1 s timeout), and the
    /// engines of its running instances whether they do.
    pub http: reqwest::Client,
    /// Passes made, for the engines of silent workers asked every [`RECHECK_EVERY_PASSES`].
    passes: std::sync::atomic::AtomicU64,
}

/// How often (in passes, one a second) the engines of a worker that stays silent are asked again.
const RECHECK_EVERY_PASSES: u64 = 5;

impl WorkerMonitor {
    pub fn new(db: Db, leases: Leases, grace: Duration) -> WorkerMonitor {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_default();
        let shared_beats = db.dialect() == crate::db::Dialect::Postgres;
        WorkerMonitor { db, leases, grace, shared_beats, http, passes: Default::default() }
    }
}

/// How often each server shares the heartbeats it heard (several servers only).
pub const SHARE_EVERY: Duration = Duration::from_secs(2);

impl WorkerMonitor {
    /// One pass: workers past their grace go unreachable or not_ready, and their live instances
    /// unreachable.
    pub async fn tick(&self, now: Instant) -> Result<usize, DbError> {
        if self.shared_beats {
            self.leases.merge_shared(&self.db, self.grace + SHARE_EVERY, now).await?;
        }
        let mut changed = 0;
        let pass = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for worker in self.db.all::<WorkerSpec>().await? {
            let silent_for = now.saturating_duration_since(self.leases.last_seen(worker.id, now));
            if !goes_down(worker.spec.state, silent_for, self.grace) {
                // A worker still silent: its engines that answered are asked again now and then.
                if matches!(worker.spec.state, WorkerState::NotReady | WorkerState::Unreachable)
                    && silent_for > self.grace
                    && pass.is_multiple_of(RECHECK_EVERY_PASSES)
                {
                    self.silent_instances(&worker.spec.name, worker.id).await?;
                }
                continue;
            }
            let grace = self.grace.as_secs();
            let (new_state, why) = silent_state(probe(&self.http, &worker.spec).await);
            let res = self
                .db
                .modify::<WorkerSpec, DbError, _>(worker.id, Some(worker.version), |w| {
                    w.state = new_state;
                    w.state_message = Some(format!("no heartbeat for more than {grace} s{why}"));
                    Ok(vec![])
                })
                .await;
            match res {
                Ok(_) => changed += 1,
                Err(DbError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
            tracing::warn!(worker = %worker.spec.name, state = ?new_state, "worker stopped heartbeating");
            self.silent_instances(&worker.spec.name, worker.id).await?;
            // Its parts of distributed instances: the part is unreachable (the main worker decides
            // whether the instance still serves; its health check says).
            for instance in self.db.instances_with_subordinate(worker.id).await? {
                if !instance.spec.subordinate(worker.id).is_some_and(|p| held_by_worker(p.state)) {
                    continue;
                }
                let res = self
                    .db
                    .modify::<ModelInstanceSpec, DbError, _>(instance.id, None, |i| {
                        let parts =
                            i.binding.distributed_servers.iter_mut().flat_map(|d| d.subordinate_workers.iter_mut());
                        for part in parts.filter(|p| p.worker_id == worker.id && held_by_worker(p.state)) {
                            part.state = InstanceState::Unreachable;
                            part.state_message = Some(format!("worker {} is not heartbeating", worker.spec.name));
                        }
                        Ok(instance_columns(i))
                    })
                    .await;
                if let Err(e) = res
                    && !matches!(e, DbError::NotFound { .. })
                {
                    return Err(e);
                }
            }
        }
        Ok(changed)
    }

    /// Decides, by [`on_silent_worker`], what becomes of each instance of a silent worker; the
    /// engines of running ones are asked at once, together.
    async fn silent_instances(&self, worker_name: &str, worker_id: i64) -> Result<(), DbError> {
        let instances: Vec<_> = self
            .db
            .instances_on_worker(worker_id)
            .await?
            .into_iter()
            .filter(|i| held_by_worker(i.spec.status.state))
            .collect();
        let asked = futures_util::future::join_all(instances.iter().map(|i| async {
            if i.spec.status.state != InstanceState::Running {
                return None;
            }
            Some(engine_answers(&self.http, i.spec.binding.worker_ip.as_deref(), i.spec.status.port).await)
        }))
        .await;
        for (instance, answers) in instances.iter().zip(asked) {
            let Some(new_state) = on_silent_worker(instance.spec.status.state, answers) else {
                if answers == Some(true) {
                    tracing::debug!(instance = %instance.spec.name, "worker silent, engine answers: still routed");
                }
                continue;
            };
            let why = if answers == Some(false) {
                format!("worker {worker_name} is not heartbeating and the engine does not answer")
            } else {
                format!("worker {worker_name} is not heartbeating")
            };
            let res = self
                .db
                .modify::<ModelInstanceSpec, DbError, _>(instance.id, Some(instance.version), |i| {
                    i.status.state = new_state;
                    i.status.state_message = Some(why.clone());
                    Ok(instance_columns(i))
                })
                .await;
            match res {
                Ok(_) => tracing::warn!(instance = %instance.spec.name, state = ?new_state, "{why}"),
                // Changed meanwhile (the worker is back, or it was deleted): the next pass decides.
                Err(DbError::NotFound { .. } | DbError::VersionConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs `tick` every second while this server leads, until shutdown; each pass writes through
    /// a handle fenced by the leadership it started under.
    pub fn spawn(mut self, leader: Leadership, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut last_pass: Option<Instant> = None;
            loop {
                let Some(fence) = leader.lead(&mut shutdown).await else { return };
                self.db = db.fenced(fence);
                let now = Instant::now();
                if grace_anew(last_pass.map(|t| now.saturating_duration_since(t))) {
                    self.leases.grace_anew(now);
                }
                match self.tick(now).await {
                    Ok(_) => last_pass = Some(now),
                    Err(e) => tracing::warn!(error = %e, "worker monitor pass failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerState::{Maintenance, NotReady, Ready, Unreachable};

    #[test]
    fn liveness_decisions() {
        let grace = Duration::from_secs(30);
        let s = Duration::from_secs;
        for (state, silent_for, down) in [
            (Ready, s(0), false),
            (Ready, s(30), false),
            (Ready, s(31), true),
            // Already down, or set aside by an administrator: the monitor leaves it.
            (NotReady, s(300), false),
            (Unreachable, s(300), false),
            (Maintenance, s(300), false),
        ] {
            assert_eq!(goes_down(state, silent_for, grace), down, "{state:?} silent {silent_for:?}");
        }
        for (probe, state) in [
            (Probe::NoApi, NotReady),
            (Probe::Answered, NotReady),
            (Probe::Refused, NotReady),
            (Probe::Hung, NotReady),
            (Probe::NoRoute, Unreachable),
        ] {
            assert_eq!(silent_state(probe).0, state, "{probe:?}");
        }
        for (state, maintenance, back) in [
            (NotReady, false, true),
            (Unreachable, false, true),
            (Unreachable, true, false),
            (Ready, false, false),
            (Maintenance, true, false),
        ] {
            assert_eq!(back_on_heartbeat(state, maintenance), back, "{state:?} maintenance {maintenance}");
        }
        for (since_last_pass, anew) in [
            (None, true),
            (Some(s(1)), false),
            (Some(s(5)), false),
            // It was not leading, or its database was away.
            (Some(s(6)), true),
            (Some(s(600)), true),
        ] {
            assert_eq!(grace_anew(since_last_pass), anew, "{since_last_pass:?}");
        }
        for (state, answers, becomes) in [
            // Silence alone does not cut serving: an engine that answers stays routed.
            (InstanceState::Running, Some(true), None),
            (InstanceState::Running, Some(false), Some(InstanceState::Unreachable)),
            (InstanceState::Running, None, Some(InstanceState::Unreachable)),
            // The worker must move these on, and is not there to.
            (InstanceState::Starting, None, Some(InstanceState::Unreachable)),
            (InstanceState::Downloading, None, Some(InstanceState::Unreachable)),
            // Not the worker's to look after, or already decided.
            (InstanceState::Pending, None, None),
            (InstanceState::Error, None, None),
            (InstanceState::Unreachable, Some(true), None),
        ] {
            assert_eq!(on_silent_worker(state, answers), becomes, "{state:?} engine answers {answers:?}");
        }
        for (state, held) in [
            (InstanceState::Running, true),
            (InstanceState::Starting, true),
            (InstanceState::Downloading, true),
            (InstanceState::Pending, false),
            (InstanceState::Scheduled, false),
            (InstanceState::Error, false),
        ] {
            assert_eq!(held_by_worker(state), held, "{state:?}");
        }
    }
}
