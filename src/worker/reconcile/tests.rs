//! Reconcile tests: backoff, its reset, probe addresses, path escaping.

use super::decide::backoff_step;
use super::*;

#[test]
fn backoff_doubles_from_ten_seconds_up_to_five_minutes() {
    let want = [(1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (7, 300), (40, 300), (0, 10)];
    for (n, secs) in want {
        assert_eq!(backoff(n), Duration::from_secs(secs), "n = {n}");
    }
}

#[test]
fn backoff_starts_again_after_a_long_healthy_run() {
    // 12.6 → 24 → 44 → 83 → 162 → 303 s was the old curve for a model that ran for hours
    // between its fifth and sixth crash; now that crash waits 10 s again.
    let cases = [(0, false, 1), (4, false, 5), (4, true, 1), (1, true, 1), (u32::MAX, false, u32::MAX)];
    for (before, long, want) in cases {
        assert_eq!(backoff_step(before, long), want, "{before} {long}");
    }
    assert_eq!(backoff(backoff_step(5, true)), Duration::from_secs(10));
    assert_eq!(backoff(backoff_step(5, false)), Duration::from_secs(300));
}

#[test]
fn engines_are_probed_where_they_listen_then_on_loopback() {
    assert_eq!(probe_hosts("198.18.7.2"), ["198.18.7.2", "127.0.0.1"]);
    assert_eq!(probe_hosts("127.0.0.1"), ["127.0.0.1"]);
    assert_eq!(probe_hosts("fd00::2"), ["[fd00::2]", "127.0.0.1"]);
    assert_eq!(probe_hosts("gpu-7.example"), ["gpu-7.example", "127.0.0.1"]);
}

#[test]
fn names_are_escaped_in_paths() {
    assert_eq!(urlencode("llama.cpp"), "llama.cpp");
    assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
}
