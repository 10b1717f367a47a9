//! What the server injects into built-in backends' commands (vLLM, SGLang, VoxBox, llama.cpp):
//! parallelism, context cap, memory fraction, served name, bind address, and the extended KV
//! cache (LMCache env + `--kv-transfer-config` for vLLM, HiCache flags for SGLang). Flags the user
//! already set (under any spelling) are not injected; `backends::render_command` puts the rest
//! together with the run command and the user's flags.

use super::calc::{BadParameters, ExtendedKv, Kind, find_any, kind_of};
use super::{Estimate, MindieParams, ModelMeta};
use crate::backends::kind::KeyDelivery;
use crate::backends::params::{Param, parse_params};
use crate::placement::Claim;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// LMCache's default chunk size (tokens).
const LMCACHE_CHUNK: u32 = 256;

/// Everything injection depends on.
#[derive(Debug, Clone, Copy)]
pub struct InjectInput<'a> {
    pub backend: &'a str,
    pub meta: &'a ModelMeta,
    pub estimate: &'a Estimate,
    /// GPUs this replica got on its main worker (each worker of a distributed replica has as many).
    pub n_gpus: u32,
    /// Workers the replica spans: 1, or more for distributed inference.
    pub nodes: u32,
    /// Served model name (or the `{{model_name}}` placeholder).
    pub model_name: &'a str,
    /// Port (or the `{{port}}` placeholder).
    pub port: &'a str,
    pub user_parameters: &'a [String],
    pub extended_kv: Option<ExtendedKv>,
    /// Total memory of the smallest GPU used, to turn an estimate claim into a vLLM fraction.
    pub gpu_total_memory: Option<u64>,
    /// The backend version (vLLM ≥ 0.11 takes `--kv-cache-memory-bytes`).
    pub backend_version: Option<&'a str>,
    /// Bytes of the chosen GPU already claimed by other instances or used outside the cluster
    /// (the most on any chosen GPU): SGLang sizes its pool from the memory free when it starts.
    pub gpu_taken: u64,
    /// The deployment parks its last replica (`autoscaling.park_seconds`): vLLM starts with its
    /// sleep mode (`--enable-sleep-mode`) and the development endpoints that drive it
    /// (`VLLM_SERVER_DEV_MODE=1`: `/sleep`, `/wake_up`).
    pub sleep_mode: bool,
}

/// Injected arguments (`--flag=value` items, for display and for merging) and environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injection {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// For backends configured by a file (MindIE): the file's sections from the parameters.
    pub config: Option<serde_json::Value>,
}

struct Builder<'a> {
    user: Vec<Param>,
    out: &'a mut Injection,
}

impl Builder<'_> {
    /// Adds `--flag=value` unless the user set any of `aliases` (the flag itself included).
    fn arg(&mut self, aliases: &[&str], value: Option<String>) {
        if find_any(&self.user, aliases).is_some() {
            return;
        }
        let flag = aliases.first().copied().unwrap_or_default();
        self.out.args.push(match value {
            Some(v) => format!("--{flag}={v}"),
            None => format!("--{flag}"),
        });
    }

    fn user_has(&self, aliases: &[&str]) -> bool {
        find_any(&self.user, aliases).is_some()
    }

    /// The estimate's own injections (`--max-model-len=8192`, …), unless the user set them.
    fn add_estimated(&mut self, estimate: &Estimate) {
        for item in &estimate.injected_parameters {
            let flag = item.split('=').next().unwrap_or_default().trim_start_matches('-');
            let aliases: &[&str] = match flag {
                "ctx-size" => &["ctx-size", "c"],
                _ => &[flag],
            };
            if !self.user_has(aliases) && !self.out.args.contains(item) {
                self.out.args.push(item.clone());
            }
        }
    }
}

/// `bytes / total` rounded down to 4 decimals (≤ 8 MiB under the claim on an 80 GiB GPU), so the
/// engine never takes more than was booked; at least 0.0001, at most 0.99.
pub fn fit_fraction(bytes: u64, total: u64) -> String {
    let f = (bytes as f64 / total.max(1) as f64 * 10_000.0).floor() / 10_000.0;
    format!("{:.4}", f.clamp(0.0001, 0.99))
}

