//! Engine ports: a free port from the worker's `--port-range`, reserved host-wide while an instance
//! holds it, so workers on one host given the same range never hand out the same port.
//!
//! A port is handed out when (1) this worker does not hold it already, (2) no other worker on this
//! host holds it: each held port is an exclusive lock on `<tmp>/ferrostack-ports/<port>`, released
//! when the lease is dropped or the worker dies, and (3) nothing listens on it now (a bind test).
//! The lock closes the window between handing a port out and the engine binding it (seconds for
//! llama.cpp, minutes for vLLM), where two workers' bind tests both see the port free.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// A port held for an engine. Other workers on this host skip it until this is dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    /// The host-wide lock; `None` where the lock directory cannot be used (the bind test alone).
    _lock: Option<File>,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Where the workers of one host keep their port locks.
pub fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("ferrostack-ports")
}

/// The ports to try, in order: the range without those this worker holds already.
pub fn candidates(range: (u16, u16), held: &BTreeSet<u16>) -> impl Iterator<Item = u16> + '_ {
    (range.0..=range.1).filter(move |p| !held.contains(p))
}

/// What the host-wide lock of one port says.
enum Lock {
    /// Ours now.
    Held(File),
    /// Another worker (or another instance of this one) holds it.
    Taken,
    /// The lock directory cannot be used (permissions, read-only /tmp): rely on the bind test.
    Unavailable,
}

fn lock(dir: &Path, port: u16) -> Lock {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !dir.is_dir() && std::fs::create_dir_all(dir).is_ok() {
        // Shared by every user's workers, like /tmp itself.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    let path = dir.join(port.to_string());
    let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o666).open(&path);
    let file = match file.or_else(|_| File::open(&path)) {
        Ok(f) => f,
        Err(_) => return Lock::Unavailable,
    };
    match file.try_lock() {
        Ok(()) => Lock::Held(file),
        Err(TryLockError::WouldBlock) => Lock::Taken,
        Err(TryLockError::Error(_)) => Lock::Unavailable,
    }
}

/// Nothing listens on `port` on any address of this host.
fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A port from `range` that this worker does not hold (`held`), no other worker on this host holds
/// (locks in `dir`) and nothing listens on; `None` when every port is taken.
pub fn reserve(range: (u16, u16), held: &BTreeSet<u16>, dir: &Path) -> Option<PortLease> {
    for port in candidates(range, held) {
        let lock = match lock(dir, port) {
            Lock::Held(f) => Some(f),
            Lock::Taken => continue,
            Lock::Unavailable => None,
        };
        if bindable(port) {
            return Some(PortLease { port, _lock: lock });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_skip_what_this_worker_holds() {
        type Case = ((u16, u16), &'static [u16], &'static [u16]);
        let cases: &[Case] = &[
            ((100, 103), &[], &[100, 101, 102, 103]),
            ((100, 103), &[100, 102], &[101, 103]),
            ((100, 100), &[100], &[]),
            ((100, 101), &[7, 101], &[100]),
        ];
        for (range, held, want) in cases {
            let held: BTreeSet<u16> = held.iter().copied().collect();
            assert_eq!(candidates(*range, &held).collect::<Vec<_>>(), *want, "{range:?} holding {held:?}");
        }
    }

    /// Two workers on one host with the same range (two reservations on one lock directory, before
    /// any engine binds): different ports; a released port is handed out again.
    #[test]
    fn workers_sharing_a_range_get_different_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let range = (47950, 47959);
        let none = BTreeSet::new();
        let first = reserve(range, &none, dir.path()).expect("a port");
        let second = reserve(range, &none, dir.path()).expect("another port");
        assert_ne!(first.port(), second.port(), "the second worker got the port the first holds");
        let port = first.port();
        drop(first);
        let third = reserve(range, &BTreeSet::from([second.port()]), dir.path()).expect("a port");
        assert_eq!(third.port(), port, "a released port is free again");
    }

    #[test]
    fn a_listening_port_is_skipped_and_a_full_range_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("listen");
        let busy = listener.local_addr().expect("addr").port();
        assert!(reserve((busy, busy), &BTreeSet::new(), dir.path()).is_none(), "port {busy} is listened on");
        let held = reserve((47960, 47960), &BTreeSet::new(), dir.path()).expect("a port");
        assert!(reserve((47960, 47960), &BTreeSet::new(), dir.path()).is_none(), "{held:?} is held");
    }
}
