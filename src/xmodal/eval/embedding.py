"""Embedding benchmark items and captions through the cache: only what is not stored is encoded.

Images go through the ingest embed stage (`xmodal.store.ingest.embed`), the one the library's
index runs and `embed-dataset`'s Ray workers use: the same bounded reads, decoding and batching,
with whole batches in item order (bit-identical vectors run to run) and no photo descriptions.
Captions are embedded by the text tower as they are. Videos go through xmodal's one video path
(`xmodal.models.video.embed_video`) and are pooled one of three ways:

- "uniform": the mean of `frames` uniformly sampled frames' unit embeddings, re-normalised (CLIP4Clip's
  mean pooling; 12 frames is its convention for MSVD and MSR-VTT),
- "segments": the video's clip vector (1 frame per second, similar frames merged into segments, the
  segments averaged by duration),
- "best": every segment kept; a caption scores a video by its best segment (max over segments).

Items that cannot be decoded come back as NaN rows with the reason, so the benchmark drops them
and reports them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmodal import settings
from xmodal.errors import InvalidArgumentError, MediaError, describe_item
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import MediaSource
from xmodal.media.hashing import content_hash
from xmodal.media.video import FramePolicy
from xmodal.models.embedder import Embedder
from xmodal.models.encoder import Encoder, l2_normalize
from xmodal.models.video import VideoEmbedding, configured_policy, embed_video
from xmodal.progress import NullProgress, Progress
from xmodal.store.ingest.embed import EmbedConfig
from xmodal.store.ingest.embed import embed as embed_stage
from xmodal.store.ingest.plan import FileJob

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 12
POOLINGS = ("uniform", "segments", "best")
_TEXT_CHUNK = 1024  # captions embedded (and committed to the cache) per step
_VIDEO_CHUNK = 8  # videos embedded (and committed) per step, two at a time


@dataclass
class Embedded:
    """Embeddings (NaN rows where an item failed), the failures, and how many came from the cache.
    With "best" pooling, `parts[i]` holds item i's segment vectors (S_i, D) and `vectors` their mean."""

    vectors: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)
    cached: int = 0
    parts: list[np.ndarray] | None = None


def video_policy(pooling: str, frames: int = DEFAULT_FRAMES) -> FramePolicy:
    """The frame sampling a pooling uses: `frames` uniform frames, else the library's (the settings')."""
    if pooling not in POOLINGS:
        raise InvalidArgumentError("pooling", pooling, POOLINGS)
    return FramePolicy.uniform(frames) if pooling == "uniform" else configured_policy()


def pool_video(video: VideoEmbedding, pooling: str) -> np.ndarray:
    """One video's cached row for a pooling: a (D,) unit vector, or for "best" its segment vectors
    flattened to (S * D,)."""
    if pooling == "uniform":
        return l2_normalize(video.frame_vectors.mean(axis=0))
    if pooling == "segments":
        return video.clip_vector
    return np.concatenate([s.vector for s in video.segments])


def text_key(text: str, language: str | None) -> str:
    """Cache key of a caption: hash of its language and UTF-8 text."""
    return content_hash(f"text\0{language or ''}\0{text}".encode())


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    language: str | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> Embedded:
    """Caption embeddings (T, D), cached by text + language."""
    keys = [text_key(t, language) for t in texts]

    def embed(indices: list[int]) -> tuple[list[np.ndarray], dict[int, str]]:
        return list(encoder.embed_texts([texts[i] for i in indices], language)), {}

    rows, failures, cached = _embed_cached(
        encoder, keys, embed, _TEXT_CHUNK, cache, progress or NullProgress(), f"{encoder.name}: texts"
    )
    return Embedded(_stack(rows, encoder.dim), failures, cached)


