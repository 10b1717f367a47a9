//! Login throttling. Failures are counted under three keys, each with its own free allowance
//! before it must wait 2^(n−free) s after its last failure (capped at 5 minutes, answered 429 with
//! `Retry-After`):
//!
//! - the (user name, client address) pair: 5 free — a guesser at one address is slowed at once,
//!   and the real user at another address is not held back by it;
//! - the client address: 20 free — one address spraying many names;
//! - the user name, from every address together: 100 free — a slow global cap on a distributed
//!   guess. A client holding a device cookie from an earlier successful login as that user is
//!   exempt from this one (OWASP's "device cookie"), so a flood cannot lock the real admin out of
//!   the browser they use.
//!
//! A successful login clears its pair and address; an administrator clears a user's counts with
//! `ferrostack logins clear` (`DELETE /v2/login-throttle`). In memory, per server process; the
//! keys are bounded (oldest dropped past 10,000).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per (name, address) before any waiting.
pub const PAIR_FREE: u32 = 5;
/// Failures allowed per client address, over every name.
pub const ADDR_FREE: u32 = 20;
/// Failures allowed per user name, over every address (device-cookie holders exempt).
pub const USER_FREE: u32 = 100;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
const MAX_KEYS: usize = 10_000;

/// How long to wait after the `failures`-th failure in a row, `free` being allowed.
pub fn wait_after(failures: u32, free: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let secs = 1u64.checked_shl(failures - free).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_WAIT)
}

/// One counter a login attempt touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    id: String,
    free: u32,
    /// Counted but not checked (the user-wide cap for a device-cookie holder).
    enforced: bool,
}

/// The counters of a login as `name` from `addr`; `trusted_device` when the client holds a valid
/// device cookie for that name.
pub fn keys(name: &str, addr: Option<IpAddr>, trusted_device: bool) -> Vec<Key> {
    let name = name.to_lowercase();
    let addr = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    vec![
        Key { id: format!("pair:{name}@{addr}"), free: PAIR_FREE, enforced: true },
        Key { id: format!("addr:{addr}"), free: ADDR_FREE, enforced: true },
        Key { id: format!("user:{name}"), free: USER_FREE, enforced: !trusted_device },
    ]
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    free: u32,
}

impl Failures {
    fn until(&self) -> Instant {
        self.last + wait_after(self.count, self.free)
    }
}

/// Failed logins per key.
#[derive(Debug, Default)]
pub struct LoginThrottle(Mutex<HashMap<String, Failures>>);

