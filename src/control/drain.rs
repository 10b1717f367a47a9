//! Draining: every stop of a serving instance (scale-down, rolling replace, delete, restart) first
//! marks it `draining`. Every server's gateway withdraws it from routing as soon as its snapshot
//! shows that; the leader deletes the row (so its worker stops the engine: SIGTERM, a grace, then
//! SIGKILL) once every gateway says it withdrew it and nothing is in flight on it, or when the
//! deployment's `drain_timeout` has passed. The decisions are pure ([`stop_mode`], [`verdict`]);
//! [`begin`] writes the mark. Docs: docs/draining.md.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{InstanceState, InstanceStatus, Maintenance, ModelInstance, ModelInstanceSpec};
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
    i.status.drain_started_at.and_then(|t| (now - t).to_std().ok()).unwrap_or_default()
}

/// Instance `i` marked draining for `why` (what stopped it), at `now`.
pub fn draining(i: &ModelInstanceSpec, why: &str, timeout: u32, now: DateTime<Utc>) -> ModelInstanceSpec {
    let until = now + chrono::Duration::seconds(i64::from(timeout));
    let status = InstanceStatus {
        state: InstanceState::Draining,
        state_message: Some(format!(
            "draining ({why}): gets no new requests; stops when those in flight have finished, at the latest at {}",
            until.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        drain_started_at: Some(now),
        drain_timeout: Some(timeout),
        ..i.status.clone()
    };
    ModelInstanceSpec { status, ..i.clone() }
}

/// Stops `instances` of a deployment whose drain timeout is `timeout`: serving ones start draining,
/// the others are deleted at once. Returns the names of those stopped either way (an instance
/// changed or gone meanwhile is left to the next pass, or to whoever changed it).
pub async fn begin(db: &Db, instances: &[&ModelInstance], timeout: u32, why: &str) -> DbResult<Vec<String>> {
    let now = Utc::now();
    let mut marks = Vec::new();
    let mut now_ids = Vec::new();
    for i in instances {
        match stop_mode(i.spec.status.state, timeout) {
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

/// A worker's maintenance when its clean shutdown begins (`stopping`) or it starts again: stopping
/// turns on maintenance with `drain` (its instances move away and drain first), marked
/// `until_restart` unless an admin's maintenance was on already (that one stays, gaining `drain`);
/// starting ends only a maintenance that a shutdown began.
pub fn maintenance_on_shutdown(m: &Maintenance, stopping: bool) -> Maintenance {
    match (stopping, m.enabled) {
        (true, false) => Maintenance {
            enabled: true,
            drain: true,
            until_restart: true,
            message: Some("the worker is stopping: its instances move to other workers and drain first".into()),
        },
        (true, true) => Maintenance { drain: true, ..m.clone() },
        (false, true) if m.until_restart => Maintenance::default(),
        (false, _) => m.clone(),
    }
}

/// The engines' own gauges of the requests they run or queue: vLLM's and SGLang's (`/metrics`), and
/// llama.cpp's with `--metrics`.
const BUSY_GAUGES: &[&str] = &[
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
];

/// Slots llama.cpp's `GET /slots` says are processing; None if `body` is not its answer.
pub fn slots_busy(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Slot {
        is_processing: bool,
    }
    let slots: Vec<Slot> = serde_json::from_slice(body).ok()?;
    (!slots.is_empty()).then(|| slots.iter().filter(|s| s.is_processing).count() as u64)
}

/// Requests running or queued by the engine's Prometheus text ([`BUSY_GAUGES`], summed over their
/// series); None if it has none of them.
pub fn metrics_busy(text: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if !BUSY_GAUGES.contains(&&line[..name_end]) {
            continue;
        }
        // `name{labels} value [timestamp]`: the value follows the labels (which may hold spaces).
        let rest = if line[name_end..].starts_with('{') {
            line.rfind('}').map(|i| &line[i + 1..])
        } else {
            Some(&line[name_end..])
        };
        let value = rest.and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) {
            found = Some(found.unwrap_or(0) + v.round() as u64);
        }
    }
    found
}

/// Asks the engine at `addr` (host:port) how many requests it still runs: llama.cpp's `/slots`
/// first, then `/metrics`. None when it does not say (another engine, the endpoint off, no answer
/// within a second: a stalled engine does not hold its drain).
pub async fn engine_busy(http: &reqwest::Client, addr: &str, auth: Option<&str>) -> Option<u64> {
    let get = |path: &str| {
        let req = http.get(format!("http://{addr}{path}")).timeout(Duration::from_secs(1));
        let req = match auth {
            Some(a) => req.header(reqwest::header::AUTHORIZATION, a),
            None => req,
        };
        async move {
            let res = req.send().await.ok().filter(|r| r.status().is_success())?;
            res.bytes().await.ok()
        }
    };
    if let Some(n) = get("/slots").await.as_deref().and_then(slots_busy) {
        return Some(n);
    }
    get("/metrics").await.and_then(|b| metrics_busy(&String::from_utf8_lossy(&b)))
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
        assert_eq!(d.status.state, S::Draining);
        assert_eq!(d.status.drain_started_at, Some(now));
        let msg = d.status.state_message.as_deref().unwrap_or_default();
        assert!(msg.starts_with("draining (scale-down)") && msg.ends_with("2026-12-06 10:01:30 UTC"), "{msg}");
        assert_eq!(elapsed(&d, now + chrono::Duration::seconds(5)), Duration::from_secs(5));
        assert_eq!(elapsed(&i, now), Duration::ZERO);
    }

    #[test]
    fn a_stopping_worker_drains_and_its_restart_ends_only_its_own_maintenance() {
        let off = Maintenance::default();
        let admin = Maintenance { enabled: true, message: Some("disk swap".into()), ..Maintenance::default() };
        let admin_drain = Maintenance { drain: true, ..admin.clone() };
        let stopping = maintenance_on_shutdown(&off, true);
        // (what, before, stopping, after)
        let table = [
            ("a shutdown turns draining maintenance on", &off, true, stopping.clone()),
            ("a second shutdown call changes nothing", &stopping, true, stopping.clone()),
            ("the restart ends it", &stopping, false, off.clone()),
            ("an admin's maintenance gains drain while it stops", &admin, true, admin_drain.clone()),
            ("and stays after the restart", &admin_drain, false, admin_drain.clone()),
            ("a start with nothing on changes nothing", &off, false, off.clone()),
        ];
        for (what, before, is_stopping, after) in table {
            assert_eq!(maintenance_on_shutdown(before, is_stopping), after, "{what}");
        }
        assert!(stopping.enabled && stopping.drain && stopping.until_restart);
    }

    #[test]
    fn what_engines_say_they_still_run() {
        // (what, body of /slots, slots busy)
        let slots: &[(&str, &str, Option<u64>)] = &[
            (
                "llama.cpp, one of two busy",
                r#"[{"id":0,"is_processing":false},{"id":1,"is_processing":true}]"#,
                Some(1),
            ),
            ("llama.cpp, idle", r#"[{"id":0,"n_ctx":512,"is_processing":false}]"#, Some(0)),
            ("an OpenAI answer from a stub", r#"{"choices":[]}"#, None),
            ("no slots", "[]", None),
            ("llama.cpp's error when slots are off", r#"{"error":{"code":501}}"#, None),
        ];
        for (what, body, want) in slots {
            assert_eq!(slots_busy(body.as_bytes()), *want, "{what}");
        }
        // (what, /metrics text, busy)
        let metrics: &[(&str, &str, Option<u64>)] = &[
            (
                "vLLM: running + waiting",
                "# HELP vllm:num_requests_running Number of requests\n\
                 vllm:num_requests_running{engine=\"0\",model_name=\"q w\"} 2.0\n\
                 vllm:num_requests_waiting{engine=\"0\",model_name=\"q w\"} 1.0\n\
                 vllm:num_requests_swapped{model_name=\"q\"} 9.0\n",
                Some(3),
            ),
            (
                "vLLM idle",
                "vllm:num_requests_running{model_name=\"q\"} 0.0\nvllm:num_requests_waiting{model_name=\"q\"} 0.0",
                Some(0),
            ),
            (
                "SGLang",
                "sglang:num_running_reqs{model_name=\"m\"} 4.0 1733480000000\nsglang:num_queue_reqs{model_name=\"m\"} 0.0",
                Some(4),
            ),
            (
                "llama.cpp --metrics",
                "llamacpp:requests_processing 1\nllamacpp:requests_deferred 0\nllamacpp:kv_cache_usage_ratio 0.5",
                Some(1),
            ),
            ("none of the gauges", "process_cpu_seconds_total 3.5\nvllm:num_requests_running_total 7", None),
            ("garbage value", "vllm:num_requests_running NaN", None),
            ("not metrics", "{\"choices\": []}", None),
        ];
        for (what, text, want) in metrics {
            assert_eq!(metrics_busy(text), *want, "{what}");
        }
    }
}
