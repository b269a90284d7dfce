"""A tagging run over a library: score every photo (and every moment of every video) against the
vocabulary's labels, decide with the thresholds in force, and commit the tags in batches.

The run in force is kept while its model, vocabulary and threshold settings stay the same: a
later run only tags the contents it has not tagged yet (new photos), with the same thresholds.
Anything else — another model, vocabulary, templates, threshold or confidence, `recalibrate`, or
a library grown by half since calibration — starts a new run: thresholds calibrated again, every
content tagged again. Each batch is one transaction (its tags and the marks that its contents are
done), so a run killed at any moment resumes with the contents it had not committed, and none is
tagged twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.models.embedder import Embedder
from xmodal.progress import NullProgress, Progress
from xmodal.store.catalog import Catalog, entry_items
from xmodal.store.tags import Tag
from xmodal.tags.calibrate import DEFAULT_CONFIDENCE, LabelThreshold, calibrate, fixed_thresholds
from xmodal.tags.vocabulary import Vocabulary

log = logging.getLogger(__name__)

BATCH = 500  # contents tagged per transaction
CALIBRATION_SAMPLE = 20_000  # photos the thresholds are fitted on, at most (a seeded random sample)
REGROW = 1.5  # a library this many times the size it was calibrated on is calibrated again
PROBABILITY_SCALE = 100.0  # CLIP's logit scale: softmax(100 * cosine) within a group, for threshold "off"


@dataclass
class TagReport:
    """What one tagging run did."""

    model: str
    labels: int
    labels_used: int = 0
    tagged: int = 0  # contents tagged in this run
    already: int = 0  # contents the run in force had tagged before
    tags: int = 0  # tags given in this run
    new_run: bool = False
    calibrated_on: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    left_out: dict[str, str] = field(default_factory=dict)  # label -> why calibration did not use it

    def summary(self) -> str:
        how = "new thresholds" if self.new_run else "thresholds kept"
        return (
            f"{self.tagged} photos tagged ({self.already} already), {self.tags} tags; "
            f"{self.labels_used} of {self.labels} labels in use ({how}, calibrated on {self.calibrated_on}) "
            f"({self.seconds:.1f} s)"
        )


@dataclass(frozen=True)
class TagSettings:
    """How tags are decided: threshold "auto" (calibrated to `confidence`), "off" (the top label of
    each group), or a cosine for every label."""

    threshold: str | float = "auto"
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if self.threshold not in ("auto", "off") and not isinstance(self.threshold, (int, float)):
            raise InvalidArgumentError("--threshold", self.threshold, "auto, off or a cosine such as 0.25")

    @classmethod
    def parse(cls, threshold: str | float | None, confidence: float | None = None) -> TagSettings:
        value: str | float = "auto" if threshold is None else threshold
        if isinstance(value, str) and value not in ("auto", "off"):
            try:
                value = float(value)
            except ValueError:
                raise InvalidArgumentError("--threshold", threshold, "auto, off or a cosine such as 0.25") from None
        return cls(value, DEFAULT_CONFIDENCE if confidence is None else confidence)

    def key(self) -> str:
        return f"{self.threshold}:{self.confidence}" if self.threshold == "auto" else str(self.threshold)


def tag_library(
    catalog: Catalog,
    encoder: Embedder,
    vocabulary: Vocabulary,
    settings: TagSettings | None = None,
    *,
    recalibrate: bool = False,
    label_vectors: np.ndarray | None = None,
    batch_size: int = BATCH,
    progress: Progress | None = None,
) -> TagReport:
    """Tag the library's photos and videos for `encoder`'s model (the catalog a writer connection),
    `batch_size` contents per transaction. `label_vectors` (labels, D) are the labels' prompt
    embeddings when computed already."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError("--batch-size", batch_size, "a whole number >= 1")
    settings = settings or TagSettings()
    progress = progress or NullProgress()
    started = time.perf_counter()
    labels = vocabulary.labels
    report = TagReport(model=encoder.name, labels=len(labels))
    classes = label_vectors if label_vectors is not None else prompt_vectors(encoder, vocabulary)
    with catalog.read():
        hashes, vectors, owners = _targets(catalog, encoder.model_key)
    digest = hashlib.blake2b(
        f"{encoder.model_key}|{vocabulary.digest()}|{settings.key()}".encode(), digest_size=8
    ).hexdigest()
    run = catalog.tags.current_run()
    unique = len(set(hashes))
    stale = run is None or run.digest != digest or recalibrate
    stale = stale or (settings.threshold == "auto" and unique >= REGROW * max(run.calibrated_on, 1))
    if stale:
        thresholds = _thresholds(labels, settings, _content_scores(vectors, owners, classes, sample=True))
        with catalog.transaction(bump=False):
            run_id = catalog.tags.start_run(
                encoder.model_key,
                digest,
                vocabulary.to_dict(),
                {"settings": settings.key(), "labels": {t.label: t.to_dict() for t in thresholds}},
                unique,
            )
        report.new_run, report.calibrated_on = True, unique
    else:
        run_id = run.id
        thresholds = [LabelThreshold.from_dict(label, run.thresholds["labels"][label]) for label in labels]
        report.calibrated_on = run.calibrated_on
    report.labels_used = sum(t.cosine is not None for t in thresholds) if settings.threshold != "off" else len(labels)
    report.left_out = {t.label: t.reason for t in thresholds if t.reason}
    with catalog.read():
        done = catalog.tags.tagged(run_id)
    todo = sorted({h for h in hashes if h not in done})
    report.already = len({h for h in hashes if h in done})
    if todo and run is not None and run.id == run_id and run.finished_at is not None:
        with catalog.transaction(bump=False):
            catalog.tags.reopen_run(run_id)
    progress.start("tagging", len(todo))
    position = {h: i for i, h in enumerate(hashes)}
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            scores = _content_scores(vectors, owners, classes, hashes=batch, position=position)
            decided = _decide(batch, scores, vocabulary, thresholds, settings)
            with catalog.transaction(bump=False):
                catalog.tags.put(run_id, decided)
            report.tagged += len(batch)
            report.tags += sum(len(t) for _, t in decided)
            progress.advance(len(batch))
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted: the tags committed so far are kept; run again to finish")
    else:
        with catalog.transaction(bump=False):
            catalog.tags.finish_run(run_id)
    report.seconds = time.perf_counter() - started
    return report


