//! Estimate, MindIE and injection tests: one table row per rule, on small synthetic models.

use super::tests::tiny_llama_gguf;
use super::*;
use crate::placement::Claim;

const MIB: u64 = 1024 * 1024;
pub(super) const GIB: u64 = 1024 * MIB;

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Llama-3-8B-like: 16 GiB of weights; KV for 8192 tokens = exactly 1 GiB.
pub(super) fn llm() -> ModelMeta {
    ModelMeta {
        architecture: "LlamaForCausalLM".into(),
        category: Category::Llm,
        context_length: Some(32768),
        n_heads: Some(32),
        n_kv_heads: Some(8),
        head_dim: Some(128),
        n_layers: Some(32),
        hidden_size: Some(4096),
        vocab_size: Some(128256),
        weight_bytes: 16 * GIB,
        kv_bytes_per_elem: 2,
        ..ModelMeta::default()
    }
}

fn with(f: impl FnOnce(&mut ModelMeta)) -> ModelMeta {
    let mut meta = llm();
    f(&mut meta);
    meta
}

fn tiny_gguf() -> ModelMeta {
    meta_from_gguf(&gguf::parse_gguf(tiny_llama_gguf().as_slice(), "tiny.gguf").unwrap())
}

pub(super) fn run(meta: &ModelMeta, backend: &str, params: &[&str], gpu: Option<u64>, n_gpus: u32) -> Estimate {
    let params = strings(params);
    let input = EstimateInput {
        backend,
        backend_parameters: &params,
        gpu_total_memory: gpu,
        n_gpus,
        extended_kv: None,
        policy: Policy::Reserve,
    };
    estimate(meta, &input).unwrap()
}

struct Row {
    name: &'static str,
    meta: ModelMeta,
    backend: &'static str,
    params: &'static [&'static str],
    gpu: Option<u64>,
    n_gpus: u32,
    vram: u64,
    context: u64,
    claim: Claim,
    injected: &'static [&'static str],
    gpus: Option<u32>,
}

