//! Who is woken by a commit: a counter per kind of resource, so a waiter reads the change log only
//! when a kind it follows changed (a worker's status report no longer wakes the API-key cache or
//! the model-route watchers). On PostgreSQL one poller per process notices other servers' commits
//! (`Db::spawn_external_poller`) and wakes exactly who they concern.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// The kinds (tables) commits are counted for; anything else counts as `OTHER`.
pub const KINDS: [&str; 9] = [
    "users",
    "api_keys",
    "clusters",
    "inference_backends",
    "workers",
    "models",
    "model_instances",
    "model_routes",
    "model_route_targets",
];
const OTHER: usize = KINDS.len();

/// Commits seen so far, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters([u64; KINDS.len() + 1]);

impl Counters {
    fn index(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(OTHER)
    }

    fn bump(&mut self, kind: &str) {
        let i = Self::index(kind);
        self.0[i] = self.0[i].wrapping_add(1);
    }

    fn bump_all(&mut self) {
        for c in &mut self.0 {
            *c = c.wrapping_add(1);
        }
    }

    /// The sum of the counters of `kinds` (changes when any of them does).
    fn of(&self, kinds: &[usize]) -> u64 {
        kinds.iter().fold(0u64, |sum, i| sum.wrapping_add(self.0[*i]))
    }
}

/// A numbered change as the poller reads it: who it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChange {
    pub seq: i64,
    pub kind: String,
    pub workers: Vec<i64>,
}

/// The process's commit counters, and which change numbers it already woke its waiters for.
#[derive(Debug)]
pub struct Notifier {
    counters: watch::Sender<Counters>,
    /// A counter per worker, bumped by commits to instances that worker takes part in (before or
    /// after the change): a worker's watch on its instances wakes for those only.
    workers: Mutex<HashMap<i64, watch::Sender<u64>>>,
    /// While a poller runs: the change numbers this process woke for itself, which the poller
    /// then skips (cleared as it reads past them).
    own: Mutex<BTreeSet<i64>>,
    polled: AtomicBool,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            counters: watch::channel(Counters::default()).0,
            workers: Mutex::default(),
            own: Mutex::default(),
            polled: AtomicBool::new(false),
        }
    }
}

impl Notifier {
    /// Called after a commit that changed a row of `kind` and wrote change `seq`.
    /// `workers` are the workers the changed row concerns, before and after.
    pub fn committed(&self, kind: &str, seq: i64, workers: &[i64]) {
        if self.polled.load(Ordering::Relaxed)
            && let Ok(mut own) = self.own.lock()
        {
            own.insert(seq);
        }
        self.wake(kind, workers);
    }

