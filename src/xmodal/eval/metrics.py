"""Retrieval metrics, defined exactly (the same numbers as CLIP_benchmark's recall@k and Chinese-CLIP's MR).

Rank of a query = 1-based position of its best positive when the gallery is sorted by score,
descending, ties kept in gallery order (stable sort). With several positives the best (minimum)
rank counts. R@K = share of queries with rank <= K (fraction), MedR / MnR = median / mean rank,
MR = mean of R@1, R@5, R@10.

No sort is needed: the rank of the best-scoring positive p is 1 + #(items scoring above p) +
#(items scoring equal to p that come before it). Scores are visited in row chunks small enough
to stay in the CPU's L2 cache, so the second comparison (equality, for the tie break) costs far
less than the first; rows are counted by summing the boolean bytes as 64-bit words, which numpy's
`count_nonzero(axis=1)` does several times slower. Memory stays bounded whatever the gallery size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

import numpy as np

from xmodal.errors import InvalidArgumentError

DEFAULT_KS = (1, 5, 10)
_BLOCK_ELEMENTS = 1 << 24  # ~64 MB of float32 scores per matmul / conversion block
_CHUNK_ELEMENTS = 1 << 17  # ~512 KB of scores per counting chunk: stays in L2 for the second pass
_LANE_LIMIT = 255  # uint64 words summed per step: each byte lane then holds a count <= 255


def _positives_csr(positives: Sequence[Iterable[int]], n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten positives into (indices, offsets); every query needs at least one valid positive.

    A 1-D integer array means one positive per query, a 2-D one a fixed number per query.
    """
    if isinstance(positives, np.ndarray) and positives.dtype.kind in "iu" and positives.ndim in (1, 2):
        flat = positives.astype(np.int64).reshape(-1)
        per = 1 if positives.ndim == 1 else positives.shape[1]
        counts = np.full(len(positives), per, dtype=np.int64)
    else:
        lists = [p if isinstance(p, (list, tuple, range, np.ndarray)) else list(p) for p in positives]
        counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(counts.sum()))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if (counts == 0).any():
        q = int(np.flatnonzero(counts == 0)[0])
        raise InvalidArgumentError(f"positives[{q}]", [], "at least one gallery index per query")
    bad = (flat < 0) | (flat >= n_gallery)
    if bad.any():
        q = int(np.searchsorted(offsets, np.flatnonzero(bad)[0], side="right") - 1)
        raise InvalidArgumentError(
            f"positives[{q}]", flat[offsets[q] : offsets[q + 1]].tolist(), f"indices in [0, {n_gallery})"
        )
    return flat, offsets


