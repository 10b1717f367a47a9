//! Memory estimation per backend: weights + KV cache for the served context + overhead, the GPU
//! claim (vLLM `--gpu-memory-utilization`, SGLang `--mem-fraction-static`, MindIE
//! `npu_memory_fraction`, or the estimate itself), world size and TP divisors.

use thiserror::Error;

use super::fit::{Fit, Policy};
use super::mindie::{MindieParams, ParamRangeError};
use super::{Category, ModelMeta, is_encoder_only};
use crate::backends::params::{Param, ParamError, find_param, parse_params};
use crate::placement::Claim;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The context cap applied when the native context is longer and the user set none.
pub const CONTEXT_CAP: u64 = 8192;
/// GPUStack's default vLLM `--gpu-memory-utilization`.
pub const VLLM_GMU: f64 = 0.9;
/// Architectures that keep the 0.9 claim even when deployed as embedding/reranker.
const GMU_EXCEPTIONS: &[&str] =
    &["Qwen3ForCausalLM", "Qwen3ForSequenceClassification", "Qwen3VLForConditionalGeneration"];

/// Extended KV cache in host memory (LMCache for vLLM, HiCache for SGLang).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExtendedKv {
    /// RAM as a multiple of the VRAM claim.
    pub ram_ratio: Option<f64>,
    /// RAM in GiB (wins over the ratio).
    pub ram_size_gib: Option<f64>,
    /// Tokens per chunk.
    pub chunk_size: Option<u32>,
}

/// What the estimate depends on besides the model.
#[derive(Debug, Clone, Copy)]
pub struct EstimateInput<'a> {
    /// `vLLM`, `SGLang`, `MindIE`, `VoxBox`, `llama.cpp` (case-insensitive), or any other name.
    pub backend: &'a str,
    pub backend_parameters: &'a [String],
    /// Total memory of the smallest candidate GPU (SGLang's fraction heuristic).
    pub gpu_total_memory: Option<u64>,
    /// GPUs per replica being considered; 0 = CPU only (llama.cpp, VoxBox, custom backends).
    pub n_gpus: u32,
    pub extended_kv: Option<ExtendedKv>,
    /// `reserve` (GPUStack's fraction claims) or `fit` (the claim is what the replica needs).
    pub policy: Policy,
}

/// One replica's needs on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Total VRAM over all GPUs of the replica (0 for CPU only).
    pub vram: u64,
    pub ram: u64,
    /// Weight bytes after the backend's factor.
    pub weights: u64,
    pub kv_cache: u64,
    pub overhead: u64,
    /// The context the backend will serve.
    pub context_length: u64,
    pub claim: Claim,
    /// Numbers a tensor-parallel size must divide.
    pub tp_divisors: Vec<u64>,
    /// World size from parallelism flags (VoxBox: 1).
    pub gpus_per_replica: Option<u32>,
    /// What the estimate assumed and the server must inject (`--max-model-len=8192`, …).
    pub injected_parameters: Vec<String>,
    pub notes: Vec<String>,
    /// Under `gpu_memory: fit`, the claim part by part (`vram` is its total).
    pub fit: Option<Fit>,
}

/// Backend parameters the estimate cannot use.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BadParameters {
    #[error(transparent)]
    Parse(#[from] ParamError),
    #[error(transparent)]
    Range(#[from] ParamRangeError),
    #[error("backend parameter {flag}: {value:?} is not a number")]
    NotANumber { flag: String, value: String },
    #[error(
        "backend parameter {flag}: tensor-parallel size {tp} must divide the attention heads ({heads}) and vocabulary ({vocab})"
    )]
    TpNotDivisible { flag: String, tp: u64, heads: u64, vocab: u64 },
}

pub(super) use crate::backends::kind::{Kind, kind_of};

