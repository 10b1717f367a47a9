//! Runtimes that run a rendered backend command: a host process or a container. The agent speaks
//! to both through [`Runtime`]; each keeps enough on disk or in labels to find its workloads again
//! after a worker restart.

pub(crate) mod container;
pub(crate) mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The variables that name an instance's devices to each vendor's runtime.
pub const VISIBLE_DEVICES_VARS: [&str; 3] =
    ["CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES"];

/// The variable that names the devices to the runtime of GPUs of `gpu_type` (`cuda`, `rocm`,
/// `cann`, `dtk`); `None` for a type we do not know (then every vendor's variable is set).
pub fn visible_devices_var(gpu_type: &str) -> Option<&'static str> {
    match gpu_type {
        "cuda" => Some("CUDA_VISIBLE_DEVICES"),
        "rocm" | "dtk" => Some("HIP_VISIBLE_DEVICES"),
        "cann" => Some("ASCEND_RT_VISIBLE_DEVICES"),
        _ => None,
    }
}

/// Everything a runtime needs to start one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub instance_id: i64,
    pub instance_name: String,
    /// The entrypoint (empty: a container image's own; a process runs the first word of `args`).
    pub program: Vec<String>,
    /// The command's arguments after the entrypoint.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
    /// Host path of the model file or directory (mounted read-only into containers).
    pub model_path: PathBuf,
    pub port: u16,
    pub gpu_indexes: Vec<u32>,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    /// Extra files for a container: (host path, path inside), mounted read-only.
    pub files: Vec<(PathBuf, String)>,
}

/// How to find a running workload again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    Process { pid: u32 },
    Container { id: String },
}

impl Handle {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Handle::Process { pid } => Some(*pid),
            Handle::Container { .. } => None,
        }
    }

    pub fn container_id(&self) -> Option<String> {
        match self {
            Handle::Container { id } => Some(id.clone()),
            Handle::Process { .. } => None,
        }
    }
}

/// Whether a workload still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Running,
    /// Gone, with what is known about how it ended.
    Exited(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start {program:?}: {message}")]
    Start { program: String, message: String },
    #[error("container engine: {0}")]
    Engine(String),
    #[error("image {image:?} is not present and cannot be pulled: {message}")]
    Image { image: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The runtime a worker uses.
pub enum Runtime {
    Process(process::ProcessRuntime),
    Container(container::ContainerRuntime),
}

impl Runtime {
    pub fn kind(&self) -> crate::api::RuntimeKind {
        match self {
            Runtime::Process(_) => crate::api::RuntimeKind::Process,
            Runtime::Container(_) => crate::api::RuntimeKind::Container,
        }
    }

    pub async fn start(&self, spec: &LaunchSpec) -> Result<Handle, RuntimeError> {
        match self {
            Runtime::Process(r) => r.start(spec).await,
            Runtime::Container(r) => r.start(spec).await,
        }
    }

    pub async fn liveness(&self, handle: &Handle) -> Liveness {
        match self {
            Runtime::Process(r) => r.liveness(handle).await,
            Runtime::Container(r) => r.liveness(handle).await,
        }
    }

    /// SIGTERM (or the engine's stop), then a kill after `grace`.
    pub async fn stop(&self, handle: &Handle, grace: Duration) {
        match self {
            Runtime::Process(r) => r.stop(handle, grace).await,
            Runtime::Container(r) => r.stop(handle, grace).await,
        }
    }

    /// Workloads this worker started earlier and that still run: (instance id, handle).
    pub async fn managed(&self) -> Vec<(i64, Handle)> {
        match self {
            Runtime::Process(r) => r.managed().await,
            Runtime::Container(r) => r.managed().await,
        }
    }

    /// Forgets a workload's records once it is stopped.
    pub async fn release(&self, instance_id: i64) {
        match self {
            Runtime::Process(r) => r.release(instance_id).await,
            Runtime::Container(r) => r.release(instance_id).await,
        }
    }
}

#[cfg(test)]
mod visible_devices_tests {
    use super::*;

    #[test]
    fn each_vendor_gets_its_own_variable() {
        let cases = [
            ("cuda", Some("CUDA_VISIBLE_DEVICES")),
            ("rocm", Some("HIP_VISIBLE_DEVICES")),
            ("dtk", Some("HIP_VISIBLE_DEVICES")),
            ("cann", Some("ASCEND_RT_VISIBLE_DEVICES")),
            ("cpu", None),
            ("", None),
        ];
        for (gpu_type, want) in cases {
            assert_eq!(visible_devices_var(gpu_type), want, "{gpu_type}");
        }
    }
}
