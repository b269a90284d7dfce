"""Choosing a model: each model x precision's quality (the retrieval and zero-shot benchmarks of
xmodal.eval) beside what it costs on this machine (xmodal.eval.cost), the Pareto front of quality
against images/s, a recommendation computed from those numbers, and library sizing.

    comparison = compare_models(["ViT-B-32__openai", "ViT-SO400M-16-SigLIP2-384__webli"],
                                ["fp32", "int8"], dataset=read_dataset("jsonl:my_captions.jsonl"))
    comparison.recommendation   # sentences computed from the table
    write_comparison(comparison, Path("out"))   # xmodal.eval.compare_report
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import cycle, islice
from pathlib import Path

import numpy as np

from xmodal.errors import InvalidArgumentError, MeasurementError, MediaError, XmodalError
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.cost import (
    Measured,
    ProcessCost,
    ScanRate,
    Workload,
    graph_file_bytes,
    measure_processes,
    measure_scan_rates,
    measure_speed,
)
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.eval.datasets.classification import ClassificationDataset
from xmodal.eval.embedding import DEFAULT_FRAMES
from xmodal.eval.retrieval import DIRECTIONS, RetrievalResult, directions_for, evaluate_retrieval
from xmodal.eval.zeroshot import ZeroShotResult, evaluate_zeroshot, fill_template
from xmodal.machine import MachineInfo, describe_machine
from xmodal.media.image import load_image
from xmodal.media.video import sample_frames
from xmodal.models import load_model
from xmodal.models.encoder import Encoder
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

DEFAULT_LIBRARY_SIZES = (100_000, 1_000_000)
RETRIEVAL_METRICS = ("R@1", "R@5", "R@10", "MR")
ZEROSHOT_METRICS = {"acc1": "top-1", "acc5": "top-5"}
TOWERS = ("visual", "textual")


@dataclass(frozen=True)
class CompareOptions:
    """How the comparison measures: batch, rounds and seconds per timing, library sizes, the
    quality metric the front and recommendation use, and what counts as "as good"."""

    batch_size: int = 32
    rounds: int = 3
    seconds: float = 1.0  # per operation and round
    library_sizes: tuple[int, ...] = DEFAULT_LIBRARY_SIZES
    scan_mib: int = 256  # float16 codes per exact index whose scan is timed
    quality: str | None = None  # e.g. "R@10", "i2t:R@1", "acc1"; default text->item R@10, else top-1
    tolerance: float = 0.01  # quality within this of the best counts as as good
    frames: int = DEFAULT_FRAMES
    runtime: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "rounds", "scan_mib"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(name, getattr(self, name), "an integer >= 1")
        if self.seconds <= 0:
            raise InvalidArgumentError("seconds", self.seconds, "a positive number")
        if self.tolerance < 0:
            raise InvalidArgumentError("tolerance", self.tolerance, "a number >= 0")
        if not self.library_sizes or any(n < 1 for n in self.library_sizes):
            raise InvalidArgumentError("library sizes", self.library_sizes, "one or more positive item counts")


@dataclass(frozen=True)
class QualityMetric:
    """The one number the front and the recommendation rank by (higher is better)."""

    task: str  # a retrieval direction ("t2i", ...) or "zeroshot"
    metric: str  # "R@10", ..., "acc1", "acc5"

    @property
    def label(self) -> str:
        if self.task == "zeroshot":
            return f"zero-shot {ZEROSHOT_METRICS[self.metric]}"
        return f"{DIRECTIONS[self.task]} {self.metric}"

    def value(self, retrieval: RetrievalResult | None, zeroshot: ZeroShotResult | None) -> float:
        if self.task == "zeroshot":
            return zeroshot.top1 if self.metric == "acc1" else zeroshot.top5
        return next(d.metrics[self.metric] for d in retrieval.directions if d.direction == self.task)


def parse_quality(spec: str | None, kind: str | None, classifying: bool) -> QualityMetric:
    """`R@10` (text->item), `DIRECTION:METRIC` (`i2t:R@1`), `acc1`/`acc5` (zero-shot); None: the default.

    `kind` is the retrieval dataset's ("image"/"video"), None when only classifying."""
    if spec is None:
        if kind is None:
            return QualityMetric("zeroshot", "acc1")
        return QualityMetric(directions_for(kind)[0], "R@10")
    if spec in ZEROSHOT_METRICS:
        if not classifying:
            raise InvalidArgumentError("quality", spec, "a retrieval metric (no classification dataset given)")
        return QualityMetric("zeroshot", spec)
    direction, sep, metric = spec.rpartition(":")
    if metric not in RETRIEVAL_METRICS:
        raise InvalidArgumentError("quality", spec, [*RETRIEVAL_METRICS, "DIRECTION:METRIC", *ZEROSHOT_METRICS])
    if kind is None:
        raise InvalidArgumentError("quality", spec, "acc1 or acc5 (no retrieval dataset given)")
    return QualityMetric(directions_for(kind, [direction])[0] if sep else directions_for(kind)[0], metric)


