//! The container runtime over the Docker Engine API (Docker or Podman's compatible socket).

use std::time::Duration;

use super::{Handle, LaunchSpec, Liveness, RuntimeError};

pub struct ContainerRuntime {}

impl ContainerRuntime {
    pub async fn connect(_socket: Option<std::path::PathBuf>) -> Result<ContainerRuntime, RuntimeError> {
        Err(RuntimeError::Engine("the container runtime is not available in this build".into()))
    }

    pub async fn start(&self, _spec: &LaunchSpec) -> Result<Handle, RuntimeError> {
        Err(RuntimeError::Engine("the container runtime is not available in this build".into()))
    }

    pub async fn liveness(&self, _handle: &Handle) -> Liveness {
        Liveness::Exited("the container runtime is not available in this build".into())
    }

    pub async fn stop(&self, _handle: &Handle, _grace: Duration) {}

    pub async fn managed(&self) -> Vec<(i64, Handle)> {
        Vec::new()
    }

    pub async fn release(&self, _instance_id: i64) {}
}
