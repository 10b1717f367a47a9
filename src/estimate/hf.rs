//! Hugging Face-style layouts: config.json, safetensors headers (8-byte length + JSON, never the
//! weights), diffusers model_index.json, read from a local directory or over HTTP with range
//! requests (`{base}/{repo}/resolve/{rev}/…`, file list from `{base}/api/models/{repo}`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::gguf::{GgufHeader, parse_gguf};
use super::{Category, EstimateError, ModelMeta, VisionMeta, category_for_architecture, meta_from_gguf};

/// safetensors refuses headers above 100 MB; so do we.
const MAX_SAFETENSORS_HEADER: u64 = 100 * 1024 * 1024;
const WEIGHT_EXTS: &[&str] = &["safetensors", "bin", "pt", "pth"];

fn json_err(file: &str) -> impl FnOnce(serde_json::Error) -> EstimateError + '_ {
    move |source| EstimateError::Json { file: file.to_owned(), source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EstimateError + '_ {
    move |source| EstimateError::Io { path: path.display().to_string(), source }
}

/// The JSON header length from a safetensors file's first 8 bytes, checked against the limit.
pub fn safetensors_header_len(first8: &[u8], file: &str) -> Result<u64, EstimateError> {
    let bytes: [u8; 8] = first8
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EstimateError::Truncated { file: file.to_owned(), field: "header length".into() })?;
    let n = u64::from_le_bytes(bytes);
    if n == 0 || n > MAX_SAFETENSORS_HEADER {
        return Err(EstimateError::Invalid {
            file: file.to_owned(),
            field: "header length".into(),
            reason: format!("{n} bytes (1 to {MAX_SAFETENSORS_HEADER} expected)"),
        });
    }
    Ok(n)
}

/// Σ tensor bytes described by a safetensors JSON header (`data_offsets` end − start).
pub fn safetensors_tensor_bytes(header: &[u8], file: &str) -> Result<u64, EstimateError> {
    let value: Value = serde_json::from_slice(header).map_err(json_err(file))?;
    let Value::Object(tensors) = value else {
        return Err(EstimateError::Invalid {
            file: file.to_owned(),
            field: "header".into(),
            reason: "not an object".into(),
        });
    };
    let mut total: u64 = 0;
    for (name, info) in tensors.iter().filter(|(name, _)| name.as_str() != "__metadata__") {
        let offsets = info.get("data_offsets").and_then(Value::as_array);
        let (start, end) = match offsets.map(|o| (o.first().and_then(Value::as_u64), o.get(1).and_then(Value::as_u64)))
        {
            Some((Some(start), Some(end))) if end >= start => (start, end),
            _ => {
                return Err(EstimateError::Invalid {
                    file: file.to_owned(),
                    field: format!("{name}.data_offsets"),
                    reason: "missing or decreasing".into(),
                });
            }
        };
        total = total.saturating_add(end - start);
    }
    Ok(total)
}

fn local_safetensors_bytes(path: &Path) -> Result<u64, EstimateError> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut first8 = [0u8; 8];
    file.read_exact(&mut first8)
        .map_err(|_| EstimateError::Truncated { file: name.clone(), field: "header length".into() })?;
    let n = safetensors_header_len(&first8, &name)?;
    if n.saturating_add(8) > len {
        return Err(EstimateError::Truncated { file: name, field: "header".into() });
    }
    let mut header = Vec::new();
    file.take(n).read_to_end(&mut header).map_err(io_err(path))?;
    safetensors_tensor_bytes(&header, &name)
}

/// Sorted files directly inside `dir`.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, EstimateError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn ext_of(path: &str) -> String {
    path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

fn is_weight_file(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    WEIGHT_EXTS.contains(&ext_of(base).as_str())
        && base != "consolidated.safetensors"
        && !base.starts_with("training_args")
}

/// Weight bytes of the files directly in `dir`: safetensors headers when any, else file sizes.
fn local_weight_bytes(dir: &Path) -> Result<u64, EstimateError> {
    let files: Vec<PathBuf> = list_files(dir)?
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_weight_file))
        .collect();
    let safetensors: Vec<&PathBuf> =
        files.iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    let mut total: u64 = 0;
    if safetensors.is_empty() {
        for f in &files {
            total = total.saturating_add(f.metadata().map_err(io_err(f))?.len());
        }
    } else {
        for f in safetensors {
            total = total.saturating_add(local_safetensors_bytes(f)?);
        }
    }
    Ok(total)
}

