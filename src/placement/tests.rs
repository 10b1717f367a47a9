//! Placement tests: tables over compact simulated clusters, plus a property test.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::Strategy;
use super::*;
use proptest::strategy::Strategy as _;

const G: u64 = 1 << 30;

fn gb(x: f64) -> u64 {
    (x * G as f64) as u64
}

/// `"w1: 2xH100-80GB; w2: 1xL4-24GB label gpu=l4"`. Per worker, after `name:`: GPU groups
/// `<n>x<model>-<size>GB[@type]` (type `cuda` by default; indexes unique per worker, as
/// `CUDA_VISIBLE_DEVICES`-style indexes are everywhere else), `label k=v`,
/// `ram=<GiB>` (256), `ramused=<GiB>`, `used=<type>:<index>:<GiB>`, `inst=<type>:<index>:<this>/<other>`,
/// `model=<n>` / `other=<n>` (instances on the worker), `down` (not ready), `cluster=<id>` (1).
fn cluster(spec: &str) -> Snapshot {
    let mut workers = Vec::new();
    for (i, part) in spec.split(';').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let (name, rest) = part.split_once(':').expect("name:");
        let mut w = WorkerView {
            id: i as i64 + 1,
            name: name.trim().to_string(),
            cluster_id: 1,
            ready: true,
            ram_total: 256 * G,
            ..Default::default()
        };
        let mut tokens = rest.split_whitespace();
        while let Some(t) = tokens.next() {
            let kv = t.split_once('=');
            match kv {
                _ if t == "label" => {
                    let (k, v) = tokens.next().expect("label k=v").split_once('=').expect("k=v");
                    w.labels.insert(k.into(), v.into());
                }
                _ if t == "down" => w.ready = false,
                _ if t == "cpu" => {}
                Some(("ram", v)) => w.ram_total = gb(v.parse().expect("ram")),
                Some(("ramused", v)) => w.ram_allocated = gb(v.parse().expect("ramused")),
                Some(("model", v)) => w.instances_of_model = v.parse().expect("model"),
                Some(("other", v)) => w.instances_other = v.parse().expect("other"),
                Some(("cluster", v)) => w.cluster_id = v.parse().expect("cluster"),
                Some(("used", v)) => {
                    let mut p = v.split(':');
                    let (ty, idx, amount) = (p.next().expect("type"), p.next().expect("index"), p.next().expect("GiB"));
                    let g = gpu_mut(&mut w, ty, idx.parse().expect("index"));
                    g.allocated = gb(amount.parse().expect("GiB"));
                }
                Some(("inst", v)) => {
                    let mut p = v.split(':');
                    let (ty, idx, counts) = (p.next().expect("type"), p.next().expect("index"), p.next().expect("n/m"));
                    let (this, other) = counts.split_once('/').expect("n/m");
                    let g = gpu_mut(&mut w, ty, idx.parse().expect("index"));
                    (g.instances_of_model, g.instances_other) = (this.parse().expect("n"), other.parse().expect("m"));
                }
                _ => {
                    let (count, model) = t.split_once('x').expect("<n>x<model>-<size>GB");
                    let (model, ty) = model.split_once('@').unwrap_or((model, "cuda"));
                    let size = model.rsplit_once('-').expect("-<size>GB").1.trim_end_matches("GB");
                    for _ in 0..count.parse::<u32>().expect("count") {
                        let index = w.gpus.len() as u32;
                        let total = gb(size.parse().expect("size"));
                        w.gpus.push(GpuView { index, gpu_type: ty.into(), total, ..Default::default() });
                    }
                }
            }
        }
        workers.push(w);
    }
    Snapshot { workers }
}

fn gpu_mut<'a>(w: &'a mut WorkerView, ty: &str, index: u32) -> &'a mut GpuView {
    w.gpus.iter_mut().find(|g| g.gpu_type == ty && g.index == index).expect("no such GPU")
}

/// A replica needing `vram` GiB, claimed as the estimate (llama.cpp-like), on CUDA.
fn est(vram: f64) -> Request {
    Request {
        cluster_id: 1,
        strategy: Strategy::Spread,
        worker_selector: BTreeMap::new(),
        gpu_ids: vec![],
        gpus_per_replica: None,
        vram: gb(vram),
        ram: 0,
        claim: Claim::Estimate,
        tp_divisors: vec![],
        frameworks: vec!["cuda".into()],
        cpu_offloading: false,
        distributed: false,
        replicas: 1,
    }
}

