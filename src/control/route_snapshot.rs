//! The gateway's routing snapshot as a pure function of one read of the tables, built the same
//! way on every server and writing nothing; and the facts derived from the same read (a target's
//! `state`, a route's counters, routes and targets left by deleted deployments), which only the
//! leading server writes back, fenced (ARCHITECTURE.md: one writer per fact).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::http::HeaderValue;

use crate::api::{
    InstanceState, ModelInstanceSpec, ModelRouteSpec, ModelRouteTargetSpec, ModelSpec, Record, TargetState, WorkerSpec,
};
use crate::backends::render::engine_api_key;
use crate::db::{Db, DbError, DbResult, route_columns, target_columns};
use crate::gateway::{Endpoint, Route, Snapshot, Target};
use crate::server::auth::server_token;

/// One read of every table the snapshot is built from.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    pub models: Vec<Record<ModelSpec>>,
    pub instances: Vec<Record<ModelInstanceSpec>>,
    pub workers: Vec<Record<WorkerSpec>>,
    pub targets: Vec<Record<ModelRouteTargetSpec>>,
    pub routes: Vec<Record<ModelRouteSpec>>,
}

impl Tables {
    /// Reads them; targets after deployments, so a target of a deployment created in between is
    /// seen without its deployment: it is left out of this snapshot, and [`write`] asks again
    /// before deleting it as an orphan.
    pub async fn read(db: &Db) -> DbResult<Tables> {
        Ok(Tables {
            models: db.all::<ModelSpec>().await?,
            instances: db.all::<ModelInstanceSpec>().await?,
            workers: db.all::<WorkerSpec>().await?,
            targets: db.all::<ModelRouteTargetSpec>().await?,
            routes: db.all::<ModelRouteSpec>().await?,
        })
    }
}

/// What the read implies for the stored rows, written by the leader only ([`write`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Derived {
    /// Targets whose `state` changed: the row as read, with the new state.
    pub targets: Vec<Record<ModelRouteTargetSpec>>,
    /// Routes whose `targets` / `ready_targets` counters changed: the row as read, with the new counts.
    pub routes: Vec<Record<ModelRouteSpec>>,
    /// Targets whose deployment was not in the read: (target id, deployment id), deleted once a
    /// fresh read confirms the deployment is gone.
    pub orphan_targets: Vec<(i64, i64)>,
    /// Routes created with a deployment that is gone and left without targets: (route id, deployment id).
    pub orphan_routes: Vec<(i64, i64)>,
}

impl Derived {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.routes.is_empty()
            && self.orphan_targets.is_empty()
            && self.orphan_routes.is_empty()
    }
}

/// Where instance `i`'s engine answers (`host:port`) and the key it takes; None if it is not bound.
pub fn endpoint(i: &Record<ModelInstanceSpec>, secret: &str) -> Option<Endpoint> {
    let (worker_id, ip, port) = (i.spec.binding.worker_id?, i.spec.binding.worker_ip.as_deref()?, i.spec.status.port?);
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    let key = engine_api_key(&server_token(secret, worker_id), i.id);
    let auth = HeaderValue::from_str(&format!("Bearer {key}")).ok();
    Some(Endpoint { instance_id: i.id, addr: format!("{host}:{port}"), auth })
}

/// Running instances per deployment, on workers that exist, whatever their state: a worker that
/// stopped heartbeating keeps its running engines routed while they answer (the monitor takes
/// out those that do not, and the gateway's circuit breaker those that fail requests).
fn running_by_model(
    instances: &[Record<ModelInstanceSpec>],
    workers: &[Record<WorkerSpec>],
    secret: &str,
) -> HashMap<i64, Vec<Endpoint>> {
    let up: HashSet<i64> = workers.iter().map(|w| w.id).collect();
    let mut out: HashMap<i64, Vec<Endpoint>> = HashMap::new();
    for i in instances {
        let s = &i.spec;
        if s.status.state != InstanceState::Running || !s.binding.worker_id.is_some_and(|w| up.contains(&w)) {
            continue;
        }
        if let (Some(model_id), Some(endpoint)) = (s.model_id, endpoint(i, secret)) {
            out.entry(model_id).or_default().push(endpoint);
        }
    }
    out
}

