//! Per-API-key requests-per-minute and tokens-per-minute limits over a sliding 60 s window,
//! in memory (each server process enforces its own share).

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

/// Sliding-window counters per API key.
#[derive(Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<i64, Window>>,
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
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let w = keys.entry(key).or_default();
        w.expire(now);
        if let Some(rpm) = rpm
            && w.requests.len() >= rpm as usize
        {
            let skip = w.requests.len() + 1 - rpm.max(1) as usize;
            let oldest = w.requests.get(skip - 1).copied().unwrap_or(now);
            return Err(retry_after(oldest, now));
        }
        if let Some(tpm) = tpm
            && w.token_sum >= tpm
        {
            let mut sum = w.token_sum;
            let mut until = now;
            for (t, n) in &w.tokens {
                sum -= n;
                until = *t;
                if sum < tpm {
                    break;
                }
            }
            return Err(retry_after(until, now));
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
    fn tokens_over_the_limit_are_refused() {
        let l = RateLimiter::default();
        assert_eq!(l.admit(1, None, Some(100)), Ok(()));
        l.spend(1, 60);
        assert_eq!(l.admit(1, None, Some(100)), Ok(()));
        l.spend(1, 60);
        assert!(l.admit(1, None, Some(100)).is_err());
    }
}
