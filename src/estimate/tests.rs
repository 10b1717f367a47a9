//! Reader tests: config.json tables, safetensors and GGUF files built in a tempdir, diffusers and
//! speech layouts, remote reading against a local axum server, the real SmolLM2 GGUF when
//! `SMOLLM2_GGUF` is set, and random bytes fed to both header parsers.

// Tests find the real model in the environment the suite sets up.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use super::gguf::{ggml_type_size, parse_gguf};
use super::*;

/// A GGUF metadata value for the test writer.
pub(super) enum V<'a> {
    U32(u32),
    Str(&'a str),
    StrArray(usize),
    I32Array(&'a [i32]),
}

/// Writes a GGUF v3 file image: metadata, then tensors (name, dims, ggml type).
pub(super) fn gguf_bytes(kv: &[(&str, V<'_>)], tensors: &[(&str, &[u64], u32)]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, text: &str) {
        out.extend((text.len() as u64).to_le_bytes());
        out.extend(text.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        s(&mut out, key);
        match value {
            V::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            V::Str(v) => {
                out.extend(8u32.to_le_bytes());
                s(&mut out, v);
            }
            V::StrArray(n) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((*n as u64).to_le_bytes());
                for i in 0..*n {
                    s(&mut out, &format!("tok{i}"));
                }
            }
            V::I32Array(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in *items {
                    out.extend(i.to_le_bytes());
                }
            }
        }
    }
    for (name, dims, ty) in tensors {
        s(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(0u64.to_le_bytes());
    }
    out
}

/// A llama-shaped GGUF: 2 layers, 8 heads, 2 KV heads, n_embd 64, 100 tokens, context 32768.
pub(super) fn tiny_llama_gguf() -> Vec<u8> {
    gguf_bytes(
        &[
            ("general.architecture", V::Str("llama")),
            ("general.file_type", V::U32(7)),
            ("llama.context_length", V::U32(32768)),
            ("llama.attention.head_count", V::U32(8)),
            ("llama.attention.head_count_kv", V::U32(2)),
            ("llama.block_count", V::U32(2)),
            ("llama.embedding_length", V::U32(64)),
            ("tokenizer.ggml.tokens", V::StrArray(100)),
        ],
        &[
            ("token_embd.weight", &[64, 100], 8),
            ("output_norm.weight", &[64], 0),
            ("blk.0.attn_q.weight", &[64, 64], 12),
        ],
    )
}

/// A safetensors file: header + (fake, zero) data of the declared size.
pub(super) fn safetensors_bytes(tensors: &[(&str, &str, &[u64], u64)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        header
            .insert((*name).into(), json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.resize(out.len() + offset as usize, 0);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn ggml_type_sizes_match_llama_cpp() {
    for (ty, expected) in [
        (0, (1, 4)),
        (1, (1, 2)),
        (2, (32, 18)),
        (8, (32, 34)),
        (12, (256, 144)),
        (14, (256, 210)),
        (30, (1, 2)),
        (39, (32, 17)),
    ] {
        assert_eq!(ggml_type_size(ty), Some(expected), "type {ty}");
    }
    assert_eq!(ggml_type_size(4), None);
    assert_eq!(ggml_type_size(1000), None);
}

#[test]
fn parses_a_gguf_header() {
    let header = parse_gguf(tiny_llama_gguf().as_slice(), "tiny.gguf").unwrap();
    assert_eq!(header.version, 3);
    assert_eq!(header.tensor_count, 3);
    // Q8_0: 6400 / 32 * 34 = 6800; F32: 256; Q4_K: 4096 / 256 * 144 = 2304.
    assert_eq!(header.tensor_bytes, 6800 + 256 + 2304);
    let meta = meta_from_gguf(&header);
    assert_eq!(meta.architecture, "llama");
    assert_eq!(meta.category, Category::Llm);
    assert_eq!((meta.n_heads, meta.n_kv_heads, meta.head_dim), (Some(8), Some(2), Some(8)));
    assert_eq!((meta.n_layers, meta.hidden_size, meta.vocab_size), (Some(2), Some(64), Some(100)));
    assert_eq!((meta.context_length, meta.gguf_file_type), (Some(32768), Some(7)));
    assert!(meta.is_gguf);
    assert_eq!(preselect_backend(&meta), "llama.cpp");
}

#[test]
fn gguf_errors_name_file_and_field() {
    let good = tiny_llama_gguf();
    let mut v1 = good.clone();
    v1[4] = 1;
    let mut bad_type = gguf_bytes(&[], &[("t", &[4], 4)]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGML\x03\0\0\0".to_vec(), "x.gguf: not a GGUF file"),
        (v1, "GGUF version 1 is not supported"),
        (good[..good.len() - 3].to_vec(), "x.gguf: ends inside blk.0.attn_q.weight"),
        (good[..40].to_vec(), "ends inside"),
        (std::mem::take(&mut bad_type), "x.gguf: t: unknown ggml type 4"),
    ];
    for (bytes, expected) in cases {
        let err = parse_gguf(bytes.as_slice(), "x.gguf").unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
}

#[test]
fn gguf_category_hints() {
    let cases: &[(&str, Option<u32>, Category)] = &[
        ("llama", None, Category::Llm),
        ("qwen3", Some(3), Category::Embedding),
        ("qwen3", Some(4), Category::Reranker),
        ("bert", None, Category::Embedding),
        ("nomic-bert", Some(1), Category::Embedding),
        ("outetts-0.3", None, Category::TextToSpeech),
        ("whisper", None, Category::SpeechToText),
        ("flux", None, Category::Image),
    ];
    for (arch, pooling, expected) in cases {
        let key = format!("{arch}.pooling_type");
        let mut kv = vec![("general.architecture", V::Str(arch))];
        if let Some(p) = pooling {
            kv.push((key.as_str(), V::U32(*p)));
        }
        let header = parse_gguf(gguf_bytes(&kv, &[]).as_slice(), "x.gguf").unwrap();
        assert_eq!(category_for_gguf(&header), *expected, "{arch} {pooling:?}");
    }
}

#[test]
fn gguf_per_layer_kv_heads_take_the_largest() {
    let bytes = gguf_bytes(
        &[
            ("general.architecture", V::Str("x")),
            ("x.attention.head_count", V::U32(8)),
            ("x.attention.head_count_kv", V::I32Array(&[2, 4, 0])),
        ],
        &[],
    );
    let meta = meta_from_gguf(&parse_gguf(bytes.as_slice(), "x").unwrap());
    assert_eq!(meta.n_kv_heads, Some(4));
}

#[test]
fn category_table() {
    let cases: &[(&str, Option<&str>, Category)] = &[
        ("LlamaForCausalLM", None, Category::Llm),
        ("Qwen2VLForConditionalGeneration", None, Category::Llm),
        ("GPT2LMHeadModel", None, Category::Llm),
        ("BertModel", None, Category::Embedding),
        ("XLMRobertaModel", None, Category::Embedding),
        ("NomicBertModel", None, Category::Embedding),
        ("SomeNewEmbeddingModel", None, Category::Embedding),
        ("XLMRobertaForSequenceClassification", None, Category::Reranker),
        ("Qwen3ForSequenceClassification", None, Category::Reranker),
        ("MysteryForSequenceClassification", None, Category::Reranker),
        ("WhisperForConditionalGeneration", None, Category::SpeechToText),
        ("DiaForConditionalGeneration", None, Category::TextToSpeech),
        ("BarkModel", None, Category::TextToSpeech),
        ("CosyVoice2", None, Category::TextToSpeech),
        ("SpeechT5ForTextToSpeech", None, Category::TextToSpeech),
        ("ParlerTTSForConditionalGeneration", None, Category::TextToSpeech),
        ("", Some("whisper"), Category::SpeechToText),
        ("", Some("bert"), Category::Embedding),
        ("", None, Category::Llm),
    ];
    for (arch, model_type, expected) in cases {
        assert_eq!(category_for_architecture(arch, *model_type), *expected, "{arch} {model_type:?}");
    }
}

#[test]
fn config_json_table() {
    struct Case {
        config: &'static str,
        arch: &'static str,
        category: Category,
        context: Option<u64>,
        heads: (Option<u64>, Option<u64>, Option<u64>),
        layers: Option<u64>,
        vocab: Option<u64>,
        kv_bytes: u64,
    }
    let cases = [
        Case {
            config: r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"num_attention_heads":32,"num_key_value_heads":8,
                "num_hidden_layers":32,"vocab_size":128256,"max_position_embeddings":131072,"torch_dtype":"bfloat16",
                "rope_scaling":{"rope_type":"llama3","factor":8.0}}"#,
            arch: "LlamaForCausalLM",
            category: Category::Llm,
            context: Some(131072),
            heads: (Some(32), Some(8), Some(128)),
            layers: Some(32),
            vocab: Some(128256),
            kv_bytes: 2,
        },
        Case {
            config: r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":896,"num_attention_heads":14,"num_key_value_heads":2,
                "num_hidden_layers":24,"vocab_size":151936,"max_position_embeddings":32768,"torch_dtype":"float32",
                "rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}"#,
            arch: "Qwen2ForCausalLM",
            category: Category::Llm,
            context: Some(131072),
            heads: (Some(14), Some(2), Some(64)),
            layers: Some(24),
            vocab: Some(151936),
            kv_bytes: 4,
        },
        Case {
            config: r#"{"architectures":["Gemma3ForConditionalGeneration"],"text_config":{"hidden_size":2560,"num_attention_heads":8,
                "num_key_value_heads":4,"head_dim":256,"num_hidden_layers":34,"max_position_embeddings":131072},"vocab_size":262208}"#,
            arch: "Gemma3ForConditionalGeneration",
            category: Category::Llm,
            context: Some(131072),
            heads: (Some(8), Some(4), Some(256)),
            layers: Some(34),
            vocab: Some(262208),
            kv_bytes: 2,
        },
        Case {
            config: r#"{"architectures":["XLMRobertaModel"],"hidden_size":1024,"num_attention_heads":16,"num_hidden_layers":24,
                "vocab_size":250002,"max_position_embeddings":8194}"#,
            arch: "XLMRobertaModel",
            category: Category::Embedding,
            context: Some(8194),
            heads: (Some(16), Some(16), Some(64)),
            layers: Some(24),
            vocab: Some(250002),
            kv_bytes: 2,
        },
        Case {
            config: r#"{"architectures":["WhisperForConditionalGeneration"],"d_model":1280,"encoder_attention_heads":20,
                "max_target_positions":448,"max_source_positions":1500,"vocab_size":51866}"#,
            arch: "WhisperForConditionalGeneration",
            category: Category::SpeechToText,
            context: Some(448),
            heads: (None, None, None),
            layers: None,
            vocab: Some(51866),
            kv_bytes: 2,
        },
    ];
    for case in cases {
        let value: serde_json::Value = serde_json::from_str(case.config).unwrap();
        let meta = meta_from_config(&value, 1000);
        assert_eq!(meta.architecture, case.arch);
        assert_eq!(meta.category, case.category, "{}", case.arch);
        assert_eq!(meta.context_length, case.context, "{}", case.arch);
        assert_eq!((meta.n_heads, meta.n_kv_heads, meta.head_dim), case.heads, "{}", case.arch);
        assert_eq!(meta.n_layers, case.layers, "{}", case.arch);
        assert_eq!(meta.vocab_size, case.vocab, "{}", case.arch);
        assert_eq!(meta.kv_bytes_per_elem, case.kv_bytes, "{}", case.arch);
        assert_eq!(meta.weight_bytes, 1000);
        assert!(!meta.is_gguf);
    }
}

#[test]
fn mla_models_cache_the_latent() {
    let value = json!({"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "num_attention_heads": 128,
        "num_key_value_heads": 128, "num_hidden_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64});
    let meta = meta_from_config(&value, 0);
    assert_eq!(meta.mla_kv_dim, Some(576));
    assert_eq!(meta.kv_cache_bytes(1000, 2, 1), 576 * 61 * 1000 * 2);
}

#[test]
fn reads_local_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A HF LLM: two shards (headers only are read), a consolidated copy that must not count.
    let llm = root.join("llm");
    write(&llm, "config.json", br#"{"architectures":["MistralForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,"vocab_size":32}"#);
    write(
        &llm,
        "model-00001-of-00002.safetensors",
        &safetensors_bytes(&[("a", "BF16", &[16, 16], 512), ("b", "F32", &[4], 16)]),
    );
    write(&llm, "model-00002-of-00002.safetensors", &safetensors_bytes(&[("c", "BF16", &[8], 16)]));
    write(&llm, "consolidated.safetensors", &safetensors_bytes(&[("x", "BF16", &[1000], 2000)]));
    // A pytorch-only model: file sizes.
    let bin = root.join("bin");
    write(&bin, "config.json", br#"{"architectures":["BertModel"]}"#);
    write(&bin, "pytorch_model.bin", &[0u8; 300]);
    write(&bin, "training_args.bin", &[0u8; 50]);
    // Diffusers: weights under each component.
    let image = root.join("sd");
    write(&image, "model_index.json", br#"{"_class_name":"StableDiffusionPipeline","_diffusers_version":"0.30.0","unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"],"scheduler":["diffusers","PNDMScheduler"]}"#);
    write(&image, "unet/diffusion_pytorch_model.safetensors", &safetensors_bytes(&[("w", "F16", &[64], 128)]));
    write(&image, "vae/diffusion_pytorch_model.safetensors", &safetensors_bytes(&[("w", "F16", &[32], 64)]));
    // GGUF in a directory, and speech models without config.json.
    let gguf_dir = root.join("gguf");
    write(&gguf_dir, "model.gguf", &tiny_llama_gguf());
    let cosy = root.join("cosy");
    write(&cosy, "cosyvoice2.yaml", b"x: 1");
    write(&cosy, "llm.pt", &[0u8; 100]);

    let cases: &[(&str, &str, Category, u64, &str)] = &[
        ("llm", "MistralForCausalLM", Category::Llm, 544, "vLLM"),
        ("bin", "BertModel", Category::Embedding, 300, "vLLM"),
        ("sd", "StableDiffusionPipeline", Category::Image, 192, "SGLang"),
        ("gguf", "llama", Category::Llm, 9360, "llama.cpp"),
        ("gguf/model.gguf", "llama", Category::Llm, 9360, "llama.cpp"),
        ("cosy", "CosyVoice", Category::TextToSpeech, 100, "VoxBox"),
    ];
    for (path, arch, category, weights, backend) in cases {
        let meta = read_local(&root.join(path)).unwrap();
        assert_eq!(
            (meta.architecture.as_str(), meta.category, meta.weight_bytes),
            (*arch, *category, *weights),
            "{path}"
        );
        assert_eq!(preselect_backend(&meta), *backend, "{path}");
    }
}

#[test]
fn sums_split_gguf_shards() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "m-00001-of-00002.gguf", &tiny_llama_gguf());
    write(dir.path(), "m-00002-of-00002.gguf", &gguf_bytes(&[], &[("blk.1.w", &[32, 32], 1)]));
    let meta = read_local(&dir.path().join("m-00001-of-00002.gguf")).unwrap();
    assert_eq!(meta.weight_bytes, 9360 + 2048);
}

#[test]
fn local_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "badjson/config.json", b"{nope");
    write(root, "badst/config.json", b"{}");
    write(root, "badst/model.safetensors", &u64::MAX.to_le_bytes());
    write(root, "shortst/config.json", b"{}");
    write(root, "shortst/model.safetensors", &[10, 0, 0, 0, 0, 0, 0, 0, b'{']);
    write(root, "offsets/config.json", b"{}");
    let mut st = br#"{"w":{"dtype":"F16","shape":[1],"data_offsets":[8,2]}}"#.to_vec();
    let mut bytes = (st.len() as u64).to_le_bytes().to_vec();
    bytes.append(&mut st);
    write(root, "offsets/model.safetensors", &bytes);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("badjson", "config.json: invalid JSON"),
        ("badst", "model.safetensors: header length: 18446744073709551615 bytes"),
        ("shortst", "model.safetensors: ends inside header"),
        ("offsets", "model.safetensors: w.data_offsets: missing or decreasing"),
        ("empty", "no config.json, model_index.json or .gguf file"),
        ("missing", "missing"),
    ];
    for (path, expected) in cases {
        let err = read_local(&root.join(path)).unwrap_err().to_string();
        assert!(err.contains(expected), "{path}: {err:?} lacks {expected:?}");
    }
}

/// Serves a fake Hugging Face repo from memory, honouring `Range` like the hub does.
async fn fake_hub(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use axum::extract::{Path as AxPath, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::Arc;

    type Files = Arc<Vec<(&'static str, Vec<u8>)>>;
    async fn api(State(files): State<Files>) -> impl IntoResponse {
        let siblings: Vec<_> =
            files.iter().map(|(name, bytes)| json!({"rfilename": name, "size": bytes.len()})).collect();
        axum::Json(json!({"id": "org/tiny", "siblings": siblings}))
    }
    async fn resolve(
        State(files): State<Files>,
        AxPath(file): AxPath<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let Some((_, bytes)) = files.iter().find(|(n, _)| *n == file) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes="));
        match range.and_then(|r| r.split_once('-')) {
            Some((start, end)) => {
                let start: usize = start.parse().unwrap();
                let end = end.parse::<usize>().unwrap().min(bytes.len().saturating_sub(1));
                let body = bytes.get(start..=end).unwrap_or_default().to_vec();
                (StatusCode::PARTIAL_CONTENT, body).into_response()
            }
            None => bytes.clone().into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/api/models/org/tiny", axum::routing::get(api))
        .route("/org/tiny/resolve/main/{*file}", axum::routing::get(resolve))
        .with_state(Arc::new(files));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn reads_a_remote_repo_by_range_requests() {
    let client = reqwest::Client::new();
    let config =
        br#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2,
        "num_hidden_layers":3,"vocab_size":64,"max_position_embeddings":40960}"#;
    let base = fake_hub(vec![
        ("config.json", config.to_vec()),
        ("model.safetensors", safetensors_bytes(&[("a", "BF16", &[64, 64], 8192), ("b", "BF16", &[64], 128)])),
        ("pytorch_model.bin", vec![0u8; 999]),
        ("sub/extra.safetensors", safetensors_bytes(&[("x", "F32", &[1], 4)])),
    ])
    .await;
    let meta = read_remote(&base, "org/tiny", "main", Some("hf_token"), &client).await.unwrap();
    assert_eq!(meta.architecture, "Qwen3ForCausalLM");
    assert_eq!(meta.weight_bytes, 8320);
    assert_eq!((meta.n_heads, meta.n_kv_heads, meta.context_length), (Some(4), Some(2), Some(40960)));

    let image = fake_hub(vec![
        (
            "model_index.json",
            br#"{"_class_name":"FluxPipeline","transformer":["diffusers","FluxTransformer2DModel"]}"#.to_vec(),
        ),
        ("transformer/diffusion_pytorch_model.safetensors", safetensors_bytes(&[("w", "BF16", &[10], 20)])),
    ])
    .await;
    let meta = read_remote(&image, "org/tiny", "main", None, &client).await.unwrap();
    assert_eq!((meta.category, meta.weight_bytes), (Category::Image, 20));

    let gguf = fake_hub(vec![("tiny-Q8_0.gguf", tiny_llama_gguf())]).await;
    let meta = read_remote(&gguf, "org/tiny", "main", None, &client).await.unwrap();
    assert_eq!((meta.architecture.as_str(), meta.weight_bytes, meta.is_gguf), ("llama", 9360, true));

    let err = read_remote(&base, "org/other", "main", None, &client).await.unwrap_err().to_string();
    assert!(err.contains("/api/models/org/other") && err.contains("HTTP 404"), "{err}");
}

#[test]
fn real_smollm2_gguf_when_available() {
    let Ok(path) = std::env::var("SMOLLM2_GGUF") else {
        eprintln!("SMOLLM2_GGUF not set: skipped");
        return;
    };
    let meta = read_local(Path::new(&path)).unwrap();
    assert_eq!(meta.architecture, "llama");
    assert_eq!((meta.n_layers, meta.hidden_size, meta.vocab_size), (Some(30), Some(576), Some(49152)));
    assert_eq!((meta.n_heads, meta.n_kv_heads, meta.context_length), (Some(9), Some(3), Some(8192)));
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!(meta.weight_bytes > file_len / 2 && meta.weight_bytes < file_len, "{} vs {file_len}", meta.weight_bytes);
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_gguf_reader(tail in proptest::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        let mut bytes = if magic { b"GGUF\x03\0\0\0".to_vec() } else { Vec::new() };
        bytes.extend(tail);
        let _ = parse_gguf(bytes.as_slice(), "fuzz.gguf");
    }

    #[test]
    fn mutated_gguf_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = tiny_llama_gguf();
        for (at, value) in flips {
            let n = bytes.len();
            bytes[at % n] = value;
        }
        let _ = parse_gguf(bytes.as_slice(), "fuzz.gguf");
    }

    #[test]
    fn random_bytes_never_panic_the_safetensors_reader(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = safetensors_header_len(&bytes, "fuzz.safetensors");
        let _ = safetensors_tensor_bytes(&bytes, "fuzz.safetensors");
        let text = String::from_utf8_lossy(&bytes).to_string();
        let _ = safetensors_tensor_bytes(format!("{{\"a\":{text}}}").as_bytes(), "fuzz.safetensors");
    }
}
