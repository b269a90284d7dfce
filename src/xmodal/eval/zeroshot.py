"""Zero-shot classification: class names + prompt templates -> text classifier -> top-1/top-5,
mean per-class recall, confusion matrix and a per-class table.

A class's text embedding is the mean of its normalized template embeddings, re-normalized
(CLIP's and CLIP_benchmark's way); an image is assigned the class of highest cosine similarity.
An ensemble of models (`evaluate_ensemble`) assigns the class of highest weighted average of the
models' class probabilities.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

import xmodal
from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import load_json
from xmodal.eval.datasets.classification import ClassificationDataset
from xmodal.eval.embedding import embed_items, embed_texts
from xmodal.eval.metrics import top_k
from xmodal.models.encoder import Encoder, l2_normalize
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

TOP_K = (1, 5)


def shipped_templates() -> dict[str, list[str]]:
    """Template sets shipped with xmodal: 'imagenet' (CLIP's 80), 'cifar' (CLIP's 18) and 'simple'."""
    data = json.loads(resources.files("xmodal.data").joinpath("zeroshot_templates.json").read_text())
    return {k: v for k, v in data.items() if isinstance(v, list)}


def load_templates(spec: str | Path | None = None, dataset: ClassificationDataset | None = None) -> list[str]:
    """A shipped set by name, or a JSON file: a list of templates or {"templates": [...]}. Default:
    the set CLIP uses with the dataset's shipped classes (CIFAR: 'cifar'), else 'imagenet'.

    A template holds `{}` (or `{c}`) where the class name goes.
    """
    if spec is None:
        spec = dataset.class_set.templates if dataset is not None and dataset.class_set is not None else "imagenet"
    shipped = shipped_templates()
    if str(spec) in shipped:
        return shipped[str(spec)]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DatasetFormatError(path, f"no such template file (shipped sets: {', '.join(shipped)})")
    data = load_json(path)
    templates = data.get("templates") if isinstance(data, dict) else data
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise DatasetFormatError(path, 'expected a JSON list of template strings or {"templates": [...]}')
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad:
        raise DatasetFormatError(path, f"template {bad[0]!r} has no {{}} or {{c}} for the class name")
    return templates


def fill_template(template: str, classname: str) -> str:
    """Put the class name in the template (plain replacement: names may contain braces)."""
    return template.replace("{c}", classname).replace("{}", classname)


def class_embeddings(
    encoder: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    language: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """(C, D) unit rows: per class, the mean of its normalized prompt embeddings, re-normalized."""
    prompts = [fill_template(t, c) for c in classnames for t in templates]
    vectors = embed_texts(encoder, prompts, language=language, cache=cache, progress=progress).vectors
    return l2_normalize(vectors.reshape(len(classnames), len(templates), -1).mean(axis=1))


@dataclass
class ZeroShotResult:
    """Accuracy of one model on one classification dataset, with the matrix and per-class numbers."""

    model: str
    model_key: str
    precision: str
    dataset: str
    classnames: list[str]
    templates: int
    images: int
    classes_present: int
    top1: float
    top5: float
    mean_per_class_recall: float
    confusion: np.ndarray  # (C, C) counts: true class rows, predicted class columns
    per_class: list[dict]
    predictions: np.ndarray
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # labels outside the class set -> images left out
    class_set: str | None = None  # title of the shipped class set the classes are, e.g. "ImageNet (ILSVRC-2012)"
    wall_time_s: float = 0.0
    xmodal_version: str = xmodal.__version__


def evaluate_zeroshot(
    encoder: Encoder,
    dataset: ClassificationDataset,
    templates: Sequence[str],
    *,
    language: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
) -> ZeroShotResult:
    """Classify every image of the dataset by its nearest class embedding."""
    return _classified(encoder, dataset, templates, language, cache, progress, batch_size)[0]


def _classified(
    encoder: Encoder,
    dataset: ClassificationDataset,
    templates: Sequence[str],
    language: str | None,
    cache: EmbeddingCache | None,
    progress: Progress | None,
    batch_size: int,
) -> tuple[ZeroShotResult, np.ndarray, dict[int, str]]:
    """One model's result, with the scores and failures it came from (an ensemble mixes them)."""
    started = time.perf_counter()
    scores, failures = zeroshot_scores(
        encoder, dataset, templates, language=language, cache=cache, progress=progress, batch_size=batch_size
    )
    member = _Member(encoder.name, encoder.model_key, encoder.precision)
    return _result(member, dataset, len(templates), scores, failures, started), scores, failures


ENSEMBLE_LOGIT_SCALE = 100.0  # CLIP's: class probabilities are softmax(100 * cosine)


