//! Parking (`autoscaling.park_seconds`, docs/autoscaling.md): on the way to zero replicas the last
//! serving instance is parked instead of stopped. A parked instance is withdrawn from routing as
//! a draining one is (the gateways count what is still in flight on it), and once nothing is, its
//! engine is put to sleep where it has a sleep mode (vLLM: `POST /sleep?level=1`, weights to CPU
//! memory, KV cache freed). A request wakes it in place (`POST /wake_up`, then it serves again)
//! instead of a cold start; after `park_seconds` it is stopped. The marks are pure ([`parked`],
//! [`woken`], [`expired`]); the engine calls run in their own tasks, never in the leader's pass.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{InstanceState, InstanceStatus, ModelInstance, ModelInstanceSpec};
use crate::control::controller::EngineProbe;
use crate::control::drain::{Verdict, Why, verdict};
use crate::db::{Db, DbResult, instance_columns};
use crate::gateway::Gateway;

/// How long an engine may take to go to sleep or to wake (vLLM moves the weights between GPU and
/// CPU memory: seconds for a large model).
pub const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Instance `i` parked at `now`, for `secs` seconds.
pub fn parked(i: &ModelInstanceSpec, secs: u32, now: DateTime<Utc>) -> ModelInstanceSpec {
    let until = now + chrono::Duration::seconds(i64::from(secs));
    let status = InstanceStatus {
        state: InstanceState::Parked,
        state_message: Some(format!(
            "parked: gets no requests, its engine kept; a request wakes it; stops at {}",
            until.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        drain_started_at: Some(now),
        asleep_since: None,
        ..i.status.clone()
    };
    ModelInstanceSpec { status, ..i.clone() }
}

/// Instance `i` serving again.
pub fn woken(i: &ModelInstanceSpec) -> ModelInstanceSpec {
    let status = InstanceStatus {
        state: InstanceState::Running,
        state_message: None,
        drain_started_at: None,
        asleep_since: None,
        ..i.status.clone()
    };
    ModelInstanceSpec { status, ..i.clone() }
}

/// Instance `i` whose engine went to sleep at `now`.
pub fn asleep(i: &ModelInstanceSpec, now: DateTime<Utc>) -> ModelInstanceSpec {
    let message =
        i.status.state_message.as_deref().unwrap_or("parked").replacen("its engine kept", "its engine asleep", 1);
    let status = InstanceStatus { asleep_since: Some(now), state_message: Some(message), ..i.status.clone() };
    ModelInstanceSpec { status, ..i.clone() }
}

/// Whether parked instance `i` has been parked `secs` or longer at `now`.
pub fn expired(i: &ModelInstanceSpec, secs: u32, now: DateTime<Utc>) -> bool {
    i.status.drain_started_at.is_some_and(|t| (now - t).num_seconds() >= i64::from(secs))
}

/// Engine calls under way or given up, so one pass does not start a second.
#[derive(Debug, Default)]
pub struct EngineCalls {
    busy: Mutex<HashSet<i64>>,
    /// Instances whose engine refused to sleep (no sleep mode): parked awake.
    no_sleep: Mutex<HashSet<i64>>,
}

impl EngineCalls {
    /// Takes instance `id` for a call; false if one is under way.
    pub fn take(&self, id: i64) -> bool {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
    }

    /// Whether a call to instance `id`'s engine is under way.
    pub fn busy(&self, id: i64) -> bool {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).contains(&id)
    }

    pub fn done(&self, id: i64) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Whether instance `id`'s engine refused to sleep before.
    pub fn sleepless(&self, id: i64) -> bool {
        self.no_sleep.lock().unwrap_or_else(|e| e.into_inner()).contains(&id)
    }

    pub fn mark_sleepless(&self, id: i64) {
        self.no_sleep.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }

    /// Forgets instances no longer parked.
    pub fn retain(&self, parked: &HashSet<i64>) {
        self.no_sleep.lock().unwrap_or_else(|e| e.into_inner()).retain(|id| parked.contains(id));
    }
}

/// `POST {path}` on the engine at `addr`; Ok when it answered 2xx.
pub async fn call(http: &reqwest::Client, addr: &str, auth: Option<&str>, path: &str) -> Result<(), String> {
    let mut req = http.post(format!("http://{addr}{path}")).timeout(ENGINE_CALL_TIMEOUT);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{path} answered {}", r.status())),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// What the controller needs to park and wake: the engine calls under way, and how to reach
/// engines.
#[derive(Clone)]
pub struct Parking {
    pub calls: Arc<EngineCalls>,
    pub engines: EngineProbe,
}

/// One deployment's parking in one controller pass: marks `parks` parked (for `secs`), wakes
/// `wakes` (at once if awake, else through its engine's `/wake_up`, in a task), stops parked
/// instances whose time ran out, and puts to sleep those idle on every gateway. Returns the
/// writes made and the instances to delete.
pub async fn pass(
    db: &Db,
    parking: Option<&Parking>,
    gateway: Option<&Gateway>,
    secs: Option<u32>,
    parks: &[&ModelInstance],
    wakes: &[&ModelInstance],
    instances: &[ModelInstance],
) -> DbResult<(usize, Vec<i64>)> {
    let now = Utc::now();
    let mut writes = 0;
    let mut doomed = Vec::new();
    if let Some(secs) = secs {
        for i in parks {
            if write(db, i, parked(&i.spec, secs, now)).await? {
                tracing::info!(instance = i.id, name = %i.spec.name, park_s = secs,
                    "instance parked: withdrawn from routing, its engine kept until a request wakes it");
                writes += 1;
            }
        }
    }
    for i in wakes {
        match (i.spec.status.asleep_since, parking) {
            // A sleep call under way finishes first (the next pass wakes it).
            (_, Some(p)) if p.calls.busy(i.id) => {}
            (None, _) => {
                if write(db, i, woken(&i.spec)).await? {
                    tracing::info!(instance = i.id, name = %i.spec.name, "parked instance woken: it serves again");
                    writes += 1;
                }
            }
            (Some(_), Some(p)) => spawn_call(db.clone(), p.clone(), (*i).clone(), Call::Wake),
            (Some(_), None) => doomed.push(i.id),
        }
    }
    let woken_ids: HashSet<i64> = wakes.iter().map(|i| i.id).collect();
    for i in instances.iter().filter(|i| i.spec.status.state == InstanceState::Parked && !woken_ids.contains(&i.id)) {
        if secs.is_none_or(|s| expired(&i.spec, s, now)) {
            tracing::info!(instance = i.id, name = %i.spec.name, "parked instance's time is up: stopping it");
            doomed.push(i.id);
            continue;
        }
        let Some(p) = parking else { continue };
        if i.spec.status.asleep_since.is_some() || p.calls.sleepless(i.id) || p.calls.busy(i.id) {
            continue;
        }
        // Asleep only once nothing is in flight on it anywhere (as a drain ends).
        let waited = crate::control::drain::elapsed(&i.spec, now);
        let views = gateway.map(|g| g.drain_views(i.id, waited)).unwrap_or_default();
        if let Verdict::Stop(Why::Drained) = verdict(waited, Duration::MAX, &views) {
            spawn_call(db.clone(), p.clone(), i.clone(), Call::Sleep);
        }
    }
    if let Some(p) = parking {
        p.calls
            .retain(&instances.iter().filter(|i| i.spec.status.state == InstanceState::Parked).map(|i| i.id).collect());
    }
    Ok((writes, doomed))
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Sleep,
    Wake,
}

/// Calls the engine of `i` in a task of its own, then writes the outcome if `i` is still parked.
fn spawn_call(db: Db, p: Parking, i: ModelInstance, call: Call) {
    if !p.calls.take(i.id) {
        return;
    }
    tokio::spawn(async move {
        // Read again now that the call is ours: a pass that read the instance before a wake or a
        // sleep landed must not call its engine (a sleep sent to a woken, routed engine would
        // cut requests). Unparking waits while the call is taken, so what is read here holds.
        let still = match db.get::<ModelInstanceSpec>(i.id).await {
            Ok(current) => {
                current.spec.status.state == InstanceState::Parked
                    && match call {
                        Call::Sleep => current.spec.status.asleep_since.is_none(),
                        Call::Wake => current.spec.status.asleep_since.is_some(),
                    }
            }
            Err(_) => false,
        };
        if !still {
            p.calls.done(i.id);
            return;
        }
        let endpoint = crate::control::route_snapshot::endpoint(&i, &p.engines.server_secret);
        let path = match call {
            Call::Sleep => "/sleep?level=1",
            Call::Wake => "/wake_up",
        };
        let res = match &endpoint {
            Some(e) => self::call(&p.engines.http, &e.addr, e.auth.as_ref().and_then(|a| a.to_str().ok()), path).await,
            None => Err("the instance has no address".into()),
        };
        let now = Utc::now();
        let outcome = async {
            let current = db.get::<ModelInstanceSpec>(i.id).await?;
            if current.spec.status.state != InstanceState::Parked {
                return Ok(());
            }
            match (call, &res) {
                (Call::Sleep, Ok(())) => {
                    write(&db, &current, asleep(&current.spec, now)).await?;
                    tracing::info!(instance = i.id, name = %i.spec.name, "parked instance's engine asleep");
                }
                (Call::Sleep, Err(why)) => {
                    p.calls.mark_sleepless(i.id);
                    tracing::info!(instance = i.id, name = %i.spec.name, why = %why,
                        "parked awake: the engine did not go to sleep (no sleep mode?)");
                }
                (Call::Wake, Ok(())) => {
                    write(&db, &current, woken(&current.spec)).await?;
                    tracing::info!(instance = i.id, name = %i.spec.name, "parked instance woken from sleep: it serves again");
                }
                (Call::Wake, Err(why)) => {
                    tracing::warn!(instance = i.id, name = %i.spec.name, why = %why,
                        "a parked engine did not wake; stopping it (a new replica replaces it)");
                    db.delete_many::<ModelInstanceSpec>(&[i.id]).await?;
                }
            }
            Ok::<(), crate::db::DbError>(())
        };
        if let Err(e) = outcome.await {
            tracing::warn!(instance = i.id, error = %e, "recording a parked engine's sleep or wake failed");
        }
        p.calls.done(i.id);
    });
}

/// Writes `spec` over `i` if `i` did not change meanwhile; whether it was written.
async fn write(db: &Db, i: &ModelInstance, spec: ModelInstanceSpec) -> DbResult<bool> {
    let columns = instance_columns(&spec);
    let written = db.update_many_guarded(None, &[(i.id, i.version, spec, columns)]).await?;
    Ok(written.into_iter().flatten().next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks() {
        let i: ModelInstanceSpec = serde_json::from_value(serde_json::json!({
            "name": "m-1", "model_name": "m", "model_path": "/m", "backend": "vllm", "state": "running"
        }))
        .expect("instance");
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z").expect("time").with_timezone(&Utc);
        let p = parked(&i, 600, now);
        assert_eq!(
            (p.status.state, p.status.drain_started_at, p.status.asleep_since),
            (InstanceState::Parked, Some(now), None)
        );
        assert!(p.status.state_message.as_deref().is_some_and(|m| m.ends_with("2026-12-06 10:10:00 UTC")), "{p:?}");
        let a = asleep(&p, now);
        assert!(a.status.state_message.as_deref().is_some_and(|m| m.contains("its engine asleep")), "{a:?}");
        assert_eq!(a.status.asleep_since, Some(now));
        let w = woken(&a);
        assert_eq!(
            (w.status.state, w.status.state_message, w.status.drain_started_at, w.status.asleep_since),
            (InstanceState::Running, None, None, None)
        );
        // (seconds parked, park_seconds, expired)
        for (after, secs, want) in [(599, 600, false), (600, 600, true), (5, 1, true), (0, 1, false)] {
            assert_eq!(expired(&p, secs, now + chrono::Duration::seconds(after)), want, "{after} s of {secs}");
        }
        assert!(!expired(&i, 1, now), "never parked: no start");
    }
}
