//! Model evaluation: what a model is (architecture, category, shape, weight bytes) read from
//! config.json, safetensors headers, model_index.json or a GGUF header, and how much memory one
//! replica needs on a given backend, with the parameters the server injects into built-in
//! backends. Pure functions plus thin readers (local files, HTTP range requests).
//!
//! Rules and choices (GPUStack's where its notes name them; see `calc.rs` for the details):
//! - VRAM = weights × factor + KV cache for the context actually served + runtime overhead.
//!   Where the KV cache is counted explicitly (decoder models) the weight factor is 1.0; GPUStack's
//!   1.2 stood in for KV and activations, so it is kept only where no KV cache is modelled
//!   (encoders, image, speech-to-text), and 3.0 for text-to-speech (vocoders, extra models).
//! - Overhead: 2 GiB for LLMs, 512 MiB otherwise (CUDA graphs, activations); GGUF uses llama.cpp's
//!   own shape: 512 MiB + one micro-batch of logits.

mod calc;
mod category;
mod fit;
pub(crate) mod gguf;
mod hf;
mod inject;
mod mindie;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_calc;
#[cfg(test)]
mod tests_engines;
#[cfg(test)]
mod tests_fit;
#[cfg(test)]
mod tests_inject;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use calc::{BadParameters, Estimate, EstimateInput, ExtendedKv, estimate, served_context, world_size};
pub use category::{category_for_architecture, category_for_gguf, is_encoder_only};
pub use fit::{Fit, MAX_CONTEXTS, Policy};
pub use hf::{meta_from_config, read_local, read_remote, safetensors_header_len, safetensors_tensor_bytes};
pub use inject::{InjectInput, Injection, injected_parameters};
pub use mindie::{MindieParams, ParamRangeError, mindie_config};

/// What a model is for (GPUStack's categories, same spelling on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    #[default]
    Llm,
    Embedding,
    Reranker,
    Image,
    SpeechToText,
    TextToSpeech,
}

impl Category {
    /// The category from its wire name (`llm`, `embedding`, `reranker`, `image`,
    /// `speech_to_text`, `text_to_speech`).
    pub fn parse(s: &str) -> Option<Category> {
        Some(match s {
            "llm" => Category::Llm,
            "embedding" => Category::Embedding,
            "reranker" => Category::Reranker,
            "image" => Category::Image,
            "speech_to_text" => Category::SpeechToText,
            "text_to_speech" => Category::TextToSpeech,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Llm => "llm",
            Category::Embedding => "embedding",
            Category::Reranker => "reranker",
            Category::Image => "image",
            Category::SpeechToText => "speech_to_text",
            Category::TextToSpeech => "text_to_speech",
        }
    }
}

/// Vision tower of a multimodal model (SGLang's fraction adjustment, TP divisibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionMeta {
    pub n_layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub n_heads: Option<u64>,
}

/// What evaluation learns about a model. Unknown numbers are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelMeta {
    /// `architectures[0]` of config.json, the diffusers pipeline class, or GGUF
    /// `general.architecture`.
    pub architecture: String,
    pub category: Category,
    /// Native (trained) context length.
    pub context_length: Option<u64>,
    pub n_heads: Option<u64>,
    pub n_kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub n_layers: Option<u64>,
    pub hidden_size: Option<u64>,
    pub vocab_size: Option<u64>,
    /// Bytes of weights (safetensors tensor bytes, GGUF tensor bytes, or weight file sizes).
    pub weight_bytes: u64,
    /// Bytes per KV cache element: from torch_dtype (fp32 4, else 2); GGUF: f16 = 2.
    pub kv_bytes_per_elem: u64,
    pub is_gguf: bool,
    pub gguf_file_type: Option<u32>,
    /// Multi-head latent attention: elements cached per token per layer
    /// (`kv_lora_rank + qk_rope_head_dim`) instead of `2 × n_kv_heads × head_dim`.
    pub mla_kv_dim: Option<u64>,
    pub vision: Option<VisionMeta>,
}

impl ModelMeta {
    /// KV cache elements per token per layer.
    pub fn kv_elems_per_token_layer(&self) -> Option<u64> {
        if let Some(mla) = self.mla_kv_dim {
            return Some(mla);
        }
        let kv_heads = self.n_kv_heads.or(self.n_heads)?;
        let head_dim = self.head_dim.or_else(|| Some(self.hidden_size? / self.n_heads.filter(|h| *h > 0)?))?;
        Some(2 * kv_heads * head_dim)
    }

    /// KV cache bytes for `context` tokens: `2 × n_layers × n_kv_heads × head_dim × context ×
    /// bytes_per_elem` (per-element size in 1/`den`ths of a byte for quantized GGUF caches).
    pub fn kv_cache_bytes(&self, context: u64, num: u64, den: u64) -> u64 {
        let (Some(per), Some(layers)) = (self.kv_elems_per_token_layer(), self.n_layers) else {
            return 0;
        };
        let total =
            u128::from(per) * u128::from(layers) * u128::from(context) * u128::from(num) / u128::from(den.max(1));
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// Why a model could not be read. Each names the file (or URL) and, where it applies, the field.
#[derive(Debug, Error)]
pub enum EstimateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a GGUF file (bad magic)")]
    NotGguf { file: String },
    #[error("{file}: GGUF version {version} is not supported (2 and 3 are)")]
    GgufVersion { file: String, version: u32 },
    #[error("{file}: ends inside {field}")]
    Truncated { file: String, field: String },
    #[error("{file}: {field}: {reason}")]
    Invalid { file: String, field: String, reason: String },
    #[error("{file}: invalid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: no config.json, model_index.json or .gguf file")]
    Unrecognized { path: String },
    #[error("{url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The backend to preselect for a model read from its files (`backends::catalog::preselect`).
pub fn preselect_backend(meta: &ModelMeta) -> &'static str {
    crate::backends::catalog::preselect(meta.is_gguf, &[meta.category.as_str().to_owned()])
}

/// Turns a GGUF header into model metadata.
pub fn meta_from_gguf(header: &gguf::GgufHeader) -> ModelMeta {
    let arch = header.str("general.architecture").unwrap_or_default().to_owned();
    let key = |k: &str| header.u64(&format!("{arch}.{k}"));
    let n_heads = key("attention.head_count");
    let hidden = key("embedding_length");
    let vocab = header
        .get("tokenizer.ggml.tokens")
        .and_then(|v| match v {
            gguf::GgufValue::Array { len, .. } => Some(*len),
            _ => None,
        })
        .or_else(|| key("vocab_size"));
    let head_dim = key("attention.key_length").or_else(|| Some(hidden? / n_heads.filter(|h| *h > 0)?));
    let mla_kv_dim = key("attention.kv_lora_rank").map(|rank| rank + key("rope.dimension_count").unwrap_or(0));
    ModelMeta {
        category: category_for_gguf(header),
        context_length: key("context_length"),
        n_heads,
        n_kv_heads: key("attention.head_count_kv").or(n_heads),
        head_dim,
        n_layers: key("block_count"),
        hidden_size: hidden,
        vocab_size: vocab,
        weight_bytes: header.tensor_bytes,
        kv_bytes_per_elem: 2,
        is_gguf: true,
        gguf_file_type: header.u64("general.file_type").and_then(|v| u32::try_from(v).ok()),
        mla_kv_dim,
        vision: None,
        architecture: arch,
    }
}