fn read_json(path: &Path) -> Result<Value, EstimateError> {
    let text = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&text).map_err(json_err(&path.display().to_string()))
}

/// Components of a diffusers pipeline (`"unet": ["diffusers", "UNet2DConditionModel"]`).
fn diffusers_components(index: &Value) -> Vec<String> {
    index
        .as_object()
        .map(|o| o.iter().filter(|(k, v)| !k.starts_with('_') && v.is_array()).map(|(k, _)| k.clone()).collect())
        .unwrap_or_default()
}

fn diffusers_meta(index: &Value, weight_bytes: u64) -> ModelMeta {
    ModelMeta {
        architecture: index.get("_class_name").and_then(Value::as_str).unwrap_or("DiffusionPipeline").to_owned(),
        category: Category::Image,
        weight_bytes,
        kv_bytes_per_elem: 2,
        ..ModelMeta::default()
    }
}

/// Reads a local model: a `.gguf` file, or a directory with config.json (+ safetensors),
/// model_index.json (diffusers), a `.gguf` file, or a speech model's own layout.
pub fn read_local(path: &Path) -> Result<ModelMeta, EstimateError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_file() {
        return read_local_gguf(path);
    }
    let index = path.join("model_index.json");
    if index.is_file() {
        let index = read_json(&index)?;
        let mut total = 0u64;
        for component in diffusers_components(&index) {
            let dir = path.join(&component);
            if dir.is_dir() {
                total = total.saturating_add(local_weight_bytes(&dir)?);
            }
        }
        return Ok(diffusers_meta(&index, total));
    }
    let config = path.join("config.json");
    if config.is_file() {
        let value = read_json(&config)?;
        let weights = local_weight_bytes(path)?;
        return Ok(meta_from_config(&value, weights));
    }
    let files = list_files(path)?;
    let name_of = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
    if let Some(gguf) = files.iter().find(|p| ext_of(&name_of(p)) == "gguf" && !name_of(p).contains("mmproj")) {
        return read_local_gguf(gguf);
    }
    // Speech models without config.json (CosyVoice ships cosyvoice*.yaml, Kokoro a .pth + voices).
    let names: Vec<String> = files.iter().map(name_of).collect();
    let tts = names.iter().find(|n| n.starts_with("cosyvoice") || n.starts_with("kokoro") || n.contains("tts"));
    if let Some(marker) = tts {
        let architecture = if marker.starts_with("cosyvoice") { "CosyVoice" } else { "Kokoro" };
        let weights = local_weight_bytes(path)?;
        return Ok(ModelMeta {
            architecture: architecture.into(),
            category: Category::TextToSpeech,
            weight_bytes: weights,
            kv_bytes_per_elem: 2,
            ..ModelMeta::default()
        });
    }
    Err(EstimateError::Unrecognized { path: path.display().to_string() })
}

/// Split GGUF shards: `name-00001-of-00003.gguf` → all shard paths.
fn gguf_shards(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return vec![path.to_path_buf()] };
    let Some(stem) = name.strip_suffix(".gguf") else { return vec![path.to_path_buf()] };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    if let [total, "of", _index, prefix] = parts.as_slice()
        && total.len() == 5
        && let Ok(count) = total.parse::<u32>()
        && count > 1
    {
        return (1..=count).map(|i| path.with_file_name(format!("{prefix}-{i:05}-of-{total}.gguf"))).collect();
    }
    vec![path.to_path_buf()]
}

fn parse_gguf_file(path: &Path) -> Result<GgufHeader, EstimateError> {
    let file = File::open(path).map_err(io_err(path))?;
    parse_gguf(std::io::BufReader::new(file), &path.display().to_string())
}

fn read_local_gguf(path: &Path) -> Result<ModelMeta, EstimateError> {
    let shards = gguf_shards(path);
    let first = shards.first().map(PathBuf::as_path).unwrap_or(path);
    let header = parse_gguf_file(first)?;
    let mut meta = meta_from_gguf(&header);
    for shard in shards.iter().skip(1) {
        meta.weight_bytes = meta.weight_bytes.saturating_add(parse_gguf_file(shard)?.tensor_bytes);
    }
    Ok(meta)
}

fn get_u64(obj: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| obj.get(*k).and_then(Value::as_u64))
}