#[test]
fn estimate_rules() {
    let gguf = tiny_gguf();
    let gguf_overhead = 512 * MIB + 100 * 512 * 4;
    let bert = with(|m| {
        m.architecture = "BertModel".into();
        m.category = Category::Embedding;
    });
    let qwen3_embed = with(|m| {
        m.architecture = "Qwen3ForCausalLM".into();
        m.category = Category::Embedding;
    });
    let tts = with(|m| {
        m.architecture = "CosyVoice".into();
        m.category = Category::TextToSpeech;
        m.weight_bytes = GIB;
    });
    let image = with(|m| m.category = Category::Image);
    let short = with(|m| m.context_length = Some(4096));
    let vision =
        with(|m| m.vision = Some(VisionMeta { n_layers: Some(32), hidden_size: Some(1280), n_heads: Some(16) }));
    let rows = vec![
        Row {
            name: "vLLM caps the context at 8192 and claims 0.9",
            meta: llm(),
            backend: "vLLM",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.9),
            injected: &["--max-model-len=8192"],
            gpus: None,
        },
        Row {
            name: "vLLM user context wins",
            meta: llm(),
            backend: "vllm",
            params: &["--max-model-len 4096"],
            gpu: None,
            n_gpus: 1,
            vram: 18 * GIB + 512 * MIB,
            context: 4096,
            claim: Claim::Fraction(0.9),
            injected: &[],
            gpus: None,
        },
        Row {
            name: "vLLM short native context is not capped",
            meta: short.clone(),
            backend: "vLLM",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 18 * GIB + 512 * MIB,
            context: 4096,
            claim: Claim::Fraction(0.9),
            injected: &[],
            gpus: None,
        },
        Row {
            name: "vLLM user gmu",
            meta: llm(),
            backend: "vLLM",
            params: &["--gpu-memory-utilization=0.5"],
            gpu: None,
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.5),
            injected: &["--max-model-len=8192"],
            gpus: None,
        },
        Row {
            name: "vLLM fp8 KV cache",
            meta: llm(),
            backend: "vLLM",
            params: &["--kv-cache-dtype fp8"],
            gpu: None,
            n_gpus: 1,
            vram: 18 * GIB + 512 * MIB,
            context: 8192,
            claim: Claim::Fraction(0.9),
            injected: &["--max-model-len=8192"],
            gpus: None,
        },
        Row {
            name: "vLLM world size tp×pp",
            meta: llm(),
            backend: "vLLM",
            params: &["-tp 2", "-pp 2"],
            gpu: None,
            n_gpus: 4,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.9),
            injected: &["--max-model-len=8192"],
            gpus: Some(4),
        },
        Row {
            name: "vLLM encoder embedding: estimate claim, 1.2 factor, no KV",
            meta: bert,
            backend: "vLLM",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: (16 * GIB * 12).div_ceil(10) + 512 * MIB,
            context: 8192,
            claim: Claim::Estimate,
            injected: &["--max-model-len=8192"],
            gpus: None,
        },
        Row {
            name: "vLLM Qwen3 embedding keeps 0.9",
            meta: qwen3_embed,
            backend: "vLLM",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 17 * GIB + 512 * MIB,
            context: 8192,
            claim: Claim::Fraction(0.9),
            injected: &["--max-model-len=8192"],
            gpus: None,
        },
        Row {
            name: "SGLang on 80 GiB",
            meta: llm(),
            backend: "SGLang",
            params: &[],
            gpu: Some(80 * GIB),
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.836),
            injected: &["--context-length=8192", "--mem-fraction-static=0.836"],
            gpus: None,
        },
        Row {
            name: "SGLang on 24 GiB",
            meta: llm(),
            backend: "SGLang",
            params: &[],
            gpu: Some(24 * GIB),
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.847),
            injected: &["--context-length=8192", "--mem-fraction-static=0.847"],
            gpus: None,
        },
        Row {
            name: "SGLang unknown GPU: 0.88",
            meta: short,
            backend: "SGLang",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 18 * GIB + 512 * MIB,
            context: 4096,
            claim: Claim::Fraction(0.88),
            injected: &["--mem-fraction-static=0.88"],
            gpus: None,
        },
        Row {
            name: "SGLang user fraction and context",
            meta: llm(),
            backend: "SGLang",
            params: &["--mem-fraction-static 0.7 --context-length 8192"],
            gpu: Some(80 * GIB),
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.7),
            injected: &[],
            gpus: None,
        },
        Row {
            name: "SGLang vision tower lowers the fraction",
            meta: vision,
            backend: "SGLang",
            params: &[],
            gpu: Some(80 * GIB),
            n_gpus: 1,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.708),
            injected: &["--context-length=8192", "--mem-fraction-static=0.708"],
            gpus: None,
        },
        Row {
            name: "SGLang dp attention ignores dp",
            meta: llm(),
            backend: "SGLang",
            params: &["--tp-size 2 --dp-size 2 --enable-dp-attention"],
            gpu: Some(80 * GIB),
            n_gpus: 2,
            vram: 19 * GIB,
            context: 8192,
            claim: Claim::Fraction(0.816),
            injected: &["--context-length=8192", "--mem-fraction-static=0.816"],
            gpus: Some(2),
        },
        Row {
            name: "SGLang image: estimate claim",
            meta: image,
            backend: "SGLang",
            params: &[],
            gpu: Some(80 * GIB),
            n_gpus: 1,
            vram: (16 * GIB * 12).div_ceil(10) + 512 * MIB,
            context: 8192,
            claim: Claim::Estimate,
            injected: &[],
            gpus: None,
        },
        Row {
            name: "VoxBox TTS: 3.0 factor, one GPU",
            meta: tts.clone(),
            backend: "VoxBox",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 3 * GIB + 512 * MIB,
            context: 0,
            claim: Claim::Estimate,
            injected: &[],
            gpus: Some(1),
        },
        Row {
            name: "VoxBox CPU fallback",
            meta: tts,
            backend: "VoxBox",
            params: &[],
            gpu: None,
            n_gpus: 0,
            vram: 0,
            context: 0,
            claim: Claim::Estimate,
            injected: &[],
            gpus: Some(1),
        },
        Row {
            name: "llama.cpp GGUF default context",
            meta: gguf.clone(),
            backend: "llama.cpp",
            params: &[],
            gpu: None,
            n_gpus: 1,
            vram: 9360 + 1_048_576 + gguf_overhead,
            context: 8192,
            claim: Claim::Estimate,
            injected: &["--ctx-size=8192"],
            gpus: None,
        },
        Row {
            name: "llama.cpp -c",
            meta: gguf.clone(),
            backend: "llama.cpp",
            params: &["-c 2048"],
            gpu: None,
            n_gpus: 1,
            vram: 9360 + 262_144 + gguf_overhead,
            context: 2048,
            claim: Claim::Estimate,
            injected: &[],
            gpus: None,
        },
        Row {
            name: "llama.cpp q8_0 cache",
            meta: gguf.clone(),
            backend: "llama.cpp",
            params: &["-ctk q8_0 -ctv q8_0"],
            gpu: None,
            n_gpus: 1,
            vram: 9360 + 557_056 + gguf_overhead,
            context: 8192,
            claim: Claim::Estimate,
            injected: &["--ctx-size=8192"],
            gpus: None,
        },
        Row {
            name: "llama.cpp -ngl 0 is CPU only",
            meta: gguf.clone(),
            backend: "llama.cpp",
            params: &["-ngl 0"],
            gpu: None,
            n_gpus: 1,
            vram: 0,
            context: 8192,
            claim: Claim::Estimate,
            injected: &["--ctx-size=8192"],
            gpus: None,
        },
        Row {
            name: "custom backend",
            meta: llm(),
            backend: "my-server",
            params: &["--max-model-len 4096"],
            gpu: None,
            n_gpus: 1,
            vram: 18 * GIB + 512 * MIB,
            context: 4096,
            claim: Claim::Estimate,
            injected: &[],
            gpus: None,
        },
    ];
    for row in rows {
        let est = run(&row.meta, row.backend, row.params, row.gpu, row.n_gpus);
        assert_eq!(est.vram, row.vram, "{}: vram", row.name);
        assert_eq!(est.context_length, row.context, "{}: context", row.name);
        assert_eq!(est.claim, row.claim, "{}: claim", row.name);
        assert_eq!(est.injected_parameters, row.injected, "{}: injected", row.name);
        assert_eq!(est.gpus_per_replica, row.gpus, "{}: gpus per replica", row.name);
    }
}

