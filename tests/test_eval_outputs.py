"""Benchmark outputs to trust and join: ranks joined back to their queries, Chinese-CLIP prediction
files scored the way its evaluation script scores them, R@K of choice with trivially-1 values
marked, --out that never overwrites silently, --strict, plots, the cache on a full disk, and the
CLI's one message style."""

from __future__ import annotations

import base64
import io
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

import xmodal
from helpers import FIXTURES
from test_eval_pipeline import reference_ranks
from xmodal.cli import main
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets import read_dataset
from xmodal.eval.plots import confusion_figure, most_confused, recall_figure
from xmodal.eval.retrieval import evaluate_retrieval


@pytest.fixture(scope="module")
def cn_clip(tmp_path_factory):
    """A Chinese-CLIP dataset folder: 14 noise images (base64 TSV), 2 captions each, integer ids."""
    root = tmp_path_factory.mktemp("cnclip")
    rng = np.random.default_rng(3)
    tsv, texts = [], []
    for n in range(14):
        buffer = io.BytesIO()
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(buffer, format="JPEG")
        tsv.append(f"{1000 + n}\t{base64.b64encode(buffer.getvalue()).decode()}")
        for k in range(2):
            texts.append({"text_id": 50 + 2 * n + k, "text": f"图片 {n} 说明 {k}", "image_ids": [1000 + n]})
    (root / "test_imgs.tsv").write_text("\n".join(tsv) + "\n")
    (root / "test_texts.jsonl").write_text("\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n")
    return root


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def chinese_clip_recalls(reference: dict, predictions: list[dict], query: str, found: str) -> list[float]:
    """R@1/5/10 the way Chinese-CLIP's evaluation scripts score a prediction file, with their checks."""
    by_query = {}
    for record in predictions:
        assert isinstance(record[query], int) and isinstance(record[found], list)
        assert len(record[found]) == 10 and len(set(record[found])) == 10
        assert all(isinstance(i, int) for i in record[found])
        by_query[record[query]] = record[found]
    assert set(reference) <= set(by_query)  # every query has a prediction
    return [
        sum(any(i in by_query[q][:k] for i in truth) for q, truth in reference.items()) / len(reference)
        for k in (1, 5, 10)
    ]