/// A vLLM-like replica: 0.9 of each used GPU.
fn vllm(vram: f64) -> Request {
    Request { claim: Claim::Fraction(0.9), ..est(vram) }
}

fn binpack(r: Request) -> Request {
    Request { strategy: Strategy::Binpack, ..r }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn labels(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

/// `w1:cuda:0,1 + w2:cuda:0,1`, `w2:cpu`; `!` marks overcommit.
fn show(s: &Snapshot, p: &Placement) -> String {
    let one = |id: i64, gpus: &[u32]| {
        let w = s.workers.iter().find(|w| w.id == id).expect("worker");
        if gpus.is_empty() {
            return format!("{}:cpu", w.name);
        }
        let ty = &w.gpus.iter().find(|g| g.index == gpus[0]).expect("gpu").gpu_type;
        let list: Vec<String> = gpus.iter().map(u32::to_string).collect();
        format!("{}:{ty}:{}", w.name, list.join(","))
    };
    let mut out = one(p.worker_id, &p.gpu_indexes);
    for sub in &p.subordinates {
        out += &format!(" + {}", one(sub.worker_id, &sub.gpu_indexes));
    }
    if p.overcommit {
        out += "!";
    }
    out
}

/// Each case: name, cluster, request, expected placement or `ERR <substring of a reason>`.
fn check(cases: Vec<(&str, &str, Request, &str)>) {
    for (name, spec, req, want) in cases {
        let s = cluster(spec);
        match (place(&s, &req), want.strip_prefix("ERR ")) {
            (Ok(p), None) => assert_eq!(show(&s, &p), want, "{name}"),
            (Err(e), Some(needle)) => {
                assert!(e.reasons.iter().any(|r| r.contains(needle)), "{name}: no reason contains {needle:?}: {e:#?}")
            }
            (Ok(p), Some(_)) => panic!("{name}: expected no fit, got {} ({p:?})", show(&s, &p)),
            (Err(e), None) => panic!("{name}: expected {want}, got {e:#?}"),
        }
    }
}

#[test]
fn spread_and_binpack() {
    let two = "w1: 1xA-80GB used=cuda:0:40 model=1; w2: 1xA-80GB";
    let gpus = "w1: 2xA-80GB used=cuda:0:60 inst=cuda:0:1/0";
    check(vec![
        ("spread avoids the worker with an instance", two, est(20.0), "w2:cuda:0"),
        ("binpack fills the fuller GPU", two, binpack(est(20.0)), "w1:cuda:0"),
        ("spread avoids the GPU with an instance", gpus, est(10.0), "w1:cuda:1"),
        ("binpack picks the least remaining space", gpus, binpack(est(10.0)), "w1:cuda:0"),
        ("spread: other models count too", "w1: 1xA-80GB other=3; w2: 1xA-80GB other=1", est(10.0), "w2:cuda:0"),
        ("ties: first wins", "w1: 1xA-80GB; w2: 1xA-80GB", est(10.0), "w1:cuda:0"),
        ("binpack ties: first wins", "w1: 1xA-80GB; w2: 1xA-80GB", binpack(est(10.0)), "w1:cuda:0"),
    ]);
}

#[test]
fn spread_scores_follow_the_formula() {
    // Two candidates, one worker with an instance of this model: 0.85+0.15·1 vs 0.45+0.35·0+0.20·1.
    let s = cluster("w1: 1xA-80GB model=1; w2: 1xA-80GB");
    let p = place(&s, &est(10.0)).expect("fits");
    assert_eq!(show(&s, &p), "w2:cuda:0");
    assert!((p.score - (0.85 * 100.0 + 0.15 * 100.0)).abs() < 1e-9, "{}", p.score);
    // Binpack: (ram 0 + 10/40·100·2)/3.
    let s = cluster("w1: 1xA-80GB used=cuda:0:40");
    let p = place(&s, &binpack(est(10.0))).expect("fits");
    assert!((p.score - 50.0 / 3.0).abs() < 1e-9, "{}", p.score);
}

#[test]
fn filters() {
    let labelled = "w1: 1xH100-80GB label gpu=h100; w2: 1xL4-24GB label gpu=l4";
    check(vec![
        ("label picks w2", labelled, Request { worker_selector: labels("gpu", "l4"), ..est(10.0) }, "w2:cuda:0"),
        (
            "label matches nothing",
            labelled,
            Request { worker_selector: labels("gpu", "a100"), ..est(10.0) },
            "ERR worker w2: label gpu=a100 does not match (has gpu=l4)",
        ),
        (
            "missing label",
            "w1: 1xA-80GB",
            Request { worker_selector: labels("zone", "a"), ..est(10.0) },
            "ERR worker w1: label zone=a does not match (no zone label)",
        ),
        ("not ready skipped", "w1: 1xA-80GB down; w2: 1xA-80GB", est(10.0), "w2:cuda:0"),
        ("not ready explained", "w1: 1xA-80GB down", est(10.0), "ERR worker w1: not ready"),
        ("other cluster", "w1: 1xA-80GB cluster=2", est(10.0), "ERR worker w1: in cluster 2, not cluster 1"),
        (
            "framework mismatch",
            "w1: 1xMI300-192GB@rocm",
            est(10.0),
            "ERR worker w1: the backend needs a cuda GPU; this worker has rocm",
        ),
        (
            "framework: rocm worker skipped",
            "w1: 1xMI300-192GB@rocm; w2: 1xA-80GB",
            Request { frameworks: ids(&["cuda"]), ..est(10.0) },
            "w2:cuda:0",
        ),
        (
            "RAM shortfall",
            "w1: 1xA-80GB ram=8",
            Request { ram: 16 * G, ..est(10.0) },
            "ERR worker w1: needs 16.0 GiB RAM, 8.0 GiB free",
        ),
        (
            "RAM counts allocations",
            "w1: 1xA-80GB ram=32 ramused=20; w2: 1xA-80GB",
            Request { ram: 16 * G, ..est(10.0) },
            "w2:cuda:0",
        ),
    ]);
}

#[test]
fn reasons_name_the_gpu_and_the_numbers() {
    let s = cluster("w1: 1xH100-79.2GB used=cuda:0:67.2");
    let e = place(&s, &vllm(30.0)).expect_err("no fit");
    assert!(e.reasons.contains(&"w1:cuda:0: needs 71.3 GiB (0.9 × 79.2 GiB), 12.0 GiB free".to_string()), "{e:#?}");
    let s = cluster("w1: 1xL4-24GB");
    let e = place(&s, &vllm(30.0)).expect_err("no fit");
    assert!(
        e.reasons.contains(&"w1:cuda:0: 0.9 × 24.0 GiB = 21.6 GiB is less than the 30.0 GiB needed".into()),
        "{e:#?}"
    );
    assert!(e.reasons.iter().any(|r| r.contains("distributed inference is off")), "{e:#?}");
    let e = place(&cluster("w1: 1xA-24GB used=cuda:0:20"), &est(8.0)).expect_err("no fit");
    assert!(e.reasons.contains(&"w1:cuda:0: needs 8.0 GiB, 4.0 GiB free".into()), "{e:#?}");
}

#[test]
fn several_gpus_on_one_worker() {
    let eight = "w1: 8xA-80GB";
    let tp = |d: u64, r: Request| Request { tp_divisors: vec![d, 151_936], ..r };
    check(vec![
        // 0.9 × 80 = 72 GiB per GPU: 150 GiB needs 3, and 3 does not divide 28 heads.
        ("28 heads: 3 refused, 4 taken", eight, tp(28, vllm(150.0)), "w1:cuda:0,1,2,3"),
        (
            "14 heads: 3..6 refused, 7 taken",
            eight,
            Request { tp_divisors: vec![14], ..vllm(150.0) },
            "w1:cuda:0,1,2,3,4,5,6",
        ),
        ("14 heads, 2 GPUs", eight, Request { tp_divisors: vec![14], ..vllm(100.0) }, "w1:cuda:0,1"),
        (
            "14 heads, 4 GPUs per replica refused",
            eight,
            Request { tp_divisors: vec![14], gpus_per_replica: Some(4), ..vllm(100.0) },
            "ERR no GPU count 4 dividing [14]",
        ),
        ("too big for one GPU: estimate split over 3", "w1: 4xA-40GB", est(100.0), "w1:cuda:0,1,2"),
        ("minimum GPU count wins across workers", "w1: 4xA-40GB; w2: 2xB-80GB", est(100.0), "w2:cuda:0,1"),
        ("freest GPUs first", "w1: 3xA-80GB used=cuda:0:20", vllm(100.0), "w1:cuda:1,2"),
        ("GPUs too full for the fraction", "w1: 2xA-80GB used=cuda:1:20", vllm(100.0), "ERR 1 have ≥ 90% free"),
        (
            "gpus_per_replica from parallelism flags",
            eight,
            Request { gpus_per_replica: Some(4), ..vllm(10.0) },
            "w1:cuda:0,1,2,3",
        ),
        (
            "never mixes GPU types",
            "w1: 1xA-80GB 1xR-80GB@rocm",
            Request { frameworks: ids(&["cuda", "rocm"]), ..est(120.0) },
            "ERR worker w1 (rocm, 1 GPUs)",
        ),
        (
            "one type of a mixed worker",
            "w1: 2xA-40GB 2xR-80GB@rocm",
            Request { frameworks: ids(&["cuda", "rocm"]), ..est(100.0) },
            "w1:rocm:2,3",
        ),
    ]);
}

#[test]
fn across_workers() {
    let pair = "w1: 2xA-80GB; w2: 2xA-80GB";
    let dist = |r: Request| Request { distributed: true, ..r };
    check(vec![
        ("two workers × 2 GPUs", pair, dist(vllm(250.0)), "w1:cuda:0,1 + w2:cuda:0,1"),
        ("off unless distributed", pair, vllm(250.0), "ERR across workers: distributed inference is off"),
        (
            "three workers",
            "w1: 2xA-80GB; w2: 2xA-80GB; w3: 2xA-80GB",
            dist(vllm(400.0)),
            "w1:cuda:0,1 + w2:cuda:0,1 + w3:cuda:0,1",
        ),
        (
            "different GPU counts refused",
            "w1: 2xA-80GB; w2: 4xA-80GB",
            dist(vllm(400.0)),
            "ERR across workers (2 × cuda each): only worker w1 has this shape",
        ),
        (
            "count must divide heads",
            pair,
            Request { tp_divisors: vec![15], ..dist(vllm(250.0)) },
            "ERR 2 GPUs per worker does not divide [15]",
        ),
        (
            "every GPU must be free enough",
            "w1: 2xA-80GB; w2: 2xA-80GB used=cuda:1:30",
            dist(vllm(250.0)),
            "ERR w2:cuda:1 has less than 90% free",
        ),
        ("not enough in all", pair, dist(vllm(300.0)), "ERR 2 qualifying workers give 288.0 GiB, 300.0 GiB needed"),
        (
            "estimate split over workers",
            "w1: 1xA-40GB; w2: 1xA-40GB; w3: 1xA-40GB",
            dist(est(100.0)),
            "w1:cuda:0 + w2:cuda:0 + w3:cuda:0",
        ),
        (
            "single worker preferred when it fits",
            "w1: 2xA-80GB; w2: 4xA-80GB; w3: 4xA-80GB",
            dist(vllm(250.0)),
            "w2:cuda:0,1,2,3",
        ),
    ]);
}

#[test]
fn manual_selection() {
    let four = "w1: 4xA-80GB; w2: 4xA-80GB";
    let sel = |list: &[&str], r: Request| Request { gpu_ids: ids(list), ..r };
    check(vec![
        (
            "auto: 3 selected → 2 per replica",
            four,
            sel(&["w1:cuda:0", "w1:cuda:1", "w1:cuda:2"], est(10.0)),
            "w1:cuda:0,1",
        ),
        (
            "auto: 4 selected, 2 replicas → 2",
            four,
            Request { replicas: 2, ..sel(&["w1:cuda:0", "w1:cuda:1", "w1:cuda:2", "w1:cuda:3"], est(10.0)) },
            "w1:cuda:0,1",
        ),
        (
            "manual gpus_per_replica 3",
            four,
            Request { gpus_per_replica: Some(3), ..sel(&["w1:cuda:0", "w1:cuda:1", "w1:cuda:2"], est(10.0)) },
            "w1:cuda:0,1,2",
        ),
        (
            "freest selected GPUs first",
            "w1: 4xA-80GB used=cuda:0:50",
            sel(&["w1:cuda:0", "w1:cuda:1", "w1:cuda:2"], est(10.0)),
            "w1:cuda:1,2",
        ),
        ("only named workers", four, sel(&["w2:cuda:3"], est(10.0)), "w2:cuda:3"),
        (
            "unnamed worker explained",
            four,
            Request { replicas: 2, ..sel(&["w2:cuda:3"], est(500.0)) },
            "ERR worker w1: not named in the GPU selection",
        ),
        ("bad id", four, sel(&["w1-cuda-0"], est(10.0)), "ERR GPU w1-cuda-0: not of the form <worker>:<type>:<index>"),
        ("unknown GPU", four, sel(&["w1:cuda:9"], est(10.0)), "ERR GPU w1:cuda:9: no such GPU on worker w1"),
        (
            "mixed types not combined",
            "w1: 1xA-80GB 1xR-80GB@rocm",
            Request {
                gpus_per_replica: Some(2),
                frameworks: ids(&["cuda", "rocm"]),
                ..sel(&["w1:cuda:0", "w1:rocm:1"], est(10.0))
            },
            "ERR worker w1 has 1 selected cuda GPUs, 2 per replica",
        ),
        (
            "mixed types, 1 per replica",
            "w1: 1xA-80GB 1xR-80GB@rocm",
            Request { frameworks: ids(&["cuda", "rocm"]), replicas: 2, ..sel(&["w1:cuda:0", "w1:rocm:1"], est(10.0)) },
            "w1:cuda:0",
        ),
        (
            "across workers when distributed",
            four,
            Request {
                distributed: true,
                gpus_per_replica: Some(4),
                ..sel(&["w1:cuda:0", "w1:cuda:1", "w2:cuda:0", "w2:cuda:1"], vllm(100.0))
            },
            "w1:cuda:0,1 + w2:cuda:0,1",
        ),
        (
            "TP divisibility applies",
            four,
            Request { tp_divisors: vec![14], ..sel(&["w1:cuda:0", "w1:cuda:1", "w1:cuda:2", "w1:cuda:3"], vllm(10.0)) },
            "ERR 4 GPUs per replica does not divide [14]",
        ),
    ]);
}

#[test]
fn overcommit_with_manual_selection() {
    let s = cluster("w1: 1xA-80GB used=cuda:0:60");
    let req = Request { gpu_ids: ids(&["w1:cuda:0"]), ..vllm(30.0) };
    let p = place(&s, &req).expect("one replica may overcommit");
    assert_eq!(show(&s, &p), "w1:cuda:0!");
    let msg = p.message.expect("message");
    assert!(msg.starts_with("overcommit: w1:cuda:0: needs 72.0 GiB (0.9 × 80.0 GiB), 20.0 GiB free"), "{msg}");
    check(vec![
        (
            "refused for two replicas",
            "w1: 1xA-80GB used=cuda:0:60",
            Request { replicas: 2, ..req.clone() },
            "ERR overcommit is only allowed for a single replica (2 requested)",
        ),
        (
            "refused reason names the GPU",
            "w1: 1xA-80GB used=cuda:0:60",
            Request { replicas: 2, ..req.clone() },
            "ERR w1:cuda:0: needs 72.0 GiB",
        ),
        (
            "fitting GPU preferred over overcommit",
            "w1: 2xA-80GB used=cuda:0:60",
            Request { gpu_ids: ids(&["w1:cuda:0", "w1:cuda:1"]), gpus_per_replica: Some(1), ..vllm(30.0) },
            "w1:cuda:1",
        ),
        (
            "estimate too small in all",
            "w1: 1xA-24GB",
            Request { gpu_ids: ids(&["w1:cuda:0"]), ..est(40.0) },
            "w1:cuda:0!",
        ),
        (
            "RAM overcommit",
            "w1: 1xA-80GB ram=4",
            Request { gpu_ids: ids(&["w1:cuda:0"]), ram: 8 * G, ..est(10.0) },
            "w1:cuda:0!",
        ),
    ]);
    // Auto scheduling never overcommits.
    let e = place(&s, &vllm(30.0)).expect_err("auto never overcommits");
    assert!(e.reasons.iter().any(|r| r.contains("20.0 GiB free")), "{e:#?}");
}

#[test]
fn cpu_offloading() {
    let cpu = |r: Request| Request { cpu_offloading: true, frameworks: ids(&["cuda", "cpu"]), ram: 16 * G, ..r };
    check(vec![
        ("GPU first", "w1: 1xA-80GB", cpu(est(30.0)), "w1:cuda:0"),
        ("CPU when no GPU fits", "w1: 1xA-24GB ram=8; w2: cpu ram=64", cpu(est(30.0)), "w2:cpu"),
        (
            "CPU off",
            "w1: 1xA-24GB; w2: cpu ram=64",
            Request { cpu_offloading: false, ..cpu(est(30.0)) },
            "ERR CPU: CPU offloading is off",
        ),
        (
            "GPU-less worker without CPU offloading",
            "w2: cpu ram=64",
            Request { cpu_offloading: false, ..cpu(est(30.0)) },
            "ERR worker w2: the backend needs a GPU (cuda) unless CPU offloading is on; this worker has none",
        ),
        (
            "backend without CPU",
            "w1: 1xA-24GB",
            Request { frameworks: ids(&["cuda"]), ..cpu(est(30.0)) },
            "ERR CPU: backend does not run on CPU",
        ),
        ("CPU RAM shortfall", "w2: cpu ram=8", cpu(est(30.0)), "ERR worker w2: needs 16.0 GiB RAM, 8.0 GiB free"),
        (
            "CPU-only backend",
            "w1: cpu",
            Request { frameworks: ids(&["cpu"]), cpu_offloading: true, ..est(1.0) },
            "w1:cpu",
        ),
    ]);
}

#[test]
fn auto_gpus_per_replica() {
    for (selected, replicas, want) in
        [(0, 1, 1), (1, 1, 1), (2, 1, 2), (3, 1, 2), (4, 1, 4), (7, 1, 4), (8, 2, 4), (6, 4, 1), (5, 0, 4)]
    {
        assert_eq!(gpus_per_replica_auto(selected, replicas), want, "{selected} / {replicas}");
    }
}

#[test]
fn scale_down_least_healthy_first() {
    let v = |instance_id, worker_ready, running, error, restarts| ScaleDownView {
        instance_id,
        worker_ready,
        running,
        error,
        restarts,
    };
    let order = scale_down_order(&[
        v(1, true, true, false, 0),  // 100
        v(2, false, true, false, 0), // worker not ready: 0
        v(3, true, false, true, 0),  // error: 0
        v(4, true, false, false, 0), // starting: 50
        v(5, true, true, false, 0),  // 100, newer
        v(6, true, true, false, 3),  // 100, but it crashed three times: before the other healthy ones
    ]);
    assert_eq!(order, vec![3, 2, 4, 6, 5, 1]);
}

fn arb_cluster() -> impl prop::strategy::Strategy<Value = Snapshot> {
    let gpu = (prop::bool::weighted(0.8), 8u64..96, 0u64..=100, 0u32..3, 0u32..3);
    let worker =
        (prop::collection::vec(gpu, 0..5), prop::bool::weighted(0.8), 1i64..3, 0u64..64, any::<bool>(), 0u32..3);
    prop::collection::vec(worker, 1..7).prop_map(|ws| Snapshot {
        workers: ws
            .into_iter()
            .enumerate()
            .map(|(i, (gpus, ready, cluster_id, ram_used, label, model))| {
                let mut w = WorkerView {
                    id: i as i64 + 1,
                    name: format!("w{}", i + 1),
                    cluster_id: if cluster_id == 2 && i % 3 == 0 { 2 } else { 1 },
                    ready,
                    ram_total: 64 * G,
                    ram_allocated: ram_used * G,
                    instances_of_model: model,
                    labels: if label { labels("gpu", "a") } else { BTreeMap::new() },
                    ..Default::default()
                };
                for (cuda, total, used_pct, this, other) in gpus {
                    let ty = if cuda { "cuda" } else { "rocm" };
                    let index = w.gpus.len() as u32;
                    let allocated = total * G * used_pct / 100;
                    let (instances_of_model, instances_other) = (this, other);
                    w.gpus.push(GpuView {
                        index,
                        gpu_type: ty.into(),
                        total: total * G,
                        allocated,
                        instances_of_model,
                        instances_other,
                    });
                }
                w
            })
            .collect(),
    })
}

fn arb_request() -> impl prop::strategy::Strategy<Value = (Request, usize)> {
    let a = (
        0u64..300,
        0u64..32,
        prop::option::of(0.5f64..0.95),
        any::<bool>(),
        prop::sample::select(vec![vec![], vec![28u64], vec![14], vec![32, 151_936]]),
    );
    let b = (
        prop::sample::select(vec![vec!["cuda"], vec!["cuda", "rocm"], vec!["cuda", "cpu"], vec!["rocm"]]),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1u32..5),
        1u32..4,
        any::<bool>(),
        0usize..4,
    );
    (a, b).prop_map(|((vram, ram, frac, binpack, tp), (fw, cpu, dist, gpr, replicas, label, manual))| {
        let req = Request {
            strategy: if binpack { Strategy::Binpack } else { Strategy::Spread },
            worker_selector: if label { labels("gpu", "a") } else { BTreeMap::new() },
            gpus_per_replica: gpr,
            ram: ram * G,
            claim: frac.map_or(Claim::Estimate, Claim::Fraction),
            tp_divisors: tp,
            frameworks: fw.into_iter().map(String::from).collect(),
            cpu_offloading: cpu,
            distributed: dist,
            replicas,
            ..est(vram as f64)
        };
        (req, manual)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn placements_respect_free_memory_and_readiness(s in arb_cluster(), (mut req, manual) in arb_request(), pick in any::<u64>()) {
        // Sometimes select GPUs by hand (a few existing ids, picked pseudo-randomly).
        let all: Vec<String> = s.workers.iter().flat_map(|w| w.gpus.iter().map(|g| format!("{}:{}:{}", w.name, g.gpu_type, g.index))).collect();
        if manual > 0 && !all.is_empty() {
            req.gpu_ids = (0..manual).map(|k| all[(pick as usize).wrapping_add(k * 7) % all.len()].clone()).collect();
        }
        match place(&s, &req) {
            Err(e) => prop_assert!(!e.reasons.is_empty()),
            Ok(p) => {
                let manual = !req.gpu_ids.is_empty();
                prop_assert!(!p.overcommit || (manual && req.replicas <= 1), "overcommit outside manual/1 replica");
                let mut types: Vec<String> = Vec::new();
                let mut parts = vec![(p.worker_id, &p.gpu_indexes, &p.vram_claim)];
                parts.extend(p.subordinates.iter().map(|s| (s.worker_id, &s.gpu_indexes, &s.vram_claim)));
                for (wid, indexes, claims) in parts {
                    let w = s.workers.iter().find(|w| w.id == wid).expect("worker exists");
                    prop_assert!(w.ready, "non-ready worker {}", w.name);
                    prop_assert_eq!(w.cluster_id, req.cluster_id);
                    prop_assert_eq!(indexes.len(), claims.len());
                    for (idx, claim) in claims {
                        prop_assert!(indexes.contains(idx));
                        let g = w.gpus.iter().find(|g| g.index == *idx).expect("gpu exists");
                        types.push(g.gpu_type.clone());
                        prop_assert!(p.overcommit || *claim <= g.total - g.allocated, "{}:{} claims {} of {} free", w.name, idx, claim, g.total - g.allocated);
                    }
                }
                types.dedup();
                prop_assert!(types.len() <= 1, "mixed GPU types {:?}", types);
                let main = s.workers.iter().find(|w| w.id == p.worker_id).expect("main");
                prop_assert!(p.overcommit || main.ram_total - main.ram_allocated >= p.ram_claim);
                if !p.overcommit {
                    let sum: u128 = p.vram_claim.values().chain(p.subordinates.iter().flat_map(|s| s.vram_claim.values())).map(|&c| u128::from(c)).sum();
                    prop_assert!(p.gpu_indexes.is_empty() || sum >= u128::from(req.vram), "claims {} < {}", sum, req.vram);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The streaming single-GPU path decides exactly like the candidate list (same worker, GPU,
    /// claim and score, bit for bit).
    #[test]
    fn fast_path_matches_reference(s in arb_cluster(), (req, _) in arb_request()) {
        let fast = run(&s, &req, &mut Why(None), true);
        let reference = run(&s, &req, &mut Why(None), false);
        prop_assert_eq!(fast, reference);
    }
}

/// Fitted replicas (`gpu_memory: fit`, the estimate as the claim), placed one after another with
/// each booked: binpack fills a GPU before opening the next, spread takes an empty GPU first, and a
/// fraction claim (`reserve`) keeps one replica per GPU. Memory used outside the cluster counts.
#[test]
fn fitted_replicas_pack_where_binpack_asks() {
    let order = |s: &Snapshot, req: &Request, n: usize| -> Vec<String> {
        let mut s = s.clone();
        let mut out = Vec::new();
        for _ in 0..n {
            match place(&s, req) {
                Ok(p) => {
                    out.push(show(&s, &p));
                    s.apply(&p, true);
                }
                Err(_) => out.push("-".into()),
            }
        }
        out
    };
    let two = cluster("w1: 2xH100-80GB");
    let a = "w1:cuda:0".to_string();
    let b = "w1:cuda:1".to_string();
    // 9.5 GiB each: eight on one 80 GiB GPU, the ninth on the next.
    let mut want = vec![a.clone(); 8];
    want.push(b.clone());
    assert_eq!(order(&two, &binpack(est(9.5)), 9), want);
    assert_eq!(order(&two, &est(9.5), 4), [a.clone(), b.clone(), a.clone(), b.clone()], "spread still spreads");
    assert_eq!(order(&two, &binpack(vllm(9.5)), 3), [a.clone(), b.clone(), "-".into()], "reserve: one per GPU");
    // 20 GiB used outside the cluster on GPU 0: six fit there, not eight.
    let used = cluster("w1: 2xH100-80GB used=cuda:0:20");
    let mut want = vec![a.clone(); 6];
    want.push(b.clone());
    assert_eq!(order(&used, &binpack(est(9.5)), 7), want);
    // Why not: the claim in GiB against what is free.
    let full = cluster("w1: 1xH100-80GB used=cuda:0:75");
    let why = place(&full, &binpack(est(9.5))).expect_err("no room").reasons.join("\n");
    assert!(why.contains("needs 9.5 GiB, 5.0 GiB free"), "{why}");
}

#[test]
fn a_replica_goes_where_its_deployment_ran_lately() {
    // (what, cluster, request, warm workers by id, most recent first, placement)
    let table: Vec<(&str, &str, Request, &[i64], &str)> = vec![
        ("spread alone would pick w2", "w1: 1xA-80GB other=2; w2: 1xA-80GB", est(20.0), &[], "w2:cuda:0"),
        ("the warm worker wins over spread", "w1: 1xA-80GB other=2; w2: 1xA-80GB", est(20.0), &[1], "w1:cuda:0"),
        ("and over binpack", "w1: 1xA-80GB; w2: 1xA-80GB used=cuda:0:40", binpack(est(20.0)), &[1], "w1:cuda:0"),
        ("the most recent first", "w1: 1xA-80GB; w2: 1xA-80GB; w3: 1xA-80GB", est(20.0), &[3, 2], "w3:cuda:0"),
        (
            "a full warm worker is passed over",
            "w1: 1xA-80GB used=cuda:0:70; w2: 1xA-80GB",
            est(20.0),
            &[1],
            "w2:cuda:0",
        ),
        ("so is one that already holds a replica", "w1: 1xA-80GB model=1; w2: 1xA-80GB", est(20.0), &[1], "w2:cuda:0"),
        ("or is down", "w1: 1xA-80GB down; w2: 1xA-80GB other=1", est(20.0), &[1], "w2:cuda:0"),
        ("a worker that left is ignored", "w1: 1xA-80GB other=1; w2: 1xA-80GB", est(20.0), &[9, 1], "w1:cuda:0"),
        ("never an overcommit on a warm worker", "w1: 1xA-24GB; w2: 1xA-80GB", est(40.0), &[1], "w2:cuda:0"),
    ];
    for (what, spec, req, warm, want) in table {
        let s = cluster(spec);
        let p = place_preferring(&s, &req, warm).unwrap_or_else(|e| panic!("{what}: {e:#?}"));
        assert_eq!(show(&s, &p), want, "{what}");
    }
}
