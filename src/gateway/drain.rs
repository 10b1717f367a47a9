//! Draining as the gateway sees it: instances the routing snapshot lists as draining are
//! withdrawn at once (no request picks them, not even one that read an older snapshot); what is
//! still in flight on them is counted here and, through the shares other servers write every
//! second (`server::rate_share`), on the other servers. The leader stops a draining instance when
//! every gateway says it withdrew it and has nothing in flight on it (`control::drain`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long an instance must have been withdrawn here before this gateway vouches that no new
/// request reaches it: a request that read the snapshot before the withdrawal picks its instance
/// within microseconds (no await between), so this covers it by a wide margin.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Shares of other servers older than this no longer count (their server stopped sharing).
pub const SHARE_FRESH: Duration = Duration::from_secs(5);
/// Other servers vouch for a drain only with shares read at least this long after it began: every
/// server that was up when it began (and may have routed to the instance) has shared by then (a
/// server shares when it starts, then every second).
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// How long an instance that left the snapshot (deleted) stays withdrawn: a request holding an
/// older snapshot must not pick an engine that is stopping.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One gateway's word on a draining instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Not withdrawn there (yet, or not for [`SETTLE`]): new requests may still reach it.
    Routing,
    /// Withdrawn there, with this many requests still in flight on it.
    InFlight(u64),
}

/// What one server's gateway shares with the others: requests in flight per instance (non-zero
/// counts only) and the instances it has withdrawn for at least [`SETTLE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    #[serde(default)]
    pub in_flight: BTreeMap<i64, u64>,
    #[serde(default)]
    pub withdrawn: Vec<i64>,
    /// Requests held per sleeping deployment, waiting for it to wake (`gateway::wake`): demand
    /// the autoscaler counts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queued: BTreeMap<i64, u64>,
}

impl Share {
    /// This share's word on instance `id`.
    pub fn view(&self, id: i64) -> View {
        if self.withdrawn.contains(&id) {
            View::InFlight(self.in_flight.get(&id).copied().unwrap_or(0))
        } else {
            View::Routing
        }
    }
}

/// Withdrawn instances here, and the latest shares of the other servers.
#[derive(Debug, Default)]
pub struct Drains {
    /// Instance → since when it is withdrawn here; `bool`: still listed by the snapshot.
    withdrawn: Mutex<HashMap<i64, (Instant, bool)>>,
    /// The other servers' shares and when they were read.
    elsewhere: Mutex<Option<(Instant, Vec<Share>)>>,
    /// Other servers may route too (PostgreSQL): their shares are read, and a drain waits for them.
    shared: std::sync::atomic::AtomicBool,
}

