//! Choosing an instance: smooth weighted round-robin over a route's targets, then the instance
//! with the fewest outstanding requests (ties broken in turn), skipping instances whose circuit
//! is open after repeated connect failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::prefix;
use super::snapshot::{Endpoint, LoadBalancing, Route, Target};

/// Consecutive connect failures after which an instance is skipped.
pub const TRIP_AFTER: u32 = 2;
/// How long a tripped instance is skipped before one request may probe it again.
pub const OPEN_FOR: Duration = Duration::from_secs(5);

/// Live counters of one instance.
#[derive(Debug, Default)]
pub struct InstanceStats {
    outstanding: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since the balancer's epoch until which the circuit is open.
    open_until: AtomicU64,
}

impl InstanceStats {
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// Holds one outstanding request on an instance; dropping it ends the request.
#[derive(Debug)]
pub struct Lease {
    pub endpoint: Endpoint,
    /// Index of the chosen target in the route.
    pub target: usize,
    stats: Arc<InstanceStats>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stats.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct RouteState {
    /// Smooth weighted round-robin's current weights, one per target.
    current: Vec<i64>,
    /// Rotates the start of the least-outstanding scan, so ties take turns.
    cursor: usize,
}

/// Where this server last placed each prefix key afresh, per route: two generations of at most
/// [`HOMES_PER_GENERATION`] keys each, so the memory stays bounded and the keys seen least
/// recently are forgotten first (a forgotten key is placed afresh, as a new one); and how many
/// remembered keys each instance is home to.
#[derive(Default)]
pub struct Homes {
    current: HashMap<(i64, u64), i64>,
    previous: HashMap<(i64, u64), i64>,
    counts: HashMap<i64, usize>,
}

/// Keys remembered per generation (about 32 bytes each).
pub const HOMES_PER_GENERATION: usize = 50_000;

impl Homes {
    pub fn get(&mut self, route: i64, key: u64) -> Option<i64> {
        if let Some(home) = self.current.get(&(route, key)) {
            return Some(*home);
        }
        let home = self.previous.remove(&(route, key))?;
        self.uncount(home);
        self.put(route, key, home);
        Some(home)
    }

    pub fn put(&mut self, route: i64, key: u64, instance: i64) {
        if self.current.len() >= HOMES_PER_GENERATION {
            self.previous = std::mem::take(&mut self.current);
            self.counts.clear();
            for home in self.previous.values() {
                *self.counts.entry(*home).or_default() += 1;
            }
        }
        if let Some(old) = self.current.insert((route, key), instance).or_else(|| self.previous.remove(&(route, key))) {
            self.uncount(old);
        }
        *self.counts.entry(instance).or_default() += 1;
    }

    fn uncount(&mut self, instance: i64) {
        if let Some(n) = self.counts.get_mut(&instance) {
            *n = n.saturating_sub(1);
        }
    }

    /// How many remembered keys have `instance` as their home.
    pub fn homed(&self, instance: i64) -> usize {
        self.counts.get(&instance).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The balancer's shared state (instance counters, per-route rotation, prefix homes).
pub struct Balancer {
    epoch: Instant,
    homes: Mutex<Homes>,
    instances: Mutex<HashMap<i64, Arc<InstanceStats>>>,
    routes: Mutex<HashMap<i64, RouteState>>,
}

impl Default for Balancer {
    fn default() -> Self {
        Balancer {
            epoch: Instant::now(),
            homes: Mutex::default(),
            instances: Mutex::default(),
            routes: Mutex::default(),
        }
    }
}

impl Balancer {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn stats(&self, instance_id: i64) -> Arc<InstanceStats> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(instance_id).or_default().clone()
    }

    /// Counters of an instance (for metrics and tests).
    pub fn instance(&self, instance_id: i64) -> Arc<InstanceStats> {
        self.stats(instance_id)
    }

    /// Drops counters of instances no longer in any route.
    pub fn retain(&self, live: &std::collections::HashSet<i64>) {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, s| live.contains(id) || s.outstanding() > 0);
    }

    fn usable(&self, stats: &InstanceStats, now: u64) -> bool {
        stats.open_until.load(Ordering::Relaxed) <= now
    }

    /// Picks an instance of `route` among its primary targets (or, with `fallback_for`, among the
    /// fallback targets that catch that status), never one in `exclude`.
    pub fn pick(&self, route: &Route, exclude: &[i64], fallback_for: Option<u16>) -> Option<Lease> {
        self.pick_keyed(route, exclude, fallback_for, None)
    }