#[test]
fn estimate_parts_ram_and_divisors() {
    let est = run(&llm(), "vLLM", &[], None, 1);
    assert_eq!((est.weights, est.kv_cache, est.overhead, est.ram), (16 * GIB, GIB, 2 * GIB, 0));
    assert_eq!(est.tp_divisors, [32, 128256]);
    let est = run(&tiny_gguf(), "llama.cpp", &[], None, 1);
    assert!(est.tp_divisors.is_empty());
    assert_eq!(est.ram, 512 * MIB);
    let tts = with(|m| {
        m.category = Category::TextToSpeech;
        m.weight_bytes = 40 * GIB;
    });
    let est = run(&tts, "VoxBox", &[], None, 1);
    assert_eq!(est.ram, est.vram / 10);
    let params = strings(&[]);
    let input = EstimateInput {
        backend: "vLLM",
        backend_parameters: &params,
        gpu_total_memory: None,
        n_gpus: 1,
        extended_kv: Some(ExtendedKv { ram_size_gib: Some(32.0), ..ExtendedKv::default() }),
        policy: Policy::Reserve,
    };
    assert_eq!(estimate(&llm(), &input).unwrap().ram, 32 * GIB);
}

#[test]
fn bad_parameters_are_named() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("vLLM", &["-tp 3"], "backend parameter -tp: tensor-parallel size 3 must divide the attention heads (32)"),
        ("vLLM", &["--max-model-len lots"], "backend parameter --max-model-len: \"lots\" is not a number"),
        ("SGLang", &["--tp-size=5"], "--tp-size: tensor-parallel size 5"),
        ("vLLM", &["--x 'open"], "unterminated single quote"),
        ("MindIE", &["--npu-memory-fraction 1.5"], "--npu-memory-fraction: 1.5 must be in the range (0, 1]"),
    ];
    for (backend, params, expected) in cases {
        let params = strings(params);
        let input = EstimateInput {
            backend,
            backend_parameters: &params,
            gpu_total_memory: None,
            n_gpus: 1,
            extended_kv: None,
            policy: Policy::Reserve,
        };
        let err = estimate(&llm(), &input).unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    }
}

