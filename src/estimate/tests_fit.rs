//! The `fit` memory policy: the claim part by part, what a user's budget flag changes, and where
//! fitting does not apply. One table row per rule.

use super::tests_calc::{GIB, llm, strings};
use super::*;
use crate::placement::Claim;

const MIB: u64 = 1024 * 1024;

fn fit_run(meta: &ModelMeta, backend: &str, params: &[&str], n_gpus: u32, policy: Policy) -> Estimate {
    let params = strings(params);
    let input = EstimateInput {
        backend,
        backend_parameters: &params,
        gpu_total_memory: Some(80 * GIB),
        n_gpus,
        extended_kv: None,
        policy,
    };
    estimate(meta, &input).expect("estimate")
}

/// Qwen2.5-1.5B-Instruct's config.json facts: 28 layers, 12 heads, 2 KV heads, hidden 1536,
/// vocabulary 151936, 3.09 GB of bf16 weights, 32768 native context.
fn qwen_1_5b() -> ModelMeta {
    ModelMeta {
        architecture: "Qwen2ForCausalLM".into(),
        category: Category::Llm,
        context_length: Some(32768),
        n_heads: Some(12),
        n_kv_heads: Some(2),
        head_dim: Some(128),
        n_layers: Some(28),
        hidden_size: Some(1536),
        vocab_size: Some(151936),
        weight_bytes: 3_087_467_520,
        kv_bytes_per_elem: 2,
        ..ModelMeta::default()
    }
}

#[test]
fn the_fitted_claim_is_its_parts() {
    let fit1 = Policy::Fit { contexts: 1 };
    // (name, meta, backend, params, policy, kv, activations tokens)
    let meta = llm();
    let kv_8k = GIB; // llm(): KV for 8192 tokens is exactly 1 GiB.
    let cases: &[(&str, &[&str], Policy, u64, u64)] = &[
        ("one context", &[], fit1, kv_8k, 8192),
        ("four contexts", &[], Policy::Fit { contexts: 4 }, 4 * kv_8k, 8192),
        ("user context", &["--max-model-len=4096"], Policy::Fit { contexts: 2 }, kv_8k, 8192),
        ("user batch", &["--max-num-batched-tokens", "2048"], fit1, kv_8k, 2048),
        ("user KV bytes", &["--kv-cache-memory-bytes=3221225472"], Policy::Fit { contexts: 8 }, 3 * GIB, 8192),
        ("contexts capped", &[], Policy::Fit { contexts: 5000 }, u64::from(MAX_CONTEXTS) * kv_8k, 8192),
    ];
    for (name, params, policy, kv, tokens) in cases {
        let est = fit_run(&meta, "vLLM", params, 1, *policy);
        let fit = est.fit.clone().unwrap_or_else(|| panic!("{name}: not fitted"));
        let acts = tokens * 4096 * 96 + 256 * 128256 * 8;
        let sub = 16 * GIB + kv + acts + 2 * GIB;
        let head = (sub / 100 * 10).max(256 * MIB).div_ceil(MIB) * MIB;
        assert_eq!(
            (fit.weights, fit.kv_cache, fit.activations, fit.overhead, fit.headroom),
            (16 * GIB, *kv, acts, 2 * GIB, head),
            "{name}"
        );
        assert_eq!((est.vram, fit.total), (sub + head, sub + head), "{name}");
        assert_eq!(est.claim, Claim::Estimate, "{name}");
        assert!(fit.explain().contains("gpu_memory fit: claim"), "{name}");
    }
}

#[test]
fn a_small_model_fitted_claims_a_fraction_of_reserve() {
    let reserve = fit_run(&qwen_1_5b(), "vLLM", &[], 1, Policy::Reserve);
    assert_eq!(reserve.claim, Claim::Fraction(0.9), "GPUStack's rule stays the default");
    let fit = fit_run(&qwen_1_5b(), "vLLM", &[], 1, Policy::Fit { contexts: 1 });
    let gib = fit.vram as f64 / GIB as f64;
    assert!((5.5..8.0).contains(&gib), "1.5 B fitted claim {gib:.2} GiB");
    // Twelve of them fit in 80 GiB, where reserve fits one.
    assert!(80 * GIB / fit.vram >= 8, "{gib:.2} GiB");
}

