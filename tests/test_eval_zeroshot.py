"""Zero-shot classification: templates, the CLIP_benchmark classifier recipe, metrics from a known
confusion, and `xmodal zeroshot` end to end with a real exported model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import xmodal
from helpers import FIXTURES
from xmodal.cli import app
from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.datasets.classification import read_classification
from xmodal.eval.metrics import top_k
from xmodal.eval.zeroshot import (
    class_embeddings,
    evaluate_ensemble,
    evaluate_zeroshot,
    fill_template,
    load_templates,
)

ZS = FIXTURES / "eval" / "zeroshot"


def test_templates_shipped_and_custom(tmp_path):
    imagenet = load_templates()
    assert len(imagenet) == 80 and len(set(imagenet)) == 80
    assert imagenet[0] == "a bad photo of a {}." and imagenet[-1] == "a tattoo of the {}."
    assert load_templates("simple") == ["a photo of a {}."]
    assert load_templates(ZS / "templates.json") == ["a photo of a {}.", "a drawing of a {c}."]
    assert fill_template("a drawing of a {c}.", "cat {x}") == "a drawing of a cat {x}."
    (tmp_path / "t.json").write_text(json.dumps({"templates": ["no placeholder"]}))
    with pytest.raises(DatasetFormatError, match="has no {} or {c}"):
        load_templates(tmp_path / "t.json")
    assert len(load_templates("cifar")) == 18 and load_templates("cifar")[0] == "a photo of a {}."
    with pytest.raises(DatasetFormatError, match="shipped sets: imagenet, cifar, simple"):
        load_templates(tmp_path / "absent.json")


def test_top_k_is_stable_and_ordered():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2, 0.0, 0.3], [1, 2, 3, 4, 5, 6, 7]], dtype=np.float32)
    assert top_k(scores, 5).tolist() == [[1, 3, 2, 6, 4], [6, 5, 4, 3, 2]]
    assert top_k(scores[:, :3], 5).tolist() == [[1, 2, 0], [2, 1, 0]]
    tied = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]], dtype=np.float32)  # a tie at the cut: first columns win
    assert top_k(tied, 3).tolist() == [[1, 0, 2]]


def test_classifier_is_mean_of_normalized_prompt_embeddings(clip_model_dir):
    encoder = xmodal.load_model(clip_model_dir)
    templates = ["a photo of a {}.", "a drawing of a {c}.", "itap of my {}."]
    weights = class_embeddings(encoder, ["cat", "red square"], templates)
    for row, name in zip(weights, ["cat", "red square"], strict=True):
        prompts = encoder.embed_texts([t.replace("{c}", name).replace("{}", name) for t in templates])
        mean = prompts.mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), rtol=0, atol=1e-6)


def test_evaluate_matches_direct_argmax_and_metric_definitions(clip_model_dir, tmp_path):
    # 4 classes of random-noise images, 3 images each: whatever the random model predicts, the
    # reported numbers must be exactly those of a direct computation.
    rng = np.random.default_rng(5)
    for c in ("alpha", "beta", "gamma", "delta"):
        (tmp_path / c).mkdir()
        for j in range(3):
            Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / c / f"{j}.png")
    encoder = xmodal.load_model(clip_model_dir)
    dataset = read_classification(tmp_path)
    templates = load_templates("simple")
    result = evaluate_zeroshot(encoder, dataset, templates)
    scores = encoder.embed_images(dataset.items) @ class_embeddings(encoder, dataset.classnames, templates).T
    predicted = scores.argmax(axis=1)
    labels = dataset.labels
    assert result.predictions.tolist() == predicted.tolist()
    assert result.top1 == np.mean(predicted == labels)
    ranked = np.argsort(-scores, axis=1, kind="stable")
    assert result.top5 == 1.0 == np.mean([(ranked[i, :5] == labels[i]).any() for i in range(len(labels))])  # 4 classes
    recalls = [np.mean(predicted[labels == c] == c) for c in range(4)]
    assert result.mean_per_class_recall == pytest.approx(np.mean(recalls))
    assert [row["top1"] for row in result.per_class] == pytest.approx(recalls)
    assert result.confusion.sum() == 12 and np.trace(result.confusion) == int((predicted == labels).sum())
    assert result.confusion[labels[0], predicted[0]] >= 1


def test_zeroshot_cli_writes_tables_and_confusion_matrix(clip_model_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "zeroshot",
            "-q",
            "-m",
            str(clip_model_dir),
            "-d",
            str(ZS / "labels.csv"),
            "--classnames",
            str(ZS / "classnames.json"),
            "--templates",
            str(ZS / "templates.json"),
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (
        "| Model | Dataset | Top-1 (0-1) | Top-5 (0-1) | Mean per-class recall (0-1) | Images | Classes | Present "
        "| Templates |" in result.output
    )
    assert "| Class | Images | Top-1 (0-1) | Top-5 (0-1) | Most confused with |" in result.output
    assert "skipped: 1 missing files, 1 malformed lines" in result.output
    doc = json.loads((out / "results.json").read_text())["results"][0]
    assert (doc["images"], doc["classes"], doc["templates"]) == (3, 3, 2)
    assert doc["classnames"] == ["red square", "green square", "blue square"]
    assert sum(n for _, _, n in doc["confusion"]) == 3 and doc["top5"] == 1.0
    rows = list(csv.DictReader((out / "per_class_tiny-clip.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["class"] for r in rows] == ["red square", "green square", "blue square"] and all(
        r["images"] == "1" for r in rows
    )
    assert float(doc["top1"]) == pytest.approx(np.mean([float(r["top1"]) for r in rows]))
    with Image.open(out / "confusion_tiny-clip.png") as png:
        assert png.format == "PNG"
    assert Path(out / "results.md").read_text().startswith("| Model |")


def test_ensemble_is_the_weighted_average_of_probabilities(clip_model_dir, tmp_path):
    rng = np.random.default_rng(9)
    for c in ("alpha", "beta", "gamma"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for j in range(4):
            Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "data" / c / f"{j}.png")
    dataset = read_classification(tmp_path / "data")
    templates = load_templates("simple")
    models = [xmodal.load_model(clip_model_dir), xmodal.load_model("xmodal-tiny-shapes")]
    *members, ensemble = evaluate_ensemble(models, dataset, templates, [3, 1])
    probabilities = []
    for model in models:
        scores = model.embed_images(dataset.items) @ class_embeddings(model, dataset.classnames, templates).T
        e = np.exp(100 * (scores - scores.max(axis=1, keepdims=True)))
        probabilities.append(e / e.sum(axis=1, keepdims=True))
    mixed = 0.75 * probabilities[0] + 0.25 * probabilities[1]
    assert ensemble.predictions.tolist() == mixed.argmax(axis=1).tolist()
    assert ensemble.top1 == np.mean(mixed.argmax(axis=1) == dataset.labels)
    assert [m.predictions.tolist() for m in members] == [p.argmax(axis=1).tolist() for p in probabilities]
    assert ensemble.model == f"{models[0].name} + xmodal-tiny-shapes (ensemble 0.75+0.25)"
    with pytest.raises(InvalidArgumentError, match="--weights"):
        evaluate_ensemble(models, dataset, templates, [1])
    result = CliRunner().invoke(
        app,
        [
            "zeroshot",
            "-q",
            "-m",
            str(clip_model_dir),
            "-m",
            "xmodal-tiny-shapes",
            "-d",
            str(tmp_path / "data"),
            "--templates",
            "simple",
            "--ensemble",
            "--weights",
            "3,1",
            "--no-cache",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [r["model"] for r in rows][-1] == ensemble.model and rows[-1]["top1"] == pytest.approx(ensemble.top1)
    lone = CliRunner().invoke(app, ["zeroshot", "-m", "xmodal-tiny-shapes", "-d", str(tmp_path / "data"), "--ensemble"])
    assert lone.exit_code != 0 and "two or more models" in lone.output
