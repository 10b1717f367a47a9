//! The autoscaler's decision, pure: (a deployment's `autoscaling`, its replicas, the demand every
//! gateway counts, the most demand asked for during the scale-down delay, the schedule's floor) →
//! desired replicas and why. Up at once, down only to the most that demand asked for during
//! `scale_down_delay_seconds` (so it does not flap); never below `min_replicas` or an open
//! schedule window, never above `max_replicas`. [`Tracker`] keeps that recent peak per deployment;
//! `autoscaler.rs` gathers the facts and writes the result; the replica controller does the rest
//! (scale-down drains). Also: what a deployment edit must satisfy ([`check`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::api::{Autoscaling, ModelSpec};

/// Most replicas a deployment may ask for (the `replicas` limit).
pub const MAX_REPLICAS: u32 = 1024;

/// Checks `autoscaling` and the schedule, and clamps the user's `replicas` into the bounds.
pub fn check(spec: &mut ModelSpec) -> Result<(), (String, String)> {
    if let Some(a) = &spec.autoscaling {
        let fail = |field: &str, rule: String| Err((format!("autoscaling.{field}"), rule));
        if a.max_replicas == 0 || a.max_replicas > MAX_REPLICAS {
            return fail("max_replicas", format!("must be between 1 and {MAX_REPLICAS}"));
        }
        if a.min_replicas > a.max_replicas {
            return fail("min_replicas", format!("must be at most max_replicas ({})", a.max_replicas));
        }
        if a.target_requests == 0 || a.target_requests > 100_000 {
            return fail("target_requests", "must be between 1 and 100000".into());
        }
        if a.scale_down_delay_seconds > 7 * 86_400 {
            return fail("scale_down_delay_seconds", "must be between 0 and 604800 (a week)".into());
        }
        match a.park_seconds {
            Some(p) if p == 0 || p > 7 * 86_400 => {
                return fail("park_seconds", "must be between 1 and 604800 (a week)".into());
            }
            Some(_) if a.min_replicas > 0 => {
                return fail("park_seconds", "needs min_replicas 0: a replica is parked on the way to zero".into());
            }
            _ => {}
        }
        spec.replicas = spec.replicas.clamp(a.min_replicas, a.max_replicas);
    }
    if let Some(s) = &spec.scaling_schedule {
        crate::control::schedule::validate(s, MAX_REPLICAS).map_err(|e| (e.field, e.rule))?;
    }
    Ok(())
}

/// Replicas `demand` requests need at `target` per replica (rounded up).
pub fn need(demand: u64, target: u32) -> u32 {
    let target = u64::from(target.max(1));
    u32::try_from(demand.div_ceil(target)).unwrap_or(u32::MAX)
}

/// What the decision needs to know, gathered in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// `replicas` now.
    pub current: u32,
    /// Running instances.
    pub ready: u32,
    /// Requests in flight on its instances plus requests queued for it, summed over servers.
    pub demand: u64,
    /// The most replicas demand (or a user's edit) asked for during the last
    /// `scale_down_delay_seconds`, now included ([`Tracker::peak`]).
    pub peak: u32,
    /// An open schedule window: its replicas and its name.
    pub floor: Option<(u32, String)>,
}

/// The scaler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: u32,
    pub reason: String,
}

/// The decision for one deployment.
pub fn decide(a: &Autoscaling, i: &Inputs) -> Decision {
    let (lo, hi) = (a.min_replicas, a.max_replicas.max(a.min_replicas));
    let floor = i.floor.as_ref().map(|(n, _)| (*n).min(hi)).unwrap_or(0);
    let bound = |n: u32| n.max(floor).clamp(lo, hi);
    let now = bound(need(i.demand, a.target_requests));
    let why_floor = || match &i.floor {
        Some((n, rule)) if *n > hi && now == hi => format!(" (schedule window {rule:?} asks {n}; max_replicas {hi})"),
        Some((n, rule)) if *n >= lo && now == *n => format!(" (schedule window {rule:?} holds {n})"),
        _ => String::new(),
    };
    let demand = format!("{} request(s) in flight or queued, target {} per replica", i.demand, a.target_requests);
    if now > i.current {
        let reason = if i.current == 0 || i.ready == 0 && i.demand > 0 {
            format!("waking: {demand} → {now} replica(s){}", why_floor())
        } else {
            format!("scale up: {demand} → {now} replica(s){}", why_floor())
        };
        return Decision { replicas: now, reason };
    }
    if now == i.current {
        return Decision { replicas: now, reason: format!("steady: {demand} → {now} replica(s){}", why_floor()) };
    }
    let held = bound(i.peak);
    let delay = a.scale_down_delay_seconds;
    if held < i.current {
        let reason = if held == 0 {
            format!("scale to zero: no request for {delay} s")
        } else {
            format!("scale down: at most {held} replica(s) needed during the last {delay} s{}", why_floor())
        };
        return Decision { replicas: held, reason };
    }
    Decision {
        replicas: i.current,
        reason: format!("holding {}: {demand} needs {now}; scales down after {delay} s of lower demand", i.current),
    }
}