#[test]
fn fitting_keeps_out_where_it_does_not_apply() {
    let fit = Policy::Fit { contexts: 2 };
    // (name, backend, params, n_gpus, claim)
    let cases: &[(&str, &str, &[&str], u32, Claim)] = &[
        ("vLLM user fraction", "vLLM", &["--gpu-memory-utilization=0.4"], 1, Claim::Fraction(0.4)),
        ("SGLang user fraction", "SGLang", &["--mem-fraction-static", "0.5"], 1, Claim::Fraction(0.5)),
        ("MindIE", "MindIE", &[], 1, Claim::Fraction(0.8)),
    ];
    for (name, backend, params, n_gpus, claim) in cases {
        let est = fit_run(&llm(), backend, params, *n_gpus, fit);
        assert!(est.fit.is_none(), "{name}");
        assert_eq!(est.claim, *claim, "{name}");
        assert!(est.notes.iter().any(|n| n.starts_with("gpu_memory fit:")), "{name}: {:?}", est.notes);
    }
    // SGLang fitted: no heuristic fraction left among the injected parameters.
    let est = fit_run(&llm(), "SGLang", &[], 1, fit);
    assert!(est.fit.is_some());
    assert!(!est.injected_parameters.iter().any(|p| p.starts_with("--mem-fraction-static")), "{est:?}");
    // SGLang's own token cap sets the KV cache.
    let est = fit_run(&llm(), "SGLang", &["--max-total-tokens", "16384"], 1, fit);
    assert_eq!(est.fit.map(|f| (f.kv_cache, f.user_kv_flag)), Some((2 * GIB, Some("--max-total-tokens".into()))));
}

#[test]
fn engine_budget_helpers() {
    let cases: &[(u64, u64, &str)] = &[
        (8 * GIB, 80 * GIB, "0.1000"),
        (8 * GIB - 1, 80 * GIB, "0.0999"),
        (1, 80 * GIB, "0.0001"),
        (90 * GIB, 80 * GIB, "0.9900"),
    ];
    for (bytes, total, want) in cases {
        assert_eq!(inject::fit_fraction(*bytes, *total), *want, "{bytes} of {total}");
    }
    let versions: &[(Option<&str>, bool)] = &[
        (Some("0.11.0"), true),
        (Some("v0.12.1"), true),
        (Some("1.0"), true),
        (Some("0.10.2"), false),
        (Some("0.9"), false),
        (Some("nightly"), false),
        (None, false),
    ];
    for (v, want) in versions {
        assert_eq!(inject::vllm_has_kv_cache_memory_bytes(*v), *want, "{v:?}");
    }
}

/// The model zoo behind bench/packing.sh (config.json facts): every entry reads, and its fitted
/// claim is at least its weights and its KV cache, with activations and headroom on top.
#[test]
fn every_zoo_model_fits_by_its_parts() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/models/zoo.json")).expect("zoo.json");
    let models = doc["models"].as_array().expect("models");
    assert!(models.len() >= 20, "at least 20 architectures");
    for m in models {
        let name = m["name"].as_str().expect("name");
        let mut meta = meta_from_config(&m["config"], m["weight_bytes"].as_u64().expect("weight_bytes"));
        if let Some(c) = m["category"].as_str() {
            meta.category = Category::parse(c).expect("category");
        }
        assert!(meta.n_layers.is_some() && meta.hidden_size.is_some(), "{name}: {meta:?}");
        let est = fit_run(&meta, "vLLM", &[], 1, Policy::Fit { contexts: 1 });
        let fit = est.fit.unwrap_or_else(|| panic!("{name}: not fitted"));
        assert!(
            fit.weights == meta.weight_bytes && fit.activations > 0 && fit.headroom >= 256 * MIB,
            "{name}: {fit:?}"
        );
        assert_eq!(fit.total, fit.weights + fit.kv_cache + fit.activations + fit.overhead + fit.headroom, "{name}");
        if meta.category == Category::Llm {
            assert!(fit.kv_cache > 0, "{name}: an LLM keeps a KV cache");
        }
    }
}