def _best_positives(
    values: np.ndarray, flat: np.ndarray, offsets: np.ndarray, first: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the best positive score and, among equally best positives, the earliest index."""
    counts = np.diff(offsets)
    best = np.maximum.reduceat(values, offsets[:-1])
    if np.isnan(best).any():
        q = first + int(np.flatnonzero(np.isnan(best))[0])
        raise InvalidArgumentError(f"score of a positive of query {q}", "NaN", "finite scores")
    candidates = np.where(values == np.repeat(best, counts), flat, np.iinfo(np.int64).max)
    return best, np.minimum.reduceat(candidates, offsets[:-1])


class _RankCounter:
    """Counts, per query row of a score block, the items ranked before its best positive."""

    def __init__(self, n_gallery: int):
        self.n_gallery = n_gallery
        self.rows = max(1, _CHUNK_ELEMENTS // max(1, n_gallery))
        padded = -(-n_gallery // 8) * 8  # whole uint64 words per row; the padding stays False
        self.mask = np.zeros((self.rows, padded), dtype=bool)
        self.word_steps = np.arange(0, padded // 8, _LANE_LIMIT)

    def _row_counts(self, mask: np.ndarray) -> np.ndarray:
        """True values per row: bool bytes summed as uint64 words, then the 8 byte lanes summed."""
        lanes = np.add.reduceat(mask.view(np.uint64), self.word_steps, axis=1)
        return lanes.view(np.uint8).sum(axis=1, dtype=np.int64)

    def ranks(self, scores: np.ndarray, flat: np.ndarray, offsets: np.ndarray, first: int = 0) -> np.ndarray:
        """1-based ranks for a (B, G) block of queries first..first+B-1; their positives in CSR form."""
        values = scores[np.repeat(np.arange(len(scores)), np.diff(offsets)), flat]
        best, best_index = _best_positives(values, flat, offsets, first)
        ranks = np.ones(len(scores), dtype=np.int64)
        equal = np.empty(len(scores), dtype=np.int64)
        g = self.n_gallery
        for start in range(0, len(scores), self.rows):
            stop = min(start + self.rows, len(scores))
            chunk, threshold, mask = scores[start:stop], best[start:stop, None], self.mask[: stop - start]
            np.greater(chunk, threshold, out=mask[:, :g])
            ranks[start:stop] += self._row_counts(mask)
            np.equal(chunk, threshold, out=mask[:, :g])
            equal[start:stop] = self._row_counts(mask)
        for q in np.flatnonzero(equal > 1):  # rare: only tied rows need the gallery-order tie break
            ranks[q] += np.count_nonzero(scores[q, : best_index[q]] == best[q])
        return ranks


def _column_ranks(gallery_rows: np.ndarray, flat: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Ranks of the columns of a C-ordered (G, Q) matrix as queries, streaming its rows.

    This is `ranks_from_similarity(S.T)` without a transposed copy (which costs more than
    ranking): each chunk of gallery rows is compared with every column's threshold at once and
    the booleans are summed down the columns as bytes (at most 255 rows per chunk).
    """
    n_gallery, n_queries = gallery_rows.shape
    columns = np.repeat(np.arange(n_queries), np.diff(offsets))
    best, best_index = _best_positives(gallery_rows[flat, columns].astype(dtype), flat, offsets, 0)
    rows = max(1, min(_LANE_LIMIT, _CHUNK_ELEMENTS // max(1, n_queries)))
    mask = np.empty((rows, n_queries), dtype=bool)
    above = np.zeros(n_queries, dtype=np.int64)
    equal = np.zeros(n_queries, dtype=np.int64)
    for start in range(0, n_gallery, rows):
        stop = min(start + rows, n_gallery)
        chunk, m = np.asarray(gallery_rows[start:stop], dtype=dtype), mask[: stop - start]
        np.greater(chunk, best, out=m)
        above += m.view(np.uint8).sum(axis=0, dtype=np.uint8)
        np.equal(chunk, best, out=m)
        equal += m.view(np.uint8).sum(axis=0, dtype=np.uint8)
    ranks = above + 1
    for q in np.flatnonzero(equal > 1):
        ranks[q] += np.count_nonzero(gallery_rows[: best_index[q], q].astype(dtype) == best[q])
    return ranks


def _score_dtype(dtype: np.dtype) -> np.dtype:
    """float32 scores stay float32 (float16 is widened exactly); float64 and integers compare in float64."""
    return np.result_type(dtype, np.float32)


def _blocks(n_queries: int, n_gallery: int) -> Iterator[tuple[int, int]]:
    block = max(1, _BLOCK_ELEMENTS // max(1, n_gallery))
    for start in range(0, n_queries, block):
        yield start, min(start + block, n_queries)


def ranks_from_similarity(similarity: np.ndarray, positives: Sequence[Iterable[int]]) -> np.ndarray:
    """1-based rank of each query's best positive; similarity is (Q, G).

    A transposed view (`S.T`, e.g. image->text from a text->image matrix) is ranked in place,
    as fast as `S` itself; memory beyond the input stays bounded.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2:
        raise InvalidArgumentError("similarity", f"shape {similarity.shape}", "a 2-D (queries, gallery) array")
    if len(positives) != similarity.shape[0]:
        raise InvalidArgumentError("positives", f"{len(positives)} entries", f"one per query ({similarity.shape[0]})")
    flat, offsets = _positives_csr(positives, similarity.shape[1])
    dtype = _score_dtype(similarity.dtype)
    if similarity.flags.f_contiguous and not similarity.flags.c_contiguous:  # e.g. S.T of a C-ordered S
        return _column_ranks(similarity.T, flat, offsets, dtype)
    counter = _RankCounter(similarity.shape[1])
    out = np.empty(similarity.shape[0], dtype=np.int64)
    for start, stop in _blocks(*similarity.shape):
        sub = offsets[start : stop + 1]
        scores = np.ascontiguousarray(similarity[start:stop], dtype=dtype)
        out[start:stop] = counter.ranks(scores, flat[sub[0] : sub[-1]], sub - sub[0], start)
    return out


def ranks_from_embeddings(queries: np.ndarray, gallery: np.ndarray, positives: Sequence[Iterable[int]]) -> np.ndarray:
    """Ranks by inner product (cosine for unit rows) in float32, never holding the full (Q, G) matrix."""
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise InvalidArgumentError(
            "embeddings", f"shapes {queries.shape} and {gallery.shape}", "(Q, D) queries and (G, D) gallery"
        )
    if len(positives) != len(queries):
        raise InvalidArgumentError("positives", f"{len(positives)} entries", f"one per query ({len(queries)})")
    flat, offsets = _positives_csr(positives, len(gallery))
    counter = _RankCounter(len(gallery))
    gallery_t = np.ascontiguousarray(gallery.T)
    out = np.empty(len(queries), dtype=np.int64)
    for start, stop in _blocks(len(queries), len(gallery)):
        sub = offsets[start : stop + 1]
        out[start:stop] = counter.ranks(queries[start:stop] @ gallery_t, flat[sub[0] : sub[-1]], sub - sub[0], start)
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first; equal scores keep column order (the rank
    definition's tie rule). argpartition + a sort of k columns: O(G) per row instead of a full sort."""
    k = min(k, scores.shape[1])
    if k >= scores.shape[1]:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    threshold = values.min(axis=1, keepdims=True)
    if (np.count_nonzero(scores >= threshold, axis=1) > k).any():  # ties at the cut: take the first columns
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    order = np.lexsort((part, -values), axis=1)
    return np.take_along_axis(part, order, axis=1)


def top_k_from_embeddings(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """(Q, min(k, G)) gallery indices of each query's best inner products, in bounded blocks."""
    gallery_t = np.ascontiguousarray(np.asarray(gallery, dtype=np.float32).T)
    queries = np.asarray(queries, dtype=np.float32)
    out = np.empty((len(queries), min(k, gallery_t.shape[1])), dtype=np.int64)
    for start, stop in _blocks(len(queries), gallery_t.shape[1]):
        out[start:stop] = top_k(queries[start:stop] @ gallery_t, k)
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


def recall_curve(ranks: np.ndarray, max_k: int = 50) -> np.ndarray:
    """R@K for K = 1..max_k (fractions), from one pass over the ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise InvalidArgumentError("ranks", "[]", "at least one query")
    hits = np.bincount(np.minimum(ranks, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return np.cumsum(hits) / ranks.size


def chance_recall(n_gallery: int, positive_counts: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Expected R@K of a random ranking: mean over queries of 1 - C(G-P, K) / C(G, K)."""
    counts = np.asarray(positive_counts, dtype=np.float64)
    ks = list(ks)
    steps = np.arange(min(max(ks), n_gallery), dtype=np.float64)
    # P(no positive in the top K) = prod_{i<K} (G-P-i)/(G-i), clipped at 0 once K > G-P.
    miss = np.cumprod(np.clip((n_gallery - counts[:, None] - steps) / (n_gallery - steps), 0, None), axis=1)
    hit = 1 - miss.mean(axis=0)
    return {f"R@{k}": float(hit[min(k, n_gallery) - 1]) for k in ks}


def rank_metrics(
    similarity: np.ndarray, positives: Sequence[Iterable[int]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """{"R@1","R@5","R@10" (fractions), "MedR", "MnR", "MR"} for a (Q, G) similarity matrix."""
    return metrics_from_ranks(ranks_from_similarity(similarity, positives), ks)
