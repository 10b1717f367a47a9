//! The `fit` GPU memory policy: a replica claims what it needs — weights + KV cache for the served
//! context × the contexts asked for + activations + the engine's fixed overhead + headroom — and the
//! engine is told exactly that budget (`inject.rs`), so small models share a GPU. A budget flag the
//! user gave wins: `--gpu-memory-utilization` (vLLM) and `--mem-fraction-static` (SGLang) keep
//! today's fraction claim; `--kv-cache-memory-bytes` (vLLM) and `--max-total-tokens` (SGLang) set
//! the KV cache the claim counts. Pure.
//!
//! Activations: one forward pass over the engine's token batch (`--max-num-batched-tokens` for
//! vLLM, `--chunked-prefill-size` for SGLang, 8192 by default) at `hidden × 96` bytes per token
//! (bf16 hidden states, attention and an MLP about five times wider, as vLLM's profile run peaks),
//! plus the sampler's fp32 logits for 256 sequences (× 2: logits and probabilities). llama.cpp's
//! compute buffer (one micro-batch of logits) is its activations. Headroom: 10 % of the rest, at
//! least 256 MiB (allocator fragmentation, NCCL buffers, a driver that grows).

use super::calc::{Estimate, Kind, find_any};
use super::{Category, ModelMeta};
use crate::backends::params::Param;
use crate::placement::Claim;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Tokens in one forward pass when the user set no batch size.
pub const DEFAULT_BATCH_TOKENS: u64 = 8192;
/// Sequences whose logits the sampler holds at once.
const SAMPLER_SEQS: u64 = 256;
/// Activation bytes per token per unit of hidden size.
const ACTIVATION_BYTES_PER_HIDDEN: u64 = 96;
/// Headroom as a share of everything else, and its floor.
const HEADROOM_PERCENT: u64 = 10;
const HEADROOM_MIN: u64 = 256 * MIB;
/// Most full contexts one replica may ask its KV cache to hold.
pub const MAX_CONTEXTS: u32 = 1024;

/// How a replica claims GPU memory (the deployment's `gpu_memory`, resolved against its cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// GPUStack's: engines that pre-allocate claim their memory fraction of each GPU.
    #[default]
    Reserve,
    /// Claim the estimate; the KV cache holds `contexts` full contexts at once.
    Fit { contexts: u32 },
}

/// The fitted claim of one replica, part by part (all GPUs of the replica together).
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub weights: u64,
    /// KV cache for `contexts` × `context_length` tokens (or the user's own KV budget).
    pub kv_cache: u64,
    pub context_length: u64,
    pub contexts: u32,
    pub activations: u64,
    /// The engine's fixed overhead (CUDA context, cuBLAS workspaces, CUDA graphs).
    pub overhead: u64,
    pub headroom: u64,
    pub total: u64,
    /// The KV cache size came from the user's own flag (named here).
    pub user_kv_flag: Option<String>,
}

