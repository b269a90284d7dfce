"""`xmodal eval` end to end with a real exported model (random weights): mechanics, counts, parity
with a direct computation, identical numbers with the cache cold / warm / off, the table, CSV, JSON,
ranks and PNG outputs, video datasets, in-memory images, and a cache that survives kill -9."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import xmodal
from helpers import FIXTURES
from library_helpers import count_model_calls, make_bad_corpus, make_photo_tree
from xmodal.cli import app
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.eval.embedding import embed_items
from xmodal.eval.metrics import metrics_from_ranks
from xmodal.eval.retrieval import evaluate_retrieval
from xmodal.library import Library
from xmodal.media.formats import media_type
from xmodal.media.video import FramePolicy, open_video
from xmodal.models.encoder import l2_normalize

EVAL = FIXTURES / "eval"
runner = CliRunner()


def run_eval(*args: str) -> tuple[dict, str]:
    result = runner.invoke(app, ["eval", "--quiet", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "results.json").read_text()), result.output


def reference_ranks(queries: np.ndarray, gallery: np.ndarray, positives) -> list[int]:
    """Stable argsort of the full similarity matrix, best positive: the definition, computed slowly."""
    sim = queries @ gallery.T
    out = []
    for q, row in enumerate(sim):
        order = np.argsort(-row, kind="stable").tolist()
        out.append(min(order.index(p) for p in positives[q]) + 1)
    return out


def test_eval_cli_outputs_counts_and_cache_invariance(clip_model_dir, synth_karpathy, tmp_path):
    cache = tmp_path / "cache.sqlite"
    common = ["-m", str(clip_model_dir), "-d", f"karpathy:{synth_karpathy}", "--cache", str(cache)]
    cold, screen = run_eval(*common, "--out", str(tmp_path / "cold"))
    warm, _ = run_eval(*common, "--out", str(tmp_path / "warm"))
    off, _ = run_eval(*common, "--no-cache", "--out", str(tmp_path / "off"))

    r = cold["results"][0]
    assert (r["model"], r["dataset"], r["split"], r["format"], r["precision"]) == (
        "tiny-clip",
        "synth",
        "test",
        "karpathy",
        "fp32",
    )
    assert r["counts"] == {
        "items": 24,
        "texts": 120,
        "missing": 1,
        "failed": 1,
        "malformed": 0,
        "texts_dropped": 2,
        "cached_items": 0,
        "cached_texts": 0,
    }
    assert r["missing"] == ["imgs/absent.jpg"] and list(r["failed"]) == ["imgs/broken.jpg"]
    assert r["directions"]["t2i"]["queries"] == 120 and r["directions"]["t2i"]["gallery"] == 24
    assert r["directions"]["i2t"]["queries"] == 24 and r["directions"]["i2t"]["gallery"] == 120
    assert r["xmodal_version"] == xmodal.__version__ and r["wall_time_s"] > 0 and cold["recall_unit"] == "fraction"
    assert warm["results"][0]["counts"]["cached_items"] == 24 and warm["results"][0]["counts"]["cached_texts"] == 120
    assert off["results"][0]["counts"]["cached_items"] == 0
    for other in (warm, off):
        assert other["results"][0]["directions"] == r["directions"]  # identical numbers, exactly
    ranks = {name: np.load(tmp_path / name / "ranks.npz") for name in ("cold", "warm", "off")}
    for key in ("tiny-clip/synth/t2i", "tiny-clip/synth/i2t"):
        assert np.array_equal(ranks["cold"][key], ranks["warm"][key]) and np.array_equal(
            ranks["cold"][key], ranks["off"][key]
        )
        assert metrics_from_ranks(ranks["cold"][key]) == r["directions"][key[-3:]]["metrics"]
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 24 + 120

    # The on-screen Markdown table (fractions, said in the header), and the CSV with the same numbers.
    header = "| Direction | Model | Dataset | Queries | Gallery | R@1 (0-1) | R@5 (0-1) | R@10 (0-1) | MedR | MnR | MR (0-1) |"
    assert (
        header in screen
        and "| Text→Image | tiny-clip | synth | 120 | 24 |" in screen
        and "| Image→Text | tiny-clip | synth | 24 | 120 |" in screen
    )
    assert "1 missing files, 1 undecodable" in screen
    assert (tmp_path / "cold" / "results.md").read_text().startswith(header)
    rows = list(csv.DictReader((tmp_path / "cold" / "results.csv").read_text(encoding="utf-8").splitlines()))
    assert [row["Direction"] for row in rows] == ["Text→Image", "Image→Text"]
    t2i = r["directions"]["t2i"]["metrics"]
    assert float(rows[0]["R@1 (0-1)"]) == t2i["R@1"] and float(rows[0]["MnR"]) == t2i["MnR"]  # full precision
    assert (rows[0]["split"], rows[0]["Queries"], rows[0]["precision"], rows[0]["xmodal_version"]) == (
        "test",
        "120",
        "fp32",
        xmodal.__version__,
    )
    with Image.open(tmp_path / "cold" / "recall_at_k_synth.png") as png:
        assert png.format == "PNG" and png.size[0] > 600


def test_pipeline_ranks_equal_a_direct_computation(clip_model_dir, synth_karpathy):
    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_dataset(f"karpathy:{synth_karpathy}")
    result = evaluate_retrieval(encoder, dataset)
    good = [i for i, p in enumerate(dataset.items) if p.name != "broken.jpg"]
    images = encoder.embed_images([dataset.items[i] for i in good])
    kept = dataset.without_items([i for i in range(len(dataset.items)) if i not in good])
    texts = encoder.embed_texts(kept.texts)
    t2i, i2t = result.directions
    assert t2i.ranks.tolist() == reference_ranks(texts, images, kept.text_positives)
    assert i2t.ranks.tolist() == reference_ranks(images, texts, kept.item_positives)
    assert t2i.chance["R@1"] == pytest.approx(1 / 24) and i2t.chance["R@1"] == pytest.approx(5 / 120)


def test_shared_similarity_and_blocked_paths_agree(clip_model_dir, monkeypatch):
    """Both directions from one matrix (read column-wise for item->text) or from embeddings in blocks;
    a gallery item without captions (a distractor) is a candidate for text->image, never a query."""
    from xmodal.eval import retrieval

    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_dataset(EVAL / "generic" / "captions.jsonl")  # images/c.jpg has no caption
    shared = evaluate_retrieval(encoder, dataset)
    monkeypatch.setattr(retrieval, "SIMILARITY_BUDGET_BYTES", 0)
    blocked = evaluate_retrieval(encoder, dataset)
    assert [(d.queries, d.gallery) for d in shared.directions] == [(4, 4), (3, 4)]
    for a, b in zip(shared.directions, blocked.directions, strict=True):
        assert a.ranks.tolist() == b.ranks.tolist() and a.metrics == b.metrics


def test_percent_table_two_models_and_directions(clip_model_dir, siglip_model_dir, synth_karpathy, tmp_path):
    doc, screen = run_eval(
        "-m",
        str(clip_model_dir),
        "-m",
        str(siglip_model_dir),
        "-d",
        f"karpathy:{synth_karpathy}",
        "--directions",
        "i2t",
        "--percent",
        "--limit",
        "10",
        "--no-cache",
        "--out",
        str(tmp_path / "out"),
    )
    assert "| R@1 (%) | R@5 (%) | R@10 (%) | MedR | MnR | MR (%) |" in screen
    assert [(r["model"], list(r["directions"])) for r in doc["results"]] == [
        ("tiny-clip", ["i2t"]),
        ("tiny-siglip", ["i2t"]),
    ]
    assert all(r["counts"]["items"] == 10 and r["counts"]["texts"] == 50 for r in doc["results"])
    r5 = doc["results"][1]["directions"]["i2t"]["metrics"]["R@5"]
    assert f"| {100 * r5:.1f} |" in screen.splitlines()[3]


def test_video_dataset_embeds_mean_of_frames(clip_model_dir, tmp_path):
    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_dataset(EVAL / "msvd")
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        result = evaluate_retrieval(encoder, dataset, cache=cache, frames=4)
        again = evaluate_retrieval(encoder, dataset, cache=cache, frames=4)
    assert [d.direction for d in result.directions] == ["t2v", "v2t"] and result.kind == "video"
    assert (result.items, result.texts, result.missing) == (2, 3, ["vid4_0_1"])
    assert again.cached == {"items": 2, "texts": 3}
    assert [d.ranks.tolist() for d in again.directions] == [d.ranks.tolist() for d in result.directions]
    videos = embed_items(encoder, dataset.items, "video", frames=4).vectors
    for path, vector in zip(dataset.items, videos, strict=True):
        frames = encoder.embed_images([f.image for f in open_video(path).frames(FramePolicy.uniform(4))])
        assert len(frames) == 4
        np.testing.assert_allclose(vector, l2_normalize(frames.mean(axis=0)), rtol=0, atol=1e-6)


def test_in_memory_images_from_chinese_clip_tsv(clip_model_dir, tmp_path):
    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_dataset(f"cn-clip:{EVAL / 'cn-clip'}")
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        result = evaluate_retrieval(encoder, dataset, cache=cache)
        assert cache.count(encoder.model_key) == 3 + 3
    assert (result.items, result.texts, result.missing) == (3, 3, ["999"])
    direct = encoder.embed_images(dataset.items)
    np.testing.assert_array_equal(embed_items(encoder, dataset.items).vectors, direct)
    # The same pictures as files share cache entries with the in-memory copies (keyed by content).
    files = read_dataset(EVAL / "generic" / "captions.jsonl", ReadOptions(limit=3))
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        assert embed_items(encoder, files.items, cache=cache).cached == 3


def test_eval_images_go_through_the_library_embed_stage(clip_model_dir, tmp_path):
    """One image path: eval embeds what an index run stores, fails what it fails for the same
    reasons, and feeds the model whole batches in item order (the same vectors under any load)."""
    make_photo_tree(tmp_path / "photos", 70)
    make_bad_corpus(tmp_path / "photos" / "bad")
    with Library(tmp_path / "lib") as lib:
        lib.index([str(tmp_path / "photos")], model=str(clip_model_dir))
        stored = lib.vectors()
        failed = {os.fsdecode(path): reason for path, reason in lib.errors()}
    kept = [n for n, kind in enumerate(stored.types) if kind == "image"]
    good = [Path(os.fsdecode(stored.paths[n])) for n in kept]
    bad = sorted(Path(p) for p in failed if media_type(p) == "image")
    assert len(good) == 79 and len(bad) == 4
    encoder = xmodal.load_model(clip_model_dir)
    calls = count_model_calls(encoder)
    embedded = embed_items(encoder, good[:40] + bad + good[40:])
    assert calls == [32, 32, 14]  # 79 photos, two of them copies of one content (encoded once)
    vectors = np.delete(embedded.vectors, range(40, 44), axis=0)
    np.testing.assert_allclose(vectors, stored.vectors[kept], atol=1e-6)
    assert {str(bad[i - 40]): reason for i, reason in embedded.failures.items()} == {
        str(p): failed[str(p)] for p in bad
    }


def test_hash_memo_follows_file_changes(tmp_path):
    from xmodal.media.hashing import content_hash

    picture = tmp_path / "p.jpg"
    picture.write_bytes((EVAL / "images" / "a.jpg").read_bytes())
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        assert cache.file_hashes([picture]) == [content_hash(picture)]
        picture.write_bytes((EVAL / "images" / "d.png").read_bytes())  # new size: hashed again
        assert cache.file_hashes([picture]) == [content_hash(EVAL / "images" / "d.png")]
        with pytest.raises(FileNotFoundError):
            cache.file_hashes([tmp_path / "absent.jpg"])


KILLER = """
import os, signal, sys
import xmodal
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.embedding import embed_items

