//! Draining: every stop of a serving instance (scale-down, rolling replace, delete, restart) first
//! marks it `draining`. Every server's gateway withdraws it from routing as soon as its snapshot
//! shows that; the leader deletes the row (so its worker stops the engine: SIGTERM, a grace, then
//! SIGKILL) once every gateway says it withdrew it and nothing is in flight on it, or when the
//! deployment's `drain_timeout` has passed. The decisions are pure ([`stop_mode`], [`verdict`]);
//! [`begin`] writes the mark. Docs: docs/draining.md.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{InstanceState, ModelInstance, ModelInstanceSpec};
use crate::db::{Db, DbResult, instance_columns};
use crate::gateway::drain::View;

/// How an instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Withdrawn from routing first, stopped when idle (or at the timeout).
    Drain,
    /// Deleted at once: nothing can be in flight on it (it was never routed), or draining is off
    /// for its deployment (`drain_timeout` 0).
    Now,
}

/// Only a `running` instance is routed, so only it can have requests in flight.
pub fn stop_mode(state: InstanceState, drain_timeout: u32) -> StopMode {
    if drain_timeout > 0 && state == InstanceState::Running { StopMode::Drain } else { StopMode::Now }
}

/// Where a draining instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: `routing` gateways have not withdrawn it yet, `in_flight` requests run on it.
    Wait { in_flight: u64, routing: usize },
    /// Stop it now.
    Stop(Why),
}

/// Why a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every gateway withdrew it and nothing is in flight on it.
    Drained,
    /// The drain timeout passed with this still in flight (or gateways not heard from).
    TimedOut { in_flight: u64, routing: usize },
}

/// The drain decision for one instance, from how long it has drained, its deployment's timeout
/// and every gateway's word on it (this server's and each other server's fresh share; servers
/// that stopped sharing no longer count).
pub fn verdict(elapsed: Duration, timeout: Duration, views: &[View]) -> Verdict {
    let routing = views.iter().filter(|v| **v == View::Routing).count();
    let in_flight = views.iter().map(|v| if let View::InFlight(n) = v { *n } else { 0 }).sum();
    if elapsed >= timeout {
        Verdict::Stop(Why::TimedOut { in_flight, routing })
    } else if routing == 0 && in_flight == 0 {
        Verdict::Stop(Why::Drained)
    } else {
        Verdict::Wait { in_flight, routing }
    }
}

/// How long instance `i` has drained (0 if it carries no start, which only a hand edit leaves).
pub fn elapsed(i: &ModelInstanceSpec, now: DateTime<Utc>) -> Duration {
    i.drain_started_at.and_then(|t| (now - t).to_std().ok()).unwrap_or_default()
}