def prompt_vectors(
    encoder: Embedder, vocabulary: Vocabulary, cache=None, progress: Progress | None = None
) -> np.ndarray:
    """(labels, D) unit rows: per label, the mean of its group's prompt embeddings (CLIP's way)."""
    from xmodal.eval.zeroshot import class_embeddings

    parts = [
        class_embeddings(encoder, list(group.labels), list(group.templates), cache=cache, progress=progress)
        for group in vocabulary.groups
    ]
    return np.concatenate(parts).astype(np.float32)


def _targets(catalog: Catalog, model_key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(content hash per row, the rows' vectors, the row of each vector): a photo's own vector; a
    video's own vector and its moments'. Text vectors (documents, photo descriptions) are not
    tagged."""
    photos = catalog.filtered_ids(type="image", model_key=model_key)
    videos = catalog.filtered_ids(type="video", model_key=model_key)
    rows = catalog.items_by_id([*photos.tolist(), *videos.tolist()])
    photo_ids, photo_vectors = catalog.vectors(model_key, photos)
    video_entries, video_vectors = catalog.entries(model_key, videos) if len(videos) else (np.empty(0, np.int64), None)
    hashes: list[str] = []
    index: dict[str, int] = {}
    owners = []
    for item in [*photo_ids.tolist(), *entry_items(video_entries).tolist()]:
        digest = rows[item].content_hash
        if digest not in index:
            index[digest] = len(hashes)
            hashes.append(digest)
        owners.append(index[digest])
    parts = [v for v in (photo_vectors, video_vectors) if v is not None and len(v)]
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return hashes, vectors, np.asarray(owners, dtype=np.int64)


def _content_scores(
    vectors: np.ndarray,
    owners: np.ndarray,
    classes: np.ndarray,
    *,
    sample: bool = False,
    hashes: list[str] | None = None,
    position: dict[str, int] | None = None,
) -> np.ndarray:
    """(contents, labels) cosine scores, each content's best over its vectors: every content (at
    most CALIBRATION_SAMPLE of them, a seeded sample, with `sample`), or those of `hashes`."""
    contents = int(owners.max()) + 1 if len(owners) else 0
    if hashes is not None and position is not None:
        wanted = np.asarray([position[h] for h in hashes], dtype=np.int64)
    elif sample and contents > CALIBRATION_SAMPLE:
        wanted = np.sort(np.random.default_rng(0).choice(contents, CALIBRATION_SAMPLE, replace=False))
    else:
        wanted = np.arange(contents)
    slot = np.full(contents, -1, dtype=np.int64)
    slot[wanted] = np.arange(len(wanted))
    rows = np.nonzero(slot[owners] >= 0)[0] if len(owners) else np.empty(0, np.int64)
    out = np.full((len(wanted), len(classes)), -np.inf, dtype=np.float32)
    if len(rows):
        np.maximum.at(out, slot[owners[rows]], vectors[rows] @ classes.T)
    return out


def _thresholds(labels: list[str], settings: TagSettings, scores: np.ndarray) -> list[LabelThreshold]:
    if settings.threshold == "off":
        return [LabelThreshold(label, None) for label in labels]
    if settings.threshold != "auto":
        return fixed_thresholds(labels, float(settings.threshold))
    return calibrate(labels, scores, settings.confidence)


def _decide(
    hashes: list[str],
    scores: np.ndarray,
    vocabulary: Vocabulary,
    thresholds: list[LabelThreshold],
    settings: TagSettings,
) -> list[tuple[str, list[Tag]]]:
    """Each content's tags: labels at or above their threshold (with the calibration's confidence),
    or with threshold "off" the top label of every group (with its softmax probability)."""
    tags: list[list[Tag]] = [[] for _ in hashes]
    start = 0
    for group in vocabulary.groups:
        block = scores[:, start : start + len(group.labels)]
        if settings.threshold == "off":
            logits = PROBABILITY_SCALE * (block - block.max(axis=1, keepdims=True))
            probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            top = block.argmax(axis=1)
            for n, j in enumerate(top):
                tags[n].append(Tag(group.labels[j], float(block[n, j]), float(probability[n, j])))
        else:
            for j, label in enumerate(group.labels):
                rule = thresholds[start + j]
                if rule.cosine is None:
                    continue
                hit = np.nonzero(block[:, j] >= rule.cosine)[0]
                confidence = rule.confidence(block[hit, j])
                for n, c in zip(hit, confidence, strict=True):
                    tags[n].append(Tag(label, float(block[n, j]), float(c)))
        start += len(group.labels)
    return list(zip(hashes, tags, strict=True))