    fn wake(&self, kind: &str, workers: &[i64]) {
        if !workers.is_empty()
            && let Ok(map) = self.workers.lock()
        {
            for w in workers {
                if let Some(tx) = map.get(w) {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
        self.counters.send_modify(|c| c.bump(kind));
    }

    /// From now on a poller reads the log: remember our own change numbers so it skips them.
    pub fn start_polling(&self) {
        self.polled.store(true, Ordering::Relaxed);
    }

    /// Changes the poller read (oldest first): wakes the waiters of those this process did not
    /// commit itself, and forgets its own numbers up to the newest read.
    pub fn seen_in_log(&self, changes: &[ForeignChange]) {
        let Some(newest) = changes.last().map(|c| c.seq) else { return };
        let own: BTreeSet<i64> = match self.own.lock() {
            Ok(mut own) => {
                let later = own.split_off(&(newest + 1));
                std::mem::replace(&mut *own, later)
            }
            Err(_) => BTreeSet::new(),
        };
        for c in changes.iter().filter(|c| !own.contains(&c.seq)) {
            self.wake(&c.kind, &c.workers);
        }
    }

    /// Wakes every waiter once (the poller fell too far behind to say who changes concern).
    pub fn wake_all(&self) {
        if let Ok(map) = self.workers.lock() {
            for tx in map.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        self.counters.send_modify(Counters::bump_all);
    }

    /// A waiter for commits to instances worker `worker_id` takes part in.
    pub fn subscribe_worker(&self, worker_id: i64) -> Changes {
        let rx = match self.workers.lock() {
            Ok(mut map) => map.entry(worker_id).or_insert_with(|| watch::channel(0).0).subscribe(),
            Err(_) => watch::channel(0).1,
        };
        let seen = *rx.borrow();
        Changes { source: Source::Worker(rx), seen }
    }

    /// A waiter for commits to any of `kinds`.
    pub fn subscribe(&self, kinds: &[&str]) -> Changes {
        let kinds: Vec<usize> = kinds.iter().map(|k| Counters::index(k)).collect();
        let rx = self.counters.subscribe();
        let seen = rx.borrow().of(&kinds);
        Changes { source: Source::Kinds(rx, kinds), seen }
    }
}

/// Waits for commits to some kinds, or to one worker's instances; see [`Notifier::subscribe`].
#[derive(Debug, Clone)]
pub struct Changes {
    source: Source,
    seen: u64,
}

#[derive(Debug, Clone)]
enum Source {
    Kinds(watch::Receiver<Counters>, Vec<usize>),
    Worker(watch::Receiver<u64>),
}

impl Source {
    fn now(&mut self) -> u64 {
        match self {
            Source::Kinds(rx, kinds) => rx.borrow_and_update().of(kinds),
            Source::Worker(rx) => *rx.borrow_and_update(),
        }
    }

    fn peek(&self) -> u64 {
        match self {
            Source::Kinds(rx, kinds) => rx.borrow().of(kinds),
            Source::Worker(rx) => *rx.borrow(),
        }
    }

    async fn wait(&mut self) -> Result<(), watch::error::RecvError> {
        match self {
            Source::Kinds(rx, _) => rx.changed().await,
            Source::Worker(rx) => rx.changed().await,
        }
    }
}

impl Changes {
    /// Returns once a followed kind has a commit not yet marked seen; errs when the database is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        loop {
            let now = self.source.now();
            if now != self.seen {
                self.seen = now;
                return Ok(());
            }
            self.source.wait().await?;
        }
    }

    /// Marks everything committed so far as seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.source.now();
    }

    /// A number that changes whenever a followed kind does (for caches).
    pub fn generation(&self) -> u64 {
        self.source.peek()
    }
}

/// How often a PostgreSQL server looks for other servers' commits.
pub const EXTERNAL_POLL: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_only_for_their_kinds() {
        let n = Notifier::default();
        let mut keys = n.subscribe(&["api_keys", "users"]);
        let mut workers = n.subscribe(&["workers"]);
        let mut worker7 = n.subscribe_worker(7);
        n.committed("workers", 1, &[]);
        let woke = |c: &mut Changes| {
            let c = c.clone();
            async move {
                let mut c = c;
                tokio::time::timeout(Duration::from_millis(20), c.changed()).await.is_ok()
            }
        };
        assert!(!woke(&mut keys).await, "a worker commit must not wake the key cache");
        assert!(woke(&mut workers).await);
        workers.changed().await.expect("changed");
        assert!(!woke(&mut workers).await, "seen once");
        let before = keys.generation();
        n.committed("api_keys", 2, &[]);
        // An instance commit wakes the worker it concerns, not the others.
        let mut worker8 = n.subscribe_worker(8);
        assert!(!woke(&mut worker7).await);
        n.committed("model_instances", 3, &[7]);
        assert!(woke(&mut worker7).await && !woke(&mut worker8).await);
        worker7.mark_seen();
        assert_ne!(keys.generation(), before);
        assert!(woke(&mut keys).await);
        // With a poller: another server's commits wake who they concern; our own, read back from
        // the log, wake no one again.
        keys.mark_seen();
        workers.mark_seen();
        worker7.mark_seen();
        n.start_polling();
        n.committed("api_keys", 9, &[]);
        keys.mark_seen();
        let read = |seq: i64, kind: &str, workers: Vec<i64>| ForeignChange { seq, kind: kind.into(), workers };
        n.seen_in_log(&[read(9, "api_keys", vec![]), read(10, "model_instances", vec![7])]);
        assert!(!woke(&mut keys).await, "our own change, read back, wakes no one");
        assert!(woke(&mut worker7).await && !woke(&mut worker8).await && !woke(&mut workers).await);
        n.wake_all();
        assert!(woke(&mut keys).await && woke(&mut workers).await);
        // A kind not in the list is "other", not nothing.
        let mut other = n.subscribe(&["sessions"]);
        n.committed("sessions", 11, &[]);
        assert!(woke(&mut other).await);
    }
}