def evaluate_ensemble(
    encoders: Sequence[Encoder],
    dataset: ClassificationDataset,
    templates: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    language: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
) -> list[ZeroShotResult]:
    """Each model's result, then the ensemble's: per image, the weighted average of the models'
    class probabilities (softmax of 100 x cosine, CLIP's scale), weights default equal. Images
    any model could not decode are left out of the ensemble."""
    weights = [1.0] * len(encoders) if weights is None else [float(w) for w in weights]
    if len(encoders) < 2 or len(weights) != len(encoders) or min(weights) < 0 or sum(weights) <= 0:
        raise InvalidArgumentError(
            "--weights", weights, f"{len(encoders)} non-negative weights (one per model, at least two models)"
        )
    started = time.perf_counter()
    results, probabilities, failed = [], [], {}
    for encoder in encoders:
        result, scores, failures = _classified(encoder, dataset, templates, language, cache, progress, batch_size)
        results.append(result)
        logits = ENSEMBLE_LOGIT_SCALE * (scores - scores.max(axis=1, keepdims=True))
        probabilities.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        failed |= failures
    total = sum(weights)
    mixed = sum(w / total * p for w, p in zip(weights, probabilities, strict=True))
    shares = "+".join(f"{w / total:.2g}" for w in weights)
    member = _Member(
        " + ".join(e.name for e in encoders) + f" (ensemble {shares})",
        "ensemble:" + "+".join(e.model_key for e in encoders),
        "/".join(dict.fromkeys(e.precision for e in encoders)),
    )
    results.append(_result(member, dataset, len(templates), mixed, failed, started))
    return results


def zeroshot_scores(
    encoder: Encoder,
    dataset: ClassificationDataset,
    templates: Sequence[str],
    *,
    language: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, dict[int, str]]:
    """(images, classes) cosine scores of every dataset image (NaN rows for those that failed)
    against the class embeddings, and the failures (image index -> reason)."""
    progress = progress or NullProgress()
    classifier = class_embeddings(
        encoder, dataset.classnames, templates, language=language, cache=cache, progress=progress
    )
    images = embed_items(encoder, dataset.items, "image", batch_size=batch_size, cache=cache, progress=progress)
    return images.vectors @ classifier.T, dict(images.failures)


@dataclass(frozen=True)
class _Member:
    name: str
    key: str
    precision: str


def _result(
    member: _Member,
    dataset: ClassificationDataset,
    templates: int,
    scores: np.ndarray,
    failures: dict[int, str],
    started: float,
) -> ZeroShotResult:
    """The metrics of one classifier's (images, classes) scores, failed images left out."""
    keep = np.array([i for i in range(len(dataset.items)) if i not in failures], dtype=np.int64)
    if keep.size == 0:
        raise DatasetFormatError(dataset.name, "no image could be decoded")
    labels = dataset.labels[keep]
    scores = scores[keep]
    k = min(max(TOP_K), len(dataset.classnames))
    top = top_k(scores, k)
    hits = {t: (top[:, : min(t, k)] == labels[:, None]).any(axis=1) for t in TOP_K}
    n_classes = len(dataset.classnames)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, top[:, 0]), 1)
    per_class = _per_class(dataset.classnames, labels, hits, confusion)
    present = [row for row in per_class if row["images"] > 0]
    return ZeroShotResult(
        model=member.name,
        model_key=member.key,
        precision=member.precision,
        dataset=dataset.name,
        classnames=list(dataset.classnames),
        templates=templates,
        images=int(keep.size),
        classes_present=int(np.unique(labels).size),
        top1=float(hits[1].mean()),
        top5=float(hits[5].mean()),
        mean_per_class_recall=float(np.mean([row["top1"] for row in present])),
        confusion=confusion,
        per_class=per_class,
        predictions=top[:, 0],
        missing=list(dataset.missing),
        failed={str(dataset.items[i]): reason for i, reason in sorted(failures.items())},
        malformed=[str(p) for p in dataset.problems],
        unknown=dict(dataset.unknown),
        class_set=dataset.class_set.title if dataset.class_set is not None else None,
        wall_time_s=time.perf_counter() - started,
    )


def _per_class(classnames: Sequence[str], labels: np.ndarray, hits: dict, confusion: np.ndarray) -> list[dict]:
    """Per class: images, top-1 and top-5 recall, and the class it is most often mistaken for."""
    rows = []
    for c, name in enumerate(classnames):
        mask = labels == c
        n = int(mask.sum())
        wrong = confusion[c].copy()
        wrong[c] = 0
        confused = int(wrong.argmax()) if wrong.any() else None
        rows.append(
            {
                "class": name,
                "images": n,
                "top1": float(hits[1][mask].mean()) if n else float("nan"),
                "top5": float(hits[5][mask].mean()) if n else float("nan"),
                "most_confused_with": classnames[confused] if confused is not None else "",
                "confused_count": int(wrong.max()) if confused is not None else 0,
            }
        )
    return rows