/// Native context length, as vLLM derives it: the smallest of the length keys, times the RoPE
/// scaling factor for scaling types that extend it (not `su`/`longrope`/`llama3`/`default`/`mrope`;
/// `yarn` starts from `original_max_position_embeddings`).
fn context_length(text: &Value, top: &Value) -> Option<u64> {
    const KEYS: &[&str] = &[
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
        "max_seq_length",
        "seq_len",
        "model_max_length",
        "max_target_positions",
    ];
    let mut len = KEYS.iter().filter_map(|k| text.get(*k).or_else(|| top.get(*k)).and_then(Value::as_u64)).min()?;
    if let Some(scaling) = text.get("rope_scaling").filter(|v| v.is_object()) {
        let kind =
            scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
        let factor = scaling.get("factor").and_then(Value::as_f64).unwrap_or(1.0);
        if !["su", "longrope", "llama3", "default", "mrope"].contains(&kind) && factor > 1.0 {
            if kind == "yarn"
                && let Some(original) = scaling.get("original_max_position_embeddings").and_then(Value::as_u64)
            {
                len = original;
            }
            len = (len as f64 * factor) as u64;
        }
    }
    Some(len)
}

fn dtype_bytes(config: &Value) -> u64 {
    let dtype = config.get("torch_dtype").or_else(|| config.get("dtype")).and_then(Value::as_str).unwrap_or("");
    match dtype {
        "float32" | "fp32" | "float" => 4,
        _ => 2,
    }
}

/// Builds metadata from a config.json value and the weight bytes found next to it. Nested
/// `text_config` (multimodal LLMs) wins over top-level fields.
pub fn meta_from_config(config: &Value, weight_bytes: u64) -> ModelMeta {
    let architecture = config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let model_type = config.get("model_type").and_then(Value::as_str);
    let text = config.get("text_config").filter(|v| v.is_object()).unwrap_or(config);
    let field = |keys: &[&str]| get_u64(text, keys).or_else(|| get_u64(config, keys));
    let n_heads = field(&["num_attention_heads", "n_head", "num_heads", "n_heads"]);
    let hidden = field(&["hidden_size", "n_embd", "d_model", "dim"]);
    let mla_kv_dim = field(&["kv_lora_rank"]).map(|rank| rank + field(&["qk_rope_head_dim"]).unwrap_or(0));
    let vision = config.get("vision_config").filter(|v| v.is_object()).map(|v| VisionMeta {
        n_layers: get_u64(v, &["num_hidden_layers", "depth"]),
        hidden_size: get_u64(v, &["hidden_size", "embed_dim"]),
        n_heads: get_u64(v, &["num_attention_heads", "num_heads"]),
    });
    ModelMeta {
        category: category_for_architecture(&architecture, model_type),
        context_length: context_length(text, config),
        n_heads,
        n_kv_heads: field(&["num_key_value_heads", "n_head_kv", "multi_query_group_num"]).or(n_heads),
        head_dim: field(&["head_dim"]).or_else(|| Some(hidden? / n_heads.filter(|h| *h > 0)?)),
        n_layers: field(&["num_hidden_layers", "n_layer", "num_layers", "n_layers"]),
        hidden_size: hidden,
        vocab_size: field(&["vocab_size", "padded_vocab_size"]),
        weight_bytes,
        kv_bytes_per_elem: dtype_bytes(text).max(dtype_bytes(config)),
        is_gguf: false,
        gguf_file_type: None,
        mla_kv_dim,
        vision,
        architecture,
    }
}

// ---------------------------------------------------------------------------------------------
// Remote (HTTP) reading.

struct Remote<'a> {
    base: String,
    repo: &'a str,
    revision: &'a str,
    token: Option<&'a str>,
    client: &'a reqwest::Client,
}