/// The first of several flag spellings the user gave.
pub(super) fn find_any<'a>(params: &'a [Param], names: &[&'a str]) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|n| {
        let p = find_param(params, n)?;
        Some((p.flag.as_deref().unwrap_or(n), p.values.first().map(String::as_str).unwrap_or("")))
    })
}

fn number<T: std::str::FromStr>(params: &[Param], names: &[&str]) -> Result<Option<T>, BadParameters> {
    match find_any(params, names) {
        None => Ok(None),
        Some((flag, value)) => value
            .parse::<T>()
            .map(Some)
            .map_err(|_| BadParameters::NotANumber { flag: flag.to_owned(), value: value.to_owned() }),
    }
}

fn has(params: &[Param], name: &str) -> bool {
    find_param(params, name).is_some()
}

/// The context a backend will serve: the user's flag, else the native context capped at 8192
/// (unknown native context: 8192). Returns (context, whether the cap/default must be injected).
pub fn served_context(meta: &ModelMeta, user: Option<u64>) -> (u64, bool) {
    match (user, meta.context_length) {
        (Some(c), _) => (c, false),
        (None, Some(native)) if native > CONTEXT_CAP => (CONTEXT_CAP, true),
        (None, Some(native)) => (native, false),
        (None, None) => (CONTEXT_CAP, false),
    }
}

/// World size from parallelism flags, as each backend reads them; `None` when none is given.
pub fn world_size(backend: &str, backend_parameters: &[String]) -> Result<Option<u32>, BadParameters> {
    let params = parse_params(backend_parameters)?;
    world_size_of(kind_of(backend), &params)
}

fn world_size_of(kind: Kind, p: &[Param]) -> Result<Option<u32>, BadParameters> {
    let n = |names: &[&str]| number::<u32>(p, names);
    let product = |sizes: &[Option<u32>]| -> Option<u32> {
        sizes.iter().any(Option::is_some).then(|| sizes.iter().map(|s| s.unwrap_or(1).max(1)).product())
    };
    Ok(match kind {
        Kind::Vllm => {
            let tp = n(&["tensor-parallel-size", "tp"])?;
            let pp = n(&["pipeline-parallel-size", "pp"])?;
            let pcp = n(&["prefill-context-parallel-size"])?;
            let mut dp = n(&["data-parallel-size", "dp"])?;
            if has(p, "data-parallel-hybrid-lb") {
                dp = n(&["data-parallel-size-local", "dpl"])?.or(dp);
            }
            product(&[tp, pp, pcp, dp])
        }
        Kind::Sglang => {
            let tp = n(&["tp-size", "tensor-parallel-size", "tp"])?;
            let pp = n(&["pp-size", "pipeline-parallel-size"])?;
            let dp = if has(p, "enable-dp-attention") { None } else { n(&["dp-size", "data-parallel-size"])? };
            product(&[tp, pp, dp])
        }
        Kind::Mindie => {
            let int = |names: &[&str]| number::<i64>(p, names);
            let (tp, pp, dp) = (
                int(&["tensor-parallel-size", "tp"])?,
                int(&["pipeline-parallel-size", "pp"])?,
                int(&["data-parallel-size", "dp"])?,
            );
            let (moe_tp, moe_ep) =
                (int(&["moe-tensor-parallel-size", "moe-tp"])?, int(&["moe-expert-parallel-size", "moe-ep"])?);
            let tp1 = tp.filter(|t| *t > 0).unwrap_or(1);
            let world = match (pp, dp, moe_ep, tp) {
                (Some(pp), _, _, _) if pp > 1 => Some(pp * tp1),
                (_, Some(dp), _, _) if dp > 1 => Some(dp * tp1),
                (_, _, Some(ep), _) if ep > 1 => Some(ep * moe_tp.filter(|t| *t > 0).unwrap_or(1)),
                (_, _, _, Some(tp)) if tp > 0 => Some(tp),
                _ => None,
            };
            world.and_then(|w| u32::try_from(w).ok())
        }
        Kind::Voxbox => Some(1),
        Kind::LlamaCpp | Kind::Other => None,
    })
}