impl LoginThrottle {
    /// Starts a login attempt: `Err(wait)` while any enforced key must still wait; otherwise the
    /// attempt is counted as a failure at once (in the same lock, so concurrent attempts cannot all
    /// pass one check) until [`LoginThrottle::succeeded`] clears it.
    pub fn begin(&self, keys: &[Key], now: Instant) -> Result<(), Duration> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter(|k| k.enforced)
            .filter_map(|k| map.get(&k.id))
            .filter(|f| !wait_after(f.count, f.free).is_zero())
            .map(|f| f.until().saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            return Err(wait);
        }
        Self::record(&mut map, keys, now);
        Ok(())
    }

    fn record(map: &mut HashMap<String, Failures>, keys: &[Key], now: Instant) {
        // Bounded: make room first, dropping the entries whose wait is over (then the oldest).
        while map.len() + keys.len() > MAX_KEYS {
            let victim = map.iter().min_by_key(|(_, f)| (f.until() > now, f.last)).map(|(k, _)| k.clone());
            match victim {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        for k in keys {
            let f = map.entry(k.id.clone()).or_insert(Failures { count: 0, last: now, free: k.free });
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// Counts a failure without starting an attempt (tests).
    #[cfg(test)]
    pub fn failed(&self, keys: &[Key], now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::record(&mut map, keys, now);
    }

    /// A login succeeded: its pair and address start again. The user-wide count keeps the guesses
    /// made elsewhere (a success in one place does not forgive them) but not this attempt's own
    /// count: successes never add up to a cap (a script logging in with HTTP Basic has no device
    /// cookie). It holds back only clients without a device cookie.
    pub fn succeeded(&self, keys: &[Key]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if !k.id.starts_with("user:") {
                map.remove(&k.id);
            } else if let Some(f) = map.get_mut(&k.id) {
                f.count = f.count.saturating_sub(1);
                if f.count == 0 {
                    map.remove(&k.id);
                }
            }
        }
    }

    /// An attempt that was counted but never checked (the server was too busy to hash): takes its
    /// count back from every key, so load alone never adds up to a lockout.
    pub fn not_attempted(&self, keys: &[Key]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if let Some(f) = map.get_mut(&k.id) {
                f.count = f.count.saturating_sub(1);
                if f.count == 0 {
                    map.remove(&k.id);
                }
            }
        }
    }

    /// Clears the counts of user `name` (every address), or every count when `None`. Returns how
    /// many counters were removed.
    pub fn clear(&self, name: Option<&str>) -> usize {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        match name.map(str::to_lowercase) {
            None => map.clear(),
            Some(name) => {
                let user = format!("user:{name}");
                // `pair:{name}@{addr}`: the name is all before the last `@` (an address has none),
                // so clearing `a` leaves `a@b`'s counts alone.
                let pair_of =
                    |k: &str| k.strip_prefix("pair:").and_then(|r| r.rsplit_once('@')).map(|(n, _)| n == name);
                map.retain(|k, _| *k != user && pair_of(k) != Some(true));
            }
        }
        before - map.len()
    }
}

/// The client's address: the peer's, or — only when the operator named a header set by their
/// reverse proxy — the last address in that header (the one the proxy itself appended; earlier
/// entries are whatever the client wrote).
pub fn client_addr(
    peer: Option<IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted_header: Option<&str>,
) -> Option<IpAddr> {
    let from_header = trusted_header
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    from_header.or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_failures() {
        let cases = [(0, 5, 0), (4, 5, 0), (5, 5, 1), (6, 5, 2), (9, 5, 16), (13, 5, 256), (14, 5, 300), (200, 5, 300)];
        for (n, free, secs) in cases {
            assert_eq!(wait_after(n, free), Duration::from_secs(secs), "{n}");
        }
        assert_eq!(wait_after(99, USER_FREE), Duration::ZERO);
        assert_eq!(wait_after(101, USER_FREE), Duration::from_secs(2));
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn a_guesser_at_one_address_does_not_lock_the_user_out_elsewhere() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        let attacker = keys("Admin", ip("203.0.113.9"), false);
        for i in 0..5 {
            assert_eq!(t.begin(&attacker, start), Ok(()), "attempt {i}");
        }
        // Concurrent attempts each count: the sixth waits even before the others answered.
        assert_eq!(t.begin(&attacker, start), Err(Duration::from_secs(1)));
        assert_eq!(t.begin(&attacker, start + Duration::from_secs(1)), Ok(()));
        assert_eq!(t.begin(&attacker, start + Duration::from_secs(2)), Err(Duration::from_secs(1)));
        // The real admin elsewhere, and another user at the attacker's address, go on.
        assert_eq!(t.begin(&keys("admin", ip("198.51.100.1"), false), start), Ok(()));
        assert_eq!(t.begin(&keys("bob", ip("203.0.113.9"), false), start), Ok(()));
        t.succeeded(&attacker);
        assert_eq!(t.begin(&attacker, start + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn attempts_refused_for_load_are_not_counted() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let honest = keys("admin", ip("192.0.2.7"), false);
        for _ in 0..(PAIR_FREE * 3) {
            assert_eq!(t.begin(&honest, now), Ok(()));
            t.not_attempted(&honest);
        }
        assert!(t.0.lock().unwrap().is_empty(), "nothing left counted");
    }

    #[test]
    fn successes_never_add_up_to_the_user_cap() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let script = keys("admin", ip("192.0.2.7"), false);
        for i in 0..(USER_FREE * 2) {
            assert_eq!(t.begin(&script, now), Ok(()), "login {i}");
            t.succeeded(&script);
        }
        // Guesses elsewhere still count after a success here.
        let guess = keys("admin", ip("203.0.113.9"), false);
        t.failed(&guess, now);
        t.begin(&script, now).expect("not held back");
        t.succeeded(&script);
        assert_eq!(t.0.lock().unwrap().get("user:admin").map(|f| f.count), Some(1));
    }

    #[test]
    fn one_address_spraying_names_is_slowed() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..ADDR_FREE {
            assert_eq!(t.begin(&keys(&format!("user{i}"), ip("203.0.113.9"), false), now), Ok(()), "{i}");
        }
        assert!(t.begin(&keys("someone-else", ip("203.0.113.9"), false), now).is_err());
        assert!(t.begin(&keys("someone-else", ip("203.0.113.10"), false), now).is_ok());
    }

    #[test]
    fn a_distributed_guess_hits_the_user_cap_but_not_a_trusted_device() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..USER_FREE {
            let addr: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
            assert_eq!(t.begin(&keys("admin", Some(addr), false), now), Ok(()), "{i}");
        }
        let fresh = ip("192.0.2.200");
        assert!(t.begin(&keys("admin", fresh, false), now).is_err(), "the user-wide cap holds");
        assert_eq!(t.begin(&keys("admin", fresh, true), now), Ok(()), "a device-cookie holder is exempt");
        // An administrator clears the user's counts.
        assert!(t.clear(Some("ADMIN")) >= 2);
        assert_eq!(t.begin(&keys("admin", fresh, false), now), Ok(()));
    }

    #[test]
    fn clearing_a_name_clears_that_name_only() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let from = ip("192.0.2.7");
        for name in ["a", "a@b", "ab"] {
            t.failed(&keys(name, from, false), now);
        }
        // a's pair and user counts go; a@b's and ab's stay (the address count is shared).
        assert_eq!(t.clear(Some("A")), 2);
        let map = t.0.lock().unwrap();
        for kept in ["pair:a@b@192.0.2.7", "user:a@b", "pair:ab@192.0.2.7", "user:ab", "addr:192.0.2.7"] {
            assert!(map.contains_key(kept), "{kept} was cleared too");
        }
        assert!(!map.contains_key("pair:a@192.0.2.7") && !map.contains_key("user:a"));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 50) {
            let addr: IpAddr = std::net::Ipv4Addr::from(i as u32).into();
            t.failed(&keys("admin", Some(addr), false), now);
        }
        let map = t.0.lock().unwrap();
        assert!(map.len() <= MAX_KEYS, "{}", map.len());
        assert!(map.contains_key("user:admin"), "the guessed user's count was not evicted");
    }

    #[test]
    fn the_client_address_comes_from_a_named_header_only() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
        let peer = ip("127.0.0.1");
        let cases: [(Option<&str>, Option<IpAddr>); 4] = [
            (None, peer),
            (Some("x-forwarded-for"), ip("10.0.0.7")),
            (Some("x-real-ip"), peer),
            (Some("X-Forwarded-For"), ip("10.0.0.7")),
        ];
        for (header, want) in cases {
            assert_eq!(client_addr(peer, &h, header), want, "{header:?}");
        }
        h.insert("x-real-ip", "not an address".parse().unwrap());
        assert_eq!(client_addr(peer, &h, Some("x-real-ip")), peer);
    }
}
