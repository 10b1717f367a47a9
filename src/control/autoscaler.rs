//! The autoscaler loop, on the leader: every half second while any deployment is autoscaled or
//! scheduled (at once when a request starts waiting for a sleeping model here), it reads the
//! deployments and their instances, takes the demand every gateway counts (`Gateway::demand`:
//! in flight on the instances plus held in wake queues, this server's and the others' shares),
//! decides (`autoscale::decide`, `schedule::desired`) and writes `replicas` with the reason in
//! `scaling_message`, through the fenced handle. It never stops an instance: the replica
//! controller turns `replicas` into instances, and its scale-down drains.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::{InstanceState, ModelInstanceSpec, ModelSpec};
use crate::control::autoscale::{self, Decision, Inputs, Tracker};
use crate::control::leader::Leadership;
use crate::control::schedule::{self, Want};
use crate::db::{Db, DbError, DbResult, model_columns};
use crate::gateway::Gateway;

/// How often the leader looks at demand while a deployment is autoscaled (a scale-up lands
/// within this of demand appearing here, and within a share round, 1 s, of it appearing on
/// another server).
pub const TICK: Duration = Duration::from_millis(500);
/// How often it looks when nothing is autoscaled or scheduled (edits wake it at once).
const IDLE: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Deployments autoscaled or scheduled.
    pub scaled: usize,
    /// Deployments whose `replicas` (or first reason) was written.
    pub writes: usize,
}

/// The leader's autoscaler: the demand it remembers per deployment.
#[derive(Debug, Default)]
pub struct Autoscaler {
    tracker: Tracker,
}

impl Autoscaler {
    /// One pass at `now` (the schedule's clock) and `instant` (the delays' clock); both are
    /// passed in so tests choose them.
    pub async fn step(
        &mut self,
        db: &Db,
        gateway: Option<&Gateway>,
        now: DateTime<Utc>,
        instant: Instant,
    ) -> DbResult<Step> {
        let scaled: Vec<_> = db
            .all::<ModelSpec>()
            .await?
            .into_iter()
            .filter(|m| m.spec.autoscaling.is_some() || m.spec.scaling_schedule.as_ref().is_some_and(|s| s.enabled))
            .collect();
        self.tracker.retain(&scaled.iter().map(|m| m.id).collect::<HashSet<i64>>());
        let mut step = Step { scaled: scaled.len(), writes: 0 };
        if scaled.is_empty() {
            return Ok(step);
        }
        // Instances per deployment (non-draining ids, ready count), read only when demand counts.
        let mut instances: BTreeMap<i64, (Vec<i64>, u32)> = BTreeMap::new();
        if scaled.iter().any(|m| m.spec.autoscaling.is_some()) {
            for i in db.all::<ModelInstanceSpec>().await? {
                let (Some(model), true) = (i.spec.model_id, i.spec.status.state != InstanceState::Draining) else {
                    continue;
                };
                let entry = instances.entry(model).or_default();
                entry.0.push(i.id);
                entry.1 += u32::from(i.spec.status.state == InstanceState::Running);
            }
        }
        for m in scaled {
            let want = m.spec.scaling_schedule.as_ref().and_then(|s| schedule::desired(s, now));
            let decision = match &m.spec.autoscaling {
                None => match want {
                    None => continue,
                    Some(w) => Decision { replicas: w.replicas(), reason: schedule_reason(&w) },
                },
                Some(a) => {
                    let (ids, ready) = instances.remove(&m.id).unwrap_or_default();
                    let demand = gateway.map(|g| g.demand(m.id, &ids)).unwrap_or(0);
                    let needed = autoscale::need(demand, a.target_requests);
                    let window = Duration::from_secs(a.scale_down_delay_seconds.into());
                    let peak = self.tracker.observe(m.id, m.spec.replicas, needed, window, instant);
                    let floor = match want {
                        Some(Want::Window { replicas, rule, .. }) => Some((replicas, rule)),
                        _ => None,
                    };
                    let d = autoscale::decide(a, &Inputs { current: m.spec.replicas, ready, demand, peak, floor });
                    if let Some(g) = gateway {
                        g.set_scaler_view(&m.spec.name, demand, d.replicas, ready);
                    }
                    d
                }
            };
            if decision.replicas == m.spec.replicas && m.spec.scaling_message.is_some() {
                continue;
            }
            let spec =
                ModelSpec { replicas: decision.replicas, scaling_message: Some(decision.reason), ..m.spec.clone() };
            // A versioned write: a status write of the controller made from an older read loses
            // (and retries) rather than putting the old replicas back.
            match db.update(m.id, m.version, &spec, &model_columns(&spec)).await {
                Ok(_) => {
                    self.tracker.wrote(m.id, spec.replicas);
                    step.writes += 1;
                    if spec.replicas != m.spec.replicas {
                        tracing::info!(model = %m.spec.name, from = m.spec.replicas, to = spec.replicas,
                            reason = spec.scaling_message.as_deref().unwrap_or_default(), "autoscaler: replicas");
                    }
                }
                Err(DbError::VersionConflict { .. } | DbError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(step)
    }
}

fn schedule_reason(w: &Want) -> String {
    match w {
        Want::Window { replicas, rule, until } => format!(
            "scaling_schedule: window {rule:?} open until {} → {replicas} replica(s)",
            until.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        Want::Baseline(n) => format!("scaling_schedule: no window open → baseline {n} replica(s)"),
    }
}

/// Runs the autoscaler while this server leads, until shutdown.
pub fn spawn(db: Db, gateway: Gateway, leader: Leadership, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut changed = db.subscribe(&["models"]);
        let mut scaler = Autoscaler::default();
        loop {
            let Some(fence) = leader.lead(&mut shutdown).await else { return };
            let fenced = db.fenced(fence);
            let wait = match scaler.step(&fenced, Some(&gateway), Utc::now(), Instant::now()).await {
                Ok(step) if step.scaled > 0 => TICK,
                Ok(_) => IDLE,
                Err(e) => {
                    tracing::warn!(error = %e, "autoscaler pass failed");
                    TICK
                }
            };
            changed.mark_seen();
            tokio::select! {
                _ = changed.changed() => {}
                _ = gateway.wake_asked() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}
