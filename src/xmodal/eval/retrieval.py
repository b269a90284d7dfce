"""Retrieval benchmark of one encoder on one dataset: text->item and item->text ranks and metrics."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import xmodal
from xmodal.errors import InvalidArgumentError, XmodalError
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.eval.embedding import DEFAULT_FRAMES, embed_items, embed_texts
from xmodal.eval.metrics import (
    DEFAULT_KS,
    chance_recall,
    metrics_from_ranks,
    ranks_from_embeddings,
    ranks_from_similarity,
    top_k,
    top_k_from_embeddings,
)
from xmodal.models import load_model
from xmodal.models.encoder import Encoder
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

CURVE_MAX_K = 50
# Up to this size (COCO 5k: 25k x 5k x 4 B = 500 MB) the similarity matrix is computed once for both
# directions; larger problems rank each direction from embeddings in bounded blocks instead.
SIMILARITY_BUDGET_BYTES = 1 << 30
DIRECTIONS = {"t2i": "Text→Image", "i2t": "Image→Text", "t2v": "Text→Video", "v2t": "Video→Text"}
_BY_KIND = {"image": ("t2i", "i2t"), "video": ("t2v", "v2t")}


@dataclass
class DirectionResult:
    """Metrics of one direction, with every query's rank (1-based), the ids that join each rank back
    to its query and gallery item, optionally each query's top-k gallery indices, and chance."""

    direction: str
    metrics: dict[str, float]
    ranks: np.ndarray
    queries: int
    gallery: int
    chance: dict[str, float]
    chance_curve: np.ndarray  # expected R@K of a random ranking, K = 1..CURVE_MAX_K
    query_ids: list[str] = field(default_factory=list)  # ranks[i] is the rank of query query_ids[i]
    gallery_ids: list[str] = field(default_factory=list)  # in gallery order (ties rank in this order)
    query_texts: list[str] | None = None  # the caption of each query, for text-to-item directions
    top: np.ndarray | None = None  # (queries, k) gallery indices, best first; None unless asked for

    @property
    def label(self) -> str:
        return DIRECTIONS[self.direction]

    @property
    def text_queries(self) -> bool:
        """Whether the queries are captions (text->image/video) rather than items."""
        return self.direction in ("t2i", "t2v")

    def trivial_ks(self) -> list[int]:
        """The K of this result's R@K whose value is 1 whatever the model: K >= the gallery size."""
        return [int(key[2:]) for key in self.metrics if key.startswith("R@") and int(key[2:]) >= self.gallery]


@dataclass
class RetrievalResult:
    """One model on one dataset: per-direction results plus what was counted, skipped and timed."""

    model: str
    model_key: str
    precision: str
    dataset: str
    format: str
    split: str | None
    kind: str
    items: int
    texts: int
    directions: list[DirectionResult]
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item id -> reason it could not be embedded
    malformed: list[str] = field(default_factory=list)
    texts_dropped: int = 0
    pooling: str | None = None  # videos: how frames became one score (see xmodal.eval.embedding)
    cached: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    xmodal_version: str = xmodal.__version__

    @property
    def run_label(self) -> str:
        """The model, and for videos its pooling: what tells the runs on one dataset apart."""
        return self.model if self.pooling is None else f"{self.model} · {self.pooling}"


def directions_for(kind: str, wanted: Sequence[str] | None = None) -> list[str]:
    """The directions that apply to a dataset kind, in the order asked (default: both)."""
    valid = _BY_KIND[kind]
    if wanted is None:
        return list(valid)
    unknown = [d for d in wanted if d not in DIRECTIONS]
    if unknown:
        raise InvalidArgumentError("direction", unknown[0], sorted(DIRECTIONS))
    chosen = [d for d in wanted if d in valid]
    if not chosen:
        raise InvalidArgumentError("directions", ",".join(wanted), f"for a {kind} dataset: {', '.join(valid)}")
    return chosen