impl Drains {
    /// Takes in the draining (and parked) instances of a new snapshot: new ones are withdrawn from
    /// now on, known ones keep their time, ones no longer listed are forgotten after
    /// [`FORGET_AFTER`], unless the snapshot routes to them again (`live`: a parked instance
    /// woken in place), which ends their withdrawal at once.
    pub fn set_withdrawn(&self, listed: &HashSet<i64>, live: &HashSet<i64>, now: Instant) {
        let mut map = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|id, _| listed.contains(id) || !live.contains(id));
        for (id, (since, still)) in map.iter_mut() {
            if !listed.contains(id) && *still {
                *still = false;
                *since = now;
            }
        }
        map.retain(|_, (since, still)| *still || now.duration_since(*since) < FORGET_AFTER);
        for id in listed {
            map.entry(*id).and_modify(|(_, still)| *still = true).or_insert((now, true));
        }
    }

    /// The instances among `ids` withdrawn here.
    pub fn withdrawn_among(&self, ids: impl Iterator<Item = i64>) -> Vec<i64> {
        let map = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return Vec::new();
        }
        ids.filter(|id| map.contains_key(id)).collect()
    }

    /// Whether `id` has been withdrawn here for at least [`SETTLE`].
    pub fn settled(&self, id: i64, now: Instant) -> bool {
        let map = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id).is_some_and(|(since, still)| !*still || now.duration_since(*since) >= SETTLE)
    }

    /// Every instance withdrawn here for at least [`SETTLE`], sorted.
    pub fn settled_ids(&self, now: Instant) -> Vec<i64> {
        let map = self.withdrawn.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<i64> = map
            .iter()
            .filter(|(_, (since, still))| !*still || now.duration_since(*since) >= SETTLE)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Other servers may route too: a drain is vouched for only by their shares
    /// ([`Drains::elsewhere_for`]).
    pub fn expect_shares(&self) {
        self.shared.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The other servers' shares that can vouch for a drain that began `drained_for` ago: read
    /// within [`SHARE_FRESH`] and at least [`CONFIRM_AFTER`] after it began. `None` while there
    /// are none such (wait); no other server (one server alone): `Some` of nothing.
    pub fn elsewhere_for(&self, now: Instant, drained_for: Duration) -> Option<Vec<Share>> {
        if !self.shared.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Vec::new());
        }
        match &*self.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, shares)) => {
                let age = now.duration_since(*at);
                (age < SHARE_FRESH && age + CONFIRM_AFTER <= drained_for).then(|| shares.clone())
            }
            None => None,
        }
    }

    /// Replaces the other servers' shares (read just now).
    pub fn set_elsewhere(&self, shares: Vec<Share>, now: Instant) {
        *self.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, shares));
    }

    /// The other servers' shares, if read within [`SHARE_FRESH`].
    pub fn elsewhere(&self, now: Instant) -> Vec<Share> {
        match &*self.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, shares)) if now.duration_since(*at) < SHARE_FRESH => shares.clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawn_instances_settle_and_are_forgotten_a_while_after_they_leave() {
        let d = Drains::default();
        let t0 = Instant::now();
        d.set_withdrawn(&HashSet::from([1, 2]), &HashSet::new(), t0);
        assert_eq!(d.withdrawn_among([1, 2, 3].into_iter()), [1, 2]);
        assert!(!d.settled(1, t0 + SETTLE / 2), "just withdrawn: a request may still be picking it");
        assert!(d.settled(1, t0 + SETTLE));
        // A later snapshot keeps 1 (its time stays) and no longer lists 2 (deleted).
        d.set_withdrawn(&HashSet::from([1]), &HashSet::new(), t0 + SETTLE);
        assert!(d.settled(1, t0 + SETTLE));
        assert_eq!(d.withdrawn_among([2].into_iter()), [2], "still withdrawn: older snapshots name it");
        assert!(d.settled(2, t0 + SETTLE));
        d.set_withdrawn(&HashSet::from([1]), &HashSet::new(), t0 + SETTLE + FORGET_AFTER);
        assert_eq!(d.withdrawn_among([1, 2].into_iter()), [1]);
        assert_eq!(d.settled_ids(t0 + SETTLE + FORGET_AFTER), [1]);
        // Routed to again (a parked instance woken in place): its withdrawal ends at once.
        d.set_withdrawn(&HashSet::new(), &HashSet::from([1]), t0 + SETTLE + FORGET_AFTER);
        assert!(d.withdrawn_among([1].into_iter()).is_empty());
    }

    #[test]
    fn shares_say_routing_until_withdrawn_and_go_stale() {
        let share = Share { in_flight: BTreeMap::from([(1, 2), (3, 1)]), withdrawn: vec![1, 2], ..Default::default() };
        // (instance, view)
        for (id, want) in [(1, View::InFlight(2)), (2, View::InFlight(0)), (3, View::Routing), (4, View::Routing)] {
            assert_eq!(share.view(id), want, "instance {id}");
        }
        let d = Drains::default();
        let t0 = Instant::now();
        assert!(d.elsewhere(t0).is_empty());
        d.set_elsewhere(vec![share.clone()], t0);
        assert_eq!(d.elsewhere(t0 + SHARE_FRESH / 2), [share]);
        assert!(d.elsewhere(t0 + SHARE_FRESH).is_empty(), "a share not refreshed stops counting");
    }

    #[test]
    fn other_servers_vouch_only_with_shares_read_after_the_drain_began() {
        let share = Share { withdrawn: vec![1], ..Share::default() };
        let d = Drains::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(d.elsewhere_for(t0, s(0)), Some(vec![]), "one server alone: nobody else to ask");
        d.expect_shares();
        assert_eq!(d.elsewhere_for(t0, s(10)), None, "shares expected, none read yet");
        d.set_elsewhere(vec![share.clone()], t0);
        // (now, the drain began this long before now, vouched)
        let table = [
            // Read 0.5 s before now, the drain began 1 s before now: read 0.5 s into it, too early
            // (a server that was starting may not have shared yet).
            (t0 + s(1) / 2, s(1), false),
            (t0 + s(1) / 2, s(1) + s(1) / 2, true),
            (t0, s(1), true),
            (t0, s(0), false),
            // Read long ago: stale whatever the drain.
            (t0 + SHARE_FRESH, s(60), false),
        ];
        for (n, (now, drained_for, vouched)) in table.into_iter().enumerate() {
            assert_eq!(d.elsewhere_for(now, drained_for).is_some(), vouched, "row {n}");
        }
    }
}
