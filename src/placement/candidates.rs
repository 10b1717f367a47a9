//! Candidate strategies (GPUStack's resource-fit selectors): manual GPU selection, one GPU, one
//! worker with several GPUs, several workers (distributed), CPU only. Each pushes light candidates
//! into `Cands` and, in explain mode, says why a worker or GPU gave none.

use super::filters::{cpu_allowed, gpu_usable};
use super::{Cand, Cands, Claim, GpuView, Request, Snapshot, Why, WorkerView, free, gib, ram_free, same};

/// One parsed `<worker>:<type>:<index>` (the worker name may itself contain `:`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GpuId<'a> {
    pub worker: &'a str,
    pub gpu_type: &'a str,
    pub index: u32,
}

pub(super) fn parse_gpu_ids<'a>(ids: &'a [String], why: &mut Why<'_>) -> Vec<GpuId<'a>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut parts = id.rsplitn(3, ':');
        let (index, gpu_type, worker) = (parts.next(), parts.next(), parts.next());
        match (index.and_then(|i| i.parse().ok()), gpu_type, worker) {
            (Some(index), Some(gpu_type), Some(worker)) if !worker.is_empty() && !gpu_type.is_empty() => {
                out.push(GpuId { worker, gpu_type, index });
            }
            _ => why.add(|| format!("GPU {id}: not of the form <worker>:<type>:<index>")),
        }
    }
    out
}

/// GPUs per replica for a manual selection when the user set none: the largest power of two
/// ≤ selected / replicas, at least 1.
pub fn gpus_per_replica_auto(selected: usize, replicas: u32) -> u32 {
    let per = selected / (replicas.max(1) as usize);
    if per <= 1 {
        return 1;
    }
    let pow = 1usize << (usize::BITS - 1 - per.leading_zeros());
    u32::try_from(pow).unwrap_or(1 << 31)
}

/// The per-GPU fraction, or `None` when the claim is the estimate (a fraction ≤ 0 is GPUStack's
/// gmu = 0, which means the estimate).
pub(super) fn fraction(req: &Request) -> Option<f64> {
    match req.claim {
        Claim::Fraction(f) if f > 0.0 => Some(f),
        _ => None,
    }
}

/// `total × f`, in bytes. A GPU qualifies for a fraction claim when this fits in its free memory.
fn frac_claim(g: &GpuView, f: f64) -> u64 {
    (g.total as f64 * f) as u64
}

/// Whether a tensor-parallel size of `n` divides every number that must be divisible.
fn divides(req: &Request, n: usize) -> bool {
    n > 0 && req.tp_divisors.iter().all(|&d| d % n as u64 == 0)
}

fn ram_fits(w: &WorkerView, req: &Request) -> bool {
    ram_free(w) >= req.ram
}

fn ram_reason(w: &WorkerView, req: &Request) -> String {
    format!("worker {}: needs {} RAM, {} free", w.name, gib(req.ram), gib(ram_free(w)))
}

fn gpu_name(w: &WorkerView, g: &GpuView) -> String {
    format!("{}:{}:{}", w.name, g.gpu_type, g.index)
}

