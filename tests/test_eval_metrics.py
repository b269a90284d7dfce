"""Retrieval metrics: the seed-000 worked example, hand-computed multi-positive cases, ties,
parity with a stable argsort reference, and CLIP_benchmark's recall@k definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xmodal.errors import InvalidArgumentError
from xmodal.eval import metrics
from xmodal.eval.metrics import (
    chance_recall,
    metrics_from_ranks,
    rank_metrics,
    ranks_from_embeddings,
    ranks_from_similarity,
    recall_curve,
)


def reference_ranks(similarity: np.ndarray, positives) -> np.ndarray:
    """Design §4 literally: stable descending sort per query, best 1-based rank among positives."""
    out = []
    for q, row in enumerate(similarity):
        order = np.argsort(-row, kind="stable")
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(1, len(order) + 1)
        out.append(min(position[p] for p in positives[q]))
    return np.array(out)


def similarity_with_ranks(ranks: list[int], gallery: int = 12) -> tuple[np.ndarray, list[list[int]]]:
    """A (Q, gallery) matrix where query q's only positive (item 0) lands at ranks[q]."""
    sim = np.zeros((len(ranks), gallery), dtype=np.float32)
    for q, rank in enumerate(ranks):
        sim[q, 1:] = np.linspace(0.9, 0.1, gallery - 1)
        sim[q, 0] = (sim[q, rank - 1] + sim[q, rank]) / 2 if rank > 1 else 1.0
    return sim, [[0]] * len(ranks)


def test_seed_000_worked_example_is_exact():
    sim, positives = similarity_with_ranks([1, 7, 2])
    assert ranks_from_similarity(sim, positives).tolist() == [1, 7, 2]
    m = rank_metrics(sim, positives)
    assert m["R@1"] == 1 / 3 and m["R@5"] == 2 / 3 and m["R@10"] == 1.0
    assert m["MedR"] == 2.0
    assert m["MnR"] == pytest.approx(10 / 3) and round(m["MnR"], 2) == 3.33
    assert m["MR"] == pytest.approx((1 / 3 + 2 / 3 + 1) / 3)


def test_multiple_positives_use_the_best_rank():
    # Gallery scores for one image query; captions 3 and 5 are its positives.
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], dtype=np.float32)
    assert ranks_from_similarity(sim, [[3, 5]]).tolist() == [4]
    assert ranks_from_similarity(sim, [[5, 3]]).tolist() == [4]  # order of positives does not matter
    # Two queries, 5 positives each among 10 captions, hand-computed: best positives at ranks 2 and 6.
    sim = np.array(
        [
            [0.1, 0.95, 0.3, 0.99, 0.2, 0.0, 0.05, 0.15, 0.25, 0.35],
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
        ],
        dtype=np.float32,
    )
    positives = [[1, 5, 6, 7, 8], [5, 6, 7, 8, 9]]
    assert ranks_from_similarity(sim, positives).tolist() == [2, 6]
    m = rank_metrics(sim, positives)
    assert (m["R@1"], m["R@5"], m["R@10"], m["MedR"], m["MnR"]) == (0.0, 0.5, 1.0, 4.0, 4.0)


def test_ties_keep_gallery_order():
    sim = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    assert [ranks_from_similarity(sim, [[g]])[0] for g in range(4)] == [1, 2, 3, 4]
    # Tied positives: the earliest one in the gallery counts.
    assert ranks_from_similarity(sim, [[3, 1]]).tolist() == [2]
    # A tie with a higher item before it: 1 (higher) + 1 (tied, earlier) + 1.
    sim = np.array([[0.2, 0.7, 0.9, 0.7, 0.7]], dtype=np.float32)
    assert ranks_from_similarity(sim, [[3]]).tolist() == [3]
    assert ranks_from_similarity(sim, [[4, 0]]).tolist() == [4]


@pytest.mark.parametrize("layout", ["c", "fortran", "float64", "float16", "int", "transposed-float64"])
def test_matches_stable_argsort_reference_with_many_ties(monkeypatch, layout):
    # Small chunk and block sizes so every path (several chunks, several blocks, ragged ends) runs.
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 97)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1000)
    rng = np.random.default_rng(7)
    for trial in range(30):
        q, g = int(rng.integers(1, 60)), int(rng.integers(1, 90))
        sim = rng.integers(0, 5, size=(q, g)) if trial % 2 else rng.standard_normal((q, g))
        sim = {
            "c": sim.astype(np.float32),
            "fortran": np.asfortranarray(sim.astype(np.float32)),
            "float64": sim.astype(np.float64),
            "float16": sim.astype(np.float16),
            "int": sim.astype(np.int64),
            "transposed-float64": np.ascontiguousarray(sim.T, dtype=np.float64).T,  # S.T: ranked by columns
        }[layout]
        positives = [rng.choice(g, size=int(rng.integers(1, min(g, 6) + 1)), replace=False).tolist() for _ in range(q)]
        assert (
            ranks_from_similarity(sim, positives).tolist()
            == reference_ranks(np.asarray(sim, np.float64), positives).tolist()
        )