/// Weight factor where no KV cache is modelled (GPUStack: 1.2, text-to-speech 3.0).
fn plain_factor(category: Category) -> f64 {
    if category == Category::TextToSpeech { 3.0 } else { 1.2 }
}

fn scaled(bytes: u64, factor: f64) -> u64 {
    (bytes as f64 * factor).ceil() as u64
}

/// Whether serving keeps a KV cache: LLMs, and decoder-based embedding/reranker models.
fn uses_kv(meta: &ModelMeta) -> bool {
    match meta.category {
        Category::Llm => true,
        Category::Embedding | Category::Reranker => !is_encoder_only(&meta.architecture),
        _ => false,
    }
}

/// GPUStack caps the context of everything but image and audio models.
fn caps_context(meta: &ModelMeta) -> bool {
    !matches!(meta.category, Category::Image | Category::SpeechToText | Category::TextToSpeech)
}

/// llama.cpp cache types: bytes per element as (numerator, denominator).
fn cache_type_size(name: &str) -> Option<(u64, u64)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "f32" => (4, 1),
        "f16" | "bf16" => (2, 1),
        "q8_0" => (34, 32),
        "q4_0" | "iq4_nl" => (18, 32),
        "q4_1" => (20, 32),
        "q5_0" => (22, 32),
        "q5_1" => (24, 32),
        _ => return None,
    })
}

/// Estimates one replica of `meta` on `input.backend`. See the module docs for the rules.
pub fn estimate(meta: &ModelMeta, input: &EstimateInput<'_>) -> Result<Estimate, BadParameters> {
    let params = parse_params(input.backend_parameters)?;
    let kind = kind_of(input.backend);
    let mut est = Estimate {
        vram: 0,
        ram: 0,
        weights: 0,
        kv_cache: 0,
        overhead: if meta.category == Category::Llm { 2 * GIB } else { 512 * MIB },
        context_length: 0,
        claim: Claim::Estimate,
        tp_divisors: Vec::new(),
        gpus_per_replica: world_size_of(kind, &params)?,
        injected_parameters: Vec::new(),
        notes: Vec::new(),
        fit: None,
    };
    if meta.is_gguf && kind.reads_gguf() {
        gguf_estimate(meta, &params, input, &mut est)?;
        if let Policy::Fit { contexts } = input.policy {
            super::fit::apply(meta, &params, kind, input.n_gpus, contexts, &mut est);
        }
        return Ok(est);
    }
    let kv = uses_kv(meta);
    est.weights = if kv { meta.weight_bytes } else { scaled(meta.weight_bytes, plain_factor(meta.category)) };
    if meta.weight_bytes == 0 {
        est.notes.push("weight size unknown: the estimate counts no weights".into());
    }
    match kind {
        Kind::Vllm => vllm(meta, &params, &mut est)?,
        Kind::Sglang => sglang(meta, &params, input, &mut est)?,
        Kind::Mindie => mindie(meta, input, &mut est)?,
        Kind::Voxbox => {
            est.gpus_per_replica = Some(1);
            est.notes.push("VoxBox runs on one GPU, or on the CPU when none fits".into());
        }
        Kind::LlamaCpp | Kind::Other => {
            let user = number::<u64>(&params, &["max-model-len", "context-length", "ctx-size", "c", "max-seq-len"])?;
            est.context_length = served_context(meta, user).0;
        }
    }
    if kv && !kind.sizes_its_own_memory() {
        est.kv_cache = meta.kv_cache_bytes(est.context_length, kv_elem_bytes(meta, &params), 1);
    }
    if !kind.sizes_its_own_memory() {
        est.vram = est.weights + est.kv_cache + est.overhead;
    }
    est.ram = match kind {
        Kind::Vllm | Kind::Sglang => extended_kv_ram(input.extended_kv, est.vram, &mut est.notes),
        Kind::Mindie => est.ram,
        Kind::LlamaCpp | Kind::Voxbox | Kind::Other => (est.vram / 10).max(2 * GIB),
    };
    if input.n_gpus == 0 && kind.runs_on_cpu_alone() {
        est.ram += est.vram;
        est.vram = 0;
        est.notes.push("CPU only: the whole estimate is RAM".into());
    }
    if let Policy::Fit { contexts } = input.policy {
        super::fit::apply(meta, &params, kind, input.n_gpus, contexts, &mut est);
    }
    Ok(est)
}