fn pct(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

/// `vram` split over `n` GPUs; the first `vram % n` get one byte more, so the sum is exact.
fn split(vram: u64, n: usize) -> impl Iterator<Item = u64> {
    let n = n.max(1) as u64;
    let (base, rem) = (vram / n, vram % n);
    (0..n).map(move |i| base + u64::from(i < rem))
}

/// The distinct GPU types of a worker, in order of first appearance (no allocation).
fn types(w: &WorkerView) -> impl Iterator<Item = &str> {
    w.gpus
        .iter()
        .enumerate()
        .filter(|(i, g)| !w.gpus[..*i].iter().any(|h| same(&h.gpu_type, &g.gpu_type)))
        .map(|(_, g)| g.gpu_type.as_str())
}

/// Sort GPU positions by free memory, most first; stable, so ties keep the worker's order.
fn sort_by_free(w: &WorkerView, positions: &mut [usize]) {
    positions.sort_by(|&a, &b| free(&w.gpus[b]).cmp(&free(&w.gpus[a])));
}

/// Per-GPU claims for `positions` (fraction of each total, or the estimate split evenly).
fn claims(req: &Request, w: &WorkerView, positions: &[usize], split_over: usize, out: &mut Vec<(usize, u64)>) {
    out.clear();
    match fraction(req) {
        Some(f) => out.extend(positions.iter().map(|&p| (p, frac_claim(&w.gpus[p], f)))),
        None => out.extend(positions.iter().copied().zip(split(req.vram, split_over))),
    }
}

/// Whether the single-GPU strategy runs at all (not when more GPUs per replica are asked for).
pub(super) fn single_gpu_allowed(req: &Request) -> bool {
    req.gpus_per_replica.is_none_or(|n| n <= 1)
}

/// The claim if this one GPU can hold the replica.
pub(super) fn single_fit(req: &Request, frac: Option<f64>, g: &GpuView) -> Option<u64> {
    let claim = match frac {
        Some(f) => frac_claim(g, f),
        None => req.vram,
    };
    (claim <= free(g) && claim >= req.vram).then_some(claim)
}

/// One GPU holds the whole replica: a candidate per GPU (the reference for
/// `score::best_single_gpu`, and the explain path).
pub(super) fn single_gpu(s: &Snapshot, req: &Request, workers: &[usize], c: &mut Cands, why: &mut Why<'_>) {
    if !single_gpu_allowed(req) {
        why.add(|| format!("single GPU: {} GPUs per replica requested", req.gpus_per_replica.unwrap_or(0)));
        return;
    }
    let frac = fraction(req);
    for &wi in workers {
        let w = &s.workers[wi];
        if !ram_fits(w, req) {
            why.add(|| ram_reason(w, req));
            continue;
        }
        for (pos, g) in w.gpus.iter().enumerate() {
            if !gpu_usable(req, &g.gpu_type) {
                why.add(|| format!("{}: backend does not run on {}", gpu_name(w, g), g.gpu_type));
                continue;
            }
            if let Some(claim) = single_fit(req, frac, g) {
                c.push_single(wi, pos, claim);
                continue;
            }
            let fr = free(g);
            why.add(|| {
                let (n, t) = (gpu_name(w, g), gib(g.total));
                match frac {
                    Some(f) if frac_claim(g, f) > fr => {
                        format!("{n}: needs {} ({f} × {t}), {} free", gib(frac_claim(g, f)), gib(fr))
                    }
                    Some(f) => {
                        format!("{n}: {f} × {t} = {} is less than the {} needed", gib(frac_claim(g, f)), gib(req.vram))
                    }
                    None => format!("{n}: needs {}, {} free", gib(req.vram), gib(fr)),
                }
            });
        }
    }
}

/// Several GPUs of one type on one worker: the smallest count n ≥ 2 that divides the
/// tensor-parallel divisors and covers the estimate (GPUStack adds GPUs by free memory).
pub(super) fn multi_gpu(s: &Snapshot, req: &Request, workers: &[usize], c: &mut Cands, why: &mut Why<'_>) {
    let want = req.gpus_per_replica.map(|n| n as usize);
    if want.is_some_and(|n| n <= 1) {
        return;
    }
    let frac = fraction(req);
    let mut pool = Vec::new();
    let mut chosen = Vec::new();
    for &wi in workers {
        let w = &s.workers[wi];
        if !ram_fits(w, req) {
            why.add(|| ram_reason(w, req));
            continue;
        }
        for t in types(w) {
            if !gpu_usable(req, t) {
                continue;
            }
            pool.clear();
            let of_type = w.gpus.iter().enumerate().filter(|(_, g)| same(&g.gpu_type, t));
            match frac {
                Some(f) => pool.extend(of_type.filter(|(_, g)| frac_claim(g, f) <= free(g)).map(|(p, _)| p)),
                None => pool.extend(of_type.map(|(p, _)| p)),
            }
            sort_by_free(w, &mut pool);
            match pick_count(req, w, &pool, want) {
                Some(n) => {
                    claims(req, w, &pool[..n], n, &mut chosen);
                    c.push(wi, &chosen, 0..0, false);
                }
                None => why.add(|| multi_reason(req, w, t, &pool, want)),
            }
        }
    }
}

fn pick_count(req: &Request, w: &WorkerView, pool: &[usize], want: Option<usize>) -> Option<usize> {
    let frac = fraction(req);
    let mut sum: u128 = 0;
    for n in 1..=pool.len() {
        let g = &w.gpus[pool[n - 1]];
        if let Some(f) = frac {
            sum += u128::from(frac_claim(g, f));
        }
        if n < 2 || want.is_some_and(|k| k != n) || !divides(req, n) {
            continue;
        }
        let fits = match frac {
            Some(_) => sum >= u128::from(req.vram),
            // Sorted by free memory: the n-th GPU is the tightest one.
            None => free(g) >= req.vram.div_ceil(n as u64),
        };
        if fits {
            return Some(n);
        }
    }
    None
}

fn multi_reason(req: &Request, w: &WorkerView, t: &str, pool: &[usize], want: Option<usize>) -> String {
    let of_type = w.gpus.iter().filter(|g| same(&g.gpu_type, t)).count();
    let head = format!("worker {} ({t}, {of_type} GPUs)", w.name);
    let div = if req.tp_divisors.is_empty() { String::new() } else { format!(" dividing {:?}", req.tp_divisors) };
    match fraction(req) {
        Some(f) => {
            let sum: u128 = pool.iter().map(|&p| u128::from(frac_claim(&w.gpus[p], f))).sum();
            let qual = format!("{} have ≥ {} free", pool.len(), pct(f));
            if let Some(k) = want.filter(|&k| k > pool.len()) {
                format!("{head}: {k} GPUs per replica requested, {qual}")
            } else if sum < u128::from(req.vram) {
                let sum = gib(u64::try_from(sum).unwrap_or(u64::MAX));
                format!("{head}: {qual}, together {sum} ({f} × each), {} needed", gib(req.vram))
            } else {
                let count = want.map_or_else(|| format!("n ≤ {}", pool.len()), |k| k.to_string());
                format!("{head}: {qual}; no GPU count {count}{div} covers {}", gib(req.vram))
            }
        }
        None => {
            let frees: Vec<String> = pool.iter().map(|&p| gib(free(&w.gpus[p]))).collect();
            if let Some(k) = want.filter(|&k| k > pool.len()) {
                format!("{head}: {k} GPUs per replica requested")
            } else {
                let count = want.map_or_else(|| format!("2..={}", pool.len()), |k| k.to_string());
                let (need, frees) = (gib(req.vram), frees.join(", "));
                format!("{head}: {need} split evenly over {count} GPUs{div} does not fit (free: {frees})")
            }
        }
    }
}

/// Several workers with the same count of one GPU type (GPUStack's distributed selection):
/// buckets by count, ≥ 2 workers, the count divides the divisors, every GPU qualifies; all GPUs
/// of each chosen worker are used, the first worker is the main one.
pub(super) fn multi_worker(s: &Snapshot, req: &Request, workers: &[usize], c: &mut Cands, why: &mut Why<'_>) {
    let want = req.gpus_per_replica.map(|n| n as usize);
    let frac = fraction(req);
    // Virtual workers: (worker, gpu type, GPUs of that type), by count descending.
    let mut vws: Vec<(usize, &str, usize)> = Vec::new();
    for &wi in workers {
        let w = &s.workers[wi];
        if !ram_fits(w, req) {
            why.add(|| ram_reason(w, req));
            continue;
        }
        for t in types(w).filter(|t| gpu_usable(req, t)) {
            vws.push((wi, t, w.gpus.iter().filter(|g| same(&g.gpu_type, t)).count()));
        }
    }
    vws.sort_by_key(|v| std::cmp::Reverse(v.2));
    let mut keys: Vec<(usize, &str)> = Vec::new();
    for &(_, t, n) in &vws {
        if !keys.contains(&(n, t)) {
            keys.push((n, t));
        }
    }
    for (count, t) in keys {
        let members: Vec<usize> = vws.iter().filter(|v| v.2 == count && v.1 == t).map(|v| v.0).collect();
        let head = format!("across workers ({count} × {t} each)");
        if members.len() < 2 {
            why.add(|| format!("{head}: only worker {} has this shape; 2 are needed", s.workers[members[0]].name));
            continue;
        }
        if !divides(req, count) {
            why.add(|| format!("{head}: {count} GPUs per worker does not divide {:?}", req.tp_divisors));
            continue;
        }
        let selected = match frac {
            Some(f) => select_fraction(s, req, &members, t, f, count, want, &head, why),
            None => select_estimate(s, req, &members, t, count, want, &head, why),
        };
        let Some(selected) = selected else { continue };
        let mut splits = split(req.vram, selected.len() * count);
        let mut per_worker: Vec<Vec<(usize, u64)>> = Vec::with_capacity(selected.len());
        for &wi in &selected {
            let mut gpus = Vec::with_capacity(count);
            for (p, g) in s.workers[wi].gpus.iter().enumerate().filter(|(_, g)| same(&g.gpu_type, t)) {
                let claim = match frac {
                    Some(f) => frac_claim(g, f),
                    None => splits.next().unwrap_or(0),
                };
                gpus.push((p, claim));
            }
            per_worker.push(gpus);
        }
        let sub_start = c.subs.len();
        for (&wi, gpus) in selected.iter().zip(&per_worker).skip(1) {
            c.push_sub(wi, gpus);
        }
        c.push(selected[0], &per_worker[0], sub_start..c.subs.len(), false);
    }
}

/// Fraction claims: add qualifying workers in order until Σ total·f covers the estimate
/// (or, with a GPU count set, until exactly that many GPUs).
#[allow(clippy::too_many_arguments)]
fn select_fraction(
    s: &Snapshot,
    req: &Request,
    members: &[usize],
    t: &str,
    f: f64,
    count: usize,
    want: Option<usize>,
    head: &str,
    why: &mut Why<'_>,
) -> Option<Vec<usize>> {
    let mut selected = Vec::new();
    let mut sum: u128 = 0;
    let done = |selected: &Vec<usize>, sum: u128| match want {
        Some(k) => selected.len() * count == k && sum >= u128::from(req.vram),
        None => sum >= u128::from(req.vram),
    };
    for &wi in members {
        let w = &s.workers[wi];
        let mut gpus = w.gpus.iter().filter(|g| same(&g.gpu_type, t));
        if let Some(g) = gpus.clone().find(|g| frac_claim(g, f) > free(g)) {
            why.add(|| format!("{head}: {} has less than {} free", gpu_name(w, g), pct(f)));
            continue;
        }
        selected.push(wi);
        sum += gpus.by_ref().map(|g| u128::from(frac_claim(g, f))).sum::<u128>();
        if done(&selected, sum) || want.is_some_and(|k| selected.len() * count >= k) {
            break;
        }
    }
    if selected.len() >= 2 && done(&selected, sum) {
        return Some(selected);
    }
    why.add(|| {
        let sum = gib(u64::try_from(sum).unwrap_or(u64::MAX));
        let wanted = want.map_or(String::new(), |k| format!(" ({k} GPUs per replica requested)"));
        format!("{head}: {} qualifying workers give {sum}, {} needed{wanted}", selected.len(), gib(req.vram))
    });
    None
}

/// Estimate claims split evenly: the fewest workers (most free first) whose tightest GPU holds
/// its share.
#[allow(clippy::too_many_arguments)]
fn select_estimate(
    s: &Snapshot,
    req: &Request,
    members: &[usize],
    t: &str,
    count: usize,
    want: Option<usize>,
    head: &str,
    why: &mut Why<'_>,
) -> Option<Vec<usize>> {
    let min_free = |wi: usize| s.workers[wi].gpus.iter().filter(|g| same(&g.gpu_type, t)).map(free).min().unwrap_or(0);
    let mut by_free: Vec<(usize, u64)> = members.iter().map(|&wi| (wi, min_free(wi))).collect();
    by_free.sort_by_key(|v| std::cmp::Reverse(v.1));
    for k in 2..=by_free.len() {
        let n = k * count;
        if want.is_some_and(|w| w != n) {
            continue;
        }
        if by_free[k - 1].1 >= req.vram.div_ceil(n as u64) {
            return Some(by_free[..k].iter().map(|&(wi, _)| wi).collect());
        }
    }
    why.add(|| {
        let wanted = want.map_or(String::new(), |k| format!(" ({k} GPUs per replica requested)"));
        format!("{head}: {} split evenly does not fit on {} workers{wanted}", gib(req.vram), by_free.len())
    });
    None
}

/// No GPU: RAM only, when CPU offloading is on and the backend runs on CPU.
pub(super) fn cpu_only(s: &Snapshot, req: &Request, workers: &[usize], c: &mut Cands, why: &mut Why<'_>) {
    if !req.cpu_offloading {
        why.add(|| "CPU: CPU offloading is off".to_string());
        return;
    }
    if !cpu_allowed(req) {
        why.add(|| format!("CPU: backend does not run on CPU (runs on {})", req.frameworks.join(", ")));
        return;
    }
    for &wi in workers {
        let w = &s.workers[wi];
        if ram_fits(w, req) {
            c.push(wi, &[], 0..0, false);
        } else {
            why.add(|| ram_reason(w, req));
        }
    }
}

/// Manual selection: only the named GPUs, `gpus_per_replica` of them (auto: largest power of two
/// ≤ selected / replicas). Candidates that do not really fit are pushed flagged `overcommit`.
pub(super) fn manual(
    s: &Snapshot,
    req: &Request,
    workers: &[usize],
    ids: &[GpuId<'_>],
    c: &mut Cands,
    why: &mut Why<'_>,
) {
    let n = req.gpus_per_replica.unwrap_or_else(|| gpus_per_replica_auto(ids.len(), req.replicas)).max(1) as usize;
    if !divides(req, n) {
        why.add(|| format!("GPU selection: {n} GPUs per replica does not divide {:?}", req.tp_divisors));
        return;
    }
    // Selected GPUs per (worker, type), most free first.
    let mut groups: Vec<(usize, &str, Vec<usize>)> = Vec::new();
    for &wi in workers {
        let w = &s.workers[wi];
        let mut sel: Vec<usize> = Vec::new();
        for id in ids.iter().filter(|id| id.worker == w.name) {
            match w.gpus.iter().position(|g| g.gpu_type == id.gpu_type && g.index == id.index) {
                None => why.add(|| {
                    format!("GPU {}:{}:{}: no such GPU on worker {}", id.worker, id.gpu_type, id.index, w.name)
                }),
                Some(_) if !gpu_usable(req, id.gpu_type) => why.add(|| {
                    format!("GPU {}:{}:{}: backend does not run on {}", id.worker, id.gpu_type, id.index, id.gpu_type)
                }),
                Some(p) if !sel.contains(&p) => sel.push(p),
                Some(_) => {}
            }
        }
        for t in types(w) {
            let mut g: Vec<usize> = sel.iter().copied().filter(|&p| w.gpus[p].gpu_type == t).collect();
            if !g.is_empty() {
                sort_by_free(w, &mut g);
                groups.push((wi, t, g));
            }
        }
    }
    let mut chosen = Vec::new();
    for (wi, _, g) in &groups {
        if g.len() >= n {
            claims(req, &s.workers[*wi], &g[..n], n, &mut chosen);
            c.push(*wi, &chosen, 0..0, false);
            flag_overcommit(s, req, c);
        }
    }
    if !c.list.is_empty() {
        return;
    }
    if req.distributed {
        manual_across_workers(s, req, &groups, n, c, why);
        if !c.list.is_empty() {
            return;
        }
    }
    if groups.is_empty() {
        why.add(|| "GPU selection: none of the selected GPUs is usable".to_string());
    }
    for (wi, t, g) in &groups {
        why.add(|| {
            format!("GPU selection: worker {} has {} selected {t} GPUs, {n} per replica", s.workers[*wi].name, g.len())
        });
    }
}

fn flag_overcommit(s: &Snapshot, req: &Request, c: &mut Cands) {
    if let Some(last) = c.list.last() {
        let over = manual_issues(s, req, c, last, &mut Why(None));
        if let Some(last) = c.list.last_mut() {
            last.overcommit = over;
        }
    }
}

/// Manual selection spread over several workers (distributed on): workers of one GPU type with
/// the same selected count, in order, until exactly `n` GPUs.
fn manual_across_workers(
    s: &Snapshot,
    req: &Request,
    groups: &[(usize, &str, Vec<usize>)],
    n: usize,
    c: &mut Cands,
    why: &mut Why<'_>,
) {
    let mut seen: Vec<&str> = Vec::new();
    for (_, t, first) in groups {
        if seen.contains(t) {
            continue;
        }
        seen.push(t);
        let per = first.len();
        let members: Vec<&(usize, &str, Vec<usize>)> =
            groups.iter().filter(|g| g.1 == *t && g.2.len() == per).take(n / per.max(1)).collect();
        if members.len() < 2 || members.len() * per != n || !divides(req, per) {
            why.add(|| {
                format!(
                    "GPU selection across workers ({t}): {} workers × {per} selected GPUs ≠ {n} per replica",
                    members.len()
                )
            });
            continue;
        }
        let mut splits = split(req.vram, n);
        let frac = fraction(req);
        let sub_start = c.subs.len();
        let mut claims_of = |wi: usize, g: &[usize]| -> Vec<(usize, u64)> {
            let w = &s.workers[wi];
            g.iter()
                .map(|&p| match frac {
                    Some(f) => (p, frac_claim(&w.gpus[p], f)),
                    None => (p, splits.next().unwrap_or(0)),
                })
                .collect()
        };
        let main = claims_of(members[0].0, &members[0].2);
        for m in &members[1..] {
            let sub = claims_of(m.0, &m.2);
            c.push_sub(m.0, &sub);
        }
        c.push(members[0].0, &main, sub_start..c.subs.len(), false);
        flag_overcommit(s, req, c);
    }
}

/// Why a manual candidate does not really fit; `true` when it overcommits.
pub(super) fn manual_issues(s: &Snapshot, req: &Request, c: &Cands, cand: &Cand, why: &mut Why<'_>) -> bool {
    let mut over = false;
    let mut sum: u128 = 0;
    let frac = fraction(req);
    let mut check = |w: &WorkerView, gpus: &[(usize, u64)], why: &mut Why<'_>| {
        for &(p, claim) in gpus {
            let g = &w.gpus[p];
            sum += u128::from(claim);
            if claim > free(g) {
                over = true;
                why.add(|| match frac {
                    Some(f) => {
                        let (n, t) = (gpu_name(w, g), gib(g.total));
                        format!("{n}: needs {} ({f} × {t}), {} free", gib(claim), gib(free(g)))
                    }
                    None => format!("{}: needs {}, {} free", gpu_name(w, g), gib(claim), gib(free(g))),
                });
            }
        }
    };
    let main = &s.workers[cand.worker];
    check(main, c.main_gpus(cand), why);
    for sub in c.subs_of(cand) {
        check(&s.workers[sub.worker], &c.gpus[sub.gpus.clone()], why);
    }
    if sum < u128::from(req.vram) {
        over = true;
        why.add(|| {
            let sum = gib(u64::try_from(sum).unwrap_or(u64::MAX));
            format!("{} selected GPUs claim {sum}, {} needed", cand.gpu_count, gib(req.vram))
        });
    }
    if !ram_fits(main, req) {
        over = true;
        why.add(|| ram_reason(main, req));
    }
    over
}
