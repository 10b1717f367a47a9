//! What the worker reports about its machine: CPU, memory, filesystems, OS and GPUs.

use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

use crate::api::{CpuStatus, FilesystemStatus, GpuDevice, MemoryStatus, OsStatus, WorkerStatus};

/// Keeps the sysinfo handles between samples (CPU usage needs two readings).
pub struct StatusCollector {
    system: System,
    disks: Disks,
}

impl Default for StatusCollector {
    fn default() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        StatusCollector { system, disks: Disks::new_with_refreshed_list() }
    }
}

fn rate(used: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { (used as f64 / total as f64 * 10_000.0).round() / 100.0 }
}

impl StatusCollector {
    pub fn sample(&mut self, gpu_devices: Vec<GpuDevice>) -> WorkerStatus {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        let total = self.system.total_memory();
        let used = self.system.used_memory();
        let mut filesystem: Vec<FilesystemStatus> = self
            .disks
            .list()
            .iter()
            .map(|d| FilesystemStatus {
                mount_point: d.mount_point().display().to_string(),
                total: d.total_space(),
                used: d.total_space().saturating_sub(d.available_space()),
                available: d.available_space(),
            })
            .collect();
        filesystem.dedup_by(|a, b| a.mount_point == b.mount_point);
        WorkerStatus {
            cpu: CpuStatus {
                total: self.system.cpus().len() as u32,
                utilization_rate: f64::from(self.system.global_cpu_usage()),
            },
            memory: MemoryStatus { total, used, utilization_rate: rate(used, total) },
            filesystem,
            os: os_status(),
            gpu_devices,
        }
    }
}

pub fn os_status() -> OsStatus {
    OsStatus {
        name: System::name().unwrap_or_else(|| std::env::consts::OS.to_string()),
        version: System::os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_describes_this_machine() {
        let status = StatusCollector::default().sample(vec![]);
        assert!(status.cpu.total >= 1);
        assert!(status.memory.total > status.memory.used);
        assert!((0.0..=100.0).contains(&status.memory.utilization_rate));
        assert_eq!(status.os.arch, std::env::consts::ARCH);
    }

    #[test]
    fn rates_are_percentages() {
        assert_eq!(rate(1, 4), 25.0);
        assert_eq!(rate(0, 0), 0.0);
    }
}