fn kv_elem_bytes(meta: &ModelMeta, params: &[Param]) -> u64 {
    match find_any(params, &["kv-cache-dtype"]) {
        Some((_, v)) if v.starts_with("fp8") || v.starts_with("int8") => 1,
        Some((_, "float32" | "fp32")) => 4,
        Some((_, "float16" | "bfloat16" | "fp16" | "bf16")) => 2,
        _ => meta.kv_bytes_per_elem.max(1),
    }
}

fn extended_kv_ram(kv: Option<ExtendedKv>, vram: u64, notes: &mut Vec<String>) -> u64 {
    match kv {
        Some(ExtendedKv { ram_size_gib: Some(gib), .. }) => (gib.max(0.0) * GIB as f64) as u64,
        Some(ExtendedKv { ram_ratio: Some(ratio), .. }) => {
            notes.push("extended KV cache RAM = ratio × the VRAM claim of the chosen GPUs".into());
            (ratio.max(0.0) * vram as f64) as u64
        }
        _ => 0,
    }
}

fn tp_divisors(meta: &ModelMeta, vision: bool) -> Vec<u64> {
    let vision_heads = if vision { meta.vision.and_then(|v| v.n_heads) } else { None };
    [meta.n_heads, meta.vocab_size, vision_heads].into_iter().flatten().filter(|n| *n > 0).collect()
}

fn check_tp(meta: &ModelMeta, params: &[Param], names: &[&str], divisors: &[u64]) -> Result<(), BadParameters> {
    let Some(tp) = number::<u64>(params, names)? else { return Ok(()) };
    if tp == 0 || divisors.iter().any(|d| d % tp != 0) {
        let (flag, _) = find_any(params, names).unwrap_or((names[0], ""));
        return Err(BadParameters::TpNotDivisible {
            flag: flag.to_owned(),
            tp,
            heads: meta.n_heads.unwrap_or(0),
            vocab: meta.vocab_size.unwrap_or(0),
        });
    }
    Ok(())
}

fn vllm(meta: &ModelMeta, params: &[Param], est: &mut Estimate) -> Result<(), BadParameters> {
    let user = number::<u64>(params, &["max-model-len"])?;
    let (context, inject) = served_context(meta, user);
    est.context_length = context;
    if inject && caps_context(meta) {
        est.injected_parameters.push(format!("--max-model-len={context}"));
    }
    let gmu = match number::<f64>(params, &["gpu-memory-utilization"])? {
        Some(g) => g,
        None if meta.category == Category::Llm || GMU_EXCEPTIONS.contains(&meta.architecture.as_str()) => VLLM_GMU,
        None => 0.0,
    };
    est.claim = if gmu > 0.0 { Claim::Fraction(gmu) } else { Claim::Estimate };
    est.tp_divisors = tp_divisors(meta, !has(params, "language-model-only"));
    check_tp(meta, params, &["tensor-parallel-size", "tp"], &est.tp_divisors)
}