#[test]
fn mindie_formula() {
    let est = run(&llm(), "MindIE", &[], None, 1);
    let computation = 200 * 128 * 32 * 2048 * 2;
    assert_eq!(est.context_length, 8192);
    assert_eq!(est.kv_cache, GIB);
    assert_eq!(est.vram, 3 * GIB + 16 * GIB + GIB + computation);
    assert_eq!(est.claim, Claim::Fraction(0.8));
    assert_eq!(est.ram, 512 * MIB);
    let est = run(
        &llm(),
        "MindIE",
        &["--max-seq-len 4096 --cpu-mem-size 4 --max-preempt-count 10 --npu-memory-fraction 0.6"],
        None,
        1,
    );
    assert_eq!((est.context_length, est.kv_cache, est.ram), (4096, GIB / 2, 512 * MIB + 4 * GIB));
    assert_eq!(est.claim, Claim::Fraction(0.6));
    // Swap space without preemption is dropped, as GPUStack does.
    assert_eq!(run(&llm(), "MindIE", &["--cpu-mem-size 4"], None, 1).ram, 512 * MIB);
    assert_eq!(run(&llm(), "MindIE", &["-tp 2 -dp 2"], None, 4).gpus_per_replica, Some(4));
}

#[test]
fn mindie_config_defaults() {
    let config = mindie_config(&[]).unwrap();
    let deploy = &config["BackendConfig"]["ModelDeployConfig"];
    let schedule = &config["BackendConfig"]["ScheduleConfig"];
    assert_eq!(deploy["maxSeqLen"], 8192);
    assert_eq!(deploy["maxInputTokenLen"], 8192);
    assert_eq!(deploy["ModelConfig"][0]["cpuMemSize"], 0);
    assert_eq!(schedule["cacheBlockSize"], 128);
    assert_eq!(schedule["maxBatchSize"], 200);
    assert_eq!(schedule["maxPrefillBatchSize"], 50);
    assert_eq!(schedule["maxQueueDelayMicroseconds"], 5000);
    assert_eq!(config["ServerConfig"]["maxLinkNum"], 1000);
    let custom = mindie_config(&strings(&[
        "--max-seq-len=4096",
        "--max-input-token-len 1024",
        "--truncation",
        "--cache-block-size 64",
        "--log-level Error",
    ]))
    .unwrap();
    assert_eq!(custom["BackendConfig"]["ModelDeployConfig"]["maxInputTokenLen"], 1024);
    assert_eq!(custom["BackendConfig"]["ModelDeployConfig"]["truncation"], true);
    assert_eq!(custom["BackendConfig"]["ScheduleConfig"]["maxIterTimes"], 4096);
    assert_eq!(custom["LogConfig"]["logLevel"], "Error");
    let env = MindieParams::parse(&strings(&["--enforce-eager"]), 8192).unwrap().env();
    assert!(env.contains(&("NPU_MEMORY_FRACTION".into(), "0.8".into())));
    assert!(env.contains(&("ASCEND_LAUNCH_BLOCKING".into(), "1".into())));
}

