//! Packing and estimate-accuracy tables for `gpu_memory: reserve | fit` (issue 27), from the
//! config.json facts in `tests/fixtures/models/zoo.json` (no hub access), with the production
//! estimate (`estimate::estimate`) and placement (`placement::place`, binpack, each replica booked
//! before the next). GPUStack 2.3's numbers follow its rules (gpustack-notes §4.5, §4.9): estimate =
//! weights × 1.2 + 2 GiB (LLM) or 512 MiB; vLLM claims 0.9 of each GPU for LLMs (and Qwen3
//! embedding/reranker architectures), the estimate otherwise — which the side-by-side run measured
//! for 1.5 B and 8 B models (72 GiB each on 80 GiB GPUs).
//! Run: `cargo run --release --example bench_packing` (bench/packing.sh).

use std::collections::BTreeMap;

use ferrostack::estimate::{Category, EstimateInput, ModelMeta, Policy, estimate, meta_from_config};
use ferrostack::placement::{Claim, GpuView, Request, Snapshot, Strategy, WorkerView, place};
use serde_json::Value;

const GIB: u64 = 1 << 30;
const GPU: u64 = 80 * GIB;
const ZOO: &str = include_str!("../tests/fixtures/models/zoo.json");

struct Model {
    name: String,
    params_b: f64,
    meta: ModelMeta,
}

fn zoo() -> Vec<Model> {
    let doc: Value = serde_json::from_str(ZOO).unwrap_or_default();
    let mut out = Vec::new();
    for m in doc["models"].as_array().into_iter().flatten() {
        let mut meta = meta_from_config(&m["config"], m["weight_bytes"].as_u64().unwrap_or(0));
        if let Some(c) = m["category"].as_str().and_then(Category::parse) {
            meta.category = c;
        }
        out.push(Model {
            name: m["name"].as_str().unwrap_or("?").to_owned(),
            params_b: m["params_b"].as_f64().unwrap_or(0.0),
            meta,
        });
    }
    out
}

/// The three ways of claiming compared.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    GpuStack,
    Reserve,
    Fit,
}

/// One replica's placement request on vLLM (what the scheduler builds), and its estimate.
fn request(m: &Model, way: Way) -> (Request, u64) {
    let policy = if way == Way::Fit { Policy::Fit { contexts: 1 } } else { Policy::Reserve };
    let input = EstimateInput {
        backend: "vLLM",
        backend_parameters: &[],
        gpu_total_memory: Some(GPU),
        n_gpus: 1,
        extended_kv: None,
        policy,
    };
    let est = estimate(&m.meta, &input).unwrap_or_else(|e| panic!("{}: {e}", m.name));
    let (vram, claim) = match way {
        Way::GpuStack => {
            let llm = m.meta.category == Category::Llm || m.meta.architecture.starts_with("Qwen3");
            (gpustack_estimate(&m.meta), if llm { Claim::Fraction(0.9) } else { Claim::Estimate })
        }
        _ => (est.vram, est.claim),
    };
    let req = Request {
        cluster_id: 1,
        strategy: Strategy::Binpack,
        worker_selector: BTreeMap::new(),
        gpu_ids: vec![],
        gpus_per_replica: None,
        vram,
        ram: 0,
        claim,
        tp_divisors: est.tp_divisors.clone(),
        frameworks: vec!["cuda".into()],
        cpu_offloading: false,
        distributed: false,
        replicas: 1,
    };
    (req, est.vram)
}

/// GPUStack 2.3's estimate for vLLM: weights × 1.2 + 2 GiB for LLMs, 512 MiB otherwise.
fn gpustack_estimate(meta: &ModelMeta) -> u64 {
    let overhead = if meta.category == Category::Llm { 2 * GIB } else { 512 << 20 };
    (meta.weight_bytes as f64 * 1.2) as u64 + overhead
}

