//! GPU memory used by processes the worker did not start (GPUStack #6044: a desktop, a notebook,
//! another manager's engine): reported per device as `memory_external`, which the scheduler never
//! books. A process is the worker's when it is, or descends from, one of its instances' processes,
//! or runs in one of its instances' containers (its cgroup names the container id).
//!
//! NVIDIA through NVML's per-process lists, Ascend through `npu-smi info`'s process table
//! (`ascend::parse_npu_smi_processes`); devices whose processes cannot be listed (AMD, a worker in a
//! container that sees no host PIDs) report 0. The pure parts take their lookups as
//! arguments and are table-tested; `/proc` and NVML are read at the edges.

use std::collections::{BTreeMap, HashSet};

/// One process's memory on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuProcess {
    /// Device index (as `GpuDevice::index`).
    pub index: u32,
    pub pid: u32,
    pub bytes: u64,
}

/// Reports move in steps of this much, rounded up: a few MiB of drift does not rewrite the worker.
pub const STEP: u64 = 256 << 20;

/// `bytes` rounded up to [`STEP`].
pub fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(STEP).saturating_mul(STEP)
}

/// Bytes per device used by processes `ours` rejects, rounded up to [`STEP`]. A process listed twice
/// on one device (compute and graphics) counts once.
pub fn external_by_device(procs: &[GpuProcess], ours: impl Fn(u32) -> bool) -> BTreeMap<u32, u64> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<u32, u64> = BTreeMap::new();
    for p in procs {
        if !seen.insert((p.index, p.pid)) || ours(p.pid) {
            continue;
        }
        *out.entry(p.index).or_default() += p.bytes;
    }
    out.values_mut().for_each(|b| *b = round_up(*b));
    out
}

/// Whether `pid` is one of `roots` or descends from one, following `parent` (at most 64 steps).
pub fn descends_from(pid: u32, roots: &HashSet<u32>, parent: impl Fn(u32) -> Option<u32>) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if roots.contains(&at) {
            return true;
        }
        match parent(at) {
            Some(p) if p > 1 && p != at => at = p,
            _ => return false,
        }
    }
    false
}

/// The parent of `pid` from `/proc/<pid>/stat` (the field after the parenthesised name).
pub fn proc_parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_parent(&stat)
}

fn parse_stat_parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `/proc/<pid>/cgroup` names one of `containers` (full container ids).
pub fn in_containers(pid: u32, containers: &[String]) -> bool {
    if containers.is_empty() {
        return false;
    }
    let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
    containers.iter().any(|id| id.len() >= 12 && cgroup.contains(id.as_str()))
}

/// Every process NVML lists on every NVIDIA device, with its memory where NVML knows it. Empty
/// when the library is absent or a call fails. Blocking: call from `spawn_blocking`.
pub fn nvidia_processes() -> Vec<GpuProcess> {
    use nvml_wrapper::enums::device::UsedGpuMemory;
    let Ok(nvml) = nvml_wrapper::Nvml::init() else { return Vec::new() };
    let mut out = Vec::new();
    for i in 0..nvml.device_count().unwrap_or(0) {
        let Ok(device) = nvml.device_by_index(i) else { continue };
        let index = device.index().unwrap_or(i);
        let lists = [device.running_compute_processes(), device.running_graphics_processes()];
        for p in lists.into_iter().flatten().flatten() {
            if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
                out.push(GpuProcess { index, pid: p.pid, bytes });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn only_processes_that_are_not_ours_count() {
        let p = |index, pid, mib: u64| GpuProcess { index, pid, bytes: mib * MIB };
        // Parents: 101 → 100 (an instance), 201 → 200 (not ours), 300 alone.
        let parent = |pid: u32| match pid {
            101 => Some(100),
            201 => Some(200),
            _ => Some(1),
        };
        let roots = HashSet::from([100]);
        let ours = |pid| descends_from(pid, &roots, parent);
        type Case<'a> = (&'a str, Vec<GpuProcess>, &'a [(u32, u64)]);
        let cases: &[Case<'_>] = &[
            ("nothing runs", vec![], &[]),
            ("only ours", vec![p(0, 100, 5000), p(0, 101, 3000)], &[]),
            ("another program", vec![p(0, 100, 5000), p(0, 200, 100)], &[(0, 256 * MIB)]),
            ("its child too, on two GPUs", vec![p(0, 201, 300), p(1, 300, 1024)], &[(0, 512 * MIB), (1, 1024 * MIB)]),
            ("listed as compute and graphics", vec![p(0, 300, 600), p(0, 300, 600)], &[(0, 768 * MIB)]),
        ];
        for (what, procs, want) in cases {
            let got: Vec<(u32, u64)> = external_by_device(procs, ours).into_iter().collect();
            assert_eq!(got, want.to_vec(), "{what}");
        }
    }

    #[test]
    fn ancestry_stops_at_init_and_loops() {
        let roots = HashSet::from([7]);
        assert!(!descends_from(5, &roots, |_| Some(1)));
        assert!(!descends_from(5, &roots, Some), "a process that is its own parent");
        assert!(!descends_from(5, &roots, |p| Some(p + 1000)), "too deep");
        assert!(descends_from(5, &roots, |p| Some(p + 1)));
    }

    #[test]
    fn reads_the_parent_from_stat() {
        let cases =
            [("1234 (vllm) S 99 1234 1234 0", Some(99)), ("42 (a (weird) name) R 7 42", Some(7)), ("garbage", None)];
        for (stat, want) in cases {
            assert_eq!(parse_stat_parent(stat), want, "{stat}");
        }
        assert_eq!(proc_parent(std::process::id()), Some(std::os::unix::process::parent_id()));
    }
}