#[test]
fn mindie_ranges() {
    let cases: &[(&[&str], &str)] = &[
        (&["--max-link-num 0"], "--max-link-num: 0 must be in the range [1, 1000]"),
        (&["--token-timeout 3601"], "--token-timeout: 3601 must be in the range [1, 3600]"),
        (&["--e2e-timeout 0"], "--e2e-timeout"),
        (&["--max-seq-len 0"], "--max-seq-len: 0 must be greater than 0"),
        (
            &["--max-seq-len 100 --max-input-token-len 200"],
            "--max-input-token-len: 200 must be in the range (0, --max-seq-len 100]",
        ),
        (&["--cpu-mem-size -1"], "--cpu-mem-size: -1 must be greater than or equal to 0"),
        (&["--npu-memory-fraction 0"], "--npu-memory-fraction: 0 must be in the range (0, 1]"),
        (&["--npu-memory-fraction half"], "--npu-memory-fraction: \"half\" is not a number"),
        (&["--cache-block-size 100"], "--cache-block-size: 100 must be a power of 2"),
        (&["--max-batch-size 5001"], "--max-batch-size: 5001 must be in the range [1, 5000]"),
        (&["--max-prefill-batch-size 300"], "--max-prefill-batch-size: 300 must be in the range [1, 200]"),
        (&["--prefill-time-ms-per-req 1001"], "--prefill-time-ms-per-req"),
        (&["--decode-time-ms-per-req -1"], "--decode-time-ms-per-req"),
        (&["--max-preempt-count 201"], "--max-preempt-count: 201 must be in the range [0, 200]"),
        (
            &["--max-queue-delay-microseconds 499"],
            "--max-queue-delay-microseconds: 499 must be in the range [500, 1000000]",
        ),
        (&["--prefill-policy-type 4"], "--prefill-policy-type"),
        (&["--policy-type 3"], "--policy-type: 3 is not one of 0, 4, 5, 6, 7"),
        (&["--log-level Loud"], "--log-level: \"Loud\" is not one of"),
        (&["--dtype int4"], "--dtype: \"int4\" is not one of"),
        (&["--enable-split --split-chunk-tokens 100"], "--split-chunk-tokens: 100 must be in the range [512, 8192]"),
        (&["--enable-split --split-start-batch-size 300"], "--split-start-batch-size"),
        (&["-tp 3"], "--tensor-parallel-size: 3 must be a power of 2"),
        (&["-dp 6"], "--data-parallel-size: 6 must be a power of 2"),
        (&["-pp 0"], "--pipeline-parallel-size: must be greater than 0"),
        (&["-pp 2 -dp 2"], "cannot be set together with --data-parallel-size"),
        (&["-tp 2 -sp 4"], "--sequence-parallel-size: must equal --tensor-parallel-size"),
        (
            &["--enable-memory-decoding --memory-decoding-length 17"],
            "--memory-decoding-length: 17 must be in the range [1, 16]",
        ),
        (&["--enable-lookahead --lookahead-level 2"], "--lookahead-level: 2 must be in the range [3, 16]"),
        (&["--enable-lookahead --lookahead-window 17"], "--lookahead-window"),
        (&["--enable-lookahead --lookahead-guess-set-size 0"], "--lookahead-guess-set-size"),
        (&["--enable-multi-token-prediction --multi-token-prediction-tokens 0"], "--multi-token-prediction-tokens"),
        (&["--enable-buffer-response"], "--prefill-expected-time-ms: is required"),
        (
            &["--enable-buffer-response --prefill-expected-time-ms 10 --decode-expected-time-ms 0"],
            "--decode-expected-time-ms: must be greater than 0",
        ),
        (&["--override-generation-config {bad"], "--override-generation-config: must be a valid JSON string"),
        (&["--enable-split --enable-lookahead"], "--enable-split: does not work"),
        (
            &["--enable-prefix-caching --rope-scaling={\"factor\":2}"],
            "--rope-scaling: is not supported when --enable-prefix-caching",
        ),
        (&["-dp 2 --enable-prefix-caching"], "--enable-prefix-caching: is not supported when --data-parallel-size > 1"),
        (&["--truncation maybe"], "--truncation: \"maybe\" is not a boolean"),
    ];
    for (params, expected) in cases {
        let err = mindie_config(&strings(params)).unwrap_err().to_string();
        assert!(err.contains(expected), "{params:?}: {err:?} lacks {expected:?}");
    }
}

pub(super) fn inject(
    backend: &str,
    meta: &ModelMeta,
    est: &Estimate,
    (n_gpus, nodes): (u32, u32),
    user: &[&str],
    kv: Option<ExtendedKv>,
    gpu: Option<u64>,
) -> Injection {
    let user = strings(user);
    injected_parameters(&InjectInput {
        backend,
        meta,
        estimate: est,
        n_gpus,
        nodes,
        model_name: "{{model_name}}",
        port: "{{port}}",
        user_parameters: &user,
        extended_kv: kv,
        gpu_total_memory: gpu,
        backend_version: None,
        gpu_taken: 0,
        sleep_mode: false,
    })
    .unwrap()
}