@dataclass
class ModelCost:
    """What one model x precision costs here; see xmodal.eval.cost for how each is measured."""

    dim: int
    index_bytes_per_vector: float  # the library's exact index (float16 codes + id)
    catalog_bytes_per_vector: int  # the float32 embedding stored per item in the catalog
    file_bytes: dict[str, int]  # tower -> bytes of the graph it runs (int8: the quantized copy)
    speed: dict[str, Measured]  # "image@1", "image@B", "text@1", "text@B": items/s per round
    process: ProcessCost  # load time and memory, fresh processes


@dataclass
class ComparedModel:
    """One row of the comparison: a model at one precision, its quality and its cost."""

    model: str  # as asked for (name or folder)
    name: str
    precision: str
    retrieval: RetrievalResult | None
    zeroshot: ZeroShotResult | None
    cost: ModelCost
    quality: float = math.nan
    on_front: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({self.precision})"

    def images_per_s(self, batch: int) -> float:
        """Best round's image embeddings per second at this batch size (1 or the run's)."""
        return self.cost.speed[f"image@{batch}"].best()


@dataclass
class LibrarySizing:
    """One model's library of `items` vectors: index memory, catalog bytes, exact-search time."""

    label: str
    dim: int
    items: int
    index_bytes: float
    catalog_bytes: int
    search_s_best: float
    search_s_median: float
    auto_spec: str  # what `--index auto` builds at this size


@dataclass
class Comparison:
    """Everything the report shows; rows in the order asked (models, then precisions)."""

    machine: MachineInfo
    options: CompareOptions
    quality: QualityMetric
    entries: list[ComparedModel]
    scan_rates: dict[int, ScanRate]
    front: list[int]  # indices into entries on the Pareto front, by images/s
    recommended: int  # index into entries
    recommendation: list[str]
    dataset: str | None
    classification: str | None
    failed: dict[str, str] = field(default_factory=dict)  # "model (precision)" -> reason
    load_after: tuple[float, float, float] | None = None  # load average when the measurements ended
    wall_s: float = 0.0
    created: str = ""

    @property
    def speed_batch(self) -> int:
        return self.options.batch_size

    def sizing(self) -> list[LibrarySizing]:
        """Per entry and library size: memory and expected exact-search time per query."""
        from xmodal.store.vector_index import choose_spec

        rows = []
        for entry in self.entries:
            rate = self.scan_rates[entry.cost.dim]
            for n in self.options.library_sizes:
                rows.append(
                    LibrarySizing(
                        label=entry.label,
                        dim=entry.cost.dim,
                        items=n,
                        index_bytes=n * rate.index_bytes_per_vector,
                        catalog_bytes=n * entry.cost.catalog_bytes_per_vector,
                        search_s_best=rate.seconds_per_query(n),
                        search_s_median=rate.seconds_per_query(n, best=False),
                        auto_spec=choose_spec(n),
                    )
                )
        return rows


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (speed, quality) that no other point dominates — at least as fast and
    as good, and better in one — ordered by speed. Equal points are all kept."""

    def dominated(i: int) -> bool:
        si, qi = points[i]
        return any(s >= si and q >= qi and (s > si or q > qi) for j, (s, q) in enumerate(points) if j != i)

    front = [i for i, (s, q) in enumerate(points) if not (math.isnan(s) or math.isnan(q)) and not dominated(i)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def recommended_index(speeds: Sequence[float], qualities: Sequence[float], tolerance: float) -> int:
    """The fastest point whose quality is within `tolerance` of the best (ties: the better one)."""
    best = max(qualities)
    near = [i for i in range(len(qualities)) if qualities[i] >= best - tolerance - 1e-12]
    return max(near, key=lambda i: (speeds[i], qualities[i]))


def recommend(
    labels: Sequence[str],
    speeds: Sequence[float],
    qualities: Sequence[float],
    quality_label: str,
    tolerance: float,
    speed_label: str = "images/s",
) -> list[str]:
    """Sentences computed from the points: the best quality, the fastest point within `tolerance` of
    it and what the best one's extra quality costs in time, the fastest overall, the dominated ones."""
    n = len(labels)
    best = max(range(n), key=lambda i: (qualities[i], speeds[i]))
    fastest = max(range(n), key=lambda i: (speeds[i], qualities[i]))
    pick = recommended_index(speeds, qualities, tolerance)

    def point(i: int) -> str:
        return f"{labels[i]} at {qualities[i]:.3f}, {_three_digits(speeds[i])} {speed_label}"

    out = [f"Recommended: {labels[pick]}."]
    out.append(f"Best {quality_label}: {point(best)}.")
    if pick != best:
        ratio = speeds[pick] / speeds[best]
        out.append(
            f"Within {tolerance:g} of the best {quality_label} at {ratio:.1f}x its speed: {point(pick)}; "
            f"{labels[best]}'s extra {qualities[best] - qualities[pick]:.3f} costs {ratio:.1f}x the time per image."
        )
    else:
        out.append(f"No other model within {tolerance:g} of the best {quality_label} is faster.")
    if fastest not in (best, pick):
        out.append(
            f"Fastest: {point(fastest)}, {qualities[best] - qualities[fastest]:.3f} below the best, "
            f"{speeds[fastest] / speeds[pick]:.1f}x the speed of {labels[pick]}."
        )
    front = set(pareto_front(list(zip(speeds, qualities, strict=True))))
    dominated = [labels[i] for i in range(n) if i not in front]
    if dominated:
        out.append(f"Dominated (another is at least as fast and as good): {', '.join(dominated)}.")
    return out