fn cluster(workers: usize, gpus: u32) -> Snapshot {
    Snapshot {
        workers: (0..workers)
            .map(|i| WorkerView {
                id: i as i64 + 1,
                name: format!("w{}", i + 1),
                cluster_id: 1,
                ready: true,
                ram_total: 2048 * GIB,
                gpus: (0..gpus)
                    .map(|index| GpuView { index, gpu_type: "cuda".into(), total: GPU, ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

/// Places `reqs` one after another, booking each; returns (placed, GPUs holding anything, claimed).
fn pack(snapshot: &mut Snapshot, reqs: &[Request]) -> (usize, usize, u64) {
    let (mut placed, mut claimed) = (0, 0);
    for r in reqs {
        if let Ok(p) = place(snapshot, r) {
            placed += 1;
            claimed += p.vram_claim.values().sum::<u64>();
            snapshot.apply(&p, false);
        }
    }
    let used = snapshot.workers.iter().flat_map(|w| &w.gpus).filter(|g| g.allocated > 0).count();
    (placed, used, claimed)
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB as f64)
}

/// Claim on 80 GiB GPUs: `n × 72.0` for a fraction claim over n GPUs, else the bytes.
fn claim_text(snapshot: &Snapshot, req: &Request) -> String {
    match place(snapshot, req) {
        Ok(p) => {
            let total: u64 = p.vram_claim.values().sum();
            match (req.claim, p.gpu_indexes.len()) {
                (Claim::Fraction(_), n) if n > 1 => format!("{n} × {} = {}", gib(total / n as u64), gib(total)),
                _ => gib(total),
            }
        }
        Err(_) => "does not fit 8 GPUs".into(),
    }
}

fn main() {
    let models = zoo();
    println!("### Estimate accuracy: {} models, vLLM, 80 GiB GPUs, GiB\n", models.len());
    println!(
        "| model | params (B) | GPUStack 2.3 estimate | GPUStack 2.3 claim | ours: estimate | ours: claim, reserve | ours: claim, fit |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let eight = cluster(1, 8);
    for m in &models {
        let (gs, gs_est) = (request(m, Way::GpuStack).0, gpustack_estimate(&m.meta));
        let (reserve, est) = request(m, Way::Reserve);
        let (fit, _) = request(m, Way::Fit);
        println!(
            "| {} | {:.2} | {} | {} | {} | {} | {} |",
            m.name,
            m.params_b,
            gib(gs_est),
            claim_text(&eight, &gs),
            gib(est),
            claim_text(&eight, &reserve),
            claim_text(&eight, &fit),
        );
    }

    println!("\n### Replicas of one model per 80 GiB GPU (binpack, vLLM)\n");
    println!("| model | GPUStack 2.3 | reserve | fit | fit claim (GiB) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let fleet_models = [
        "BAAI/bge-m3 (embedding)",
        "Qwen/Qwen3-Embedding-0.6B (embedding)",
        "BAAI/bge-reranker-v2-m3 (reranker)",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
    ];
    let by_name = |n: &str| models.iter().find(|m| m.name == n).unwrap_or_else(|| panic!("{n} not in the zoo"));
    for name in fleet_models {
        let m = by_name(name);
        let per_gpu = |way| {
            let r = request(m, way).0;
            pack(&mut cluster(1, 1), &vec![r; 64]).0
        };
        let fit_claim = request(m, Way::Fit).0.vram;
        println!(
            "| {name} | {} | {} | {} | {} |",
            per_gpu(Way::GpuStack),
            per_gpu(Way::Reserve),
            per_gpu(Way::Fit),
            gib(fit_claim)
        );
    }

    // The mixed fleet: how many replicas per model.
    let fleet: [(&str, usize); 8] = [
        ("BAAI/bge-m3 (embedding)", 2),
        ("Qwen/Qwen3-Embedding-0.6B (embedding)", 2),
        ("BAAI/bge-reranker-v2-m3 (reranker)", 1),
        ("Qwen/Qwen2.5-0.5B-Instruct", 4),
        ("Qwen/Qwen2.5-1.5B-Instruct", 4),
        ("meta-llama/Llama-3.2-3B-Instruct", 2),
        ("Qwen/Qwen2.5-7B-Instruct", 2),
        ("meta-llama/Llama-3.1-8B-Instruct", 2),
    ];
    let total: usize = fleet.iter().map(|f| f.1).sum();
    println!("\n### A mixed fleet of {total} replicas (binpack, vLLM)\n");
    println!("Fleet: {}.\n", fleet.iter().map(|(n, k)| format!("{k} × {n}")).collect::<Vec<_>>().join(", "));
    println!("| | GPUStack 2.3 | reserve | fit |");
    println!("| --- | ---: | ---: | ---: |");
    let mut rows: Vec<(String, [String; 3])> = Vec::new();
    let ways = [Way::GpuStack, Way::Reserve, Way::Fit];
    let reqs = |way| -> Vec<Request> {
        fleet.iter().flat_map(|(n, k)| std::iter::repeat_n(request(by_name(n), way).0, *k)).collect()
    };
    let on_eight: Vec<(usize, usize, u64)> = ways.iter().map(|w| pack(&mut cluster(1, 8), &reqs(*w))).collect();
    let unbounded: Vec<(usize, usize, u64)> = ways.iter().map(|w| pack(&mut cluster(8, 8), &reqs(*w))).collect();
    rows.push(("replicas placed on 8 × 80 GiB".into(), on_eight.map_ref(|r| format!("{} of {total}", r.0))));
    rows.push(("GPUs the whole fleet needs".into(), unbounded.map_ref(|r| r.1.to_string())));
    rows.push(("GiB claimed by the whole fleet".into(), unbounded.map_ref(|r| gib(r.2))));
    rows.push(("replicas per GPU".into(), unbounded.map_ref(|r| format!("{:.1}", r.0 as f64 / r.1.max(1) as f64))));
    for (what, [a, b, c]) in rows {
        println!("| {what} | {a} | {b} | {c} |");
    }
}

/// `[T; 3]` from a three-element list.
trait MapRef<T> {
    fn map_ref(&self, f: impl Fn(&T) -> String) -> [String; 3];
}

impl<T> MapRef<T> for Vec<T> {
    fn map_ref(&self, f: impl Fn(&T) -> String) -> [String; 3] {
        [f(&self[0]), f(&self[1]), f(&self[2])]
    }
}
