//! The model controller's decision, pure: (a deployment's desired replicas and spec fingerprint,
//! what its instances are) → which instances to create and which to delete. The controller
//! (`controller.rs`) gathers the facts and applies the actions with guarded writes.

use crate::api::InstanceState;
use crate::placement::{ScaleDownView, scale_down_order};

/// What the decision needs to know about one instance of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub id: i64,
    /// The fingerprint of the spec it was made from.
    pub spec_hash: Option<String>,
    pub state: InstanceState,
    /// Bound to a worker (pending instances are not, until the scheduler places them).
    pub bound: bool,
    /// It carries a message (for an unbound pending instance: why the scheduler could not place it).
    pub has_message: bool,
    /// Its worker is ready.
    pub worker_ready: bool,
    pub restarts: u32,
    /// Its worker is in maintenance with `drain`: it is replaced elsewhere, then drains.
    pub evacuate: bool,
}

/// One step toward the desired replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make this many new pending instances from the current spec.
    Create(usize),
    /// Remove this instance.
    Delete(i64),
    /// Park this serving instance (the last one on the way to zero, `autoscaling.park_seconds`):
    /// withdrawn from routing, its engine kept.
    Park(i64),
    /// Wake this parked instance in place: it serves again.
    Unpark(i64),
}

/// The deployment as the controller sees it in one pass.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub replicas: usize,
    /// `spec_hash` of the deployment's current spec.
    pub hash: &'a str,
    /// An edit asked for a rollout (`?rolling=true`): running instances of an older spec are
    /// replaced too; without it they keep running.
    pub rolling: bool,
    /// Parking is on (`autoscaling.park_seconds`): the last serving replica is parked on the way
    /// to zero, and a parked one wakes before a new one is made.
    pub park: bool,
}

fn running(list: &[&InstanceFacts]) -> usize {
    list.iter().filter(|i| i.state == InstanceState::Running).count()
}

fn least_healthy_first(list: &[&InstanceFacts]) -> Vec<i64> {
    let views: Vec<ScaleDownView> = list
        .iter()
        .map(|i| ScaleDownView {
            instance_id: i.id,
            worker_ready: i.worker_ready,
            running: i.state == InstanceState::Running,
            error: i.state == InstanceState::Error,
            restarts: i.restarts,
        })
        .collect();
    scale_down_order(&views)
}