def evaluate_retrieval(
    encoder: Encoder,
    dataset: RetrievalDataset,
    *,
    directions: Sequence[str] | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    frames: int = DEFAULT_FRAMES,
    pooling: str = "uniform",
    batch_size: int = 32,
    ks: Sequence[int] = DEFAULT_KS,
    predictions: int = 0,
) -> RetrievalResult:
    """Embed the dataset (through the cache), rank both ways, and compute R@K, MedR, MnR, MR.
    Videos are pooled by `pooling` ("uniform" over `frames` frames, "segments" or "best").
    `predictions` > 0 also keeps each query's top-`predictions` gallery items (DirectionResult.top)."""
    progress = progress or NullProgress()
    directions_for(dataset.kind, directions)  # a bad choice fails before any encoding
    started = time.perf_counter()
    items = embed_items(
        encoder,
        dataset.items,
        dataset.kind,
        frames=frames,
        pooling=pooling,
        batch_size=batch_size,
        cache=cache,
        progress=progress,
    )
    items_done = time.perf_counter()
    result = evaluate_embedded(
        encoder,
        dataset,
        items.vectors,
        failures=items.failures,
        item_parts=items.parts,
        directions=directions,
        cache=cache,
        progress=progress,
        ks=ks,
        predictions=predictions,
    )
    result.cached["items"] = items.cached
    if dataset.kind == "video":
        result.pooling = pooling if pooling != "uniform" else f"uniform{frames}"
    result.timings = {"embed_items_s": items_done - started, **result.timings, "wall_s": time.perf_counter() - started}
    return result


def evaluate_models(
    models: Sequence[str | Encoder],
    datasets: Sequence[RetrievalDataset],
    *,
    precision: str = "fp32",
    runtime: str = "auto",
    poolings: Sequence[str] = ("uniform",),
    on_error: Callable[[str, XmodalError], None] | None = None,
    **settings,
) -> list[RetrievalResult]:
    """Every model (a name, folder or loaded Encoder) on every dataset, model by model (one model in
    memory at a time), video datasets once per pooling; `settings` are evaluate_retrieval's keywords.
    A model that cannot be loaded, or a (model, dataset) pair that cannot be evaluated, goes to
    `on_error(model name, error)` and the rest still runs; without `on_error` the error is raised."""
    results: list[RetrievalResult] = []

    def failed(name: str, exc: XmodalError) -> None:
        if on_error is None:
            raise exc
        on_error(name, exc)

    for model in models:
        name = str(model) if isinstance(model, (str, os.PathLike)) else model.name
        try:
            named = isinstance(model, (str, os.PathLike))
            encoder = load_model(model, precision=precision, runtime=runtime) if named else model
        except XmodalError as exc:
            failed(name, exc)
            continue
        for dataset in datasets:
            for pooling in poolings if dataset.kind == "video" else poolings[:1]:
                try:
                    results.append(evaluate_retrieval(encoder, dataset, pooling=pooling, **settings))
                except XmodalError as exc:
                    failed(name, exc)
    return results


def evaluate_embedded(
    encoder: Encoder,
    dataset: RetrievalDataset,
    item_vectors: np.ndarray,
    *,
    failures: dict[int, str] | None = None,
    item_parts: Sequence[np.ndarray] | None = None,
    directions: Sequence[str] | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    predictions: int = 0,
) -> RetrievalResult:
    """The retrieval benchmark for items already embedded (one row per dataset item, e.g. a
    library's stored vectors): embed the captions, rank both ways, compute the metrics.
    `failures` (item index -> reason) are items without a usable row, left out of the gallery.
    With `item_parts` (each item's (S_i, D) vectors, e.g. a video's segments) a caption scores an
    item by its best part instead of by its row."""
    progress = progress or NullProgress()
    failures = failures or {}
    chosen = directions_for(dataset.kind, directions)
    started = time.perf_counter()
    evaluated = dataset.without_items(failures)
    if failures:  # a copy of the gallery only when rows must go
        kept = [i for i in range(len(dataset.items)) if i not in failures]
        item_vectors = item_vectors[kept]
        item_parts = None if item_parts is None else [item_parts[i] for i in kept]
    texts = embed_texts(encoder, evaluated.texts, language=dataset.language, cache=cache, progress=progress)
    texts_done = time.perf_counter()
    similarity = None if item_parts is None else best_part_similarity(texts.vectors, item_parts)
    results = _rank(chosen, item_vectors, texts.vectors, evaluated, ks, predictions, similarity)
    finished = time.perf_counter()
    return RetrievalResult(
        model=encoder.name,
        model_key=encoder.model_key,
        precision=encoder.precision,
        dataset=dataset.name,
        format=dataset.format,
        split=dataset.split,
        kind=dataset.kind,
        items=len(evaluated.items),
        texts=len(evaluated.texts),
        directions=results,
        missing=list(dataset.missing),
        failed={dataset.item_ids[i]: reason for i, reason in sorted(failures.items())},
        malformed=[str(p) for p in dataset.problems],
        texts_dropped=evaluated.texts_dropped,
        cached={"items": 0, "texts": texts.cached},
        timings={
            "embed_texts_s": texts_done - started,
            "ranking_s": finished - texts_done,
            "wall_s": finished - started,
        },
    )


