"""Vector search: xmodal's exact index and Faiss ANN indexes vs raw Faiss IndexFlatIP, side by side.

For each size (default 100k and 1M vectors, dim 512, random unit vectors = the worst case for ANN,
or --data lowdim: a 32-dim subspace plus noise, closer to real embeddings):

  exact: top-10 latency of `build_index(..., "exact")` (float16 storage) vs `faiss.IndexFlatIP` on
         the same data, one query at a time and in batches of 16, timed in interleaved rounds;
         recall@10 / identical rows vs IndexFlatIP; resident memory of the loaded index (measured
         in a fresh process: VmRSS after `VectorIndex.load` minus before) vs the float16 bytes.
  ANN:   build time and memory, `tune_index` to recall@10 >= --target on held-out queries, then
         single-query QPS and recall@10 at the chosen setting vs the exact index's QPS.

    python benchmarks/search.py [--sizes 100000,1000000] [--ann HNSW32,IVF{nlist},Flat] [--json out.json]

Goals (issue 4): exact <= 0.5x IndexFlatIP time at recall@10 >= 0.999, memory <= 1.2x the float16
bytes; ANN >= 10x exact QPS at recall@10 >= 0.95.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # Faiss's OpenMP threads spin-wait; on shared cores that hurts

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from xmodal.store.vector_index import VectorIndex, build_index, tune_index


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def unit_vectors(n: int, dim: int, seed: int, data: str) -> np.ndarray:
    """Unit vectors generated in chunks. random: uniform on the sphere. lowdim: a random 32-dim
    subspace plus 10% isotropic noise (CLIP embeddings have an intrinsic dimension of a few tens)."""
    basis = np.random.default_rng(12345).standard_normal((32, dim), dtype=np.float32) / np.sqrt(32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        count = min(65536, n - start)
        chunk = rng.standard_normal((count, dim), dtype=np.float32)
        if data == "lowdim":
            chunk = rng.standard_normal((count, 32), dtype=np.float32) @ basis + 0.1 * chunk / np.sqrt(dim)
        out[start : start + count] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def timed_rounds(methods: dict, queries: np.ndarray, batch: int, rounds: int) -> dict[str, float]:
    """Median over rounds of ms per query; every round runs every method over all queries, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, search in methods.items():
            started = time.perf_counter()
            for start in range(0, len(queries), batch):
                search(queries[start : start + batch])
            samples[name].append((time.perf_counter() - started) * 1e3 / len(queries))
    return {name: statistics.median(values) for name, values in samples.items()}


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def loaded_rss(path: Path) -> int:
    """VmRSS growth of a fresh process loading the saved index."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure-load", str(path)], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def measure_load(path: str) -> None:
    np.zeros(1)  # imports done: measure only the index
    gc.collect()
    before = rss_bytes()
    index = VectorIndex.load(path)
    print(rss_bytes() - before)
    del index


def bench_size(n: int, args: argparse.Namespace) -> dict:
    print(f"\n## {n:,} x {args.dim} {args.data} unit vectors", flush=True)
    vectors = unit_vectors(n, args.dim, 0, args.data)
    ids = np.arange(n, dtype=np.int64)
    queries = unit_vectors(args.queries, args.dim, 1, args.data)
    fp16_bytes = n * args.dim * 2
    result: dict = {"n": n, "dim": args.dim, "data": args.data, "fp16_bytes": fp16_bytes}

    started = time.perf_counter()
    exact = build_index(ids, vectors, "exact")
    result["exact_build_s"] = time.perf_counter() - started
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "exact.idx"
        exact.save(path)
        result["exact_loaded_rss"] = loaded_rss(path)
    result["exact_memory_bytes"] = exact.memory_bytes()

    recall_queries = unit_vectors(args.recall_queries, args.dim, 3, args.data)
    truth = flat.search(recall_queries, 10)[1]
    found = exact.search(recall_queries, 10)[1]
    result["exact_recall@10"] = recall_at(found, truth)
    result["exact_identical_rows"] = float(np.mean((found == truth).all(axis=1)))

    for batch in (1, args.batch):
        times = timed_rounds(
            {"IndexFlatIP": lambda q: flat.search(q, 10), "exact": lambda q: exact.search(q, 10)},
            queries,
            batch,
            args.rounds,
        )
        result[f"batch{batch}"] = times
        print(
            f"top-10, batch {batch:>2}: IndexFlatIP {times['IndexFlatIP']:8.2f} ms/query   "
            f"xmodal exact {times['exact']:8.2f} ms/query   ratio {times['exact'] / times['IndexFlatIP']:.3f}x",
            flush=True,
        )
    print(
        f"exact recall@10 vs IndexFlatIP {result['exact_recall@10']:.4f} (identical rows "
        f"{result['exact_identical_rows']:.1%}); loaded RSS {result['exact_loaded_rss'] / 2**20:.0f} MiB = "
        f"{result['exact_loaded_rss'] / fp16_bytes:.3f}x the float16 bytes ({fp16_bytes / 2**20:.0f} MiB); "
        f"build {result['exact_build_s']:.1f} s",
        flush=True,
    )
    flat.reset()  # free its float32 copy before the ANN builds
    gc.collect()

    result["ann"] = [bench_ann(spec, vectors, ids, queries, recall_queries, truth, exact, args) for spec in args.ann]
    return result


def bench_ann(spec_template, vectors, ids, queries, recall_queries, truth, exact, args) -> dict:
    n = len(ids)
    nlist = 2 ** int(round(np.log2(np.sqrt(n))))
    spec = spec_template.format(nlist=nlist)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    index = build_index(ids, vectors, spec)
    build_s = time.perf_counter() - started
    memory = rss_bytes() - before
    tune_queries = unit_vectors(args.tune_queries, args.dim, 2, args.data)
    report = tune_index(index, vectors, target_recall=args.target, queries=tune_queries)
    recall = recall_at(index.search(recall_queries, 10)[1], truth)
    times = timed_rounds(
        {"exact": lambda q: exact.search(q, 10), spec: lambda q: index.search(q, 10)}, queries, 1, args.rounds
    )
    speedup = times["exact"] / times[spec]
    print(
        f"{spec}: build {build_s:.1f} s, +{memory / 2**20:.0f} MiB RSS ({index.memory_bytes() / 2**20:.0f} MiB "
        f"counted); tuned {report.chosen or '-'} (target met: {report.met}); recall@10 {recall:.3f} on other "
        f"queries; {1e3 / times[spec]:.0f} QPS = {speedup:.1f}x exact ({1e3 / times['exact']:.0f} QPS)",
        flush=True,
    )
    for setting in report.settings:
        print(f"    {setting.params:>14}  recall@10 {setting.recall:.3f}  {setting.qps:9.0f} QPS (batch)")
    out = {
        "spec": spec,
        "build_s": build_s,
        "rss_delta_bytes": memory,
        "memory_bytes": index.memory_bytes(),
        "chosen": report.chosen,
        "met": report.met,
        "recall@10": recall,
        "ms_per_query": times[spec],
        "exact_ms_per_query": times["exact"],
        "qps_vs_exact": speedup,
        "sweep": [vars(s) for s in report.settings],
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated collection sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", choices=["random", "lowdim"], default="random")
    parser.add_argument("--queries", type=int, default=32, help="timed queries per method and round")
    parser.add_argument("--recall-queries", type=int, default=500, help="queries for recall@10 vs IndexFlatIP")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ann", default="HNSW32;IVF{nlist},Flat", help="';'-separated specs ({nlist} ~ sqrt(n))")
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 target for tune_index")
    parser.add_argument("--tune-queries", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure-load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_load:
        measure_load(args.measure_load)
        return
    args.ann = [s for s in args.ann.split(";") if s]
    print(f"faiss {faiss.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    results = [bench_size(int(n), args) for n in args.sizes.split(",")]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