/// The actions of one pass. An instance to evacuate (its worker is in maintenance with `drain`)
/// is outdated whatever its spec. Without outdated instances: create or delete (least healthy first)
/// to reach `replicas`. With outdated ones (a rollout, or instances that do not run and are not of
/// the current spec): replace them one extra instance at a time: an outdated instance that does
/// not serve goes at once, a serving one only while more than `replicas` serve, or when the extra
/// instance cannot be placed anywhere (then the roll goes one unavailable at a time).
///
/// A `draining` instance is on its way out (`drain.rs`): it is no replica, and is never chosen
/// again. While one drains, the extra instance of a rollout that finds no room is not stuck: the
/// drain frees room, so the roll waits for it rather than stopping a serving instance first.
///
/// A `parked` instance (on the way to zero, `autoscaling.park_seconds`) is no replica either: it
/// wakes in place before a new instance is made, and goes once it is not wanted (a replica serves
/// instead, parking was turned off, or a rollout replaces it). Its park time running out is the
/// controller's to judge.
pub fn actions(d: Desired<'_>, all: &[InstanceFacts]) -> Vec<Action> {
    let draining = all.iter().any(|i| i.state == InstanceState::Draining);
    let instances: Vec<&InstanceFacts> =
        all.iter().filter(|i| !matches!(i.state, InstanceState::Draining | InstanceState::Parked)).collect();
    // A parked one wakes if it is of the current spec, or of an older one while no rollout asks
    // for running instances to be replaced (as a running one of that spec would stay).
    let (wakeable, stale): (Vec<&InstanceFacts>, Vec<&InstanceFacts>) = all
        .iter()
        .filter(|i| i.state == InstanceState::Parked)
        .partition(|i| !i.evacuate && (i.spec_hash.as_deref() == Some(d.hash) || !d.rolling));
    let (fresh, outdated): (Vec<&InstanceFacts>, Vec<&InstanceFacts>) = instances.iter().copied().partition(|i| {
        !i.evacuate && (i.spec_hash.as_deref() == Some(d.hash) || (!d.rolling && i.state == InstanceState::Running))
    });
    let mut out: Vec<Action> = stale.iter().map(|i| Action::Delete(i.id)).collect();
    if outdated.is_empty() {
        let mut woken = 0;
        if fresh.len() < d.replicas {
            let want = d.replicas - fresh.len();
            woken = wakeable.len().min(want);
            out.extend(wakeable.iter().take(woken).map(|i| Action::Unpark(i.id)));
            if want > woken {
                out.push(Action::Create(want - woken));
            }
        } else if fresh.len() > d.replicas {
            let surplus = fresh.len() - d.replicas;
            let mut order = least_healthy_first(&fresh);
            order.truncate(surplus);
            // On the way to zero with parking on and none parked yet: the healthiest serving one
            // (the last in the order) is parked instead of stopped.
            let park = (d.replicas == 0 && d.park && wakeable.is_empty())
                .then(|| {
                    order
                        .iter()
                        .rev()
                        .find(|id| fresh.iter().any(|i| i.id == **id && i.state == InstanceState::Running))
                })
                .flatten()
                .copied();
            out.extend(
                order.into_iter().map(|id| if Some(id) == park { Action::Park(id) } else { Action::Delete(id) }),
            );
        }
        // Parked ones not wanted: a replica serves instead, parking is off, or more than one.
        let keep = if d.replicas == 0 && d.park { 1 } else { woken };
        out.extend(wakeable.iter().skip(keep).map(|i| Action::Delete(i.id)));
        return out;
    }
    out.extend(wakeable.iter().map(|i| Action::Delete(i.id)));
    if d.replicas == 0 {
        out.extend(outdated.iter().map(|i| Action::Delete(i.id)));
        return out;
    }
    if fresh.len() < d.replicas && instances.len() <= d.replicas {
        out.push(Action::Create(1));
    }
    let surge_stuck = !draining && fresh.iter().any(|i| i.state == InstanceState::Pending && !i.bound && i.has_message);
    let serving = running(&fresh) + running(&outdated);
    if let Some(idle) = outdated.iter().find(|i| i.state != InstanceState::Running) {
        out.push(Action::Delete(idle.id));
    } else if (serving > d.replicas || (surge_stuck && serving >= d.replicas))
        && let Some(id) = least_healthy_first(&outdated).into_iter().next()
    {
        out.push(Action::Delete(id));
    } else if surge_stuck {
        // A worker in maintenance with drain must empty even where nothing has room for its
        // instances (a worker's own clean stop waits for it): they go one drain at a time, below
        // `replicas` if they must. A rollout alone never goes below `replicas - 1` this way.
        let evacuating: Vec<&InstanceFacts> = outdated.iter().copied().filter(|i| i.evacuate).collect();
        out.extend(least_healthy_first(&evacuating).into_iter().next().map(Action::Delete));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::{Draining, Error, Parked, Pending, Running, Starting};

    /// `id:hash:state`, plus `unbound`, `msg`, `down` (worker not ready) or `rN` (N restarts).
    fn facts(spec: &str) -> Vec<InstanceFacts> {
        spec.split_whitespace()
            .map(|item| {
                let mut parts = item.split(':');
                let id = parts.next().and_then(|p| p.parse().ok()).expect("id");
                let hash = parts.next().expect("hash").to_string();
                let state = match parts.next().expect("state") {
                    "run" => Running,
                    "pend" => Pending,
                    "start" => Starting,
                    "err" => Error,
                    "drain" => Draining,
                    "park" => Parked,
                    other => panic!("state {other}"),
                };
                let mut f = InstanceFacts {
                    id,
                    spec_hash: Some(hash),
                    state,
                    bound: true,
                    has_message: false,
                    worker_ready: true,
                    restarts: 0,
                    evacuate: false,
                };
                for flag in parts {
                    match flag {
                        "unbound" => {
                            // As the controller sees it: no worker, so none that is ready.
                            f.bound = false;
                            f.worker_ready = false;
                        }
                        "msg" => f.has_message = true,
                        "down" => f.worker_ready = false,
                        // Its worker went into maintenance with drain (the scheduler places nothing there).
                        "evac" => f.evacuate = true,
                        r if r.starts_with('r') => f.restarts = r[1..].parse().expect("restarts"),
                        other => panic!("flag {other}"),
                    }
                }
                f
            })
            .collect()
    }

    use Action::{Create, Delete, Park, Unpark};

    #[test]
    fn decisions_table() {
        let cases: &[(&str, usize, bool, &str, &[Action])] = &[
            ("a new deployment", 3, false, "", &[Create(3)]),
            ("at the desired count", 2, false, "1:h:run 2:h:pend", &[]),
            ("scale up", 3, false, "1:h:run", &[Create(2)]),
            (
                "scale down: the failing one and the one on a dead worker go, newest first",
                1,
                false,
                "1:h:run 2:h:err 3:h:run:down",
                &[Delete(3), Delete(2)],
            ),
            ("scale down: a starting one before a serving one", 1, false, "1:h:run 2:h:start", &[Delete(2)]),
            ("scale down: among healthy ones the one that crashes more", 1, false, "1:h:run:r4 2:h:run", &[Delete(1)]),
            ("scale down: among equals the newest", 1, false, "1:h:run 2:h:run", &[Delete(2)]),
            ("scale to zero", 0, false, "1:h:run 2:old:run", &[Delete(2), Delete(1)]),
            ("an edit without rollout leaves running instances alone", 2, false, "1:old:run 2:old:run", &[]),
            ("…but replaces one that does not run", 2, false, "1:old:run 2:old:err", &[Create(1), Delete(2)]),
            ("rollout: the extra instance first", 2, true, "1:old:run 2:old:run", &[Create(1)]),
            ("rollout: the extra is starting, nothing goes yet", 2, true, "1:old:run 2:old:run 3:h:start", &[]),
            ("rollout: the extra serves, an old one goes", 2, true, "1:old:run 2:old:run 3:h:run", &[Delete(2)]),
            (
                "rollout: an old one that does not serve goes at once",
                2,
                true,
                "1:old:run 2:old:err 3:h:start",
                &[Delete(2)],
            ),
            (
                "rollout: the extra cannot be placed, one old one goes",
                2,
                true,
                "1:old:run 2:old:run 3:h:pend:unbound:msg",
                &[Delete(2)],
            ),
            (
                "rollout: the extra waits for the scheduler (no message yet)",
                2,
                true,
                "1:old:run 2:old:run 3:h:pend:unbound",
                &[],
            ),
            ("rollout to zero", 0, true, "1:old:run 2:h:run", &[Delete(1)]),
            ("rollout done", 2, true, "3:h:run 4:h:run", &[]),
            // Draining instances (drain.rs) are no replicas and never chosen again.
            ("scale down while one drains", 1, false, "1:h:run 2:h:drain 3:h:run", &[Delete(3)]),
            ("a draining one is replaced (a deleted instance)", 2, false, "1:h:run 2:h:drain", &[Create(1)]),
            ("scale up while one drains", 3, false, "1:h:run 2:h:drain", &[Create(2)]),
            ("scale to zero: only the serving one", 0, false, "1:h:run 2:h:drain", &[Delete(1)]),
            (
                "rollout: the old one drains, the next extra comes at once",
                2,
                true,
                "1:old:run 2:old:drain 3:h:run",
                &[Create(1)],
            ),
            (
                "rollout never shrinks: the extra waits for the room a drain frees",
                2,
                true,
                "1:old:run 2:old:drain 3:h:run 4:h:pend:unbound:msg",
                &[],
            ),
            (
                "rollout: the last old one goes once the new ones serve",
                2,
                true,
                "1:old:run 3:h:run 4:h:run",
                &[Delete(1)],
            ),
            ("rollout done, the last one still draining", 2, true, "1:old:drain 3:h:run 4:h:run", &[]),
            // Worker maintenance with drain: replaced elsewhere first, then drained, one at a time.
            ("maintenance: a replacement first", 2, false, "1:h:run:evac 2:h:run", &[Create(1)]),
            ("maintenance: the replacement starts, nothing goes", 2, false, "1:h:run:evac 2:h:run 3:h:start", &[]),
            (
                "maintenance: the replacement serves, the old one goes",
                2,
                false,
                "1:h:run:evac 2:h:run 3:h:run",
                &[Delete(1)],
            ),
            ("maintenance: a failed one there goes at once", 2, false, "1:h:err:evac 2:h:run", &[Create(1), Delete(1)]),
            (
                "maintenance: no room elsewhere, it goes anyway (the worker must empty)",
                1,
                false,
                "1:h:run:evac 2:h:pend:unbound:msg",
                &[Delete(1)],
            ),
            (
                "maintenance: no room elsewhere for 3 replicas: they go one at a time, below replicas",
                3,
                false,
                "1:h:run:evac 2:h:run:evac 4:h:pend:unbound:msg 5:h:pend:unbound:msg",
                &[Delete(2)],
            ),
            (
                "maintenance: no room, one draining: the next waits for it",
                3,
                false,
                "1:h:drain:evac 2:h:run:evac 4:h:pend:unbound:msg 5:h:pend:unbound:msg",
                &[Create(1)],
            ),
            (
                "maintenance: no room, the last one there goes too",
                3,
                false,
                "2:h:run:evac 4:h:pend:unbound:msg 5:h:pend:unbound:msg 6:h:pend:unbound:msg",
                &[Delete(2)],
            ),
            (
                "rollout with no room: never a second one unavailable",
                3,
                true,
                "1:old:run 2:old:run 4:h:pend:unbound:msg",
                &[Create(1)],
            ),
        ];
        for (what, replicas, rolling, instances, want) in cases {
            let got =
                actions(Desired { replicas: *replicas, hash: "h", rolling: *rolling, park: false }, &facts(instances));
            assert_eq!(got, *want, "{what}");
        }
    }

    /// Decisions converge when they race: two controllers deciding on one snapshot both create the
    /// missing replicas; the next pass sees the surplus and removes it, the ones not placed first.
    #[test]
    fn two_deciders_on_one_snapshot_converge() {
        let d = Desired { replicas: 3, hash: "h", rolling: false, park: false };
        let snapshot = facts("1:h:run");
        let (a, b) = (actions(d, &snapshot), actions(d, &snapshot));
        assert_eq!((a.as_slice(), b.as_slice()), ([Create(2)].as_slice(), [Create(2)].as_slice()));
        let after = facts("1:h:run 2:h:run 3:h:run 4:h:pend:unbound 5:h:pend:unbound");
        assert_eq!(actions(d, &after), [Delete(5), Delete(4)]);
        assert_eq!(actions(d, &facts("1:h:run 2:h:run 3:h:run")), []);
    }

    /// Several servers: a leader killed mid-action left only what it committed (its batches are
    /// all-or-nothing and fenced: nothing of a deposed leader lands later). The new leader's first
    /// pass, on that, finishes the job without a second surge or a duplicate.
    #[test]
    fn a_new_leader_finishes_what_a_killed_one_started() {
        let cases: &[(&str, usize, bool, &str, &[Action])] = &[
            ("scale-up: its batch of new replicas did not commit", 3, false, "1:h:run", &[Create(2)]),
            ("scale-up: it did", 3, false, "1:h:run 2:h:pend:unbound 3:h:pend:unbound", &[]),
            ("scale-down: one batch of deletions committed, not the next", 1, false, "1:h:run 2:h:run", &[Delete(2)]),
            ("rollout: its extra instance starts, no second extra", 2, true, "1:old:run 2:old:run 3:h:start", &[]),
            ("rollout: its extra serves, one old one goes", 2, true, "1:old:run 2:old:run 3:h:run", &[Delete(2)]),
        ];
        for (what, replicas, rolling, instances, want) in cases {
            let got =
                actions(Desired { replicas: *replicas, hash: "h", rolling: *rolling, park: false }, &facts(instances));
            assert_eq!(got, *want, "{what}");
        }
    }

    /// A stale snapshot (an instance already deleted by someone else, or a worker that vanished
    /// mid-action) yields actions the executor tolerates: deleting what is gone is a no-op there,
    /// and the next pass, on fresh facts, asks for what is still missing.
    #[test]
    fn a_stale_snapshot_is_corrected_by_the_next_pass() {
        let d = Desired { replicas: 1, hash: "h", rolling: false, park: false };
        assert_eq!(actions(d, &facts("1:h:run 2:h:run:down")), [Delete(2)]);
        // Meanwhile worker of 1 vanished and 2 was deleted elsewhere: the fresh pass keeps 1 (not
        // running on a dead worker is still one replica; the monitor and scheduler handle it).
        assert_eq!(actions(d, &facts("1:h:run:down")), []);
        assert_eq!(actions(d, &facts("")), [Create(1)]);
    }

    /// (what, replicas, rolling, park, instances, actions)
    type ParkCase<'a> = (&'a str, usize, bool, bool, &'a str, &'a [Action]);

    #[test]
    fn parking_on_the_way_to_zero() {
        let cases: &[ParkCase] = &[
            ("to zero: the last one parks", 0, false, true, "1:h:run", &[Park(1)]),
            (
                "to zero: the healthiest parks, the rest go",
                0,
                false,
                true,
                "1:h:run 2:h:err 3:h:run:r2",
                &[Delete(2), Delete(3), Park(1)],
            ),
            ("to zero: only a serving one parks", 0, false, true, "1:h:start", &[Delete(1)]),
            ("parked and asleep: nothing to do", 0, false, true, "1:h:park", &[]),
            ("parking off: the last one goes", 0, false, false, "1:h:run", &[Delete(1)]),
            ("parking turned off while parked: it goes", 0, false, false, "1:h:park", &[Delete(1)]),
            ("a request: it wakes in place", 1, false, true, "1:h:park", &[Unpark(1)]),
            ("more wanted: it wakes and one more is made", 2, false, true, "1:h:park", &[Unpark(1), Create(1)]),
            ("an edit without rollout: the parked one still wakes", 1, false, true, "1:old:park", &[Unpark(1)]),
            ("a rollout replaces it", 1, true, true, "1:old:park", &[Delete(1), Create(1)]),
            ("a replica serves: the parked one goes", 1, false, true, "1:h:park 2:h:run", &[Delete(1)]),
            ("never a second parked one", 0, false, true, "1:h:park 2:h:run", &[Delete(2)]),
            ("a draining one is not parked", 0, false, true, "1:h:drain", &[]),
        ];
        for (what, replicas, rolling, park, instances, want) in cases {
            let got =
                actions(Desired { replicas: *replicas, hash: "h", rolling: *rolling, park: *park }, &facts(instances));
            assert_eq!(got, *want, "{what}");
        }
    }
}
