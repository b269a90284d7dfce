"""Scoring one block of stored vectors against queries with ONNX Runtime: cast to float32 (in
cache), one GEMM, a bias (-inf for rows a filter leaves out), top-k — the kernel of exact search.

Why ONNX Runtime and not numpy or Faiss: numpy has no fast float16 kernel (its float16 -> float32
cast alone runs at ~0.6 GB/s here, a float16 matmul takes seconds per million rows), and Faiss,
whose scalar-quantizer scan is ~1.7x faster per row (BENCHMARKS.md), costs ~50 ms to import and
cannot scan a mapped file without copying it — while ONNX Runtime is loaded anyway for the text
tower and takes numpy views of the mapped file as they are. The graphs ship with xmodal
(`graphs/`, made by scripts/make_scan_graphs.py).
"""

from __future__ import annotations

import threading
from functools import cache
from importlib import resources

import numpy as np

_ZERO_BIAS = np.zeros(1, dtype=np.float32)
_lock = threading.Lock()


@cache
def _session(storage: str):
    """One single-threaded session per storage dtype for the whole process (the callers' threads
    are the parallelism; sessions are safe to run from several threads at once)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    graph = resources.files("xmodal.store.index").joinpath("graphs", f"scan_{storage}.onnx").read_bytes()
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def scan_block(
    rows: np.ndarray, queries: np.ndarray, k: int, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers), each (Q, min(k, len(rows))), best first, of float16/float32 `rows`
    against float32 `queries`; `bias` (len(rows),) is added to every query's scores (-inf drops a row)."""
    storage = "fp16" if rows.dtype == np.float16 else "fp32"
    with _lock:  # the first call in each thread would otherwise race to build the session
        session = _session(storage)
    feeds = {
        "vectors": rows,
        "queries": queries,
        "bias": _ZERO_BIAS if bias is None else bias,
        "k": np.array([min(k, len(rows))], dtype=np.int64),
    }
    values, indices = session.run(None, feeds)
    return values, indices
