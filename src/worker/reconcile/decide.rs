//! The worker's reconcile decisions, pure: what a pass does with one instance (from its stored
//! state, whether a workload of it runs here, and the time), and the health state machine of a
//! workload it runs. `Reconciler` observes and executes; everything it chooses is chosen here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::api::InstanceState;

/// Health probes that may fail in a row before a running instance is an error.
pub const HEALTH_FAILURES: u32 = 3;
/// Time between health probes of a running instance.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Time between health probes while a workload starts: how late, at most, the worker sees an
/// engine that just became ready (a scale-from-zero waits on this). A probe of a starting engine
/// on its own host is one refused or answered local connection.
pub const STARTING_EVERY: Duration = Duration::from_millis(100);
/// Time between the worker's passes when nothing changes and nothing starts.
pub const IDLE_PASS: Duration = Duration::from_secs(1);

/// What one pass does with an instance placed on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Prepare and start its workload (first start).
    Launch,
    /// Start it again after a failure whose backoff has passed.
    Restart,
    /// The server says it runs, yet this process holds nothing of it (the worker restarted): take
    /// back a workload that still runs, else mark the instance failed.
    AdoptOrFail,
    /// Someone else marked it failed while it runs here: stop the workload.
    Stop,
    /// It runs here: check on it (exit, failed parts, health).
    Watch,
    /// Nothing to do now.
    Idle,
}

/// The step for an instance from its stored state and whether a workload of it runs here.
pub fn step(
    state: InstanceState,
    runs_here: bool,
    restart_on_error: bool,
    next_restart: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Step {
    use InstanceState as S;
    match (state, runs_here) {
        (S::Scheduled | S::Initializing | S::Downloading, false) => Step::Launch,
        // A draining or parked instance keeps running until the server deletes it or wakes it.
        (S::Starting | S::Running | S::Unreachable | S::Draining | S::Parked, false) => Step::AdoptOrFail,
        (S::Error, false) => {
            let due = next_restart.is_some_and(|t| t <= now);
            if restart_on_error && due { Step::Restart } else { Step::Idle }
        }
        (S::Error, true) => Step::Stop,
        (_, true) => Step::Watch,
        (S::Pending | S::Analyzing, false) => Step::Idle,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
}

/// What the worker tracks of a workload's health between passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub phase: Phase,
    /// When this workload was started or adopted.
    pub since: Instant,
    pub last_probe: Option<Instant>,
    /// Failed probes in a row while running.
    pub failures: u32,
    /// Since when this run has answered its health check (None until it has).
    pub healthy_since: Option<Instant>,
}

impl Health {
    /// A workload just started or adopted: starting, never probed.
    pub fn new(now: Instant) -> Self {
        Self { phase: Phase::Starting, since: now, last_probe: None, failures: 0, healthy_since: None }
    }

    /// How soon the next pass should look at this workload: often while it starts.
    pub fn next_pass(&self) -> Duration {
        match self.phase {
            Phase::Starting => STARTING_EVERY,
            Phase::Running => IDLE_PASS,
        }
    }

    /// Whether to probe now. A starting workload is probed often; a running one every
    /// `HEALTH_EVERY`, or at once while the server does not yet show it running.
    pub fn probe_due(&self, stored_running: bool, now: Instant) -> bool {
        match (self.phase, self.last_probe) {
            (_, None) => true,
            (Phase::Starting, Some(t)) => now.duration_since(t) >= STARTING_EVERY,
            (Phase::Running, Some(t)) => now.duration_since(t) >= HEALTH_EVERY || !stored_running,
        }
    }

    /// The state after a probe, and what follows from it.
    pub fn after_probe(&self, healthy: bool, stored_running: bool, now: Instant, startup: Duration) -> (Self, Verdict) {
        let mut next = Self { last_probe: Some(now), ..*self };
        let verdict = match (self.phase, healthy) {
            (_, true) => {
                next.phase = Phase::Running;
                next.failures = 0;
                next.healthy_since.get_or_insert(now);
                if stored_running { Verdict::Keep } else { Verdict::NowRunning }
            }
            (Phase::Starting, false) if now.duration_since(self.since) > startup => Verdict::StartupTimedOut,
            (Phase::Starting, false) => Verdict::Keep,
            (Phase::Running, false) => {
                next.failures += 1;
                if next.failures >= HEALTH_FAILURES { Verdict::Unhealthy } else { Verdict::Keep }
            }
        };
        (next, verdict)
    }

    /// Whether this run stayed healthy long enough that its failure starts the backoff again.
    pub fn healthy_for(&self, at_least: Duration, now: Instant) -> bool {
        self.healthy_since.is_some_and(|t| now.duration_since(t) >= at_least)
    }
}

/// What a probe's answer means for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report; keep watching.
    Keep,
    /// Healthy and the server does not show it running yet: report running.
    NowRunning,
    /// Never healthy within the startup deadline: stop it and mark it failed.
    StartupTimedOut,
    /// `HEALTH_FAILURES` failed probes in a row while running: stop it and mark it failed.
    Unhealthy,
}

