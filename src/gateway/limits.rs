//! Per-API-key requests-per-minute and tokens-per-minute limits over a sliding 60 s window, in
//! memory. Servers sharing a database add what the others counted (`set_others`, refreshed each
//! second by `server::routing`), so a key's limit holds across servers to within what the other
//! servers admitted since their last share.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Window {
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
    token_sum: u64,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while self.requests.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            self.requests.pop_front();
        }
        while let Some((t, n)) = self.tokens.front().copied() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.tokens.pop_front();
            self.token_sum -= n;
        }
    }
}

/// Sliding-window counters per API key, plus what other servers counted for it.
#[derive(Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<i64, Window>>,
    others: Mutex<HashMap<i64, Counted>>,
}

/// Requests and tokens a key used in the last 60 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub requests: u64,
    pub tokens: u64,
}

/// Seconds until a limited request may be retried (at least 1).
fn retry_after(oldest: Instant, now: Instant) -> u64 {
    let wait = WINDOW.saturating_sub(now.duration_since(oldest));
    (wait.as_secs_f64().ceil() as u64).max(1)
}

impl RateLimiter {
    /// Admits one request of `key` under its limits, or says how many seconds to wait.
    pub fn admit(&self, key: i64, rpm: Option<u32>, tpm: Option<u64>) -> Result<(), u64> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let elsewhere = self.others.lock().map(|o| o.get(&key).copied().unwrap_or_default()).unwrap_or_default();
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let w = keys.entry(key).or_default();
        w.expire(now);
        let requests = w.requests.len() as u64 + elsewhere.requests;
        if let Some(rpm) = rpm
            && requests >= u64::from(rpm)
        {
            // The local request whose expiry brings the count under the limit; when other
            // servers' requests alone fill it, their times are not known here: a second.
            let skip = usize::try_from(requests + 1 - u64::from(rpm.max(1))).unwrap_or(usize::MAX);
            return Err(w.requests.get(skip - 1).map_or(1, |oldest| retry_after(*oldest, now)));
        }
        if let Some(tpm) = tpm
            && w.token_sum + elsewhere.tokens >= tpm
        {
            let mut sum = w.token_sum + elsewhere.tokens;
            let mut until = None;
            for (t, n) in &w.tokens {
                sum -= n;
                until = Some(*t);
                if sum < tpm {
                    break;
                }
            }
            return Err(match until.filter(|_| sum < tpm) {
                Some(t) => retry_after(t, now),
                None => 1,
            });
        }
        w.requests.push_back(now);
        Ok(())
    }

    /// Counts tokens a key's request used.
    pub fn spend(&self, key: i64, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = keys.get_mut(&key) {
            w.tokens.push_back((Instant::now(), tokens));
            w.token_sum += tokens;
        }
    }
}

impl RateLimiter {
    /// What this server counted per key in the last 60 s, to share with the other servers. A key
    /// whose window emptied is listed once more with zeros (so the others stop counting it), then
    /// forgotten.
    pub fn counted_here(&self) -> Vec<(i64, Counted)> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(keys.len());
        keys.retain(|key, w| {
            w.expire(now);
            out.push((*key, Counted { requests: w.requests.len() as u64, tokens: w.token_sum }));
            !w.requests.is_empty() || !w.tokens.is_empty()
        });
        out
    }

    /// What the other servers counted per key (replaces what was known).
    pub fn set_others(&self, others: HashMap<i64, Counted>) {
        if let Ok(mut o) = self.others.lock() {
            *o = others;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_over_the_limit_wait_for_the_window() {
        let l = RateLimiter::default();
        for _ in 0..3 {
            assert_eq!(l.admit(1, Some(3), None), Ok(()));
        }
        let wait = l.admit(1, Some(3), None).expect_err("limited");
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(l.admit(2, Some(3), None), Ok(()), "keys are counted apart");
        assert_eq!(l.admit(1, None, None), Ok(()), "no limit, no count");
    }

    #[test]
    fn other_servers_counts_share_the_limit() {
        let l = RateLimiter::default();
        l.set_others([(1, Counted { requests: 2, tokens: 90 })].into());
        assert_eq!(l.admit(1, Some(3), None), Ok(()));
        let wait = l.admit(1, Some(3), None).expect_err("2 elsewhere and 1 here fill 3");
        assert!((59..=60).contains(&wait), "until the local request expires: {wait}");
        assert_eq!(l.admit(2, Some(3), None), Ok(()), "another key is not limited by them");
        // Others alone fill the limit: no local time to wait for, retry in a second.
        l.set_others([(3, Counted { requests: 5, tokens: 0 })].into());
        assert_eq!(l.admit(3, Some(5), None), Err(1));
        l.set_others([(4, Counted { requests: 0, tokens: 100 })].into());
        assert_eq!(l.admit(4, None, Some(100)), Err(1));
        assert_eq!(l.admit(4, None, Some(200)), Ok(()));
        l.spend(4, 100);
        let wait = l.admit(4, None, Some(200)).expect_err("100 here and 100 elsewhere");
        assert!((59..=60).contains(&wait), "the local spend expires first: {wait}");
    }

    #[test]
    fn what_is_counted_here_is_shared_then_forgotten_when_empty() {
        let l = RateLimiter::default();
        l.admit(1, Some(10), None).expect("admit");
        l.spend(1, 7);
        assert_eq!(l.counted_here(), [(1, Counted { requests: 1, tokens: 7 })]);
        assert_eq!(l.admit(9, None, None), Ok(()), "unlimited keys are not counted");
        assert_eq!(l.counted_here().len(), 1);
    }

    #[test]
    fn tokens_over_the_limit_are_refused() {
        let l = RateLimiter::default();
        assert_eq!(l.admit(1, None, Some(100)), Ok(()));
        l.spend(1, 60);
        assert_eq!(l.admit(1, None, Some(100)), Ok(()));
        l.spend(1, 60);
        assert!(l.admit(1, None, Some(100)).is_err());
    }
}