def _three_digits(value: float) -> str:
    """Three significant digits, no exponent: 0.0123, 1.23, 123, 12300."""
    if value <= 0:
        return f"{value:g}"
    digits = max(0, 2 - int(math.floor(math.log10(value))))
    return f"{value:,.{digits}f}"


def compare_models(
    models: Sequence[str],
    precisions: Sequence[str] = ("fp32",),
    *,
    dataset: RetrievalDataset | None = None,
    classification: ClassificationDataset | None = None,
    templates: Sequence[str] | None = None,
    language: str | None = None,
    options: CompareOptions | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Benchmark every model at every precision with the eval pipeline, measure what each costs on
    this machine, and compute the front, the recommendation and the library sizing.

    A model that cannot be loaded or evaluated is recorded in `failed` and the others go on; when
    none can, MeasurementError says why."""
    options = options or CompareOptions()
    progress = progress or NullProgress()
    if dataset is None and classification is None:
        raise InvalidArgumentError("datasets", None, "a retrieval dataset, a classification dataset, or both")
    if classification is not None and not templates:
        raise InvalidArgumentError("templates", templates, "one or more prompt templates for classification")
    quality = parse_quality(options.quality, dataset.kind if dataset else None, classification is not None)
    started = time.perf_counter()
    machine = describe_machine()  # the load average before this run adds its own
    if dataset is not None and language:
        dataset = replace(dataset, language=language)  # captions and prompts in the language asked for
    task = _Task(dataset, classification, templates, language or (dataset.language if dataset else None))
    candidates, failed = _evaluate(models, precisions, task, options, cache, progress)
    if not candidates:
        raise MeasurementError("no model could be compared: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    entries, scan_rates = _measure(candidates, options, progress)
    for entry in entries:
        entry.quality = quality.value(entry.retrieval, entry.zeroshot)
    speeds = [e.images_per_s(options.batch_size) for e in entries]
    qualities = [e.quality for e in entries]
    front = pareto_front(list(zip(speeds, qualities, strict=True)))
    for i in front:
        entries[i].on_front = True
    labels = [e.label for e in entries]
    speed_label = f"images/s at batch {options.batch_size}"
    return Comparison(
        machine=machine,
        options=options,
        quality=quality,
        entries=entries,
        scan_rates=scan_rates,
        front=front,
        recommended=recommended_index(speeds, qualities, options.tolerance),
        recommendation=recommend(labels, speeds, qualities, quality.label, options.tolerance, speed_label),
        dataset=dataset.name if dataset else None,
        classification=classification.name if classification else None,
        failed=failed,
        load_after=describe_machine().load_average,
        wall_s=time.perf_counter() - started,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@dataclass(frozen=True)
class _Task:
    """What every model is benchmarked on."""

    dataset: RetrievalDataset | None
    classification: ClassificationDataset | None
    templates: Sequence[str] | None
    language: str | None


@dataclass
class _Candidate:
    """A model x precision that loaded and was benchmarked, waiting for its costs to be measured."""

    model: str
    files: dict[str, Path]
    retrieval: RetrievalResult | None
    zeroshot: ZeroShotResult | None
    workload: Workload


def _evaluate(
    models: Sequence[str],
    precisions: Sequence[str],
    task: _Task,
    options: CompareOptions,
    cache: EmbeddingCache | None,
    progress: Progress,
) -> tuple[list[_Candidate], dict[str, str]]:
    """Load and benchmark every model x precision; failures by "model (precision)"."""
    images = _timing_images(task.dataset, task.classification, options.batch_size, options.frames)
    texts = _timing_texts(task.dataset, task.classification, task.templates, options.batch_size)
    candidates, failed = [], {}
    for model in models:
        for precision in precisions:
            try:
                encoder = load_model(model, precision=precision, runtime=options.runtime)
                files = encoder.load()  # also makes the int8 copy now, before anything is timed
                retrieval = _retrieval(encoder, task.dataset, options, cache, progress)
                zeroshot = _zeroshot(encoder, task, options, cache, progress)
                pixels = np.stack([encoder.prepare_image(image) for image in images])
            except XmodalError as exc:
                log.warning("%s (%s): %s", model, precision, exc)
                failed[f"{model} ({precision})"] = str(exc)
                continue
            workload = Workload(encoder, pixels, texts, task.language)
            candidates.append(_Candidate(model, files, retrieval, zeroshot, workload))
    return candidates, failed


def _measure(
    candidates: list[_Candidate], options: CompareOptions, progress: Progress
) -> tuple[list[ComparedModel], dict[int, ScanRate]]:
    """Speed, fresh-process load and memory, file sizes and the scan rate of every candidate."""
    workloads = [c.workload for c in candidates]
    speeds = measure_speed(workloads, rounds=options.rounds, seconds=options.seconds, progress=progress)
    processes = measure_processes(workloads, rounds=options.rounds, progress=progress)
    scan_rates = measure_scan_rates(
        [w.encoder.dim for w in workloads],
        sample_bytes=options.scan_mib << 20,
        rounds=options.rounds,
        seconds=options.seconds,
        progress=progress,
    )
    entries = []
    for c, speed, process in zip(candidates, speeds, processes, strict=True):
        encoder = c.workload.encoder
        cost = ModelCost(
            dim=encoder.dim,
            index_bytes_per_vector=scan_rates[encoder.dim].index_bytes_per_vector,
            catalog_bytes_per_vector=encoder.dim * np.dtype(np.float32).itemsize,
            file_bytes={tower: graph_file_bytes(c.files[tower]) for tower in TOWERS},
            speed=speed,
            process=process,
        )
        entries.append(ComparedModel(c.model, encoder.name, encoder.precision, c.retrieval, c.zeroshot, cost))
    return entries, scan_rates


def _retrieval(
    encoder: Encoder,
    dataset: RetrievalDataset | None,
    options: CompareOptions,
    cache: EmbeddingCache | None,
    progress: Progress,
) -> RetrievalResult | None:
    if dataset is None:
        return None
    return evaluate_retrieval(
        encoder, dataset, cache=cache, progress=progress, frames=options.frames, batch_size=options.batch_size
    )


def _zeroshot(
    encoder: Encoder, task: _Task, options: CompareOptions, cache: EmbeddingCache | None, progress: Progress
) -> ZeroShotResult | None:
    if task.classification is None:
        return None
    return evaluate_zeroshot(
        encoder,
        task.classification,
        task.templates,
        language=task.language,
        cache=cache,
        progress=progress,
        batch_size=options.batch_size,
    )


def _timing_images(
    dataset: RetrievalDataset | None, classification: ClassificationDataset | None, count: int, frames: int
) -> list:
    """`count` decoded images from the data (video: sampled frames), repeated when there are fewer:
    every model is timed on the same real pictures, each through its own preprocessing."""
    sources = dataset.items if dataset is not None else classification.items
    video = dataset is not None and dataset.kind == "video"
    images: list = []
    for source in sources:
        if len(images) >= count:
            break
        try:
            images += sample_frames(source, frames) if video else [load_image(source)]
        except MediaError as exc:
            log.warning("not timed on %s", exc)
    if not images:
        name = dataset.name if dataset is not None else classification.name
        raise MeasurementError(f"{name}: no image could be decoded to time the models on")
    return list(islice(cycle(images), count))


def _timing_texts(
    dataset: RetrievalDataset | None,
    classification: ClassificationDataset | None,
    templates: Sequence[str] | None,
    count: int,
) -> list[str]:
    """`count` captions of the data (or, classifying only, its prompts), repeated when there are fewer."""
    if dataset is not None and dataset.texts:
        texts = dataset.texts
    elif classification is not None:
        texts = [fill_template(templates[0], name) for name in classification.classnames]
    else:
        raise MeasurementError(f"{dataset.name}: no caption to time the text tower on")
    return list(islice(cycle(texts), count))
