"""Pick an ANN index's search parameters: the cheapest setting whose recall@k meets a target.

A sweep measured properly: recall@k against exact search on held-out queries for a rising
sweep of nprobe (IVF) or efSearch (HNSW); the first setting that meets the target wins (cost grows
with the parameter) and becomes the index's default `params`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.store.index.base import VectorIndex, as_ids, format_params, parse_params

log = logging.getLogger(__name__)

EF_SEARCH_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
DEFAULT_QUERIES = 500


@dataclass(frozen=True)
class TuneSetting:
    params: str  # e.g. "nprobe=16"
    recall: float  # mean recall@k against exact search
    qps: float  # queries per second, the held-out queries searched as one batch


@dataclass(frozen=True)
class TuneReport:
    spec: str
    k: int
    target_recall: float
    n_queries: int
    chosen: str  # the params now stored as the index's default
    met: bool  # whether `chosen` reaches the target (else it is the best recall of the sweep)
    exact_qps: float  # brute-force float32 search of the same queries, for comparison
    settings: list[TuneSetting] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sweep(index: VectorIndex) -> list[str]:
    """The settings tried for this index, cheapest first ([""] when there is nothing to tune)."""
    names = index.search_param_names()
    if "nprobe" in names:
        nlist = index.ivf.nlist
        values = sorted({min(nlist, 2**i) for i in range(int(np.log2(nlist)) + 2)})
        return [f"nprobe={v}" for v in values]
    if "efSearch" in names:
        return [f"efSearch={v}" for v in EF_SEARCH_SWEEP]
    return [""]


def tune_index(
    index: VectorIndex,
    vectors: np.ndarray | None = None,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    queries: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    seed: int = 0,
    truth: np.ndarray | None = None,
    exact_qps: float | None = None,
) -> TuneReport:
    """Measure recall@k of each setting of `sweep(index)`, store the cheapest meeting `target_recall`.

    vectors: the indexed vectors (float32 rows in `ids` order, default `index.ids`): the ground truth
    is an exact float32 search over them. queries: held-out queries (say, embeddings of typical text
    queries); by default `held_out_queries(vectors, DEFAULT_QUERIES)`. An index too large to hold its
    vectors passes `queries` with their exact top-k ids as `truth` instead (and the exact search's
    measured `exact_qps`).
    """
    if not 0 < target_recall <= 1:
        raise InvalidArgumentError("target_recall", target_recall, "a fraction in (0, 1]")
    if truth is None:
        queries, truth, exact_qps = _exact_truth(index, vectors, k, queries, ids, seed)
    elif queries is None or len(queries) != len(truth):
        raise InvalidArgumentError("queries", "missing or of another count", "one query per row of `truth`")
    queries = np.ascontiguousarray(queries, dtype=np.float32)

    settings: list[TuneSetting] = []
    defaults = parse_params(index.params)  # what the sweep does not set (a refined index's k_factor) stays
    for swept in sweep(index):
        params = format_params({**defaults, **parse_params(swept)})
        started = time.perf_counter()
        _, found = index.search(queries, k, params=params)
        qps = len(queries) / (time.perf_counter() - started)
        recall = _recall(found, truth)
        settings.append(TuneSetting(params, recall, qps))
        log.info("%s %s: recall@%d %.4f, %.0f queries/s", index.spec, params or "(exact)", k, recall, qps)
        if recall >= target_recall:
            break
    best = next((s for s in settings if s.recall >= target_recall), max(settings, key=lambda s: s.recall))
    if best.recall < target_recall:
        log.warning(
            "%s reaches recall@%d %.3f at best, below the target %.3f", index.spec, k, best.recall, target_recall
        )
    index.params = best.params
    return TuneReport(
        spec=index.spec,
        k=k,
        target_recall=target_recall,
        n_queries=len(queries),
        chosen=best.params,
        met=best.recall >= target_recall,
        exact_qps=float(exact_qps or 0.0),
        settings=settings,
    )


def _exact_truth(
    index: VectorIndex,
    vectors: np.ndarray | None,
    k: int,
    queries: np.ndarray | None,
    ids: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(queries, their exact top-k ids, exact queries/s) over the indexed `vectors`."""
    ids = index.ids if ids is None else as_ids(ids)
    vectors = np.ascontiguousarray(vectors if vectors is not None else np.empty((0, index.dim)), dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids) or len(ids) == 0:
        raise InvalidArgumentError("vectors", f"shape {vectors.shape}", f"one row per indexed id ({len(ids)})")
    if queries is None:
        queries = held_out_queries(vectors, DEFAULT_QUERIES, seed)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    started = time.perf_counter()
    _, truth_rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return queries, ids[truth_rows], len(queries) / (time.perf_counter() - started)


def held_out_queries(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Queries near the data but not in the index: random rows moved 45 degrees in a random direction.

    Rows of the index itself would flatter a graph index (the walk lands on the query's own node,
    whose edges are its neighbours), so each drawn row gets unit-norm Gaussian noise and is renormalized.
    """
    rng = np.random.default_rng(seed)
    rows = vectors[rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)]
    noise = rng.standard_normal(rows.shape, dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    moved = rows + noise
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, np.count_nonzero(t >= 0))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))
