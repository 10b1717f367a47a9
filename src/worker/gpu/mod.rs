//! GPU detection for the worker: NVIDIA through NVML, AMD and Ascend through their tools, or simulated.
//!
//! The parsers ([`nvidia`], [`amd`], [`ascend`], [`simulate`]) are pure functions over a tool's text and
//! are tested on recorded outputs (`tests/fixtures/gpu/`). Everything that touches the machine (loading
//! `libnvidia-ml.so.1`, looking for and running `nvidia-smi`, `rocm-smi`, `npu-smi`) lives in [`probe`].
//!
//! Entry point: [`detect`]. It never fails because a vendor is absent: no library and no tool means
//! no devices.

pub(crate) mod amd;
pub(crate) mod ascend;
pub(crate) mod external;
pub(crate) mod nvidia;
pub(crate) mod probe;
pub mod simulate;

pub use probe::{detect, detect_nvidia};
pub use simulate::parse_simulate_spec;

pub use crate::api::{GpuDevice, GpuType, GpuVendor};

/// Why GPU detection failed. Each variant names the tool or input that failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The NVIDIA library loaded but a call into it failed.
    #[error("NVML {call} failed: {source}")]
    Nvml {
        call: &'static str,
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// A vendor tool printed something its parser does not understand.
    #[error("cannot read {tool} output: {reason}")]
    Parse { tool: &'static str, reason: String },
    /// A vendor tool could not be run, exited non-zero or ran too long.
    #[error("running {tool} failed: {reason}")]
    Tool { tool: String, reason: String },
    /// A `--simulate-gpus` spec that does not have the expected form.
    #[error(
        "bad --simulate-gpus entry {part:?}: {reason}; expected COUNTxMODEL-SIZEGB entries separated by commas, \
         e.g. 4xH100-80GB or 2xA100-40GB,1xL4-24GB or 8xMI300X-192GB"
    )]
    BadSpec { part: String, reason: String },
}

impl GpuError {
    pub(crate) fn parse(tool: &'static str, reason: impl Into<String>) -> Self {
        GpuError::Parse { tool, reason: reason.into() }
    }
}

/// Bytes in a MiB (nvidia-smi and npu-smi report MiB, calling it "MB").
pub(crate) const MIB: u64 = 1 << 20;

/// Reads a vendor tool's numeric cell: `None` for the placeholders tools print (`N/A`, `[N/A]`,
/// `[Not Supported]`, `-`, `NA`) and for anything else that is not a finite number.
pub(crate) fn parse_optional_f64(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    value.is_finite().then_some(value)
}
