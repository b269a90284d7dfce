"""Embedding benchmark items and captions through the cache: only what is not stored is encoded.

Images and captions are embedded by the encoder as they are; a video is embedded as the mean of
its uniformly sampled frames' unit embeddings, re-normalized. Items that cannot be decoded come
back as NaN rows with the reason, so the benchmark drops them and reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmodal.errors import MediaError, describe_item
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import MediaSource
from xmodal.media.hashing import content_hash
from xmodal.media.video import sample_frames
from xmodal.models.encoder import Encoder, l2_normalize
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 8
_TEXT_CHUNK = 1024  # captions embedded (and committed to the cache) per step
_VIDEO_CHUNK = 8  # videos decoded in parallel and embedded (and committed) per step


@dataclass
class Embedded:
    """Embeddings (NaN rows where an item failed), the failures, and how many came from the cache."""

    vectors: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)
    cached: int = 0


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

    def embed(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        return encoder.embed_texts([texts[i] for i in indices], language), {}

    return _embed_cached(encoder, keys, embed, _TEXT_CHUNK, cache, progress or NullProgress(), f"{encoder.name}: texts")


def embed_items(
    encoder: Encoder,
    items: Sequence[MediaSource],
    kind: str = "image",
    *,
    frames: int = DEFAULT_FRAMES,
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> Embedded:
    """Image (or video) embeddings (N, D), cached by file content (and frame count for videos)."""
    progress = progress or NullProgress()
    keys, failures = _item_keys(items, kind, frames, cache)
    if kind == "video":

        def embed(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
            return _embed_videos(encoder, [items[i] for i in indices], frames, batch_size)

        chunk = _VIDEO_CHUNK
    else:

        def embed(indices: list[int]) -> tuple[np.ndarray, dict[int, str]]:
            errors: dict[int, str] = {}
            vectors = encoder.embed_images(
                [items[i] for i in indices],
                batch_size,
                on_error=lambda k, _item, exc: errors.__setitem__(k, exc.reason),
            )
            return vectors, errors

        chunk = 8 * batch_size
    valid = [i for i in range(len(items)) if i not in failures]
    result = _embed_cached(
        encoder,
        [keys[i] for i in valid],
        lambda sub: embed([valid[j] for j in sub]),
        chunk,
        cache,
        progress,
        f"{encoder.name}: {kind}s",
    )
    vectors = np.full((len(items), encoder.dim), np.nan, dtype=np.float32)
    vectors[valid] = result.vectors
    failures.update({valid[j]: reason for j, reason in result.failures.items()})
    for i, reason in sorted(failures.items()):
        log.warning("skipped %s: %s", describe_item(items[i]), reason)
    return Embedded(vectors, failures, result.cached)


def _item_keys(
    items: Sequence[MediaSource], kind: str, frames: int, cache: EmbeddingCache | None = None
) -> tuple[list[str], dict[int, str]]:
    """Content hashes (videos: plus the sampling); an unreadable file is a failure, not an error.
    With a cache, unchanged files (same size and mtime) reuse their stored hash."""
    keys, failures = [], {}
    suffix = f":uniform{frames}" if kind == "video" else ""
    for i, item in enumerate(items):
        try:
            digest = (
                cache.file_hashes([item])[0] if cache is not None and isinstance(item, Path) else content_hash(item)
            )
            keys.append(digest + suffix)
        except OSError as exc:
            keys.append("")
            failures[i] = f"cannot read file ({exc.strerror or exc})"
    return keys, failures


def _embed_cached(
    encoder: Encoder,
    keys: list[str],
    embed: Callable[[list[int]], tuple[np.ndarray, dict[int, str]]],
    chunk: int,
    cache: EmbeddingCache | None,
    progress: Progress,
    description: str,
) -> Embedded:
    """Look keys up, embed the rest in chunks (each committed to the cache), assemble in order."""
    out = np.full((len(keys), encoder.dim), np.nan, dtype=np.float32)
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
        vectors, errors = embed(indices)
        out[indices] = vectors
        failures.update({indices[k]: reason for k, reason in errors.items()})
        if cache is not None:
            cache.put(encoder.model_key, [(keys[i], out[i]) for k, i in enumerate(indices) if k not in errors])
        progress.advance(len(indices))
    return Embedded(out, failures, len(keys) - len(todo))


def _embed_videos(
    encoder: Encoder, paths: Sequence[MediaSource], frames: int, batch_size: int
) -> tuple[np.ndarray, dict[int, str]]:
    """Mean of each video's normalized frame embeddings, re-normalized; frames decoded on 2 threads."""

    def sample(path: MediaSource) -> list | MediaError:
        try:
            return sample_frames(path, frames)  # type: ignore[arg-type]
        except MediaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        sampled = list(pool.map(sample, paths))
    errors = {k: s.reason for k, s in enumerate(sampled) if isinstance(s, MediaError)}
    flat = [frame for s in sampled if not isinstance(s, MediaError) for frame in s]
    frame_vectors = encoder.embed_images(flat, batch_size) if flat else np.zeros((0, encoder.dim), np.float32)
    out = np.full((len(paths), encoder.dim), np.nan, dtype=np.float32)
    start = 0
    for k, s in enumerate(sampled):
        if not isinstance(s, MediaError):
            out[k] = l2_normalize(frame_vectors[start : start + len(s)].mean(axis=0))
            start += len(s)
    return out, errors