impl Remote<'_> {
    fn file_url(&self, file: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.base, self.repo, self.revision, file)
    }

    async fn get(&self, url: &str, range: Option<(u64, u64)>) -> Result<reqwest::Response, EstimateError> {
        let mut request = self.client.get(url);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some((start, len)) = range {
            request = request.header(reqwest::header::RANGE, format!("bytes={}-{}", start, start + len.max(1) - 1));
        }
        let response = request.send().await.map_err(|source| EstimateError::Request { url: url.to_owned(), source })?;
        if !response.status().is_success() {
            return Err(EstimateError::Http { url: url.to_owned(), status: response.status().as_u16() });
        }
        Ok(response)
    }

    async fn json(&self, url: &str) -> Result<Value, EstimateError> {
        let response = self.get(url, None).await?;
        let bytes = response.bytes().await.map_err(|source| EstimateError::Request { url: url.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(json_err(url))
    }

    /// `len` bytes from `start`, by range request; a server that ignores ranges is read only
    /// as far as needed.
    async fn range(&self, file: &str, start: u64, len: u64) -> Result<Vec<u8>, EstimateError> {
        let url = self.file_url(file);
        let mut response = self.get(&url, Some((start, len))).await?;
        let skip = if response.status() == reqwest::StatusCode::PARTIAL_CONTENT { 0 } else { start };
        let want = usize::try_from(skip + len).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while out.len() < want {
            match response.chunk().await.map_err(|source| EstimateError::Request { url: url.clone(), source })? {
                Some(chunk) => out.extend_from_slice(&chunk),
                None => break,
            }
        }
        out.truncate(want);
        Ok(out.split_off(usize::try_from(skip).unwrap_or(usize::MAX).min(out.len())))
    }

    async fn safetensors_bytes(&self, file: &str) -> Result<u64, EstimateError> {
        let url = self.file_url(file);
        let first8 = self.range(file, 0, 8).await?;
        let n = safetensors_header_len(&first8, &url)?;
        let header = self.range(file, 8, n).await?;
        if (header.len() as u64) < n {
            return Err(EstimateError::Truncated { file: url, field: "header".into() });
        }
        safetensors_tensor_bytes(&header, &url)
    }

    /// A GGUF header by growing prefixes (1 MiB, doubling) until it parses.
    async fn gguf(&self, file: &str) -> Result<ModelMeta, EstimateError> {
        let url = self.file_url(file);
        let mut len: u64 = 1024 * 1024;
        loop {
            let bytes = self.range(file, 0, len).await?;
            let got = bytes.len() as u64;
            match parse_gguf(bytes.as_slice(), &url) {
                Err(EstimateError::Truncated { .. }) if got == len && len < super::gguf::MAX_HEADER_BYTES => len *= 4,
                other => return other.map(|h| meta_from_gguf(&h)),
            }
        }
    }
}

/// Reads a model from a Hugging Face-style server without downloading weights: the file list
/// (`{base}/api/models/{repo}` siblings), config.json or model_index.json, and safetensors
/// headers by range request (`bytes=0-7`, then `bytes=8-(8+n-1)`); GGUF-only repos by prefix.
pub async fn read_remote(
    base_url: &str,
    repo: &str,
    revision: &str,
    token: Option<&str>,
    client: &reqwest::Client,
) -> Result<ModelMeta, EstimateError> {
    let remote = Remote { base: base_url.trim_end_matches('/').to_owned(), repo, revision, token, client };
    let listing = remote.json(&format!("{}/api/models/{}?blobs=true", remote.base, repo)).await?;
    let siblings: Vec<(String, Option<u64>)> = listing
        .get("siblings")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|f| Some((f.get("rfilename")?.as_str()?.to_owned(), f.get("size").and_then(Value::as_u64))))
                .collect()
        })
        .unwrap_or_default();
    let has = |name: &str| siblings.iter().any(|(f, _)| f == name);
    if has("model_index.json") {
        let index = remote.json(&remote.file_url("model_index.json")).await?;
        let components = diffusers_components(&index);
        let mut total = 0u64;
        for (file, size) in &siblings {
            let in_component = file
                .split_once('/')
                .is_some_and(|(dir, rest)| !rest.contains('/') && components.iter().any(|c| c == dir));
            if in_component && is_weight_file(file) {
                total = total.saturating_add(remote_weight(&remote, file, *size).await?);
            }
        }
        return Ok(diffusers_meta(&index, total));
    }
    if has("config.json") {
        let config = remote.json(&remote.file_url("config.json")).await?;
        let root: Vec<&(String, Option<u64>)> =
            siblings.iter().filter(|(f, _)| !f.contains('/') && is_weight_file(f)).collect();
        let any_safetensors = root.iter().any(|(f, _)| ext_of(f) == "safetensors");
        let mut total = 0u64;
        for (file, size) in root {
            if !any_safetensors || ext_of(file) == "safetensors" {
                total = total.saturating_add(remote_weight(&remote, file, *size).await?);
            }
        }
        return Ok(meta_from_config(&config, total));
    }
    if let Some((file, _)) = siblings.iter().find(|(f, _)| ext_of(f) == "gguf" && !f.contains("mmproj")) {
        return remote.gguf(file).await;
    }
    Err(EstimateError::Unrecognized { path: format!("{}/{}", remote.base, repo) })
}

async fn remote_weight(remote: &Remote<'_>, file: &str, size: Option<u64>) -> Result<u64, EstimateError> {
    if ext_of(file) == "safetensors" {
        return remote.safetensors_bytes(file).await;
    }
    Ok(size.unwrap_or(0))
}