    /// [`Balancer::pick`] with the request's prefix key ([`prefix::key`]), which a `prefix_aware`
    /// route hashes onto its targets and instances.
    pub fn pick_keyed(
        &self,
        route: &Route,
        exclude: &[i64],
        fallback_for: Option<u16>,
        key: Option<u64>,
    ) -> Option<Lease> {
        let key = key.filter(|_| route.load_balancing == LoadBalancing::PrefixAware);
        let eligible: Vec<usize> = route
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| match fallback_for {
                None => !t.is_fallback(),
                Some(status) => t.catches(status),
            })
            .filter(|(_, t)| t.instances.iter().any(|e| !exclude.contains(&e.instance_id)))
            .map(|(i, _)| i)
            .collect();
        // With no primary instances at all, the fallback targets serve as primaries.
        let eligible = if eligible.is_empty() && fallback_for.is_none() {
            (0..route.targets.len())
                .filter(|i| route.targets[*i].instances.iter().any(|e| !exclude.contains(&e.instance_id)))
                .collect()
        } else {
            eligible
        };
        if eligible.is_empty() {
            return None;
        }
        let (target, cursor) = {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            let state = routes.entry(route.id).or_default();
            if state.current.len() != route.targets.len() {
                state.current = vec![0; route.targets.len()];
            }
            let by_key = key.and_then(|k| {
                let weighted = eligible.iter().map(|i| (route.targets[*i].name.as_str(), route.targets[*i].weight));
                prefix::choose_target(k, weighted).map(|j| eligible[j])
            });
            let target = by_key.unwrap_or_else(|| swrr(&mut state.current, &route.targets, &eligible));
            state.cursor = state.cursor.wrapping_add(1);
            (target, state.cursor)
        };
        self.least_outstanding(route, target, exclude, cursor, key)
    }

    /// Picks an instance of target `index` by the route's policy ([`prefix::select`]).
    fn least_outstanding(
        &self,
        route: &Route,
        index: usize,
        exclude: &[i64],
        cursor: usize,
        key: Option<u64>,
    ) -> Option<Lease> {
        let target: &Target = &route.targets[index];
        let now = self.now_ms();
        let candidates: Vec<(&Endpoint, Arc<InstanceStats>)> = target
            .instances
            .iter()
            .filter(|e| !exclude.contains(&e.instance_id))
            .map(|e| (e, self.stats(e.instance_id)))
            .collect();
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        let homed = key.filter(|_| route.load_balancing == LoadBalancing::PrefixAware);
        let (home, keys_homed) = match homed {
            Some(k) => {
                let mut homes = self.homes.lock().unwrap_or_else(|e| e.into_inner());
                let home = homes.get(route.id, k);
                (home, candidates.iter().map(|(e, _)| homes.homed(e.instance_id)).collect())
            }
            None => (None, Vec::new()),
        };
        // Closed circuits first; if every circuit is open, try anyway rather than refuse.
        for require_closed in [true, false] {
            let pool: Vec<usize> = (0..n).filter(|i| !require_closed || self.usable(&candidates[*i].1, now)).collect();
            let ids: Vec<i64> = pool.iter().map(|i| candidates[*i].0.instance_id).collect();
            let loads: Vec<usize> = pool.iter().map(|i| candidates[*i].1.outstanding()).collect();
            best = match homed {
                Some(k) => {
                    let keys: Vec<usize> = pool.iter().map(|i| keys_homed[*i]).collect();
                    prefix::choose_homed(k, home, &ids, &loads, &keys).map(|(j, fresh)| {
                        if fresh {
                            self.homes.lock().unwrap_or_else(|e| e.into_inner()).put(route.id, k, ids[j]);
                        }
                        pool[j]
                    })
                }
                None => prefix::select(route.load_balancing, key, &ids, &loads, cursor).map(|j| pool[j]),
            };
            if best.is_some() {
                break;
            }
        }
        let (endpoint, stats) = &candidates[best?];
        stats.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Lease { endpoint: (*endpoint).clone(), target: index, stats: stats.clone() })
    }