impl Fit {
    /// How the claim was computed, for the evaluation and "why not placed" messages.
    pub fn explain(&self) -> String {
        let kv = match &self.user_kv_flag {
            Some(flag) => format!("KV cache {} (the user's {flag})", gib(self.kv_cache)),
            None => format!(
                "KV cache {} ({} tokens × {} context{})",
                gib(self.kv_cache),
                self.context_length,
                self.contexts,
                if self.contexts == 1 { "" } else { "s" }
            ),
        };
        format!(
            "gpu_memory fit: claim {} = weights {} + {kv} + activations {} + engine overhead {} + headroom {}",
            gib(self.total),
            gib(self.weights),
            gib(self.activations),
            gib(self.overhead),
            gib(self.headroom)
        )
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

fn number(params: &[Param], names: &[&str]) -> Option<u64> {
    find_any(params, names).and_then(|(_, v)| v.parse::<f64>().ok()).filter(|v| *v >= 0.0).map(|v| v as u64)
}

/// Activations of one forward pass over `tokens` tokens plus, for LLMs, the sampler's logits
/// (embedding and reranker models pool instead of sampling).
pub fn activations(meta: &ModelMeta, tokens: u64) -> u64 {
    let hidden = meta.hidden_size.unwrap_or(0);
    let vocab = if meta.category == Category::Llm { meta.vocab_size.unwrap_or(0) } else { 0 };
    tokens.saturating_mul(hidden).saturating_mul(ACTIVATION_BYTES_PER_HIDDEN)
        + SAMPLER_SEQS.saturating_mul(vocab).saturating_mul(4 * 2)
}

/// 10 % of `subtotal`, at least 256 MiB, rounded up to a MiB.
pub fn headroom(subtotal: u64) -> u64 {
    (subtotal / 100 * HEADROOM_PERCENT).max(HEADROOM_MIN).div_ceil(MIB) * MIB
}

/// The user's own budget flag that keeps a fraction claim, if any.
pub fn user_fraction_flag(kind: Kind, params: &[Param]) -> Option<&'static str> {
    kind.memory_fraction_flag().filter(|n| find_any(params, &[n]).is_some())
}

/// Turns `est` (made for one context) into the `fit` claim for `contexts` contexts. Does nothing
/// where fitting does not apply: a fraction flag the user set, MindIE (configured by its NPU
/// fraction), a CPU-only replica, or a GGUF model only partly on the GPU. Says why in `notes`.
pub(super) fn apply(meta: &ModelMeta, params: &[Param], kind: Kind, n_gpus: u32, contexts: u32, est: &mut Estimate) {
    let contexts = contexts.clamp(1, MAX_CONTEXTS);
    if let Some(flag) = user_fraction_flag(kind, params) {
        est.notes.push(format!("gpu_memory fit: the user's --{flag} decides the claim"));
        return;
    }
    if kind.sizes_its_own_memory() {
        est.notes.push("gpu_memory fit: MindIE claims its NPU memory fraction".into());
        return;
    }
    if n_gpus == 0 || est.vram == 0 {
        return;
    }
    let gguf = meta.is_gguf && kind.reads_gguf();
    if gguf && est.vram < est.weights + est.kv_cache + est.overhead {
        est.notes.push("gpu_memory fit: part of the model is in RAM; the claim is the estimate".into());
        return;
    }
    let per_token = if est.context_length > 0 { est.kv_cache as f64 / est.context_length as f64 } else { 0.0 };
    let mut user_kv_flag = None;
    let mut contexts = contexts;
    let user_kv = match kind {
        Kind::Vllm => number(params, &["kv-cache-memory-bytes"]).map(|bytes| {
            ("--kv-cache-memory-bytes", bytes.saturating_mul(u64::from(est.gpus_per_replica.unwrap_or(1).max(1))))
        }),
        Kind::Sglang => number(params, &["max-total-tokens"])
            .map(|tokens| ("--max-total-tokens", (per_token * tokens as f64).ceil() as u64)),
        Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => None,
    };
    let kv_cache = match user_kv {
        Some((flag, bytes)) => {
            user_kv_flag = Some(flag.to_owned());
            bytes
        }
        None if gguf && find_any(params, &["ctx-size", "c"]).is_some() => {
            // The user's context is the whole cache, shared by every slot.
            contexts = 1;
            est.kv_cache
        }
        None => est.kv_cache.saturating_mul(u64::from(contexts)),
    };
    let (activations, overhead) = if gguf {
        // llama.cpp's compute buffer is its activations; 512 MiB is the fixed part.
        let fixed = est.overhead.min(512 * MIB);
        (est.overhead - fixed, fixed)
    } else {
        let tokens = match kind {
            Kind::Vllm => number(params, &["max-num-batched-tokens"]),
            Kind::Sglang => number(params, &["chunked-prefill-size"]).filter(|t| *t > 0),
            Kind::LlamaCpp | Kind::Voxbox | Kind::Mindie | Kind::Other => None,
        };
        let acts = match (kind, meta.category) {
            (Kind::Vllm | Kind::Sglang, _) | (_, Category::Llm) => {
                activations(meta, tokens.unwrap_or(DEFAULT_BATCH_TOKENS))
            }
            _ => 0,
        };
        (acts, est.overhead)
    };
    // Where no KV cache is modelled the estimate's weights carry GPUStack's 1.2 for activations;
    // counted here, so the weights are themselves (text-to-speech keeps its 3.0: extra models).
    let weights = if activations > 0 && meta.category != Category::TextToSpeech && est.kv_cache == 0 {
        est.weights.min(meta.weight_bytes)
    } else {
        est.weights
    };
    let subtotal = weights + kv_cache + activations + overhead;
    let headroom = headroom(subtotal);
    let fit = Fit {
        weights,
        kv_cache,
        context_length: est.context_length,
        contexts,
        activations,
        overhead,
        headroom,
        total: subtotal + headroom,
        user_kv_flag,
    };
    est.kv_cache = fit.kv_cache;
    est.weights = fit.weights;
    est.overhead = overhead;
    est.vram = fit.total;
    est.claim = Claim::Estimate;
    // What the engine is told comes from the fit (`inject.rs`), not the reserve heuristics.
    est.injected_parameters.retain(|p| !p.starts_with("--mem-fraction-static"));
    if gguf {
        let total_ctx = fit.context_length.saturating_mul(u64::from(fit.contexts));
        for p in est.injected_parameters.iter_mut() {
            if p.starts_with("--ctx-size=") {
                *p = format!("--ctx-size={total_ctx}");
            }
        }
        if fit.contexts > 1 && find_any(params, &["parallel", "np"]).is_none() {
            est.injected_parameters.push(format!("--parallel={}", fit.contexts));
        }
    }
    est.notes.push(fit.explain());
    est.fit = Some(fit);
}
