//! The IO edge of GPU detection: NVML through `libnvidia-ml.so.1` (loaded at run time), and the
//! vendor tools (`nvidia-smi`, `rocm-smi`, `npu-smi`) run with a timeout.
//!
//! `nvml-wrapper` opens the NVIDIA library with `dlopen` inside `Nvml::init()`; the binary does not
//! link it, so it starts (and finds no NVIDIA GPUs) on machines without the driver.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use tokio::process::Command;

use super::amd::{ROCM_SMI_ARGS, parse_rocm_smi_json};
use super::ascend::{NPU_SMI_INFO_ARGS, NPU_SMI_MAPPING_ARGS, parse_npu_smi_info, parse_npu_smi_mapping};
use super::nvidia::{NVIDIA_SMI_ARGS, parse_nvidia_smi_csv};
use super::simulate::parse_simulate_spec;
use super::{GpuDevice, GpuError, GpuType, GpuVendor};

/// How long a vendor tool may run before it is killed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where vendor tools live when they are not on `PATH` (ROCm and Ascend install outside it).
const EXTRA_TOOL_DIRS: &[&str] = &["/opt/rocm/bin", "/usr/local/sbin", "/usr/local/Ascend/driver/tools"];

/// Finds the machine's GPUs. With `simulate` (a `--simulate-gpus` spec) returns those devices and
/// probes nothing. Otherwise: NVIDIA through NVML (falling back to `nvidia-smi` when NVML fails),
/// then AMD/Hygon through `rocm-smi`, then Ascend through `npu-smi`; the first vendor with devices
/// wins. No library and no tool means `Ok(vec![])`. A present tool that fails is logged and the
/// next one tried; the error is returned only when no source produced devices.
pub async fn detect(simulate: Option<&str>) -> Result<Vec<GpuDevice>, GpuError> {
    if let Some(spec) = simulate {
        return parse_simulate_spec(spec);
    }
    let mut last_error = None;
    let mut note = |e: GpuError| {
        tracing::warn!(error = %e, "GPU detection");
        last_error = Some(e);
    };

    match tokio::task::spawn_blocking(detect_nvidia).await {
        Ok(Ok(devices)) if !devices.is_empty() => return Ok(devices),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            note(e);
            if let Some(smi) = find_tool("nvidia-smi") {
                match run_tool(&smi, NVIDIA_SMI_ARGS, TOOL_TIMEOUT).await.and_then(|out| parse_nvidia_smi_csv(&out)) {
                    Ok(devices) if !devices.is_empty() => return Ok(devices),
                    Ok(_) => {}
                    Err(e) => note(e),
                }
            }
        }
        Err(join) => note(GpuError::Tool { tool: "NVML".into(), reason: join.to_string() }),
    }

    if let Some(rocm_smi) = find_tool("rocm-smi") {
        match run_tool(&rocm_smi, ROCM_SMI_ARGS, TOOL_TIMEOUT).await.and_then(|out| parse_rocm_smi_json(&out)) {
            Ok(devices) if !devices.is_empty() => return Ok(devices),
            Ok(_) => {}
            Err(e) => note(e),
        }
    }

    if let Some(npu_smi) = find_tool("npu-smi") {
        // The mapping only improves indices and names: without it the table alone still answers.
        let mapping = match run_tool(&npu_smi, NPU_SMI_MAPPING_ARGS, TOOL_TIMEOUT).await {
            Ok(out) => parse_npu_smi_mapping(&out),
            Err(e) => {
                tracing::debug!(error = %e, "npu-smi chip mapping unavailable");
                Vec::new()
            }
        };
        match run_tool(&npu_smi, NPU_SMI_INFO_ARGS, TOOL_TIMEOUT)
            .await
            .and_then(|out| parse_npu_smi_info(&out, &mapping))
        {
            Ok(devices) if !devices.is_empty() => return Ok(devices),
            Ok(_) => {}
            Err(e) => note(e),
        }
    }

    match last_error {
        Some(e) => Err(e),
        None => Ok(Vec::new()),
    }
}

