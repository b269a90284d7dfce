"""Text<->video retrieval the MSVD way with each pooling: ranks equal a direct computation from
embed_video, one decode serves "segments" and "best" through the cache, and `--pooling` compares
them in one report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xmodal
from helpers import REALDATA
from xmodal.cli import app
from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.eval.retrieval import best_part_similarity, evaluate_retrieval
from xmodal.media.video import FramePolicy
from xmodal.models.encoder import l2_normalize
from xmodal.models.video import embed_video

runner = CliRunner()


@pytest.fixture(scope="module")
def encoder():
    return xmodal.load_model("xmodal-tiny-shapes")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    generate_synth_shapes(root, SynthConfig(n=1, seed=5, videos=12))
    return root / "videos.jsonl"


def slow_ranks(similarity: np.ndarray, positives) -> list[int]:
    """The rank definition computed the slow way: stable argsort, best positive."""
    out = []
    for q, row in enumerate(similarity):
        order = np.argsort(-row, kind="stable").tolist()
        out.append(min(order.index(p) for p in positives[q]) + 1)
    return out


def test_each_pooling_ranks_like_a_direct_computation(encoder, videos):
    dataset = read_dataset(f"jsonl:{videos}", ReadOptions(split=None))
    assert dataset.kind == "video" and len(dataset.items) == 12 and len(dataset.texts) == 36
    texts = encoder.embed_texts(dataset.texts)
    embedded = [embed_video(encoder, path) for path in dataset.items]
    uniform = [embed_video(encoder, path, FramePolicy.uniform(12)) for path in dataset.items]
    assert all(len(v.frame_times) == 12 for v in uniform)
    expected = {
        "uniform": texts @ np.stack([l2_normalize(v.frame_vectors.mean(axis=0)) for v in uniform]).T,
        "segments": texts @ np.stack([v.clip_vector for v in embedded]).T,
        "best": np.stack([[max(float(s.vector @ t) for s in v.segments) for v in embedded] for t in texts]),
    }
    for pooling, similarity in expected.items():
        result = evaluate_retrieval(encoder, dataset, pooling=pooling)
        t2v, v2t = result.directions
        assert result.pooling == ("uniform12" if pooling == "uniform" else pooling)
        assert (t2v.queries, t2v.gallery, v2t.queries, v2t.gallery) == (36, 12, 12, 36)  # every caption a query
        assert t2v.ranks.tolist() == slow_ranks(similarity, dataset.text_positives), pooling
        assert v2t.ranks.tolist() == slow_ranks(similarity.T, dataset.item_positives), pooling  # best caption


def test_best_part_similarity_is_the_max_over_parts():
    rng = np.random.default_rng(0)
    texts = l2_normalize(rng.normal(size=(7, 5)))
    parts = [l2_normalize(rng.normal(size=(n, 5))) for n in (1, 4, 2)]
    expected = np.stack([(texts @ p.T).max(axis=1) for p in parts], axis=1)
    np.testing.assert_allclose(best_part_similarity(texts, parts, block=3), expected, atol=1e-6)


def test_one_decode_serves_segments_and_best_through_the_cache(encoder, videos, tmp_path):
    dataset = read_dataset(f"jsonl:{videos}", ReadOptions(split=None))
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        segments = evaluate_retrieval(encoder, dataset, pooling="segments", cache=cache)
        best = evaluate_retrieval(encoder, dataset, pooling="best", cache=cache)
        uniform = evaluate_retrieval(encoder, dataset, pooling="uniform", cache=cache)
        again = evaluate_retrieval(encoder, dataset, pooling="best", cache=cache)
    assert (segments.cached["items"], best.cached["items"], uniform.cached["items"]) == (0, 12, 0)
    assert [d.ranks.tolist() for d in again.directions] == [d.ranks.tolist() for d in best.directions]
    uncached = evaluate_retrieval(encoder, dataset, pooling="best")
    assert [d.ranks.tolist() for d in uncached.directions] == [d.ranks.tolist() for d in best.directions]


def test_pooling_option_compares_poolings_in_one_report(videos, tmp_path):
    out = tmp_path / "out"
    args = ["eval", "-q", "-m", "xmodal-tiny-shapes", "-d", f"jsonl:{videos}", "--split", "all", "--no-cache"]
    result = runner.invoke(app, [*args, "--pooling", "uniform,segments,best", "--frames", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [r["pooling"] for r in doc["results"]] == ["uniform4", "segments", "best"]
    table = (out / "results.md").read_text()
    for label in ("xmodal-tiny-shapes · uniform4", "xmodal-tiny-shapes · segments", "xmodal-tiny-shapes · best"):
        assert f"| Text→Video | {label} |" in table and f"| Video→Text | {label} |" in table
    ranks = [k for k in np.load(out / "ranks.npz").files if k.endswith(("/t2v", "/v2t"))]
    assert len(ranks) == 6 and "xmodal-tiny-shapes · best/videos/t2v" in ranks
    bad = runner.invoke(app, [*args, "--pooling", "mean", "--out", str(out)])
    assert bad.exit_code == 2 and "expected one or more of uniform, segments, best" in bad.output


MSVD = REALDATA / "msvd"


@pytest.mark.skipif(not MSVD.is_dir(), reason=f"real MSVD clips not found at {MSVD} (shared test data absent)")
def test_real_msvd_clips_every_caption_is_a_query(encoder):
    dataset = read_dataset(f"jsonl:{MSVD / 'clips_with_captions.jsonl'}", ReadOptions(split=None))
    captions = sum(len(json.loads(line)["captions"]) for line in (MSVD / "clips_with_captions.jsonl").open())
    result = evaluate_retrieval(encoder, dataset, pooling="best")
    t2v, v2t = result.directions
    assert (t2v.queries, t2v.gallery, v2t.queries, v2t.gallery) == (captions, 5, 5, captions)
    assert not result.failed and 1 <= t2v.metrics["MedR"] <= 5
