"""Retrieval metrics with the exact definitions of design §4.

Rank of a query = 1-based position of its best positive when the gallery is sorted by score,
descending, ties kept in gallery order (stable sort). With several positives the best (minimum)
rank counts. R@K = share of queries with rank <= K (fraction), MedR / MnR = median / mean rank,
MR = mean of R@1, R@5, R@10.

No sort is needed: the rank of the best-scoring positive p is 1 + #(items scoring above p) +
#(items scoring equal to p that come before it). Queries are processed in blocks so memory stays
bounded whatever the gallery size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from xmodal.errors import InvalidArgumentError

DEFAULT_KS = (1, 5, 10)
_BLOCK_ELEMENTS = 1 << 24  # ~64 MB of float32 scores per block


def _positives_csr(positives: Sequence[Iterable[int]], n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten positives into (indices, offsets); every query needs at least one valid positive."""
    lists = [np.fromiter(p, dtype=np.int64) for p in positives]
    for q, p in enumerate(lists):
        if p.size == 0:
            raise InvalidArgumentError(f"positives[{q}]", [], "at least one gallery index per query")
        if p.min() < 0 or p.max() >= n_gallery:
            raise InvalidArgumentError(f"positives[{q}]", p.tolist(), f"indices in [0, {n_gallery})")
    counts = np.array([p.size for p in lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate(lists) if lists else np.zeros(0, np.int64), offsets


def _block_ranks(scores: np.ndarray, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Ranks for one block of queries: scores (B, G), positives in CSR form for those B."""
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(len(scores)), counts)
    values = scores[rows, flat]
    best = np.maximum.reduceat(values, offsets[:-1])
    # Among equally best-scoring positives the one earliest in the gallery ranks first.
    candidates = np.where(values == np.repeat(best, counts), flat, np.iinfo(np.int64).max)
    best_index = np.minimum.reduceat(candidates, offsets[:-1])
    above = np.count_nonzero(scores > best[:, None], axis=1)
    equal = np.count_nonzero(scores == best[:, None], axis=1)
    ranks = above + 1
    tied = np.flatnonzero(equal > 1)  # rare: only these need the gallery-order tie break
    for q in tied:
        ranks[q] += np.count_nonzero(scores[q, : best_index[q]] == best[q])
    return ranks


def ranks_from_similarity(similarity: np.ndarray, positives: Sequence[Iterable[int]]) -> np.ndarray:
    """1-based rank of each query's best positive; similarity is (Q, G)."""
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise InvalidArgumentError("similarity", f"shape {similarity.shape}", "a 2-D (queries, gallery) array")
    if len(positives) != similarity.shape[0]:
        raise InvalidArgumentError("positives", f"{len(positives)} entries", f"one per query ({similarity.shape[0]})")
    flat, offsets = _positives_csr(positives, similarity.shape[1])
    block = max(1, _BLOCK_ELEMENTS // max(1, similarity.shape[1]))
    out = np.empty(similarity.shape[0], dtype=np.int64)
    for start in range(0, similarity.shape[0], block):
        stop = min(start + block, similarity.shape[0])
        sub = offsets[start : stop + 1]
        scores = np.asarray(similarity[start:stop], dtype=np.float32)
        out[start:stop] = _block_ranks(scores, flat[sub[0] : sub[-1]], sub - sub[0])
    return out


def ranks_from_embeddings(
    queries: np.ndarray, gallery: np.ndarray, positives: Sequence[Iterable[int]]
) -> np.ndarray:
    """Ranks by cosine/inner product of unit embeddings, never holding the full (Q, G) matrix."""
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if len(positives) != len(queries):
        raise InvalidArgumentError("positives", f"{len(positives)} entries", f"one per query ({len(queries)})")
    flat, offsets = _positives_csr(positives, len(gallery))
    block = max(1, _BLOCK_ELEMENTS // max(1, len(gallery)))
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block):
        stop = min(start + block, len(queries))
        sub = offsets[start : stop + 1]
        out[start:stop] = _block_ranks(queries[start:stop] @ gallery.T, flat[sub[0] : sub[-1]], sub - sub[0])
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@K (fractions) for each K, MedR, MnR, and MR = mean of R@1/5/10 when those are present."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise InvalidArgumentError("ranks", "[]", "at least one query")
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MedR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    recall = [f"R@{k}" for k in DEFAULT_KS]
    if all(r in out for r in recall):
        out["MR"] = float(np.mean([out[r] for r in recall]))
    return out


def rank_metrics(
    similarity: np.ndarray, positives: Sequence[Iterable[int]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """{"R@1","R@5","R@10" (fractions), "MedR", "MnR", "MR"} for a (Q, G) similarity matrix."""
    return metrics_from_ranks(ranks_from_similarity(similarity, positives), ks)
