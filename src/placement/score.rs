//! Scores (GPUStack §4.8, `PlacementScorer`): spread and binpack, MAX = 100. The highest score
//! wins; the first candidate wins a tie. `best` scores a list of candidates; `best_single_gpu` is
//! the hot path (one GPU per replica), which streams over the GPUs instead of building a
//! candidate per GPU and gives exactly the same answer (a property test compares them).

use super::candidates::{fraction, single_fit, single_gpu_allowed};
use super::filters::gpu_usable;
use super::{Cand, Cands, GpuView, Request, Snapshot, Strategy, WorkerView, free, ram_free};

const MAX: f64 = 100.0;

/// The best candidate among those `keep` accepts, with its score.
pub(super) fn best(s: &Snapshot, req: &Request, c: &Cands, keep: impl Fn(&Cand) -> bool) -> Option<(usize, f64)> {
    let scorer = Scorer::new(s, req, c, &keep)?;
    let mut best: Option<(usize, f64)> = None;
    for (i, cand) in c.list.iter().enumerate().filter(|(_, cand)| keep(cand)) {
        let score = scorer.score(cand);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best
}

/// The score of candidate `i`, normalised over the candidates `keep` accepts.
pub(super) fn score_of(s: &Snapshot, req: &Request, c: &Cands, keep: impl Fn(&Cand) -> bool, i: usize) -> f64 {
    Scorer::new(s, req, c, &keep).map_or(0.0, |scorer| scorer.score(&c.list[i]))
}

/// The single-GPU strategy and its best candidate in one go: `(worker, GPU position, claim,
/// score)`. Same order, same formulas and same tie-breaking as `single_gpu` + `best`.
pub(super) fn best_single_gpu(s: &Snapshot, req: &Request, workers: &[usize]) -> Option<(usize, usize, u64, f64)> {
    if !single_gpu_allowed(req) {
        return None;
    }
    let frac = fraction(req);
    let fits = |g: &GpuView| if gpu_usable(req, &g.gpu_type) { single_fit(req, frac, g) } else { None };
    let ram_ok = |w: &WorkerView| ram_free(w) >= req.ram;
    let mut spread = Spread::default();
    if req.strategy == Strategy::Spread {
        // Pass 1: the workers that have a candidate set the min/max of the spread counts.
        let mut any = false;
        for &wi in workers {
            let w = &s.workers[wi];
            if ram_ok(w) && w.gpus.iter().any(|g| fits(g).is_some()) {
                any = true;
                spread.add(f64::from(w.instances_of_model), f64::from(w.instances_other));
            }
        }
        if !any {
            return None;
        }
    }
    let mut best: Option<(usize, usize, u64, f64)> = None;
    for &wi in workers {
        let w = &s.workers[wi];
        if !ram_ok(w) {
            continue;
        }
        let ram = ratio(req.ram, ram_free(w)) * MAX;
        let mut worker_score = None;
        for (pos, g) in w.gpus.iter().enumerate() {
            let Some(claim) = fits(g) else { continue };
            let score = match req.strategy {
                Strategy::Spread => {
                    let ws = *worker_score.get_or_insert_with(|| {
                        spread.worker_score(f64::from(w.instances_of_model), f64::from(w.instances_other))
                    });
                    spread_total(ws, 0.0 + gpu_term(g), 1)
                }
                Strategy::Binpack => binpack_gpu(ram, claim, free(g)).max(0.0),
            };
            if best.is_none_or(|b| score > b.3) {
                best = Some((wi, pos, claim, score));
            }
        }
    }
    best
}

/// Spread normalisation over the candidates: whether one has no instance of this model yet, and
/// min/max of the instance counts (this model, other models).
#[derive(Debug, Clone, Copy)]
struct Spread {
    any_zero: bool,
    current: (f64, f64),
    others: (f64, f64),
}

impl Default for Spread {
    fn default() -> Self {
        Spread { any_zero: false, current: (f64::MAX, f64::MIN), others: (f64::MAX, f64::MIN) }
    }
}

impl Spread {
    fn add(&mut self, cur: f64, oth: f64) {
        self.any_zero |= cur == 0.0;
        self.current = (self.current.0.min(cur), self.current.1.max(cur));
        self.others = (self.others.0.min(oth), self.others.1.max(oth));
    }

    fn worker_score(&self, cur: f64, oth: f64) -> f64 {
        let inv = |v: f64, (min, max): (f64, f64)| if max > min { 1.0 - (v - min) / (max - min) } else { 1.0 };
        MAX * if self.any_zero {
            if cur == 0.0 {
                0.85 + 0.15 * inv(oth, self.others)
            } else {
                0.45 + 0.35 * inv(cur, self.current) + 0.20 * inv(oth, self.others)
            }
        } else {
            0.50 + 0.25 * inv(cur, self.current) + 0.15 * inv(oth, self.others)
        }
    }
}

/// One GPU's share of the spread GPU score: `1 / (1 + this + 0.2 · other)`.
fn gpu_term(g: &GpuView) -> f64 {
    1.0 / (1.0 + f64::from(g.instances_of_model) + 0.2 * f64::from(g.instances_other))
}

/// `0.85 · worker_score + 0.15 · MAX · mean(gpu terms)`; CPU only (n = 0): the worker score.
fn spread_total(worker_score: f64, sum: f64, n: usize) -> f64 {
    if n == 0 { worker_score } else { 0.85 * worker_score + 0.15 * MAX * sum / n as f64 }
}

fn ratio(claim: u64, avail: u64) -> f64 {
    match avail {
        0 if claim == 0 => 0.0,
        0 => 1.0,
        _ => claim as f64 / avail as f64,
    }
}

/// Binpack per GPU: `(ram_claim/ram_free · MAX + vram_claim/vram_free · MAX · 2) / 3`.
fn binpack_gpu(ram_score: f64, claim: u64, avail: u64) -> f64 {
    (ram_score + ratio(claim, avail) * MAX * 2.0) / 3.0
}

struct Scorer<'a> {
    s: &'a Snapshot,
    req: &'a Request,
    c: &'a Cands,
    spread: Spread,
}

