//! Placement benchmark: 10,000 replicas, one after another, onto 1,000 simulated workers × 8 GPUs
//! of 80 GB, updating allocations and instance counts after each (as the scheduler does).
//! Run: `cargo run --release --example bench_scheduler`.

use std::time::{Duration, Instant};

use ferrostack::placement::{Claim, GpuView, Request, Snapshot, Strategy, WorkerView, place};

const WORKERS: usize = 1_000;
const GPUS: usize = 8;
const REPLICAS: usize = 10_000;
const MODELS: usize = 100;
const GB: u64 = 1_000_000_000;

/// Models cycle through three shapes: a vLLM replica taking 0.9 of one GPU (spread), a larger one
/// needing two GPUs with TP dividing 32 heads (spread), and a small estimate-claimed model that
/// shares GPUs (binpack).
fn request(model: usize) -> Request {
    let base = Request {
        cluster_id: 1,
        strategy: Strategy::Spread,
        worker_selector: Default::default(),
        gpu_ids: vec![],
        gpus_per_replica: None,
        vram: 60 * GB,
        ram: 8 * GB,
        claim: Claim::Fraction(0.9),
        tp_divisors: vec![32, 151_936],
        frameworks: vec!["cuda".into()],
        cpu_offloading: false,
        distributed: false,
        replicas: (REPLICAS / MODELS) as u32,
    };
    match model % 10 {
        0..4 => base,
        4 => Request { vram: 140 * GB, ..base },
        _ => Request { strategy: Strategy::Binpack, vram: 16 * GB, ram: 2 * GB, claim: Claim::Estimate, ..base },
    }
}

fn main() {
    let mut snapshot = Snapshot {
        workers: (0..WORKERS)
            .map(|i| WorkerView {
                id: i as i64 + 1,
                name: format!("worker-{i}"),
                cluster_id: 1,
                ready: true,
                gpus: (0..GPUS as u32)
                    .map(|index| GpuView { index, gpu_type: "cuda".into(), total: 80 * GB, ..Default::default() })
                    .collect(),
                ram_total: 1024 * GB,
                ..Default::default()
            })
            .collect(),
    };
    let requests: Vec<Request> = (0..MODELS).map(request).collect();
    // Instances per model per worker and per GPU, to fill the snapshot's spread counters.
    let mut per_worker = vec![vec![0u32; WORKERS]; MODELS];
    let mut per_gpu = vec![vec![0u32; WORKERS * GPUS]; MODELS];
    let mut all_worker = vec![0u32; WORKERS];
    let mut all_gpu = vec![0u32; WORKERS * GPUS];

    let (mut placed, mut failed, mut gpus_used) = (0usize, 0usize, 0usize);
    let mut in_place = Duration::ZERO;
    let start = Instant::now();
    for r in 0..REPLICAS {
        let model = r % MODELS;
        for (wi, w) in snapshot.workers.iter_mut().enumerate() {
            w.instances_of_model = per_worker[model][wi];
            w.instances_other = all_worker[wi] - per_worker[model][wi];
            for (gi, g) in w.gpus.iter_mut().enumerate() {
                let k = wi * GPUS + gi;
                g.instances_of_model = per_gpu[model][k];
                g.instances_other = all_gpu[k] - per_gpu[model][k];
            }
        }
        let t = Instant::now();
        let result = place(&snapshot, &requests[model]);
        in_place += t.elapsed();
        let Ok(p) = result else {
            failed += 1;
            continue;
        };
        placed += 1;
        let wi = (p.worker_id - 1) as usize;
        let w = &mut snapshot.workers[wi];
        w.ram_allocated += p.ram_claim;
        per_worker[model][wi] += 1;
        all_worker[wi] += 1;
        for (&index, &claim) in &p.vram_claim {
            w.gpus[index as usize].allocated += claim;
            per_gpu[model][wi * GPUS + index as usize] += 1;
            all_gpu[wi * GPUS + index as usize] += 1;
            gpus_used += 1;
        }
    }
    let total = start.elapsed();
    println!("{WORKERS} workers × {GPUS} GPUs, {REPLICAS} replicas of {MODELS} models");
    println!("placed {placed}, failed {failed}, GPU claims {gpus_used}");
    println!(
        "total {:.3} s ({:.0} placements/s); in place() {:.3} s ({:.1} µs each)",
        total.as_secs_f64(),
        REPLICAS as f64 / total.as_secs_f64(),
        in_place.as_secs_f64(),
        in_place.as_secs_f64() * 1e6 / REPLICAS as f64
    );
}
