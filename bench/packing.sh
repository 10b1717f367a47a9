#!/usr/bin/env bash
# Packing benchmark (issue 27): replicas per 80 GiB GPU and GPUs needed for a mixed fleet
# (embeddings, rerankers, 0.5-8 B chat) under `gpu_memory: reserve` (GPUStack's rule) and `fit`,
# next to GPUStack 2.3's placement by its rules; and the estimate-accuracy table for the model zoo
# in tests/fixtures/models/zoo.json (config.json facts, no hub access). Uses the production
# estimate and placement code (examples/bench_packing.rs); no server, no GPU.
# Usage: bench/packing.sh   (prints markdown; docs/benchmarks.md keeps the latest results)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --example bench_packing