impl<'a> Scorer<'a> {
    fn new(s: &'a Snapshot, req: &'a Request, c: &'a Cands, keep: &impl Fn(&Cand) -> bool) -> Option<Self> {
        let mut scorer = Scorer { s, req, c, spread: Spread::default() };
        let mut any = false;
        for cand in c.list.iter().filter(|cand| keep(cand)) {
            any = true;
            let (cur, oth) = scorer.counts(cand);
            scorer.spread.add(cur, oth);
        }
        any.then_some(scorer)
    }

    fn score(&self, cand: &Cand) -> f64 {
        match self.req.strategy {
            Strategy::Spread => self.spread(cand),
            Strategy::Binpack => self.binpack(cand),
        }
    }

    /// Instances of this model and of other models on the candidate's workers (main and
    /// subordinates).
    fn counts(&self, cand: &Cand) -> (f64, f64) {
        let w = &self.s.workers[cand.worker];
        let (mut cur, mut oth) = (u64::from(w.instances_of_model), u64::from(w.instances_other));
        for sub in self.c.subs_of(cand) {
            let sw = &self.s.workers[sub.worker];
            cur += u64::from(sw.instances_of_model);
            oth += u64::from(sw.instances_other);
        }
        (cur as f64, oth as f64)
    }

    fn spread(&self, cand: &Cand) -> f64 {
        let (cur, oth) = self.counts(cand);
        let (mut sum, mut n) = (0.0, 0usize);
        let mut add = |w: &WorkerView, gpus: &[(usize, u64)]| {
            for &(p, _) in gpus {
                sum += gpu_term(&w.gpus[p]);
                n += 1;
            }
        };
        add(&self.s.workers[cand.worker], self.c.main_gpus(cand));
        for sub in self.c.subs_of(cand) {
            add(&self.s.workers[sub.worker], &self.c.gpus[sub.gpus.clone()]);
        }
        spread_total(self.spread.worker_score(cur, oth), sum, n)
    }

    /// The maximum per-GPU score over the main worker's GPUs; subordinates weigh 1 against the
    /// main worker's 5, and GPUStack's `Σ_sub · n_sub` quirk is kept. CPU only: `ram_claim/ram_free·MAX`.
    fn binpack(&self, cand: &Cand) -> f64 {
        let w = &self.s.workers[cand.worker];
        let ram = ratio(self.req.ram, ram_free(w)) * MAX;
        let gpus = self.c.main_gpus(cand);
        let subs = self.c.subs_of(cand);
        if gpus.is_empty() && subs.is_empty() {
            return ram;
        }
        let gpu_max = |w: &WorkerView, gpus: &[(usize, u64)], ram: f64| {
            gpus.iter().map(|&(p, claim)| binpack_gpu(ram, claim, free(&w.gpus[p]))).fold(0.0, f64::max)
        };
        let main = gpu_max(w, gpus, ram);
        if subs.is_empty() {
            return main;
        }
        let n = subs.len() as f64;
        let sum: f64 =
            subs.iter().map(|sub| gpu_max(&self.s.workers[sub.worker], &self.c.gpus[sub.gpus.clone()], 0.0)).sum();
        (main * 5.0 + sum * n) / (5.0 + n)
    }
}