    /// Records a connect failure; the circuit opens after [`TRIP_AFTER`] in a row.
    pub fn failed(&self, lease: &Lease) {
        let n = lease.stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TRIP_AFTER {
            lease.stats.open_until.store(self.now_ms() + OPEN_FOR.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Records a successful connection: the circuit closes.
    pub fn succeeded(&self, lease: &Lease) {
        if lease.stats.failures.load(Ordering::Relaxed) != 0 {
            lease.stats.failures.store(0, Ordering::Relaxed);
            lease.stats.open_until.store(0, Ordering::Relaxed);
        }
    }
}

/// Smooth weighted round-robin (as nginx does) over the eligible targets; all-zero weights count
/// as equal.
fn swrr(current: &mut [i64], targets: &[Target], eligible: &[usize]) -> usize {
    let all_zero = eligible.iter().all(|i| targets[*i].weight == 0);
    let weight = |i: usize| if all_zero { 1 } else { i64::from(targets[i].weight) };
    let total: i64 = eligible.iter().map(|i| weight(*i)).sum();
    let mut best = eligible[0];
    for &i in eligible {
        current[i] += weight(i);
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_stay_bounded_and_forget_the_least_recent_first() {
        let mut homes = Homes::default();
        homes.put(1, 7, 70);
        for k in 0..HOMES_PER_GENERATION as u64 {
            homes.put(2, 1000 + k, 1);
        }
        // Key 7 is in the previous generation now; reading it brings it forward.
        assert_eq!(homes.get(1, 7), Some(70));
        for k in 0..HOMES_PER_GENERATION as u64 {
            homes.put(3, k, 1);
        }
        assert_eq!(homes.get(1, 7), Some(70), "read recently: kept");
        assert_eq!(homes.get(2, 1000), None, "not read since two generations: forgotten");
        assert!(homes.len() <= 2 * HOMES_PER_GENERATION);
        assert_eq!(homes.get(9, 7), None, "homes are per route");
        assert_eq!(homes.homed(70), 1);
        assert_eq!(homes.homed(1), homes.len() - 1, "every other key is homed on instance 1");
        homes.put(1, 7, 71);
        assert_eq!((homes.homed(70), homes.homed(71)), (0, 1), "a key moved home counts once, where it is");
    }

    #[test]
    fn a_prefix_keeps_its_home_and_a_new_one_takes_the_idlest() {
        let b = Balancer::default();
        let mut r = route(vec![target("a", 1, &[1, 2, 3])]);
        r.load_balancing = LoadBalancing::PrefixAware;
        // Instance 2 busy with two unkeyed requests.
        let _busy: Vec<Lease> = (0..2)
            .map(|_| {
                let l = b.pick_keyed(&r, &[1, 3], None, None).expect("lease");
                assert_eq!(l.endpoint.instance_id, 2);
                l
            })
            .collect();
        // A new key never lands on the busy instance; later requests with it follow it home.
        for k in 0..50u64 {
            let key = prefix::mix(k);
            let first = b.pick_keyed(&r, &[], None, Some(key)).expect("lease").endpoint.instance_id;
            assert_ne!(first, 2, "key {k}");
            for _ in 0..3 {
                assert_eq!(b.pick_keyed(&r, &[], None, Some(key)).expect("lease").endpoint.instance_id, first);
            }
        }
    }

    fn target(name: &str, weight: u32, ids: &[i64]) -> Target {
        Target {
            name: name.into(),
            weight,
            served_name: "m".into(),
            fallback_status_codes: vec![],
            instances: ids
                .iter()
                .map(|i| Endpoint { instance_id: *i, addr: format!("127.0.0.1:{i}"), auth: None })
                .collect(),
        }
    }

    fn route(targets: Vec<Target>) -> Route {
        Route {
            id: 1,
            name: "m".into(),
            categories: vec![],
            created: 0,
            timeout: None,
            generic_proxy: true,
            load_balancing: LoadBalancing::default(),
            targets,
        }
    }

    #[test]
    fn weights_split_traffic_exactly() {
        let b = Balancer::default();
        let r = route(vec![target("a", 95, &[1]), target("b", 5, &[2])]);
        let mut counts = HashMap::new();
        for _ in 0..100 {
            let lease = b.pick(&r, &[], None).expect("pick");
            *counts.entry(lease.endpoint.instance_id).or_insert(0) += 1;
        }
        assert_eq!((counts[&1], counts[&2]), (95, 5));
    }

    #[test]
    fn least_outstanding_wins_and_ties_alternate() {
        let b = Balancer::default();
        let r = route(vec![target("a", 1, &[1, 2, 3])]);
        let held: Vec<Lease> = (0..3).map(|_| b.pick(&r, &[], None).expect("pick")).collect();
        let mut ids: Vec<i64> = held.iter().map(|l| l.endpoint.instance_id).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3], "each busy instance gets one before any gets two");
        drop(held);
        let busy = b.pick(&r, &[], None).expect("pick");
        let next = b.pick(&r, &[], None).expect("pick");
        assert_ne!(busy.endpoint.instance_id, next.endpoint.instance_id);
    }

    #[test]
    fn failing_instances_are_skipped_then_probed() {
        let b = Balancer::default();
        let r = route(vec![target("a", 1, &[1, 2])]);
        let bad = b.pick(&r, &[2], None).expect("pick");
        assert_eq!(bad.endpoint.instance_id, 1);
        b.failed(&bad);
        b.failed(&bad);
        drop(bad);
        for _ in 0..10 {
            assert_eq!(b.pick(&r, &[], None).expect("pick").endpoint.instance_id, 2);
        }
        // With only the tripped instance left, it is still tried rather than refused.
        assert_eq!(b.pick(&r, &[2], None).expect("pick").endpoint.instance_id, 1);
        assert!(b.pick(&r, &[1, 2], None).is_none());
    }

    #[test]
    fn fallback_targets_serve_only_their_status_classes() {
        let b = Balancer::default();
        let mut fb = target("fb", 1, &[9]);
        fb.fallback_status_codes = vec!["5xx".into()];
        let r = route(vec![target("a", 1, &[1]), fb]);
        for _ in 0..5 {
            assert_eq!(b.pick(&r, &[], None).expect("pick").endpoint.instance_id, 1);
        }
        assert_eq!(b.pick(&r, &[], Some(503)).expect("pick").endpoint.instance_id, 9);
        assert!(b.pick(&r, &[], Some(404)).is_none());
    }
}