/// The snapshot every gateway serves from, and the derived facts of the same read.
pub fn build(tables: Tables, secret: &str) -> (Snapshot, Derived) {
    let Tables { models, instances, workers, targets, routes: route_rows } = tables;
    let models: BTreeMap<i64, Record<ModelSpec>> = models.into_iter().map(|m| (m.id, m)).collect();
    let running = running_by_model(&instances, &workers, secret);
    let mut derived = Derived::default();
    // Withdrawn by every gateway that publishes this (docs/draining.md).
    let draining: Vec<i64> = instances
        .iter()
        .filter(|i| matches!(i.spec.status.state, InstanceState::Draining | InstanceState::Parked))
        .map(|i| i.id)
        .collect();
    let mut by_route: BTreeMap<i64, Vec<Record<ModelRouteTargetSpec>>> = BTreeMap::new();
    for mut t in targets {
        if let Some(m) = t.spec.model_id.filter(|m| !models.contains_key(m)) {
            derived.orphan_targets.push((t.id, m));
            continue;
        }
        let active = t.spec.model_id.and_then(|m| running.get(&m)).is_some_and(|e| !e.is_empty());
        let state = if active { TargetState::Active } else { TargetState::Unavailable };
        if t.spec.state != state {
            t.spec.state = state;
            derived.targets.push(t.clone());
        }
        by_route.entry(t.spec.route_id).or_default().push(t);
    }
    let mut routes = Vec::new();
    let mut wakeable = HashMap::new();
    for r in route_rows {
        let targets = by_route.remove(&r.id).unwrap_or_default();
        if let Some(m) = r.spec.created_model_id.filter(|m| targets.is_empty() && !models.contains_key(m)) {
            derived.orphan_routes.push((r.id, m));
            continue;
        }
        let ready = targets.iter().filter(|t| t.spec.state == TargetState::Active).count() as u32;
        if r.spec.targets != targets.len() as u32 || r.spec.ready_targets != ready {
            let mut counted = r.clone();
            counted.spec.targets = targets.len() as u32;
            counted.spec.ready_targets = ready;
            derived.routes.push(counted);
        }
        // Autoscaled primary targets: a request wakes them when nothing is ready (gateway::wake).
        let sleepers: Vec<i64> = targets
            .iter()
            .filter(|t| t.spec.fallback_status_codes.as_ref().is_none_or(|c| c.is_empty()))
            .filter_map(|t| t.spec.model_id)
            .filter(|m| models.get(m).is_some_and(|m| m.spec.autoscaling.is_some()))
            .collect();
        if !sleepers.is_empty() {
            wakeable.insert(r.id, sleepers);
        }
        let targets = targets
            .into_iter()
            .filter_map(|t| {
                let model = models.get(&t.spec.model_id?)?;
                Some(Target {
                    name: t.spec.name,
                    weight: t.spec.weight,
                    served_name: t.spec.overridden_model_name.unwrap_or_else(|| model.spec.name.clone()),
                    fallback_status_codes: t.spec.fallback_status_codes.unwrap_or_default(),
                    instances: running.get(&model.id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        routes.push(Route {
            id: r.id,
            name: r.spec.name,
            categories: r.spec.categories,
            created: r.created_at.timestamp(),
            timeout: r.spec.timeout.filter(|t| *t > 0).map(Duration::from_secs),
            generic_proxy: r.spec.generic_proxy.unwrap_or(true),
            load_balancing: r.spec.load_balancing,
            targets,
        });
    }
    (Snapshot::new(routes).with_draining(draining).with_wakeable(wakeable), derived)
}

/// Whether deployment `id` no longer exists (read now, not from the read the facts came from).
async fn model_gone(db: &Db, id: i64) -> DbResult<bool> {
    match db.get::<ModelSpec>(id).await {
        Ok(_) => Ok(false),
        Err(DbError::NotFound { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Writes the derived facts through `db` (the leader's fenced handle). A row changed since the
/// read (version conflict) or already gone is left to the next pass, which reads it anew.
pub async fn write(db: &Db, derived: Derived) -> DbResult<()> {
    for t in derived.targets {
        ignore_gone(db.update(t.id, t.version, &t.spec, &target_columns(&t.spec)).await.map(drop))?;
    }
    for r in derived.routes {
        ignore_gone(db.update(r.id, r.version, &r.spec, &route_columns(&r.spec)).await.map(drop))?;
    }
    for (id, model) in derived.orphan_targets {
        // The read may predate this target's deployment: ask again before deleting.
        if model_gone(db, model).await? {
            ignore_gone(db.delete::<ModelRouteTargetSpec>(id).await.map(drop))?;
        }
    }
    for (id, model) in derived.orphan_routes {
        if model_gone(db, model).await? {
            ignore_gone(db.delete::<ModelRouteSpec>(id).await.map(drop))?;
        }
    }
    Ok(())
}

fn ignore_gone(res: DbResult<()>) -> DbResult<()> {
    match res {
        Err(DbError::NotFound { .. } | DbError::VersionConflict { .. }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<T>(id: i64, spec: T) -> Record<T> {
        Record { id, version: 1, created_at: Default::default(), updated_at: Default::default(), spec }
    }

    fn model(id: i64, name: &str) -> Record<ModelSpec> {
        let spec: ModelSpec =
            serde_json::from_value(serde_json::json!({"name": name, "source": "local_path", "local_path": "/m.gguf"}))
                .expect("model");
        rec(id, spec)
    }

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("fixture")
    }

    fn instance(id: i64, model_id: i64, worker_id: i64, state: InstanceState) -> Record<ModelInstanceSpec> {
        let spec = from(serde_json::json!({
            "name": format!("i{id}"), "model_name": "a", "model_path": "/m", "backend": "llama.cpp",
            "model_id": model_id, "worker_id": worker_id, "worker_ip": "10.0.0.2", "port": 40000 + id,
            "state": state,
        }));
        rec(id, spec)
    }

    fn worker(id: i64) -> Record<WorkerSpec> {
        let spec = from(serde_json::json!({"name": format!("w{id}"), "cluster_id": 1, "hostname": "h",
            "ip": "10.0.0.2", "port": 1, "runtime": "process", "state": "ready", "worker_version": "t",
            "status": {"cpu": {"total": 8, "utilization_rate": 0.0},
                       "memory": {"total": 1u64 << 30, "used": 0, "utilization_rate": 0.0},
                       "os": {"name": "linux", "version": "", "kernel": "", "arch": "x86_64"},
                       "gpu_devices": []}}));
        rec(id, spec)
    }

    fn route(id: i64, name: &str, created_model_id: Option<i64>, targets: u32, ready: u32) -> Record<ModelRouteSpec> {
        let spec = from(serde_json::json!({"name": name, "created_model_id": created_model_id,
            "targets": targets, "ready_targets": ready}));
        rec(id, spec)
    }

    fn target(id: i64, route_id: i64, model_id: i64, state: TargetState) -> Record<ModelRouteTargetSpec> {
        let spec = from(serde_json::json!({"name": format!("t{id}"), "route_id": route_id, "route_name": "r",
            "model_id": model_id, "weight": 100, "state": state}));
        rec(id, spec)
    }

    /// Per case: the tables, then (instances routed per route name, derived target states,
    /// derived route counters, orphan targets, orphan routes).
    #[test]
    fn snapshot_and_derived_facts_from_one_read() {
        use InstanceState::{Draining, Running, Starting};
        use TargetState::{Active, Unavailable};
        type Case = (
            &'static str,
            Tables,
            Vec<(&'static str, usize)>,
            Vec<(i64, TargetState)>,
            Vec<(i64, u32, u32)>,
            Vec<(i64, i64)>,
            Vec<(i64, i64)>,
        );
        let cases: Vec<Case> = vec![
            (
                "a running instance makes its target active and its route ready",
                Tables {
                    models: vec![model(1, "a")],
                    instances: vec![instance(1, 1, 1, Running), instance(2, 1, 1, Starting)],
                    workers: vec![worker(1)],
                    targets: vec![target(1, 1, 1, Unavailable)],
                    routes: vec![route(1, "a", Some(1), 1, 0)],
                },
                vec![("a", 1)],
                vec![(1, Active)],
                vec![(1, 1, 1)],
                vec![],
                vec![],
            ),
            (
                "stored facts already true: nothing to write",
                Tables {
                    models: vec![model(1, "a")],
                    instances: vec![instance(1, 1, 1, Running)],
                    workers: vec![worker(1)],
                    targets: vec![target(1, 1, 1, Active)],
                    routes: vec![route(1, "a", Some(1), 1, 1)],
                },
                vec![("a", 1)],
                vec![],
                vec![],
                vec![],
                vec![],
            ),
            (
                "an instance on a deleted worker, or draining, is not routed",
                Tables {
                    models: vec![model(1, "a")],
                    instances: vec![instance(1, 1, 9, Running), instance(2, 1, 1, Draining)],
                    workers: vec![worker(1)],
                    targets: vec![target(1, 1, 1, Active)],
                    routes: vec![route(1, "a", Some(1), 1, 1)],
                },
                vec![("a", 0)],
                vec![(1, Unavailable)],
                vec![(1, 1, 0)],
                vec![],
                vec![],
            ),
            (
                "a deleted deployment leaves an orphan target and route (deleted after a fresh read)",
                Tables {
                    models: vec![model(2, "b")],
                    instances: vec![],
                    workers: vec![worker(1)],
                    targets: vec![target(1, 1, 1, Active), target(2, 2, 2, Unavailable)],
                    routes: vec![route(1, "a", Some(1), 1, 1), route(2, "b", Some(2), 1, 0)],
                },
                vec![("b", 0)],
                vec![],
                vec![],
                vec![(1, 1)],
                vec![(1, 1)],
            ),
        ];
        for (name, tables, routed, targets, routes, orphan_targets, orphan_routes) in cases {
            let (snapshot, derived) = build(tables, "secret");
            let got: Vec<(&str, usize)> = routed
                .iter()
                .map(|(r, _)| {
                    let route = snapshot.by_name(r).unwrap_or_else(|| panic!("{name}: route {r} missing"));
                    (*r, route.targets.iter().map(|t| t.instances.len()).sum())
                })
                .collect();
            assert_eq!(got, routed, "{name}: routed instances");
            assert_eq!(snapshot.routes().len(), routed.len(), "{name}: routes in the snapshot");
            let t: Vec<(i64, TargetState)> = derived.targets.iter().map(|t| (t.id, t.spec.state)).collect();
            assert_eq!(t, targets, "{name}: target states");
            let r: Vec<(i64, u32, u32)> =
                derived.routes.iter().map(|r| (r.id, r.spec.targets, r.spec.ready_targets)).collect();
            assert_eq!(r, routes, "{name}: route counters");
            assert_eq!(derived.orphan_targets, orphan_targets, "{name}: orphan targets");
            assert_eq!(derived.orphan_routes, orphan_routes, "{name}: orphan routes");
        }
    }

    #[test]
    fn a_draining_instance_is_withdrawn_everywhere() {
        let tables = Tables {
            models: vec![model(1, "a")],
            instances: vec![instance(7, 1, 1, InstanceState::Draining)],
            workers: vec![worker(1)],
            targets: vec![target(1, 1, 1, TargetState::Unavailable)],
            routes: vec![route(1, "a", Some(1), 1, 0)],
        };
        let (snapshot, derived) = build(tables, "s");
        assert!(snapshot.draining().contains(&7));
        assert!(derived.is_empty(), "{derived:?}");
    }
}