/// Backend, model, estimate, GPUs, user parameters, expected injected arguments.
type InjectCase<'a> = (&'a str, &'a ModelMeta, &'a Estimate, u32, &'a [&'a str], &'a [&'a str]);

#[test]
fn injected_parameters_per_backend() {
    let meta = llm();
    let vllm = run(&meta, "vLLM", &[], None, 2);
    let sglang = run(&meta, "SGLang", &[], Some(80 * GIB), 4);
    let gguf = tiny_gguf();
    let llama = run(&gguf, "llama.cpp", &[], None, 1);
    let tts = with(|m| m.category = Category::TextToSpeech);
    let voxbox = run(&tts, "VoxBox", &[], None, 1);
    let cases: Vec<InjectCase<'_>> = vec![
        (
            "vLLM",
            &meta,
            &vllm,
            2,
            &[],
            &[
                "--tensor-parallel-size=2",
                "--max-model-len=8192",
                "--gpu-memory-utilization=0.9",
                "--served-model-name={{model_name}}",
                "--host={{worker_ip}}",
                "--port={{port}}",
            ],
        ),
        (
            "vLLM",
            &meta,
            &vllm,
            2,
            &["-tp 2", "--max_model_len 1024", "--port", "9000"],
            &["--gpu-memory-utilization=0.9", "--served-model-name={{model_name}}", "--host={{worker_ip}}"],
        ),
        (
            "vLLM",
            &meta,
            &vllm,
            1,
            &[],
            &[
                "--max-model-len=8192",
                "--gpu-memory-utilization=0.9",
                "--served-model-name={{model_name}}",
                "--host={{worker_ip}}",
                "--port={{port}}",
            ],
        ),
        (
            "SGLang",
            &meta,
            &sglang,
            4,
            &[],
            &[
                "--api-key={{api_key}}",
                "--tp-size=4",
                "--context-length=8192",
                "--mem-fraction-static=0.825",
                "--enable-metrics",
                "--served-model-name={{model_name}}",
                "--host={{worker_ip}}",
                "--port={{port}}",
            ],
        ),
        ("VoxBox", &tts, &voxbox, 1, &[], &["--device=cuda:0", "--host={{worker_ip}}", "--port={{port}}"]),
        ("VoxBox", &tts, &voxbox, 0, &[], &["--device=cpu", "--host={{worker_ip}}", "--port={{port}}"]),
        ("llama.cpp", &gguf, &llama, 1, &[], &["--api-key-file={{api_key_file}}", "--ctx-size=8192"]),
        ("llama.cpp", &gguf, &llama, 1, &["-c 1024"], &["--api-key-file={{api_key_file}}"]),
        ("my-custom", &meta, &vllm, 1, &[], &[]),
        ("MindIE", &meta, &vllm, 1, &[], &[]),
    ];
    for (backend, meta, est, n_gpus, user, expected) in cases {
        let got = inject(backend, meta, est, (n_gpus, 1), user, None, None);
        assert_eq!(got.args, expected, "{backend} {n_gpus} {user:?}");
    }
    let mindie = inject("MindIE", &meta, &vllm, (1, 1), &["--npu-memory-fraction 0.7"], None, None);
    assert!(mindie.env.contains(&("NPU_MEMORY_FRACTION".into(), "0.7".into())));
}

#[test]
fn non_llm_vllm_gets_its_share_of_the_gpu() {
    let bert = with(|m| {
        m.architecture = "BertModel".into();
        m.category = Category::Embedding;
        m.weight_bytes = GIB;
    });
    let est = run(&bert, "vLLM", &[], None, 1);
    assert_eq!(est.claim, Claim::Estimate);
    // 1.2 GiB + 0.5 GiB of 80 GiB → 0.03.
    let got = inject("vLLM", &bert, &est, (1, 1), &[], None, Some(80 * GIB));
    assert!(got.args.contains(&"--gpu-memory-utilization=0.03".to_owned()), "{:?}", got.args);
}