def test_embeddings_path_equals_similarity_path(monkeypatch):
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 5000)  # several matmul blocks
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((170, 16)).astype(np.float32)
    queries[:5] = gallery[:5]  # exact self-matches
    gallery[10] = gallery[11]  # duplicate gallery rows: exact ties
    positives = [[int(i)] for i in rng.integers(0, 300, 170)]
    ranks = ranks_from_embeddings(queries, gallery, positives)
    assert ranks.tolist() == reference_ranks(queries @ gallery.T, positives).tolist()


def test_positives_as_integer_arrays():
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((20, 30)).astype(np.float32)
    one = rng.integers(0, 30, 20)
    five = np.stack([rng.choice(30, 5, replace=False) for _ in range(20)])
    assert ranks_from_similarity(sim, one).tolist() == ranks_from_similarity(sim, [[int(p)] for p in one]).tolist()
    assert ranks_from_similarity(sim, five).tolist() == reference_ranks(sim, five.tolist()).tolist()
    assert (
        ranks_from_similarity(sim, [set(map(int, p)) for p in five]).tolist()
        == reference_ranks(sim, five.tolist()).tolist()
    )


def clip_benchmark_recall(scores: np.ndarray, positive_pairs: np.ndarray, k: int) -> float:
    """CLIP_benchmark's published definition, re-implemented: per query, the share of its positives
    among torch.topk's K best; a hit when that share is > 0; recall@k = mean of hits."""
    import torch

    scores_t = torch.from_numpy(scores)
    pairs = torch.from_numpy(positive_pairs)
    topk = torch.topk(scores_t, k, dim=1)[1]
    onehot = torch.nn.functional.one_hot(topk, num_classes=scores_t.shape[1])
    true_positive = (onehot * pairs.view(scores_t.shape[0], 1, scores_t.shape[1])).sum(dim=(1, 2))
    recall = true_positive / pairs.sum(dim=1)
    return (recall > 0).float().mean().item()


def test_equals_clip_benchmark_recall_at_k_with_five_captions_per_image():
    rng = np.random.default_rng(2024)
    n_images, per_image, dim = 200, 5, 32
    images = rng.standard_normal((n_images, dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts = np.repeat(images, per_image, axis=0) + 1.5 * rng.standard_normal((n_images * per_image, dim)).astype(
        np.float32
    )
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    text_image = np.repeat(np.arange(n_images), per_image)
    scores = texts @ images.T  # (texts, images), as CLIP_benchmark computes it
    pairs = np.zeros_like(scores, dtype=bool)
    pairs[np.arange(len(texts)), text_image] = True
    t2i = metrics_from_ranks(ranks_from_embeddings(texts, images, text_image[:, None]), ks=(1, 5, 10))
    i2t_positives = [list(range(i * per_image, (i + 1) * per_image)) for i in range(n_images)]
    i2t = metrics_from_ranks(ranks_from_embeddings(images, texts, i2t_positives), ks=(1, 5, 10))
    for k in (1, 5, 10):
        # CLIP_benchmark accumulates in float32 and reports .item(): compare at float32 resolution.
        assert np.float32(t2i[f"R@{k}"]) == np.float32(clip_benchmark_recall(scores, pairs, k))
        assert np.float32(i2t[f"R@{k}"]) == np.float32(clip_benchmark_recall(scores.T.copy(), pairs.T.copy(), k))
    assert 0 < t2i["R@1"] < t2i["R@10"] < 1  # a non-trivial case


def test_recall_curve_and_chance():
    ranks = np.array([1, 7, 2, 60])
    curve = recall_curve(ranks, 10)
    assert curve.tolist() == [0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75]
    # One positive among G: R@K = K/G. Two positives among 5, K=2: 1 - C(3,2)/C(5,2) = 0.7.
    assert chance_recall(10, np.array([1, 1]), [1, 5, 10]) == pytest.approx({"R@1": 0.1, "R@5": 0.5, "R@10": 1.0})
    assert chance_recall(5, np.array([2]), [2])["R@2"] == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert chance_recall(5, np.array([2]), [50])["R@50"] == pytest.approx(1.0)


def test_metric_ks_and_median_of_even_count():
    m = metrics_from_ranks(np.array([1, 2, 3, 10]), ks=(1, 3))
    assert m == {"R@1": 0.25, "R@3": 0.75, "MedR": 2.5, "MnR": 4.0}  # no MR without R@1/5/10


def test_bad_inputs_name_the_problem():
    sim = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"positives\[1\]"):
        ranks_from_similarity(sim, [[0], []])
    with pytest.raises(InvalidArgumentError, match=r"positives\[0\].*\[0, 3\)"):
        ranks_from_similarity(sim, [[3], [0]])
    with pytest.raises(InvalidArgumentError, match="one per query"):
        ranks_from_similarity(sim, [[0]])
    with pytest.raises(InvalidArgumentError, match="2-D"):
        ranks_from_similarity(np.zeros(3), [[0]])
    sim[1, 2] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"query 1.*NaN"):
        ranks_from_similarity(sim, [[0], [2]])
    with pytest.raises(InvalidArgumentError, match="shapes"):
        ranks_from_embeddings(np.zeros((2, 4)), np.zeros((3, 5)), [[0], [0]])
    with pytest.raises(InvalidArgumentError, match="at least one query"):
        metrics_from_ranks(np.array([]))