/// SGLang's own `mem_fraction_static` heuristic as GPUStack ports it (§4.5).
fn sglang_fraction(
    meta: &ModelMeta,
    params: &[Param],
    gpu_total: Option<u64>,
    n_gpus: u32,
) -> Result<f64, BadParameters> {
    let n = |names: &[&str]| number::<f64>(params, names);
    let gpu_mem = gpu_total.filter(|t| *t > 0).map(|t| t as f64 / MIB as f64);
    let tp = n(&["tp-size", "tensor-parallel-size"])?.unwrap_or(1.0).max(f64::from(n_gpus));
    let pp = n(&["pp-size", "pipeline-parallel-size"])?.unwrap_or(1.0);
    let dp = n(&["dp-size", "data-parallel-size"])?.unwrap_or(1.0);
    let (chunk_default, graph_default) = match gpu_mem {
        None => (4096.0, 160.0),
        Some(m) if m < 20.0 * 1024.0 => (2048.0, 8.0),
        Some(m) if m < 35.0 * 1024.0 => (2048.0, if tp < 4.0 { 24.0 } else { 80.0 }),
        Some(m) if m < 60.0 * 1024.0 => (4096.0, if tp < 4.0 { 32.0 } else { 160.0 }),
        Some(m) if m < 160.0 * 1024.0 => (8192.0, if tp < 4.0 { 256.0 } else { 512.0 }),
        Some(_) => (16384.0, 512.0),
    };
    let chunk = n(&["chunked-prefill-size"])?.unwrap_or(chunk_default);
    let graph = n(&["cuda-graph-max-bs"])?.unwrap_or(graph_default);
    let mut reserved = 512.0;
    if chunk > 0.0 {
        reserved += chunk.max(2048.0) * 1.5;
    }
    reserved += graph * 2.0 + tp * pp / 8.0 * 1024.0;
    if has(params, "enable-dp-attention") {
        reserved += graph * dp * 3.0;
        if graph > 300.0 {
            reserved += graph * dp * 1.5;
        }
    }
    if gpu_mem.is_some_and(|m| m > 60.0 * 1024.0) {
        reserved = reserved.max(10.0 * 1024.0);
    }
    match find_any(params, &["speculative-algorithm"]).map(|(_, v)| v.to_ascii_uppercase()) {
        Some(a) if a == "STANDALONE" => reserved += 6.0 * 1024.0,
        Some(a) if a != "NGRAM" => reserved += 2.0 * 1024.0,
        _ => {}
    }
    if has(params, "enable-piecewise-cuda-graph") {
        reserved += (n(&["piecewise-cuda-graph-max-tokens"])?.unwrap_or(0.0) / 4.0).floor();
    }
    let round3 = |f: f64| (f * 1000.0).round() / 1000.0;
    let mut fraction = gpu_mem.map_or(0.88, |m| round3((m - reserved) / m));
    if let Some(v) = meta.vision {
        let layers = v.n_layers.unwrap_or(24) as f64;
        let hidden = v.hidden_size.unwrap_or(1024) as f64;
        let ratio = layers * hidden * hidden / (24.0 * 1024.0 * 1024.0);
        let adjust = (1.0 - 0.1 * (ratio - 1.0)).clamp(0.8, 1.05);
        fraction = round3(fraction * 0.95 * adjust);
    }
    Ok(fraction)
}

fn sglang(
    meta: &ModelMeta,
    params: &[Param],
    input: &EstimateInput<'_>,
    est: &mut Estimate,
) -> Result<(), BadParameters> {
    let user = number::<u64>(params, &["context-length"])?;
    let (context, inject) = served_context(meta, user);
    est.context_length = context;
    if meta.category == Category::Image {
        est.notes.push("diffusion models claim the estimate".into());
        return Ok(());
    }
    if inject && caps_context(meta) {
        est.injected_parameters.push(format!("--context-length={context}"));
    }
    let fraction = match number::<f64>(params, &["mem-fraction-static"])? {
        Some(f) => f,
        None => {
            let f = sglang_fraction(meta, params, input.gpu_total_memory, input.n_gpus)?;
            est.injected_parameters.push(format!("--mem-fraction-static={f}"));
            f
        }
    };
    est.claim = if fraction > 0.0 { Claim::Fraction(fraction) } else { Claim::Estimate };
    est.tp_divisors = tp_divisors(meta, true);
    check_tp(meta, params, &["tp-size", "tensor-parallel-size"], &est.tp_divisors)
}