#[test]
fn extended_kv_cache() {
    let meta = llm();
    let vllm = run(&meta, "vLLM", &[], None, 1);
    let size = Some(ExtendedKv { ram_size_gib: Some(32.0), chunk_size: Some(512), ..ExtendedKv::default() });
    let got = inject("vLLM", &meta, &vllm, (1, 1), &[], size, None);
    assert!(
        got.args
            .contains(&r#"--kv-transfer-config={"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}"#.to_owned())
    );
    for (k, v) in
        [("LMCACHE_LOCAL_CPU", "True"), ("LMCACHE_MAX_LOCAL_CPU_SIZE", "32.00"), ("LMCACHE_CHUNK_SIZE", "512")]
    {
        assert!(got.env.contains(&(k.into(), v.into())), "{k}={v} not in {:?}", got.env);
    }
    let ratio = Some(ExtendedKv { ram_ratio: Some(2.0), ..ExtendedKv::default() });
    let got = inject("vLLM", &meta, &vllm, (1, 1), &[], ratio, Some(80 * GIB));
    assert!(got.env.contains(&("LMCACHE_MAX_LOCAL_CPU_SIZE".into(), "144.00".into())), "{:?}", got.env);
    assert!(got.env.contains(&("LMCACHE_CHUNK_SIZE".into(), "256".into())));

    let sglang = run(&meta, "SGLang", &[], Some(80 * GIB), 1);
    let got = inject("SGLang", &meta, &sglang, (1, 1), &[], ratio, None);
    assert!(
        got.args.contains(&"--enable-hierarchical-cache".to_owned())
            && got.args.contains(&"--hicache-ratio=2".to_owned()),
        "{:?}",
        got.args
    );
    let got = inject(
        "SGLang",
        &meta,
        &sglang,
        (1, 1),
        &["--hicache-size 8"],
        Some(ExtendedKv { ram_size_gib: Some(20.5), chunk_size: Some(64), ..ExtendedKv::default() }),
        None,
    );
    assert!(got.args.contains(&"--page-size=64".to_owned()));
    assert!(!got.args.iter().any(|a| a.starts_with("--hicache-size")), "user's --hicache-size wins: {:?}", got.args);
}

#[test]
fn world_sizes() {
    let cases: &[(&str, &[&str], Option<u32>)] = &[
        ("vLLM", &[], None),
        ("vLLM", &["--tensor-parallel-size 4"], Some(4)),
        ("vLLM", &["-tp 2 -dp 2 --prefill-context-parallel-size 2"], Some(8)),
        ("vLLM", &["-dp 4 --data-parallel-hybrid-lb --data-parallel-size-local 2 -tp 2"], Some(4)),
        ("SGLang", &["--tp-size 2 --pp-size 2 --dp-size 2"], Some(8)),
        ("MindIE", &["-pp 2 -tp 4"], Some(8)),
        ("MindIE", &["-moe-ep 4 -moe-tp 2"], Some(8)),
        ("VoxBox", &[], Some(1)),
        ("llama.cpp", &["-tp 2"], None),
    ];
    for (backend, params, expected) in cases {
        assert_eq!(world_size(backend, &strings(params)).unwrap(), *expected, "{backend} {params:?}");
    }
}

#[test]
fn served_context_rule() {
    let cases = [
        (Some(32768), None, (8192, true)),
        (Some(4096), None, (4096, false)),
        (None, None, (8192, false)),
        (Some(32768), Some(16384), (16384, false)),
    ];
    for (native, user, expected) in cases {
        let meta = with(|m| m.context_length = native);
        assert_eq!(served_context(&meta, user), expected, "{native:?} {user:?}");
    }
}

#[test]
fn serializes_for_the_api() {
    let value = serde_json::to_value(tiny_gguf()).unwrap();
    assert_eq!(value["category"], "llm");
    assert_eq!(value["architecture"], "llama");
    assert_eq!(serde_json::to_value(Category::SpeechToText).unwrap(), "speech_to_text");
}
