//! Feeds the gateway: rebuilds its routing snapshot ([`route_snapshot`]) on every committed change
//! to routes, deployments, instances or workers (this server's or another's), has the leader write
//! what follows from it (target states, route counters, routes of deleted deployments), and writes
//! the gateway's usage events to the daily aggregates in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ModelRouteSpec, ModelRouteTargetSpec, ModelSpec, Record, TargetState, UsageRow};
use crate::control::leader::Leadership;
use crate::control::route_snapshot::{self, Tables};
use crate::db::{Db, DbError, DbResult, route_columns, target_columns};
use crate::gateway::{Gateway, Snapshot, UsageEvent};

/// How often the snapshot is rebuilt when no commit woke it: a safety net only. Commits here wake
/// it at once, and other servers' commits through the change-log poller (`db::notify`).
const REFRESH: Duration = Duration::from_secs(30);
/// How often buffered usage is written.
const FLUSH: Duration = Duration::from_secs(2);

/// The route named after a new deployment (written with it, `Db::insert_chain`).
pub fn model_route(model: &Record<ModelSpec>) -> (ModelRouteSpec, Vec<(&'static str, crate::db::Val)>) {
    let route = ModelRouteSpec {
        name: model.spec.name.clone(),
        description: model.spec.description.clone(),
        categories: model.spec.categories.clone(),
        meta: None,
        generic_proxy: Some(model.spec.generic_proxy),
        created_model_id: Some(model.id),
        targets: 1,
        ready_targets: 0,
        access_policy: model.spec.access_policy,
        timeout: None,
        load_balancing: Default::default(),
    };
    let columns = route_columns(&route);
    (route, columns)
}

/// The deployment as the one target of its route.
pub fn model_target(
    model: &Record<ModelSpec>,
    route: &Record<ModelRouteSpec>,
) -> (ModelRouteTargetSpec, Vec<(&'static str, crate::db::Val)>) {
    let target = ModelRouteTargetSpec {
        name: format!("{}-{}", route.spec.name, model.spec.name),
        route_id: route.id,
        route_name: route.spec.name.clone(),
        model_id: Some(model.id),
        provider_id: None,
        overridden_model_name: None,
        weight: 100,
        fallback_status_codes: None,
        state: TargetState::Unavailable,
    };
    let columns = target_columns(&target);
    (target, columns)
}

/// Sets the deployment's `generic_proxy` on the route created with it (called when an edit changes
/// it; the route may also be edited on its own, and then the route is what the gateway follows).
pub async fn sync_model_route(db: &Db, model: &Record<ModelSpec>) -> DbResult<()> {
    let Some(route) = db.get_by_name::<ModelRouteSpec>(&model.spec.name).await? else { return Ok(()) };
    let r = &route.spec;
    if r.created_model_id != Some(model.id) || r.generic_proxy == Some(model.spec.generic_proxy) {
        return Ok(());
    }
    let res = db
        .modify::<ModelRouteSpec, DbError, _>(route.id, None, |r| {
            r.generic_proxy = Some(model.spec.generic_proxy);
            Ok(route_columns(r))
        })
        .await;
    match res {
        Ok(_) | Err(DbError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The snapshot as [`route_snapshot::build`] makes it from a fresh read, writing nothing.
pub async fn sync(db: &Db, secret: &str) -> DbResult<Snapshot> {
    Ok(route_snapshot::build(Tables::read(db).await?, secret).0)
}

/// Reads the tables, publishes the snapshot built from them, then, while this server leads, writes
/// the facts derived from the same read ([`route_snapshot::write`], fenced). A failed write is
/// logged: the snapshot is out, and the next rebuild reads and writes again.
pub async fn rebuild(db: &Db, gateway: &Gateway, secret: &str, leader: &Leadership) -> DbResult<()> {
    let (snapshot, derived) = route_snapshot::build(Tables::read(db).await?, secret);
    gateway.publish(snapshot);
    if let Some(fence) = leader.fence().filter(|_| !derived.is_empty())
        && let Err(e) = route_snapshot::write(&db.fenced(fence), derived).await
    {
        tracing::warn!(error = %e, "cannot write route states and counters");
    }
    Ok(())
}

/// Keeps the gateway's snapshot current until shutdown. While this server leads, it then writes
/// the facts derived from the same read ([`route_snapshot::write`], fenced): every server builds
/// its own snapshot, one writes.
pub fn spawn_snapshot_loop(
    db: Db,
    gateway: Gateway,
    secret: Arc<String>,
    leader: Leadership,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut changed =
            db.subscribe(&["model_routes", "model_route_targets", "models", "model_instances", "workers"]);
        loop {
            changed.mark_seen();
            if let Err(e) = rebuild(&db, &gateway, &secret, &leader).await {
                tracing::warn!(error = %e, "gateway snapshot refresh failed");
            }
            let commit = tokio::select! {
                _ = changed.changed() => true,
                _ = tokio::time::sleep(REFRESH) => false,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if commit {
                // Let a burst of commits settle into one rebuild (binding a thousand replicas is a
                // thousand commits): at most 20 rebuilds a second. Route edits refresh at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
}

type UsageKey = (String, i64, i64, i64, String, &'static str);

fn add(pending: &mut HashMap<UsageKey, UsageRow>, e: UsageEvent) {
    let date = e.at.format("%Y-%m-%d").to_string();
    let key = (date.clone(), e.user_id, e.api_key_id, e.route_id, e.model_name.clone(), e.operation);
    let row = pending.entry(key).or_insert_with(|| UsageRow {
        date,
        user_id: e.user_id,
        api_key_id: e.api_key_id,
        route_id: e.route_id,
        route_name: e.route_name.clone(),
        model_name: e.model_name.clone(),
        operation: e.operation.to_string(),
        request_count: 0,
        prompt_token_count: 0,
        completion_token_count: 0,
        unmetered_request_count: 0,
        api_key_name: None,
        user_name: None,
    });
    row.request_count += 1;
    match e.usage {
        Some(u) => {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            row.prompt_token_count = row.prompt_token_count.saturating_add(count(u.prompt_tokens));
            row.completion_token_count = row.completion_token_count.saturating_add(count(u.completion_tokens));
        }
        None => row.unmetered_request_count += 1,
    }
}

async fn flush(db: &Db, pending: &mut HashMap<UsageKey, UsageRow>) {
    if pending.is_empty() {
        return;
    }
    let rows: Vec<UsageRow> = pending.values().cloned().collect();
    match db.add_usage(&rows).await {
        Ok(()) => pending.clear(),
        Err(e) => tracing::warn!(error = %e, rows = rows.len(), "cannot write usage; will retry"),
    }
}

/// Aggregates usage events in memory and writes them every [`FLUSH`], and a last time when
/// `finish` is set (after the server's last request, see `Running::shutdown`).
pub fn spawn_usage_writer(
    db: Db,
    mut events: tokio::sync::mpsc::Receiver<UsageEvent>,
    mut finish: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: HashMap<UsageKey, UsageRow> = HashMap::new();
        let mut tick = tokio::time::interval(FLUSH);
        loop {
            let event = tokio::select! {
                e = events.recv() => match e {
                    Some(e) => Some(e),
                    None => break,
                },
                _ = tick.tick() => None,
                _ = finish.wait_for(|s| *s) => break,
            };
            match event {
                Some(e) => add(&mut pending, e),
                None => flush(&db, &mut pending).await,
            }
        }
        while let Ok(e) = events.try_recv() {
            add(&mut pending, e);
        }
        flush(&db, &mut pending).await;
    })
}

/// The gateway as the server holds it, with a cache of authenticated API keys. A cached key is
/// dropped on any committed change (so a revoked key or a narrowed allow-list applies at once)
/// and after [`KEY_TTL`] (for changes made through another server process).
pub struct GatewayState {
    pub gateway: Gateway,
    /// The server secret: engine keys are derived from it.
    secret: Arc<String>,
    keys: std::sync::Mutex<HashMap<String, (crate::server::auth::Principal, u64, std::time::Instant)>>,
    /// Commits to keys and users: a cached principal is dropped at the next one.
    changes: crate::db::notify::Changes,
    /// Whether this server leads: only the leader writes what a rebuild derives.
    leader: Leadership,
}

/// How long an authenticated key is trusted without a database lookup.
pub const KEY_TTL: Duration = Duration::from_secs(5);
/// How long an authenticated key is still trusted while the database does not answer
/// (stale-while-unavailable, docs/ha.md): a key this server saw within this time keeps working
/// through a database outage, unless a change to keys or users was committed since it was seen.
pub const STALE_KEY_TTL: Duration = Duration::from_secs(15 * 60);

impl GatewayState {
    pub fn new(gateway: Gateway, db: &Db, secret: Arc<String>, leader: Leadership) -> GatewayState {
        GatewayState {
            gateway,
            secret,
            keys: Default::default(),
            changes: db.subscribe(&["api_keys", "users"]),
            leader,
        }
    }

    /// A cached principal for a credential digest, if seen within `ttl` ([`KEY_TTL`], or
    /// [`STALE_KEY_TTL`] while the database does not answer) and no key or user changed since.
    pub fn cached(&self, digest: &str, ttl: Duration) -> Option<crate::server::auth::Principal> {
        let generation = self.changes.generation();
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let (p, seen, at) = keys.get(digest)?;
        let fresh = *seen == generation
            && at.elapsed() < ttl
            && p.api_key.as_ref().and_then(|k| k.spec.expires_at).is_none_or(|t| t > chrono::Utc::now());
        fresh.then(|| p.clone())
    }

    /// Rebuilds and publishes the snapshot now (after a route edit, so the next call sees it); on
    /// the leader, the route's counters are written before the edit answers too.
    pub async fn refresh(&self, db: &Db) -> DbResult<()> {
        rebuild(db, &self.gateway, &self.secret, &self.leader).await
    }

    pub fn remember(&self, digest: String, p: &crate::server::auth::Principal) {
        let generation = self.changes.generation();
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() > 10_000 {
            keys.clear();
        }
        keys.insert(digest, (p.clone(), generation, std::time::Instant::now()));
    }
}
