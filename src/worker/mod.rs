//! The worker agent: joins a cluster, reports its machine and GPUs, heartbeats, and turns the
//! instances placed on it into running inference servers (process or container), keeping them so.
//!
//! Architecture Invariant: the worker talks to the server only through `client` (HTTP); it never
//! touches the database.

pub mod agent;
pub(crate) mod api;
pub(crate) mod download;
pub mod gpu;
pub(crate) mod logs;
pub mod net;
mod ports;
mod reconcile;
pub(crate) mod runtime;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const ENV_TOKEN: &str = crate::api::ENV_WORKER_TOKEN;
pub const ENV_SIMULATE_GPUS: &str = "FERROSTACK_SIMULATE_GPUS";

/// Which runtime a worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum RuntimeChoice {
    /// A container engine if its socket answers, else host processes.
    #[default]
    Auto,
    Process,
    Container,
}

/// Worker settings shared by `ferrostack worker` and the worker embedded in `ferrostack start`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Worker name [default: the host name].
    #[arg(long = "worker-name")]
    pub worker_name: Option<String>,
    /// Extra labels, KEY=VALUE (repeatable); `os` and `arch` are added.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// process, container (Docker Engine API: Docker or Podman) or auto.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// Container engine socket [default: $DOCKER_HOST, else /var/run/docker.sock].
    #[arg(long)]
    pub docker_host: Option<String>,
    /// Address the server, the gateway and other workers use to reach this worker and its engines
    /// (`{{worker_ip}}`) [default: the address of --ifname, else of the default route].
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// Network interface whose address this worker advertises (GPUStack's worker_ifname).
    #[arg(long)]
    pub ifname: Option<String>,
    /// Address the worker's own API (logs) listens on [default: the advertised address when this
    /// machine has it, else 0.0.0.0]; 0.0.0.0 or :: listens on every interface.
    #[arg(long)]
    pub bind_address: Option<std::net::IpAddr>,
    /// Port of the worker's own API (logs); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub worker_port: u16,
    /// Ports handed to inference servers, FIRST-LAST.
    #[arg(long, default_value = "40000-40999", value_parser = parse_range)]
    pub port_range: (u16, u16),
    /// Declare simulated GPUs instead of detecting, e.g. 4xH100-80GB, or 1xH100-80GB+20GB with 20 GB used
    /// outside the cluster (planning and tests; marked simulated).
    #[arg(long, env = ENV_SIMULATE_GPUS)]
    pub simulate_gpus: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_interval: u64,
    /// Seconds an instance may take from start to a healthy answer.
    #[arg(long, default_value_t = 600)]
    pub startup_timeout: u64,
    /// Seconds of healthy running after which an instance's restart backoff starts again at 10 s.
    #[arg(long, default_value_t = 600)]
    pub backoff_reset: u64,
    /// Leave instances running when the worker stops (a restarted worker reattaches to them).
    #[arg(long)]
    pub leave_running: bool,
    /// Seconds a clean stop (SIGTERM, ctrl-c) waits while the worker's instances move to other
    /// workers and drain (requests in flight finish); then the rest are stopped. 0: stop them at
    /// once. A second signal stops at once too.
    #[arg(long, default_value_t = 600)]
    pub shutdown_drain_timeout: u64,
    /// Hugging Face endpoint (a mirror, or a local server in tests).
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    pub hf_endpoint: String,
    /// Hugging Face token for private or gated models.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    pub hf_token: Option<String>,
    /// ModelScope endpoint.
    #[arg(long, env = "MODELSCOPE_ENDPOINT", default_value = "https://www.modelscope.cn")]
    pub modelscope_endpoint: String,
    /// ModelScope token.
    #[arg(long, env = "MODELSCOPE_API_TOKEN", hide_env_values = true)]
    pub modelscope_token: Option<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("label {s:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("label {s:?}: the key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("port range {s:?}: expected FIRST-LAST"))?;
    let first: u16 = a.trim().parse().map_err(|_| format!("port range {s:?}: {a:?} is not a port"))?;
    let last: u16 = b.trim().parse().map_err(|_| format!("port range {s:?}: {b:?} is not a port"))?;
    if first == 0 || first > last {
        return Err(format!("port range {s:?}: need 1 <= FIRST <= LAST"));
    }
    Ok((first, last))
}

/// Everything the agent needs, resolved.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub server_url: String,
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub name: String,
    /// The name is the host name (no --worker-name): a taken one gets a suffix.
    pub name_is_default: bool,
    pub labels: BTreeMap<String, String>,
    pub runtime: RuntimeChoice,
    pub docker_host: Option<String>,
    pub advertise_address: String,
    /// The interface that has `advertise_address` (empty when unknown).
    pub ifname: String,
    /// Where the worker's API listens (`net::listen_address`).
    pub bind_address: std::net::IpAddr,
    pub worker_port: u16,
    pub port_range: (u16, u16),
    pub simulate_gpus: Option<String>,
    /// The type of this machine's GPUs (`cuda`, `rocm`, `cann`, `dtk`), once detected: which
    /// vendor's variable names an engine's devices (`runtime::visible_devices_var`).
    pub gpu_type: Option<String>,
    pub heartbeat_interval: Duration,
    pub startup_timeout: Duration,
    pub backoff_reset: Duration,
    pub leave_running: bool,
    /// How long a clean stop waits for the worker's instances to drain (`RunningWorker::drain`).
    pub shutdown_drain_timeout: Duration,
    pub hub: download::HubConfig,
}

impl WorkerConfig {
    /// Resolves the options; fails only when `--ifname` names no interface with an address.
    pub fn new(
        server_url: String,
        token: Option<String>,
        data_dir: PathBuf,
        opts: &WorkerOptions,
    ) -> Result<WorkerConfig, String> {
        let advertised = net::resolve(opts.advertise_address.as_deref(), opts.ifname.as_deref())?;
        Ok(WorkerConfig {
            server_url,
            token,
            data_dir,
            name: opts.worker_name.clone().unwrap_or_else(hostname),
            name_is_default: opts.worker_name.is_none(),
            labels: opts.labels.iter().cloned().collect(),
            runtime: opts.runtime,
            docker_host: opts.docker_host.clone(),
            bind_address: net::listen_address(opts.bind_address, &advertised),
            advertise_address: advertised.address,
            ifname: advertised.ifname,
            worker_port: opts.worker_port,
            port_range: opts.port_range,
            simulate_gpus: opts.simulate_gpus.clone(),
            gpu_type: None,
            heartbeat_interval: Duration::from_secs(opts.heartbeat_interval.max(1)),
            startup_timeout: Duration::from_secs(opts.startup_timeout.max(1)),
            backoff_reset: Duration::from_secs(opts.backoff_reset.max(1)),
            leave_running: opts.leave_running,
            shutdown_drain_timeout: Duration::from_secs(opts.shutdown_drain_timeout),
            hub: download::HubConfig {
                hf_endpoint: opts.hf_endpoint.clone(),
                hf_token: opts.hf_token.clone(),
                ms_endpoint: opts.modelscope_endpoint.clone(),
                ms_token: opts.modelscope_token.clone(),
            },
        })
    }
}

/// The machine's host name, sanitised into a worker name.
pub fn hostname() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_else(|| "worker".into());
    let name: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    if name.is_empty() { "worker".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_port_ranges_parse_or_say_why() {
        assert_eq!(parse_label("gpu=a100"), Ok(("gpu".into(), "a100".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
        assert_eq!(parse_range("40000-40010"), Ok((40000, 40010)));
        for bad in ["40000", "a-b", "50-40", "0-10", "1-70000"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