/// The backoff step of a new failure: one more than the failures in a row before it, or the first
/// again after a run that stayed healthy long enough.
pub fn backoff_step(failures_before: u32, healthy_long: bool) -> u32 {
    if healthy_long { 1 } else { failures_before.saturating_add(1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState as S;

    #[test]
    fn each_stored_state_with_and_without_a_workload_here() {
        let now = Utc::now();
        let past = Some(now - chrono::Duration::seconds(1));
        let future = Some(now + chrono::Duration::seconds(30));
        // (stored state, runs here, restart_on_error, next restart) → step
        let table = [
            (S::Scheduled, false, true, None, Step::Launch),
            (S::Initializing, false, true, None, Step::Launch),
            (S::Downloading, false, true, None, Step::Launch),
            (S::Starting, false, true, None, Step::AdoptOrFail),
            (S::Running, false, true, None, Step::AdoptOrFail),
            // The server marked it unreachable while this worker was cut off and restarted.
            (S::Unreachable, false, true, None, Step::AdoptOrFail),
            (S::Error, false, true, past, Step::Restart),
            (S::Error, false, true, future, Step::Idle),
            (S::Error, false, true, None, Step::Idle),
            // Restart off: a due time (left from before the edit) starts nothing.
            (S::Error, false, false, past, Step::Idle),
            // Race: the server (or an operator) failed it while it still runs here.
            (S::Error, true, true, past, Step::Stop),
            (S::Scheduled, true, true, None, Step::Watch),
            (S::Starting, true, true, None, Step::Watch),
            (S::Running, true, true, None, Step::Watch),
            // The server saw the worker silent; the workload kept running: watch it back to running.
            (S::Unreachable, true, true, None, Step::Watch),
            // Draining: it serves what is in flight until the server deletes it; watched as running.
            (S::Draining, true, true, None, Step::Watch),
            // Parked: its engine is kept (maybe asleep) until woken or deleted; watched as running.
            (S::Parked, true, true, None, Step::Watch),
            (S::Parked, false, true, None, Step::AdoptOrFail),
            // The worker restarted mid-drain: take the workload back, so the delete stops it.
            (S::Draining, false, true, None, Step::AdoptOrFail),
            (S::Pending, false, true, None, Step::Idle),
            (S::Analyzing, false, true, None, Step::Idle),
        ];
        for (state, here, restart, next, want) in table {
            assert_eq!(step(state, here, restart, next, now), want, "{state:?} here={here} restart={restart} {next:?}");
        }
    }

    #[test]
    fn the_health_state_machine() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let startup = Duration::from_secs(60);
        let fresh = Health::new(t0);
        // (from, healthy, stored running, at) → (phase, failures, verdict)
        let started = Health { phase: Phase::Running, last_probe: Some(s(1)), healthy_since: Some(s(1)), ..fresh };
        let once_failed = Health { failures: 1, ..started };
        let twice_failed = Health { failures: 2, ..started };
        let table = [
            (fresh, false, false, s(1), Phase::Starting, 0, Verdict::Keep),
            (fresh, false, false, s(61), Phase::Starting, 0, Verdict::StartupTimedOut),
            (fresh, true, false, s(61), Phase::Running, 0, Verdict::NowRunning),
            // Already shown running (adopted after a worker restart): nothing to report.
            (fresh, true, true, s(2), Phase::Running, 0, Verdict::Keep),
            (started, true, true, s(6), Phase::Running, 0, Verdict::Keep),
            (started, false, true, s(6), Phase::Running, 1, Verdict::Keep),
            (once_failed, true, true, s(11), Phase::Running, 0, Verdict::Keep),
            (twice_failed, false, true, s(11), Phase::Running, 3, Verdict::Unhealthy),
            // A running workload whose stored state went unreachable: one healthy probe reports it.
            (started, true, false, s(3), Phase::Running, 0, Verdict::NowRunning),
            // A running workload does not time out on startup, however long it has run.
            (once_failed, false, true, s(3600), Phase::Running, 2, Verdict::Keep),
        ];
        for (n, (from, healthy, stored, at, phase, failures, verdict)) in table.into_iter().enumerate() {
            let (next, got) = from.after_probe(healthy, stored, at, startup);
            assert_eq!((next.phase, next.failures, got), (phase, failures, verdict), "row {n}");
            assert_eq!(next.last_probe, Some(at), "row {n}");
            if healthy {
                assert!(next.healthy_since.is_some_and(|t| t <= at), "row {n}");
            }
        }
    }

    #[test]
    fn the_first_healthy_probe_starts_the_healthy_time_and_later_ones_keep_it() {
        let t0 = Instant::now();
        let (once, _) = Health::new(t0).after_probe(true, false, t0 + Duration::from_secs(5), Duration::from_secs(60));
        let (twice, _) = once.after_probe(true, true, t0 + Duration::from_secs(50), Duration::from_secs(60));
        assert_eq!(twice.healthy_since, Some(t0 + Duration::from_secs(5)));
        assert!(twice.healthy_for(Duration::from_secs(45), t0 + Duration::from_secs(50)));
        assert!(!twice.healthy_for(Duration::from_secs(46), t0 + Duration::from_secs(50)));
        assert!(!Health::new(t0).healthy_for(Duration::ZERO, t0), "never healthy is not healthy for 0 s");
    }

    #[test]
    fn when_probes_are_due() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let starting = Health { last_probe: Some(t0), ..Health::new(t0) };
        let running = Health { phase: Phase::Running, ..starting };
        let table = [
            (Health::new(t0), true, t0, true),
            (starting, false, ms(99), false),
            (starting, false, ms(100), true),
            (running, true, ms(4_999), false),
            (running, true, ms(5_000), true),
            // Running here but not on the server (a lost report, or marked unreachable): probe now.
            (running, false, ms(1), true),
        ];
        for (n, (h, stored, at, due)) in table.into_iter().enumerate() {
            assert_eq!(h.probe_due(stored, at), due, "row {n}");
        }
        // The worker's next pass comes when the next probe of a starting workload is due.
        assert_eq!((starting.next_pass(), running.next_pass()), (STARTING_EVERY, IDLE_PASS));
    }
}