class KillAfterTwoBatches:
    calls = 0
    def start(self, description, total): pass
    def advance(self, n=1):
        self.calls += 1
        if self.calls == 3:  # 1: items found in the cache; 2, 3: two committed batches
            os.kill(os.getpid(), signal.SIGKILL)

items = sys.argv[3:]
encoder = xmodal.load_model(sys.argv[1])
with EmbeddingCache(sys.argv[2]) as cache:
    embed_items(encoder, items, batch_size=1, cache=cache, progress=KillAfterTwoBatches())
"""


def test_cache_survives_kill_9_and_resumes(clip_model_dir, synth_karpathy, tmp_path):
    items = sorted(str(p) for p in (synth_karpathy.parent / "imgs").glob("[0-9]*.jpg"))
    cache_file = tmp_path / "cache.sqlite"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(clip_model_dir), str(cache_file), *items],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    with sqlite3.connect(cache_file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    encoder = xmodal.load_model(clip_model_dir)
    with EmbeddingCache(cache_file) as cache:
        assert cache.count() == 16  # two committed batches of 8 (batch_size=1 -> 8 images per commit)
        resumed = embed_items(encoder, items, batch_size=1, cache=cache)
        assert resumed.cached == 16 and cache.count() == 24
    np.testing.assert_array_equal(resumed.vectors, embed_items(encoder, items, batch_size=1).vectors)


def test_cli_errors_are_one_line_and_other_work_goes_on(clip_model_dir, synth_karpathy, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(xmodal.__file__).parents[1])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xmodal",
            "eval",
            "-q",
            "-m",
            str(clip_model_dir),
            "-m",
            str(tmp_path / "no-model"),
            "-d",
            f"karpathy:{synth_karpathy}",
            "-d",
            f"coco:{tmp_path}",
            "--limit",
            "3",
            "--no-cache",
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "no COCO captions file for split 'test'" in errors[0] and "no-model" in errors[1]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]["counts"]["items"] == 3


def test_tiny_shapes_model_is_far_above_chance(tmp_path):
    made = runner.invoke(
        app, ["datasets", "synth-shapes", "--out", str(tmp_path / "shapes"), "--n", "1000", "--seed", "0"]
    )
    assert made.exit_code == 0, made.output
    (annotations,) = (tmp_path / "shapes").rglob("dataset_*.json")
    splits = {image.get("split") for image in json.loads(annotations.read_text())["images"]}
    split = "test" if "test" in splits else "all"
    args = [
        "-m",
        "xmodal-tiny-shapes",
        "-d",
        f"karpathy:{annotations}",
        "--split",
        split,
        "--cache",
        str(tmp_path / "c.sqlite"),
    ]
    first, _ = run_eval(*args, "--out", str(tmp_path / "a"))
    second, _ = run_eval(*args, "--no-cache", "--out", str(tmp_path / "b"))
    assert first["results"][0]["directions"] == second["results"][0]["directions"]
    for direction in first["results"][0]["directions"].values():
        metrics, chance = direction["metrics"], direction["chance"]
        assert metrics["R@1"] > 5 * chance["R@1"] and metrics["R@10"] > 2 * chance["R@10"], direction
