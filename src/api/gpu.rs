//! GPU device wire type: what a worker reports about each accelerator (`/v2/gpu-devices`, worker status).
//!
//! A trimmed form of GPUStack's `GPUDeviceStatus`: identity (`vendor`, `type`, `index`, `name`, `uuid`),
//! memory in bytes, utilization in percent (0–100) and temperature in °C. Devices declared with
//! `--simulate-gpus` carry `simulated: true` wherever they show.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who made the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    Nvidia,
    Amd,
    /// Huawei Ascend NPUs.
    Ascend,
    /// Hygon DCUs (ROCm-derived tooling).
    Hygon,
}

impl GpuVendor {
    /// The wire name (`nvidia`, `amd`, `ascend`, `hygon`).
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Ascend => "ascend",
            GpuVendor::Hygon => "hygon",
        }
    }
}

impl fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runtime a device is programmed through; part of a device's id and what backends select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuType {
    /// NVIDIA CUDA.
    Cuda,
    /// AMD ROCm.
    Rocm,
    /// Huawei Ascend CANN.
    Cann,
    /// Hygon DTK.
    Dtk,
    /// No accelerator: the host CPU.
    Cpu,
}

impl GpuType {
    /// The wire name (`cuda`, `rocm`, `cann`, `dtk`, `cpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            GpuType::Cuda => "cuda",
            GpuType::Rocm => "rocm",
            GpuType::Cann => "cann",
            GpuType::Dtk => "dtk",
            GpuType::Cpu => "cpu",
        }
    }
}

impl fmt::Display for GpuType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accelerator as a worker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuDevice {
    /// Index among the worker's devices of this type (what `CUDA_VISIBLE_DEVICES` and friends take).
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    pub vendor: GpuVendor,
    #[serde(rename = "type")]
    pub gpu_type: GpuType,
    #[serde(default)]
    pub uuid: Option<String>,
    /// Device memory in bytes.
    pub memory_total: u64,
    /// Device memory in use, in bytes.
    pub memory_used: u64,
    /// `memory_used / memory_total` in percent (0–100).
    pub memory_utilization_rate: f64,
    /// Compute utilization in percent (0–100), where the vendor tool reports it.
    #[serde(default)]
    pub core_utilization_rate: Option<f64>,
    /// Temperature in °C, where the vendor tool reports it.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Declared with `--simulate-gpus`, not detected: usable for planning, never for running.
    #[serde(default)]
    pub simulated: bool,
    /// Bytes in use by processes the worker did not start (other programs, another manager), in
    /// steps of 256 MiB rounded up: the scheduler books none of it (NVIDIA through NVML's process
    /// list; simulated GPUs as declared, `1xH100-80GB+20GB`).
    #[serde(default)]
    pub memory_external: u64,
}

impl GpuDevice {
    /// The cluster-wide id GPUStack uses: `<worker_name>:<type>:<index>`.
    pub fn id(&self, worker_name: &str) -> String {
        format!("{worker_name}:{}:{}", self.gpu_type, self.index)
    }

    /// `used / total` in percent, 0 when `total` is 0.
    pub fn utilization_rate(used: u64, total: u64) -> f64 {
        if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> GpuDevice {
        GpuDevice {
            index: 3,
            name: "NVIDIA H100 80GB HBM3".into(),
            vendor: GpuVendor::Nvidia,
            gpu_type: GpuType::Cuda,
            uuid: Some("GPU-1".into()),
            memory_total: 80 << 30,
            memory_used: 20 << 30,
            memory_utilization_rate: 25.0,
            core_utilization_rate: None,
            temperature: Some(40.0),
            simulated: false,
            memory_external: 0,
        }
    }

    #[test]
    fn id_is_worker_type_index() {
        assert_eq!(device().id("gpu-node-1"), "gpu-node-1:cuda:3");
        let npu = GpuDevice { gpu_type: GpuType::Cann, index: 0, ..device() };
        assert_eq!(npu.id("w"), "w:cann:0");
    }

    #[test]
    fn json_shape() {
        let json = serde_json::to_value(device()).expect("serialize");
        assert_eq!(json["type"], "cuda");
        assert_eq!(json["vendor"], "nvidia");
        assert_eq!(json["simulated"], false);
        assert!(json["core_utilization_rate"].is_null());
        let back: GpuDevice = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, device());
    }

    #[test]
    fn utilization_rate_handles_zero_total() {
        assert_eq!(GpuDevice::utilization_rate(5, 0), 0.0);
        assert_eq!(GpuDevice::utilization_rate(1, 4), 25.0);
    }
}