def best_part_similarity(text_vectors: np.ndarray, parts: Sequence[np.ndarray], block: int = 4096) -> np.ndarray:
    """(T, N) similarity of each text to each item's best part: max over the item's (S_i, D) rows."""
    if any(len(p) == 0 for p in parts):
        raise InvalidArgumentError("item_parts", "an empty part list", "at least one vector per item")
    flat = np.concatenate(parts) if parts else np.zeros((0, text_vectors.shape[1]), np.float32)
    offsets = np.cumsum([0, *map(len, parts[:-1])]) if parts else np.zeros(0, np.int64)
    out = np.empty((len(text_vectors), len(parts)), np.float32)
    for start in range(0, len(text_vectors), block):  # bounded memory: block x (all parts)
        scores = text_vectors[start : start + block] @ flat.T
        out[start : start + block] = np.maximum.reduceat(scores, offsets, axis=1) if parts else scores[:, :0]
    return out


def _rank(
    directions: Sequence[str],
    item_vectors: np.ndarray,
    text_vectors: np.ndarray,
    dataset: RetrievalDataset,
    ks: Sequence[int],
    predictions: int = 0,
    similarity: np.ndarray | None = None,
) -> list[DirectionResult]:
    """Both directions from one text x item similarity matrix when it fits the memory budget (one
    matmul; image->text reads it column-wise), else each direction from embeddings in blocks.
    A given `similarity` (best-part scores) is used as it is."""
    text_positives = dataset.text_positives
    by_item = dataset.item_positives  # computed once: it is derived from all captions
    captioned = [i for i, p in enumerate(by_item) if p]
    item_positives = [by_item[i] for i in captioned]
    shared = similarity is not None or len(text_vectors) * len(item_vectors) * 4 <= SIMILARITY_BUDGET_BYTES
    if similarity is None and shared:
        similarity = text_vectors @ item_vectors.T
    results = []
    for direction in directions:
        top = None
        if direction in ("t2i", "t2v"):
            queries, gallery, positives = len(text_vectors), len(item_vectors), text_positives
            query_ids, gallery_ids, query_texts = dataset.text_ids, dataset.item_ids, dataset.texts
            ranks = (
                ranks_from_similarity(similarity, positives)
                if shared
                else ranks_from_embeddings(text_vectors, item_vectors, positives)
            )
            if predictions:
                top = (
                    top_k(similarity, predictions)
                    if shared
                    else top_k_from_embeddings(text_vectors, item_vectors, predictions)
                )
        else:
            queries, gallery, positives = len(captioned), len(text_vectors), item_positives
            query_ids, gallery_ids, query_texts = [dataset.item_ids[i] for i in captioned], dataset.text_ids, None
            if not captioned:
                raise InvalidArgumentError(
                    "dataset", dataset.name, f"at least one captioned item for {DIRECTIONS[direction]}"
                )
            if shared:
                columns = similarity if len(captioned) == len(item_vectors) else similarity[:, captioned]
                ranks = ranks_from_similarity(columns.T, positives)
                if predictions:
                    top = top_k(np.ascontiguousarray(columns.T), predictions)
            else:
                ranks = ranks_from_embeddings(item_vectors[captioned], text_vectors, positives)
                if predictions:
                    top = top_k_from_embeddings(item_vectors[captioned], text_vectors, predictions)
        counts = np.fromiter(map(len, positives), dtype=np.int64, count=len(positives))
        results.append(
            DirectionResult(
                direction=direction,
                metrics=metrics_from_ranks(ranks, ks),
                ranks=ranks,
                queries=queries,
                gallery=gallery,
                chance=chance_recall(gallery, counts, ks),
                chance_curve=np.array(list(chance_recall(gallery, counts, range(1, CURVE_MAX_K + 1)).values())),
                query_ids=list(query_ids),
                gallery_ids=list(gallery_ids),
                query_texts=None if query_texts is None else list(query_texts),
                top=top,
            )
        )
    return results