def test_predictions_ranks_and_recall_k(clip_model_dir, cn_clip, tmp_path, capsys):
    out = tmp_path / "out"
    code, screen, _ = run(
        capsys, "eval", "-q", "-m", str(clip_model_dir), "-d", f"cn-clip:{cn_clip}", "--recall-k", "1,5,10,50",
        "--predictions", "--no-cache", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    doc = json.loads((out / "results.json").read_text())["results"][0]
    t2i, i2t = doc["directions"]["t2i"], doc["directions"]["i2t"]
    assert list(t2i["metrics"]) == ["R@1", "R@5", "R@10", "R@50", "MedR", "MnR", "MR"]
    # both galleries (14 images, 28 captions) are smaller than K=50: R@50 is 1 and the table says why
    assert t2i["metrics"]["R@50"] == 1.0 and t2i["trivial"] == ["R@50"] == i2t["trivial"]
    assert "| R@1 (0-1) | R@5 (0-1) | R@10 (0-1) | R@50 (0-1) |" in screen and "| 1.000* |" in screen
    assert "the gallery has only 14 candidates, so R@50 is trivially 1" in screen

    # ranks.npz joins every rank back to its query and gallery ids; the ranks are the definition's
    ranks = np.load(out / "ranks.npz")  # plain unicode arrays: no pickle
    key = f"tiny-clip/{cn_clip.name}/t2i"  # MODEL/DATASET/DIRECTION
    query_ids, gallery_ids = ranks[f"{key}/query_ids"].tolist(), ranks[f"{key}/gallery_ids"].tolist()
    dataset = read_dataset(f"cn-clip:{cn_clip}")
    assert query_ids == [str(t) for t in range(50, 78)] and gallery_ids == [str(i) for i in range(1000, 1014)]
    assert ranks[f"{key}/query_texts"].tolist() == dataset.texts
    encoder = xmodal.load_model(clip_model_dir)
    texts, images = encoder.embed_texts(dataset.texts, "zh"), encoder.embed_images(dataset.items)
    assert ranks[key].tolist() == reference_ranks(texts, images, dataset.text_positives)

    # Chinese-CLIP's prediction files, both ways: its checks pass and its scoring gives our recalls
    lines = (out / f"predictions_tiny-clip_{cn_clip.name}_t2i.jsonl").read_text().splitlines()
    reference = {50 + 2 * n + k: [1000 + n] for n in range(14) for k in range(2)}
    recalls = chinese_clip_recalls(reference, [json.loads(line) for line in lines], "text_id", "image_ids")
    assert recalls == [t2i["metrics"][k] for k in ("R@1", "R@5", "R@10")]
    lines = (out / f"predictions_tiny-clip_{cn_clip.name}_i2t.jsonl").read_text().splitlines()
    reference = {1000 + n: [50 + 2 * n, 51 + 2 * n] for n in range(14)}
    recalls = chinese_clip_recalls(reference, [json.loads(line) for line in lines], "image_id", "text_ids")
    assert recalls == [i2t["metrics"][k] for k in ("R@1", "R@5", "R@10")]


def test_out_refuses_a_folder_with_files_unless_forced(clip_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["eval", "-q", "-m", str(clip_model_dir), "-d", str(FIXTURES / "eval" / "generic" / "captions.jsonl")]
    code, _, err = run(capsys, *args, "--no-cache", "--out", str(out))
    assert code == 2 and err.startswith(f"error: --out: {out} already holds files (keep.txt); pass --force")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing written, nothing encoded
    code, _, _ = run(capsys, *args, "--no-cache", "--out", str(out), "--force")
    assert code == 0 and (out / "results.json").is_file() and (out / "keep.txt").read_text() == "mine"


def test_strict_fails_on_a_partial_dataset(clip_model_dir, tmp_path, capsys):
    images = FIXTURES / "eval" / "images"
    (tmp_path / "caps.csv").write_text(f"path,caption\n{images / 'a.jpg'},red\n{images / 'broken.jpg'},broken\n")
    common = ["eval", "-q", "-m", str(clip_model_dir), "-d", str(tmp_path / "caps.csv"), "--no-cache"]
    code, _, _ = run(capsys, *common, "--out", str(tmp_path / "lenient"))
    assert code == 0  # the undecodable file is skipped and reported
    code, _, err = run(capsys, *common, "--out", str(tmp_path / "strict"), "--strict")
    assert code == 1 and "error: --strict: caps is partial for tiny-clip: 1 undecodable" in err
    (tmp_path / "caps.csv").write_text(f"path,caption\n{images / 'a.jpg'},red\nabsent.jpg,gone\n")
    code, _, err = run(capsys, *common, "--out", str(tmp_path / "strict2"), "--strict")
    assert code == 1 and "partial dataset: 1 files not found (first: absent.jpg); 1 captions without" in err


def test_cache_on_a_full_disk_warns_and_the_evaluation_completes(clip_model_dir, synth_karpathy, tmp_path, caplog):
    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_dataset(synth_karpathy)  # 24 images, 120 captions: more than the database's free pages
    reference = evaluate_retrieval(encoder, dataset)
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        pages = cache.conn.execute("PRAGMA page_count").fetchone()[0]
        cache.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
        result = evaluate_retrieval(encoder, dataset, cache=cache)
        assert not cache.writable
    assert "not stored (database or disk is full); going on without writing the cache" in caplog.text
    assert [d.metrics for d in result.directions] == [d.metrics for d in reference.directions]
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_recall_plot_axis_ends_at_the_gallery_and_legend_sits_outside(clip_model_dir):
    encoder = xmodal.load_model(clip_model_dir)
    result = evaluate_retrieval(encoder, read_dataset(FIXTURES / "eval" / "generic" / "captions.jsonl"))
    fig = recall_figure([result])
    assert [ax.get_xlim()[1] for ax in fig.axes] == [4, 4]  # 4 images / 4 captions, not 50
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # below, not on a curve
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["tiny-clip", "chance"]


def test_confusion_matrix_of_250_classes_names_the_most_confused():
    n = 250
    confusion = np.diag(np.full(n, 3))
    confusion[7, 7], confusion[7, 9] = 0, 3  # class 7 always taken for class 9
    confusion[20, 20], confusion[20, 21] = 1, 2
    names = [f"class {i}" for i in range(n)]
    assert most_confused(confusion, 2) == [(7, 9, 3), (20, 21, 2)]
    fig = confusion_figure(confusion, names, "t")
    text = "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "1. class 7 → class 9: 3 of 3" in text and "2. class 20 → class 21: 2 of 3" in text


def test_cli_version_errors_and_model_list(capsys, monkeypatch):
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, f"xmodal {xmodal.__version__}\n")
    code, _, err = run(capsys, "eval", "-m", "x", "-d", "y", "--precision", "int4")
    assert code == 2 and err == "error: --precision: 'int4' is not one of 'fp32', 'int8', 'bf16'.\n"
    code, _, err = run(capsys, "eval", "-m", "x", "-d", "y", "--recall-k", "1,five")
    assert code == 2 and err.startswith("error: --recall-k: '1,five': expected comma-separated whole numbers")
    code, _, err = run(capsys, "zeroshot", "-m", "x")
    assert (code, err) == (2, "error: --dataset: is required\n")
    code, _, err = run(capsys, "eval", "-m", "no-such-model", "-d", str(FIXTURES / "eval" / "generic" / "captions.jsonl"), "--no-cache", "--out", str(FIXTURES / "absent-out-folder-never-made"))  # fmt: skip
    assert code == 1 and "\nerror: --model: unknown model 'no-such-model'" in err
    assert "warning: skipped " in err and "xmodal.eval" not in err  # warnings without module names
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "models", "list")
    names = {line.split()[0] for line in out.splitlines()[1:]}
    assert "XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k" in names  # whole, not cut at 80 columns
    code, out, _ = run(capsys, "models", "list", "--json")
    models = json.loads(out)
    assert {"name", "dim", "image_size", "family", "multilingual", "available"} <= set(models[0])
    assert {m["name"] for m in models} == names