def embed_items(
    encoder: Encoder,
    items: Sequence[MediaSource],
    kind: str = "image",
    *,
    frames: int = DEFAULT_FRAMES,
    pooling: str = "uniform",
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> Embedded:
    """Image (or video) embeddings (N, D), cached by file content (videos: and by pooling and sampling)."""
    progress = progress or NullProgress()
    policy = video_policy(pooling, frames) if kind == "video" else None
    keys, failures = _item_keys(items, policy and video_key_suffix(pooling, policy), cache)
    if policy is not None:

        def embed(indices: list[int]) -> tuple[list[np.ndarray], dict[int, str]]:
            return _embed_videos(encoder, [items[i] for i in indices], pooling, policy, batch_size, cache)

        chunk = _VIDEO_CHUNK
    else:

        def embed(indices: list[int]) -> tuple[list[np.ndarray], dict[int, str]]:
            return _embed_images(encoder, [items[i] for i in indices], [keys[i] for i in indices], batch_size)

        chunk = 8 * batch_size
    valid = [i for i in range(len(items)) if i not in failures]
    rows, errors, cached = _embed_cached(
        encoder,
        [keys[i] for i in valid],
        lambda sub: embed([valid[j] for j in sub]),
        chunk,
        cache,
        progress,
        f"{encoder.name}: {kind}s",
    )
    failures.update({valid[j]: reason for j, reason in errors.items()})
    for i, reason in sorted(failures.items()):
        log.warning("skipped %s: %s", describe_item(items[i]), reason)
    by_item: list[np.ndarray | None] = [None] * len(items)
    for j, row in zip(valid, rows, strict=True):
        by_item[j] = None if j in failures else row
    if pooling != "best" or kind != "video":
        return Embedded(_stack(by_item, encoder.dim), failures, cached)
    parts = [np.zeros((0, encoder.dim), np.float32) if r is None else r.reshape(-1, encoder.dim) for r in by_item]
    means = [None if r is None else l2_normalize(p.mean(axis=0)) for r, p in zip(by_item, parts, strict=True)]
    return Embedded(_stack(means, encoder.dim), failures, cached, parts)


def video_key_suffix(pooling: str, policy: FramePolicy) -> str:
    """What a video's cache key adds to its content hash: the pooling, the frame sampling and, for
    the poolings of segments, the merge threshold."""
    merge = "" if pooling == "uniform" else f":merge{settings.current().video_merge:g}"
    return f":{pooling}:{policy.key}{merge}"


def _item_keys(
    items: Sequence[MediaSource], suffix: str | None, cache: EmbeddingCache | None = None
) -> tuple[list[str], dict[int, str]]:
    """Content hashes (videos: plus the pooling and sampling); an unreadable file is a failure, not
    an error. With a cache, unchanged files (same size and mtime) reuse their stored hash."""
    keys, failures = [], {}
    for i, item in enumerate(items):
        try:
            digest = (
                cache.file_hashes([item])[0] if cache is not None and isinstance(item, Path) else content_hash(item)
            )
            keys.append(digest + (suffix or ""))
        except OSError as exc:
            keys.append("")
            failures[i] = f"cannot read file ({exc.strerror or exc})"
    return keys, failures


def _embed_cached(
    encoder: Encoder,
    keys: list[str],
    embed: Callable[[list[int]], tuple[list[np.ndarray], dict[int, str]]],
    chunk: int,
    cache: EmbeddingCache | None,
    progress: Progress,
    description: str,
) -> tuple[list[np.ndarray | None], dict[int, str], int]:
    """Look keys up, embed the rest in chunks (each committed to the cache), return rows in key
    order (None where embedding failed), the failures and how many rows came from the cache."""
    out: list[np.ndarray | None] = [None] * len(keys)
    found = cache.get(encoder.model_key, keys) if cache is not None else {}
    todo = []
    for i, key in enumerate(keys):
        if key in found:
            out[i] = found[key]
        else:
            todo.append(i)
    progress.start(description, len(keys))
    progress.advance(len(keys) - len(todo))
    failures: dict[int, str] = {}
    for start in range(0, len(todo), chunk):
        indices = todo[start : start + chunk]
        rows, errors = embed(indices)
        for k, i in enumerate(indices):
            out[i] = None if k in errors else rows[k]
        failures.update({indices[k]: reason for k, reason in errors.items()})
        if cache is not None:
            cache.put(encoder.model_key, [(keys[i], out[i]) for k, i in enumerate(indices) if k not in errors])
        progress.advance(len(indices))
    return out, failures, len(keys) - len(todo)


def _embed_images(
    embedder: Embedder, items: Sequence[MediaSource], keys: Sequence[str], batch_size: int
) -> tuple[list[np.ndarray | None], dict[int, str]]:
    """Each image's vector (None where it failed) and the failures' reasons, through the ingest
    embed stage; `keys` are the items' content hashes (computed once, for the cache)."""
    jobs = [_image_job(item, key, n) for n, (item, key) in enumerate(zip(items, keys, strict=True))]
    position = {id(job): n for n, job in enumerate(jobs)}
    config = EmbedConfig(batch_size=batch_size, descriptions=False, whole_batches=True, types=frozenset({"image"}))
    errors: dict[int, str] = {}
    by_hash: dict[str, np.ndarray] = {}  # a content met twice is encoded once
    for results in embed_stage(jobs, embedder, config=config):
        for result in results:
            if result.row.status != "ok":
                errors[position[id(result.job)]] = result.row.error or "not embedded"
            elif result.vector is not None:
                by_hash[result.row.content_hash or ""] = result.vector
    return [None if n in errors else by_hash[key] for n, key in enumerate(keys)], errors


def _image_job(item: MediaSource, key: str, n: int) -> FileJob:
    """A file the embed stage reads, or an image held in memory (a row of a TSV of base64 images)."""
    if isinstance(item, bytes):
        return FileJob(f"image {n}", "image", len(item), 0, known_hash=key, data=item)
    return FileJob(os.fspath(item), "image", 0, 0, known_hash=key)


def _stack(rows: Sequence[np.ndarray | None], dim: int) -> np.ndarray:
    """Rows as one (N, dim) float32 array, NaN where a row is missing."""
    out = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out


def _embed_videos(
    embedder: Embedder,
    paths: Sequence[MediaSource],
    pooling: str,
    policy: FramePolicy,
    batch_size: int,
    cache: EmbeddingCache | None,
) -> tuple[list[np.ndarray], dict[int, str]]:
    """Each video's row for `pooling` (two videos at a time). The poolings that share the sampling
    are stored in the cache too: one decode serves "segments" and "best"."""

    def one(path: MediaSource) -> VideoEmbedding | MediaError:
        try:
            return embed_video(  # the library's path: its policy, its merge threshold
                embedder, path, policy, batch_size=batch_size, merge_threshold=settings.current().video_merge
            )  # type: ignore[arg-type]
        except MediaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        videos = list(pool.map(one, paths))
    errors = {k: v.reason for k, v in enumerate(videos) if isinstance(v, MediaError)}
    rows = [np.zeros(0, np.float32) if isinstance(v, MediaError) else pool_video(v, pooling) for v in videos]
    siblings = [p for p in POOLINGS if p != pooling and video_policy(p) == policy]
    if cache is not None and siblings:
        pairs = []
        for path, video in zip(paths, videos, strict=True):
            if isinstance(video, VideoEmbedding):
                digest = cache.file_hashes([path])[0] if isinstance(path, Path) else content_hash(path)
                pairs += [(digest + video_key_suffix(p, policy), pool_video(video, p)) for p in siblings]
        cache.put(embedder.model_key, pairs)
    return rows, errors