/// Instance `i` marked draining for `why` (what stopped it), at `now`.
pub fn draining(i: &ModelInstanceSpec, why: &str, timeout: u32, now: DateTime<Utc>) -> ModelInstanceSpec {
    let until = now + chrono::Duration::seconds(i64::from(timeout));
    ModelInstanceSpec {
        state: InstanceState::Draining,
        state_message: Some(format!(
            "draining ({why}): gets no new requests; stops when those in flight have finished, at the latest at {}",
            until.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        drain_started_at: Some(now),
        drain_timeout: Some(timeout),
        ..i.clone()
    }
}

/// Stops `instances` of a deployment whose drain timeout is `timeout`: serving ones start draining,
/// the others are deleted at once. Returns the names of those stopped either way (an instance
/// changed or gone meanwhile is left to the next pass, or to whoever changed it).
pub async fn begin(db: &Db, instances: &[&ModelInstance], timeout: u32, why: &str) -> DbResult<Vec<String>> {
    let now = Utc::now();
    let mut marks = Vec::new();
    let mut now_ids = Vec::new();
    for i in instances {
        match stop_mode(i.spec.state, timeout) {
            StopMode::Drain => {
                let spec = draining(&i.spec, why, timeout, now);
                let columns = instance_columns(&spec);
                marks.push((i.id, i.version, spec, columns));
            }
            StopMode::Now => now_ids.push(i.id),
        }
    }
    let mut stopped = Vec::new();
    for batch in marks.chunks(500) {
        for r in db.update_many_guarded(None, batch).await?.into_iter().flatten() {
            tracing::info!(
                instance = r.id, name = %r.spec.name, model = ?r.spec.model_id, why, timeout_s = timeout,
                "instance draining: withdrawn from routing; it stops when no request is in flight on it"
            );
            stopped.push(r.spec.name);
        }
    }
    for batch in now_ids.chunks(500) {
        stopped.extend(db.delete_many::<ModelInstanceSpec>(batch).await?.into_iter().map(|r| r.spec.name));
    }
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState as S;
    use View::{InFlight, Routing};

    #[test]
    fn only_serving_instances_drain_and_only_when_draining_is_on() {
        // (state, drain_timeout, mode)
        let table = [
            (S::Running, 600, StopMode::Drain),
            (S::Running, 1, StopMode::Drain),
            // Draining off for the deployment: today's stop, requests in flight cut.
            (S::Running, 0, StopMode::Now),
            // Never routed, so nothing in flight: no reason to wait.
            (S::Pending, 600, StopMode::Now),
            (S::Scheduled, 600, StopMode::Now),
            (S::Starting, 600, StopMode::Now),
            (S::Error, 600, StopMode::Now),
            (S::Unreachable, 600, StopMode::Now),
            // Already draining: stopping it again (a second delete) stops it now.
            (S::Draining, 600, StopMode::Now),
        ];
        for (state, timeout, want) in table {
            assert_eq!(stop_mode(state, timeout), want, "{state:?} timeout {timeout}");
        }
    }

    #[test]
    fn drain_verdicts() {
        let s = Duration::from_secs;
        let to = s(600);
        // (what, elapsed, views: this server first, then others' shares, verdict)
        let table: &[(&str, Duration, &[View], Verdict)] = &[
            ("idle everywhere", s(1), &[InFlight(0), InFlight(0)], Verdict::Stop(Why::Drained)),
            (
                "this gateway has not withdrawn it long enough yet",
                s(0),
                &[Routing],
                Verdict::Wait { in_flight: 0, routing: 1 },
            ),
            (
                "another server has not seen the drain yet",
                s(1),
                &[InFlight(0), Routing],
                Verdict::Wait { in_flight: 0, routing: 1 },
            ),
            (
                "a stream still runs through another server",
                s(30),
                &[InFlight(0), InFlight(1)],
                Verdict::Wait { in_flight: 1, routing: 0 },
            ),
            ("requests in flight here", s(2), &[InFlight(3)], Verdict::Wait { in_flight: 3, routing: 0 }),
            (
                "the timeout passes with a request in flight: it is cut",
                s(600),
                &[InFlight(2)],
                Verdict::Stop(Why::TimedOut { in_flight: 2, routing: 0 }),
            ),
            (
                "the timeout passes while a server never confirmed",
                s(601),
                &[InFlight(0), Routing],
                Verdict::Stop(Why::TimedOut { in_flight: 0, routing: 1 }),
            ),
            // No gateway at all (a controller without one): nothing can be in flight through it.
            ("no gateway", s(0), &[], Verdict::Stop(Why::Drained)),
        ];
        for (what, elapsed, views, want) in table {
            assert_eq!(verdict(*elapsed, to, views), *want, "{what}");
        }
    }

    #[test]
    fn the_mark_says_why_and_until_when() {
        let i: ModelInstanceSpec = serde_json::from_value(serde_json::json!({
            "name": "m-1", "model_name": "m", "model_path": "/m", "backend": "llama.cpp", "state": "running"
        }))
        .expect("instance");
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z").expect("time").with_timezone(&Utc);
        let d = draining(&i, "scale-down", 90, now);
        assert_eq!(d.state, S::Draining);
        assert_eq!(d.drain_started_at, Some(now));
        let msg = d.state_message.as_deref().unwrap_or_default();
        assert!(msg.starts_with("draining (scale-down)") && msg.ends_with("2026-12-06 10:01:30 UTC"), "{msg}");
        assert_eq!(elapsed(&d, now + chrono::Duration::seconds(5)), Duration::from_secs(5));
        assert_eq!(elapsed(&i, now), Duration::ZERO);
    }
}
