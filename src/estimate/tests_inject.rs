//! Parameters injected for replicas spread across workers (vLLM over Ray, SGLang multi-node).

use super::Estimate;
use super::tests_calc::{GIB, inject, llm, run};

/// Backend, estimate, GPUs per worker × workers, user parameters, wanted, unwanted prefixes.
type DistCase<'a> = (&'a str, &'a Estimate, (u32, u32), &'a [&'a str], &'a [&'a str], &'a [&'a str]);

#[test]
fn distributed_replicas_get_parallelism_across_workers() {
    let meta = llm();
    let vllm = run(&meta, "vLLM", &[], None, 2);
    let sglang = run(&meta, "SGLang", &[], Some(80 * GIB), 2);
    let cases: [DistCase<'_>; 5] = [
        (
            "vLLM",
            &vllm,
            (2, 2),
            &[],
            &["--tensor-parallel-size=2", "--pipeline-parallel-size=2", "--distributed-executor-backend=ray"],
            &[],
        ),
        (
            "vLLM",
            &vllm,
            (1, 3),
            &[],
            &["--tensor-parallel-size=1", "--pipeline-parallel-size=3", "--distributed-executor-backend=ray"],
            &[],
        ),
        // The user's own parallelism wins; Ray is still the executor across workers.
        ("vLLM", &vllm, (2, 2), &["--pp 4"], &["--distributed-executor-backend=ray"], &["--tensor-parallel-size"]),
        ("SGLang", &sglang, (2, 2), &[], &["--tp-size=4", "--nnodes=2"], &["--node-rank"]),
        ("SGLang", &sglang, (1, 1), &[], &[], &["--nnodes", "--tp-size"]),
    ];
    for (backend, est, shape, user, wanted, unwanted) in cases {
        let got = inject(backend, &meta, est, shape, user, None, None);
        for w in wanted {
            assert!(got.args.contains(&(*w).to_owned()), "{backend} {shape:?} {user:?}: {:?} lacks {w}", got.args);
        }
        for u in unwanted {
            assert!(!got.args.iter().any(|a| a.starts_with(u)), "{backend} {shape:?}: {:?} has {u}", got.args);
        }
    }
}