/// Recent demand per deployment, in replicas: what the scale-down delay looks back on. A
/// deployment seen for the first time (a new leader) or whose `replicas` someone else changed
/// (a user's edit) starts with its current `replicas` as a sample, so neither is undone before
/// the delay has passed.
#[derive(Debug, Default)]
pub struct Tracker {
    models: HashMap<i64, Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    samples: VecDeque<(Instant, u32)>,
    /// `replicas` as this tracker last saw or wrote it.
    replicas: u32,
}

impl Tracker {
    /// Takes in what deployment `id` needs now and returns the peak over `window` (now included).
    pub fn observe(&mut self, id: i64, replicas: u32, needed: u32, window: Duration, now: Instant) -> u32 {
        let seen = self.models.entry(id).or_insert_with(|| Seen { samples: VecDeque::new(), replicas: u32::MAX });
        if seen.replicas != replicas {
            seen.samples.push_back((now, replicas));
            seen.replicas = replicas;
        }
        // Consecutive equal needs: only the newest matters for the window's end.
        let several = seen.samples.len() > 1;
        if let Some(last) = seen.samples.back_mut()
            && last.1 == needed
            && several
        {
            last.0 = now;
        } else {
            seen.samples.push_back((now, needed));
        }
        while seen.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
            seen.samples.pop_front();
        }
        seen.samples.iter().map(|(_, n)| *n).max().unwrap_or(needed)
    }

    /// Records the replicas the scaler wrote (so they are not taken for someone else's edit).
    pub fn wrote(&mut self, id: i64, replicas: u32) {
        if let Some(seen) = self.models.get_mut(&id) {
            seen.replicas = replicas;
        }
    }

    /// Forgets deployments not in `live`.
    pub fn retain(&mut self, live: &std::collections::HashSet<i64>) {
        self.models.retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(min: u32, max: u32) -> Autoscaling {
        Autoscaling {
            min_replicas: min,
            max_replicas: max,
            target_requests: 4,
            scale_down_delay_seconds: 60,
            park_seconds: None,
        }
    }

    #[test]
    fn decisions_table() {
        // (what, min, max, current, ready, demand, peak, floor, want)
        type Case = (&'static str, u32, u32, u32, u32, u64, u32, Option<u32>, u32, &'static str);
        let cases: &[Case] = &[
            ("asleep and idle", 0, 4, 0, 0, 0, 0, None, 0, "steady"),
            ("the first request wakes it", 0, 4, 0, 0, 1, 1, None, 1, "waking"),
            ("20 queued while asleep: 5 wanted, 4 at most", 0, 4, 0, 0, 20, 5, None, 4, "waking"),
            ("at target", 0, 4, 2, 2, 8, 2, None, 2, "steady"),
            ("one over target: up at once", 0, 4, 2, 2, 9, 3, None, 3, "scale up"),
            ("up to the max only", 1, 3, 2, 2, 100, 25, None, 3, "scale up"),
            ("demand fell, but not for the delay yet", 0, 4, 3, 3, 1, 3, None, 3, "holding"),
            ("demand fell for the delay: to the peak since", 0, 4, 3, 3, 1, 2, None, 2, "scale down"),
            ("idle for the delay: to zero", 0, 4, 1, 1, 0, 0, None, 0, "scale to zero"),
            ("idle for the delay, min 1", 1, 4, 3, 3, 0, 0, None, 1, "scale down"),
            ("min raised by an edit: up", 2, 4, 1, 1, 0, 0, None, 2, "scale up"),
            ("a schedule window is the floor", 0, 4, 0, 0, 0, 0, Some(2), 2, "waking"),
            ("…above it demand rules", 0, 4, 2, 2, 16, 4, Some(2), 4, "scale up"),
            ("…and it holds through quiet", 0, 4, 4, 4, 0, 0, Some(2), 2, "scale down"),
            ("a window above max: max", 0, 3, 1, 1, 0, 0, Some(8), 3, "scale up"),
            ("scaling up while replicas still start", 0, 8, 2, 0, 16, 4, None, 4, "waking"),
        ];
        for (what, min, max, current, ready, demand, peak, floor, want, reason) in cases {
            let i = Inputs {
                current: *current,
                ready: *ready,
                demand: *demand,
                peak: *peak,
                floor: floor.map(|n| (n, "day".to_string())),
            };
            let d = decide(&scaling(*min, *max), &i);
            assert_eq!(d.replicas, *want, "{what}: {}", d.reason);
            assert!(d.reason.starts_with(reason), "{what}: {}", d.reason);
        }
    }

    #[test]
    fn need_rounds_up() {
        for (demand, target, want) in [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2), (7, 1, 7), (3, 0, 3)] {
            assert_eq!(need(demand, target), want, "{demand}/{target}");
        }
    }

    #[test]
    fn the_peak_looks_back_one_delay() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let s = Duration::from_secs;
        // First sight: its replicas (3) hold for the delay, whatever demand says.
        assert_eq!(t.observe(1, 3, 0, w, t0), 3);
        assert_eq!(t.observe(1, 3, 0, w, t0 + s(59)), 3);
        assert_eq!(t.observe(1, 3, 1, w, t0 + s(61)), 1, "the first sample has left the window");
        t.wrote(1, 1);
        // A burst: held for a delay after it ended.
        assert_eq!(t.observe(1, 1, 4, w, t0 + s(70)), 4);
        t.wrote(1, 4);
        assert_eq!(t.observe(1, 4, 0, w, t0 + s(100)), 4);
        assert_eq!(t.observe(1, 4, 0, w, t0 + s(131)), 0);
        // Someone else set replicas 2: held for the delay like a burst.
        assert_eq!(t.observe(1, 2, 0, w, t0 + s(140)), 2);
        assert_eq!(t.observe(1, 2, 0, w, t0 + s(201)), 0);
    }

    fn spec(a: Option<Autoscaling>, replicas: u32) -> ModelSpec {
        let mut m: ModelSpec =
            serde_json::from_value(serde_json::json!({"name": "m", "source": "local_path", "local_path": "/m"}))
                .expect("spec");
        m.autoscaling = a;
        m.replicas = replicas;
        m
    }

    #[test]
    fn checks_name_the_field_and_replicas_are_clamped() {
        let bad = [
            (scaling(0, 0), "autoscaling.max_replicas"),
            (scaling(0, 2000), "autoscaling.max_replicas"),
            (scaling(3, 2), "autoscaling.min_replicas"),
            (Autoscaling { target_requests: 0, ..scaling(0, 2) }, "autoscaling.target_requests"),
            (
                Autoscaling { scale_down_delay_seconds: 700_000, ..scaling(0, 2) },
                "autoscaling.scale_down_delay_seconds",
            ),
            (Autoscaling { park_seconds: Some(0), ..scaling(0, 2) }, "autoscaling.park_seconds"),
            (Autoscaling { park_seconds: Some(700_000), ..scaling(0, 2) }, "autoscaling.park_seconds"),
            // Parking is a level on the way to zero.
            (Autoscaling { park_seconds: Some(60), ..scaling(1, 2) }, "autoscaling.park_seconds"),
        ];
        assert_eq!(check(&mut spec(Some(Autoscaling { park_seconds: Some(60), ..scaling(0, 2) }), 1)), Ok(()));
        for (a, field) in bad {
            assert_eq!(check(&mut spec(Some(a.clone()), 1)).map_err(|e| e.0), Err(field.to_string()), "{a:?}");
        }
        for (replicas, want) in [(0, 1), (2, 2), (9, 4)] {
            let mut m = spec(Some(scaling(1, 4)), replicas);
            assert_eq!(check(&mut m), Ok(()));
            assert_eq!(m.replicas, want, "replicas {replicas} within 1..=4");
        }
        let mut off = spec(None, 9);
        assert_eq!(check(&mut off), Ok(()));
        assert_eq!(off.replicas, 9, "without autoscaling replicas are the user's");
        // The documented defaults.
        let a: Autoscaling = serde_json::from_value(serde_json::json!({"max_replicas": 3})).expect("defaults");
        assert_eq!(
            a,
            Autoscaling {
                min_replicas: 1,
                max_replicas: 3,
                target_requests: 4,
                scale_down_delay_seconds: 300,
                park_seconds: None
            }
        );
    }
}
