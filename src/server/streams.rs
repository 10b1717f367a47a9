//! Bounds on long-lived watch streams (`?watch=true`): each holds a socket and a task for as long
//! as the client keeps it open, so idle streams from one credential could exhaust the process's
//! open files. At most [`PER_CREDENTIAL`] per credential (API key, worker credential, session) and
//! a total (the `--max-watch-streams` setting, never more than half the open-file limit); past
//! either a watch is answered 429 with `Retry-After`. The server raises its soft open-file limit
//! to the hard one at start ([`raise_open_file_limit`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::{ApiError, ErrorCode};

/// Watch streams one credential may hold open at once (the UI opens a handful per tab; a worker
/// one).
pub const PER_CREDENTIAL: usize = 64;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_credential: HashMap<String, usize>,
}

/// Open watch streams, counted per credential and in all.
#[derive(Debug, Clone)]
pub struct WatchSlots {
    max_total: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One open stream; its slot is given back when the stream ends (dropped).
#[derive(Debug)]
pub struct WatchSlot {
    credential: String,
    counts: Arc<Mutex<Counts>>,
}

impl WatchSlots {
    pub fn new(max_total: usize) -> WatchSlots {
        WatchSlots { max_total: max_total.max(1), counts: Arc::default() }
    }

    /// The total limit in force.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Takes a slot for `credential` (a digest of what authenticated the request), or refuses.
    pub fn open(&self, credential: &str) -> Result<WatchSlot, ApiError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                format!("the server holds its limit of {} open watch streams; try again later", self.max_total),
            ));
        }
        let mine = c.by_credential.get(credential).copied().unwrap_or(0);
        if mine >= PER_CREDENTIAL {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                format!("this credential already holds {PER_CREDENTIAL} open watch streams; close some first"),
            ));
        }
        c.total += 1;
        c.by_credential.insert(credential.to_owned(), mine + 1);
        Ok(WatchSlot { credential: credential.to_owned(), counts: self.counts.clone() })
    }

    /// Streams open now.
    pub fn open_now(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_credential.get_mut(&self.credential) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_credential.remove(&self.credential);
            }
        }
    }
}

/// Raises the soft open-file limit to the hard one where the system allows, and returns the soft
/// limit in force afterwards (`None` when it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => tracing::info!(soft, hard, error = %e, "could not raise the open-file limit"),
        }
    }
    Some(soft)
}

/// The total watch limit: the configured one, at most half the open-file limit.
pub fn total_limit(configured: usize, open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    configured.min(half).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_credential_and_in_all() {
        let slots = WatchSlots::new(PER_CREDENTIAL + 2);
        let mine: Vec<_> = (0..PER_CREDENTIAL).map(|_| slots.open("a").expect("a slot")).collect();
        assert_eq!(slots.open("a").expect_err("over the credential's").code, ErrorCode::TooManyRequests);
        let b1 = slots.open("b").expect("another credential");
        let _b2 = slots.open("b").expect("another credential");
        assert!(slots.open("c").is_err(), "over the total");
        drop(b1);
        let _c = slots.open("c").expect("a slot was given back");
        drop(mine);
        assert_eq!(slots.open_now(), 2);
        let _a = slots.open("a").expect("the credential's slots came back");
    }

    #[test]
    fn the_total_follows_the_open_file_limit() {
        let cases = [(4096, Some(1024), 512), (4096, Some(1_048_576), 4096), (4096, None, 4096), (10, Some(1), 1)];
        for (configured, files, want) in cases {
            assert_eq!(total_limit(configured, files), want, "{configured} {files:?}");
        }
    }
}