/// Whether this vLLM version has `--kv-cache-memory-bytes` (0.11.0 and later). Unknown versions
/// (custom names) get only `--gpu-memory-utilization`.
pub fn vllm_has_kv_cache_memory_bytes(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let mut parts = v.trim_start_matches(['v', 'V']).split(['.', '-', '+']);
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else { return false };
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().ok();
    match (digits(major), digits(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (0, 11),
        _ => false,
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.2}", bytes / GIB)
}

/// The per-GPU VRAM claim as bytes, for sizing host caches from a ratio.
fn claim_bytes(input: &InjectInput<'_>) -> f64 {
    match (input.estimate.claim, input.gpu_total_memory) {
        (Claim::Fraction(f), Some(total)) => f * total as f64 * f64::from(input.n_gpus.max(1) * input.nodes.max(1)),
        _ => input.estimate.vram as f64,
    }
}

/// What the server injects for `input.backend`. Community and custom backends get nothing
/// (their command template carries everything) except llama.cpp's `--ctx-size`.
pub fn injected_parameters(input: &InjectInput<'_>) -> Result<Injection, BadParameters> {
    let mut out = Injection::default();
    let mut b = Builder { user: parse_params(input.user_parameters)?, out: &mut out };
    let nodes = input.nodes.max(1);
    let multi = input.n_gpus > 1 || nodes > 1;
    let all_gpus = input.n_gpus.max(1) * nodes;
    // The instance's key, where the engine reads it (`Kind::key_delivery`); an environment
    // variable is set when the command is rendered (`backends::render_command`).
    let key_flags = ["api-key", "api-key-file"];
    match kind_of(input.backend).key_delivery() {
        Some(KeyDelivery::File(flag)) if !b.user_has(&key_flags) => {
            b.out.args.push(format!("--{flag}={{{{api_key_file}}}}"));
        }
        Some(KeyDelivery::Flag(flag)) if !b.user_has(&key_flags) => {
            b.out.args.push(format!("--{flag}={{{{api_key}}}}"));
        }
        _ => {}
    }
    match kind_of(input.backend) {
        Kind::Vllm => {
            if multi
                && !b.user_has(&[
                    "tensor-parallel-size",
                    "tp",
                    "pipeline-parallel-size",
                    "pp",
                    "data-parallel-size",
                    "dp",
                ])
            {
                // Across workers (Ray): tensor parallel inside a worker, pipeline stages across.
                b.arg(&["tensor-parallel-size", "tp"], Some(input.n_gpus.max(1).to_string()));
                if nodes > 1 {
                    b.arg(&["pipeline-parallel-size", "pp"], Some(nodes.to_string()));
                }
            }
            if nodes > 1 {
                b.arg(&["distributed-executor-backend"], Some("ray".into()));
            }
            if input.sleep_mode {
                b.arg(&["enable-sleep-mode"], None);
                b.out.env.push(("VLLM_SERVER_DEV_MODE".into(), "1".into()));
            }
            b.add_estimated(input.estimate);
            if let (Some(fit), Some(total)) = (&input.estimate.fit, input.gpu_total_memory.filter(|t| *t > 0)) {
                // `gpu_memory: fit`: vLLM's budget is what it profiles (weights, activations, KV
                // cache) plus the headroom; its CUDA context and CUDA graphs come on top of it, in
                // the claim's engine overhead. Where the version has it, the KV cache is set in
                // bytes too (per GPU), so vLLM never grows it into the headroom.
                let budget = fit.total.saturating_sub(fit.overhead) / u64::from(all_gpus);
                b.arg(&["gpu-memory-utilization"], Some(fit_fraction(budget, total)));
                if vllm_has_kv_cache_memory_bytes(input.backend_version) {
                    b.arg(&["kv-cache-memory-bytes"], Some((fit.kv_cache / u64::from(all_gpus)).to_string()));
                }
            }
            let gmu = match (input.estimate.claim, input.gpu_total_memory) {
                (Claim::Fraction(f), _) => Some(f),
                // Sharing a GPU: tell vLLM to take only what was claimed.
                (Claim::Estimate, Some(total)) if total > 0 => {
                    let per_gpu = input.estimate.vram as f64 / f64::from(all_gpus);
                    Some(((per_gpu / total as f64 * 100.0).ceil() / 100.0).clamp(0.01, 0.9))
                }
                _ => None,
            };
            if let Some(g) = gmu.filter(|_| input.estimate.fit.is_none()) {
                b.arg(&["gpu-memory-utilization"], Some(g.to_string()));
            }
            if let Some(kv) = input.extended_kv {
                let size = kv.ram_size_gib.map(|g| g * GIB).or_else(|| kv.ram_ratio.map(|r| r * claim_bytes(input)));
                b.arg(
                    &["kv-transfer-config"],
                    Some(r#"{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#.to_owned()),
                );
                b.out.env.push(("LMCACHE_LOCAL_CPU".into(), "True".into()));
                b.out.env.push(("LMCACHE_CHUNK_SIZE".into(), kv.chunk_size.unwrap_or(LMCACHE_CHUNK).to_string()));
                if let Some(size) = size {
                    b.out.env.push(("LMCACHE_MAX_LOCAL_CPU_SIZE".into(), gib(size)));
                }
            }
            b.arg(&["served-model-name"], Some(input.model_name.to_owned()));
            b.arg(&["host"], Some("{{worker_ip}}".into()));
            b.arg(&["port"], Some(input.port.to_owned()));
        }
        Kind::Sglang => {
            if multi
                && !b.user_has(&[
                    "tp-size",
                    "tensor-parallel-size",
                    "pp-size",
                    "pipeline-parallel-size",
                    "dp-size",
                    "data-parallel-size",
                ])
            {
                b.arg(&["tp-size", "tensor-parallel-size"], Some(all_gpus.to_string()));
            }
            // The node rank and rendezvous address are added per worker at launch
            // (`backends::distributed`): the rendezvous port is the main worker's to pick.
            if nodes > 1 {
                b.arg(&["nnodes"], Some(nodes.to_string()));
            }
            b.add_estimated(input.estimate);
            if let (Some(fit), Some(total)) = (&input.estimate.fit, input.gpu_total_memory.filter(|t| *t > 0)) {
                // `gpu_memory: fit`: SGLang sizes its pool as (free at start − (1 − fraction) ×
                // total), so the fraction counts what others hold on the GPU; the token cap keeps
                // the pool at the fitted KV cache when they hold less.
                let per_gpu = fit.total / u64::from(all_gpus);
                b.arg(&["mem-fraction-static"], Some(fit_fraction(per_gpu.saturating_add(input.gpu_taken), total)));
                if fit.user_kv_flag.is_none() {
                    let tokens = fit.context_length.saturating_mul(u64::from(fit.contexts));
                    b.arg(&["max-total-tokens"], Some(tokens.to_string()));
                }
            }
            if let Claim::Fraction(f) = input.estimate.claim
                && !b.out.args.iter().any(|a| a.starts_with("--mem-fraction-static"))
            {
                b.arg(&["mem-fraction-static"], Some(f.to_string()));
            }
            b.arg(&["enable-metrics"], None);
            if let Some(kv) = input.extended_kv {
                b.arg(&["enable-hierarchical-cache"], None);
                if let Some(chunk) = kv.chunk_size {
                    b.arg(&["page-size"], Some(chunk.to_string()));
                }
                match (kv.ram_size_gib, kv.ram_ratio) {
                    (Some(size), _) => b.arg(&["hicache-size"], Some(format!("{}", size.ceil() as u64))),
                    (None, Some(ratio)) => b.arg(&["hicache-ratio"], Some(ratio.to_string())),
                    (None, None) => {}
                }
            }
            b.arg(&["served-model-name"], Some(input.model_name.to_owned()));
            b.arg(&["host"], Some("{{worker_ip}}".into()));
            b.arg(&["port"], Some(input.port.to_owned()));
        }
        Kind::Mindie => {
            // No CLI: the parameters become MindIE's JSON config (`mindie_config`) and env.
            let params = MindieParams::parse(input.user_parameters, input.estimate.context_length)?;
            b.out.env = params.env();
            b.out.config = Some(params.to_config());
        }
        Kind::Voxbox => {
            let device = if input.n_gpus == 0 { "cpu".to_owned() } else { "cuda:0".to_owned() };
            b.arg(&["device"], Some(device));
            b.arg(&["host"], Some("{{worker_ip}}".into()));
            b.arg(&["port"], Some(input.port.to_owned()));
        }
        Kind::LlamaCpp => b.add_estimated(input.estimate),
        Kind::Other => {}
    }
    Ok(out)
}