/// NVIDIA GPUs through NVML. `Ok(vec![])` when `libnvidia-ml.so.1` cannot be loaded (no driver
/// installed); an error when it loads but a call fails. Blocking: call from `spawn_blocking`.
pub fn detect_nvidia() -> Result<Vec<GpuDevice>, GpuError> {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(NvmlError::LibloadingError(e)) => {
            tracing::debug!(error = %e, "no NVIDIA management library; no NVIDIA GPUs");
            return Ok(Vec::new());
        }
        Err(source) => return Err(GpuError::Nvml { call: "init", source }),
    };
    let nvml_err = |call: &'static str| move |source| GpuError::Nvml { call, source };
    let count = nvml.device_count().map_err(nvml_err("device_count"))?;
    let mut devices = Vec::with_capacity(count as usize);
    for i in 0..count {
        let device = nvml.device_by_index(i).map_err(nvml_err("device_by_index"))?;
        let memory = device.memory_info().map_err(nvml_err("memory_info"))?;
        let memory_used = memory.used.min(memory.total);
        devices.push(GpuDevice {
            index: device.index().unwrap_or(i),
            name: device.name().map_err(nvml_err("name"))?,
            vendor: GpuVendor::Nvidia,
            gpu_type: GpuType::Cuda,
            uuid: device.uuid().ok(),
            memory_total: memory.total,
            memory_used,
            memory_utilization_rate: GpuDevice::utilization_rate(memory_used, memory.total),
            // Not supported on some devices (MIG, vGPU): reported as unknown.
            core_utilization_rate: device.utilization_rates().ok().map(|u| f64::from(u.gpu)),
            temperature: device.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            simulated: false,
            memory_external: 0,
        });
    }
    Ok(devices)
}

/// Every process `npu-smi info` lists on every Ascend NPU, with its memory. Empty when the tool is
/// absent or fails.
pub async fn ascend_processes() -> Vec<super::external::GpuProcess> {
    let Some(npu_smi) = find_tool("npu-smi") else { return Vec::new() };
    let mapping = run_tool(&npu_smi, NPU_SMI_MAPPING_ARGS, TOOL_TIMEOUT)
        .await
        .map(|o| parse_npu_smi_mapping(&o))
        .unwrap_or_default();
    match run_tool(&npu_smi, NPU_SMI_INFO_ARGS, TOOL_TIMEOUT).await {
        Ok(out) => super::ascend::parse_npu_smi_processes(&out, &mapping),
        Err(_) => Vec::new(),
    }
}

/// The path of an executable `name` on `PATH` or in the vendors' usual directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    // PATH is the process's own search path, as a spawned `Command` would use it; not configuration.
    #[allow(clippy::disallowed_methods)]
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program args…` and returns its stdout; non-zero exit, a spawn failure or running past
/// `timeout` (the process is killed) is an error naming the program.
pub async fn run_tool(program: &Path, args: &[&str], timeout: Duration) -> Result<String, GpuError> {
    let tool = program.display().to_string();
    let fail = |reason: String| GpuError::Tool { tool: tool.clone(), reason };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {} s; killed", timeout.as_secs_f32())))?
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(fail(format!("{}: {first}", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_absent_means_no_nvidia_gpus() {
        // This machine has no NVIDIA driver: loading must fail softly, not abort or error.
        if Path::new("/dev/nvidiactl").exists() {
            return;
        }
        assert_eq!(detect_nvidia().expect("no library is not an error"), []);
    }

    #[tokio::test]
    async fn simulate_wins_and_bad_spec_is_an_error() {
        let devices = detect(Some("2xH100-80GB")).await.expect("simulated");
        assert_eq!(devices.len(), 2);
        assert!(devices.iter().all(|d| d.simulated));
        assert!(matches!(detect(Some("2xH100")).await, Err(GpuError::BadSpec { .. })));
    }

    #[tokio::test]
    async fn detect_on_a_machine_without_gpus() {
        if Path::new("/dev/nvidiactl").exists()
            || ["rocm-smi", "npu-smi", "nvidia-smi"].iter().any(|t| find_tool(t).is_some())
        {
            return;
        }
        assert_eq!(detect(None).await.expect("nothing to find"), []);
    }

    #[tokio::test]
    async fn run_tool_reports_output_failures_and_timeouts() {
        let sh = Path::new("/bin/sh");
        let out = run_tool(sh, &["-c", "echo hello"], TOOL_TIMEOUT).await.expect("runs");
        assert_eq!(out, "hello\n");

        let e = run_tool(sh, &["-c", "echo boom >&2; exit 3"], TOOL_TIMEOUT).await.expect_err("fails").to_string();
        assert!(e.starts_with("running /bin/sh failed: exit status: 3: boom"), "{e}");

        let e = run_tool(sh, &["-c", "sleep 5"], Duration::from_millis(200)).await.expect_err("times out").to_string();
        assert!(e.contains("no answer within 0.2 s; killed"), "{e}");

        let e = run_tool(Path::new("/nonexistent/rocm-smi"), &[], TOOL_TIMEOUT).await.expect_err("missing").to_string();
        assert!(e.starts_with("running /nonexistent/rocm-smi failed: cannot start"), "{e}");
    }

    #[test]
    fn find_tool_looks_on_path() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("surely-not-a-gpu-tool-xyz").is_none());
    }
}