/// MindIE's analytic formula (§4.5): footprint 3 GiB + weights + KV + computation;
/// RAM 512 MiB + `cpu_mem_size` GiB.
fn mindie(meta: &ModelMeta, input: &EstimateInput<'_>, est: &mut Estimate) -> Result<(), BadParameters> {
    let (derived, _) = served_context(meta, None);
    let p = MindieParams::parse(input.backend_parameters, derived)?;
    est.context_length = p.max_seq_len;
    est.weights = meta.weight_bytes;
    est.overhead = 3 * GIB;
    let per_layer = meta.kv_elems_per_token_layer().unwrap_or(0);
    let layers = meta.n_layers.unwrap_or(0);
    let ct = meta.kv_bytes_per_elem.max(1);
    est.kv_cache = per_layer.saturating_mul(layers).saturating_mul(p.max_seq_len).saturating_mul(ct);
    let computation = p
        .max_batch_size
        .saturating_mul(p.cache_block_size)
        .saturating_mul(layers)
        .saturating_mul(per_layer)
        .saturating_mul(ct);
    est.vram = est.overhead + est.weights + est.kv_cache + computation;
    est.ram = 512 * MIB + p.cpu_mem_size * GIB;
    est.claim = Claim::Fraction(p.npu_memory_fraction);
    est.tp_divisors = tp_divisors(meta, false);
    est.notes.push(format!("MindIE computation buffer: {computation} bytes"));
    Ok(())
}

/// llama.cpp / GGUF: weights + KV for `-c/--ctx-size` (default: native capped at 8192, injected)
/// with the `-ctk/-ctv` cache types, + 512 MiB + one 512-token micro-batch of f32 logits.
fn gguf_estimate(
    meta: &ModelMeta,
    params: &[Param],
    input: &EstimateInput<'_>,
    est: &mut Estimate,
) -> Result<(), BadParameters> {
    let user = number::<u64>(params, &["ctx-size", "c"])?.filter(|c| *c > 0);
    let (context, _) = served_context(meta, user);
    est.context_length = context;
    if user.is_none() {
        est.injected_parameters.push(format!("--ctx-size={context}"));
    }
    let cache = |names: &[&str]| match find_any(params, names) {
        Some((_, v)) => cache_type_size(v).unwrap_or((2, 1)),
        None => (2, 1),
    };
    let (k, v) = (cache(&["cache-type-k", "ctk"]), cache(&["cache-type-v", "ctv"]));
    let half = meta.kv_cache_bytes(context, 1, 2);
    est.kv_cache = half.saturating_mul(k.0) / k.1 + half.saturating_mul(v.0) / v.1;
    est.weights = meta.weight_bytes;
    let ubatch = number::<u64>(params, &["ubatch-size", "ub"])?.unwrap_or(512);
    est.overhead = 512 * MIB + meta.vocab_size.unwrap_or(0).saturating_mul(ubatch).saturating_mul(4);
    let total = est.weights + est.kv_cache + est.overhead;
    let layers = meta.n_layers.unwrap_or(0);
    let offloaded = number::<u64>(params, &["n-gpu-layers", "ngl", "gpu-layers"])?;
    let gpu_share = match offloaded {
        _ if input.n_gpus == 0 => 0.0,
        Some(n) if layers > 0 && n <= layers => n as f64 / (layers + 1) as f64,
        _ => 1.0,
    };
    est.vram = (total as f64 * gpu_share) as u64;
    est.ram = 512 * MIB + (total - est.vram.min(total));
    if gpu_share < 1.0 {
        est.notes.push(format!("{:.0}% of the model on the GPU, the rest in RAM", gpu_share * 100.0));
    }
    est.claim = Claim::Estimate;
    Ok(())
}