def test_help_shows_flags_as_flags(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    for command in (["eval"], ["zeroshot"], ["models", "export"], ["datasets", "synth-shapes"], []):
        main([*command, "--help"])
        out = capsys.readouterr().out
        assert "<bool>" not in out and "--no-strict" not in out and "--no-percent" not in out
        assert "seed 0" not in out and "design" not in out


def test_zeroshot_on_wordnet_folders_scores_over_1000_classes(clip_model_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for wnid in ("n01440764", "n01443537", "n02085620", "n09999999"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for j in range(2):
            Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "val" / wnid / f"{j}.png")
    out = tmp_path / "out"
    code, screen, err = run(
        capsys, "zeroshot", "-q", "-m", str(clip_model_dir), "-d", str(tmp_path / "val"), "--templates", "simple",
        "--no-cache", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    assert "val: 6 images of 3 classes; classified over all 1,000 ImageNet (ILSVRC-2012) classes" in screen
    assert "classified over all 1,000 ImageNet (ILSVRC-2012) classes, 3 of them present" in screen
    assert "| 6 | 1000 | 3 | 1 |" in screen  # images, classes scored over, present, templates
    assert "warning: " in err and "n09999999 (2 images)" in err  # the unknown folder, named
    doc = json.loads((out / "results.json").read_text())["results"][0]
    assert (doc["classes"], doc["classes_present"], doc["outside_class_set"]) == (1000, 3, {"n09999999": 2})
    assert doc["classnames"][:2] == ["tench", "goldfish"] and doc["classnames"][151] == "Chihuahua"
    assert sum(n for _, _, n in doc["confusion"]) == 6
