"""One shard's work, wherever it runs (a Ray actor, or this process): the ingest embed stage over
the shard's jobs, its captions through the text tower, and the shard's files written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.models.embedder import Embedder
from xmodal.scale.shards import ShardContent, item_id, write_shard
from xmodal.scale.sources import ShardSpec, shard_jobs
from xmodal.store.catalog import display_path
from xmodal.store.ingest.embed import EmbedConfig, EmbedResult, embed

log = logging.getLogger(__name__)


def embed_shard(spec: ShardSpec, embedder: Embedder, folder: Path, config: EmbedConfig) -> dict[str, Any]:
    """Embed one shard and write its files into `folder`; returns the shard's marker."""
    captions: dict[str, tuple[str, ...]] = {}
    order: list[str] = []

    def jobs():
        for job in shard_jobs(spec, captions):
            order.append(job.path)
            yield job

    results: dict[str, EmbedResult] = {}
    for batch in embed(jobs(), embedder, frozenset(), config):
        for result in batch:
            results[result.job.path] = result
    rows = [results[path] for path in order]
    content = _shard_content(spec, rows, [captions[path] for path in order], embedder, config.batch_size)
    marker = write_shard(folder, content, embedder.model_key)
    log.info("shard %d: %d items, %d ok, %d failed", spec.index, content.summary["items"], *_ok_failed(content))
    return marker


def _ok_failed(content: ShardContent) -> tuple[int, int]:
    return content.summary["ok"], content.summary["failed"]


def _shard_content(
    spec: ShardSpec, rows: list[EmbedResult], captions: list[tuple[str, ...]], embedder: Embedder, batch: int
) -> ShardContent:
    import pyarrow as pa

    by_hash = {r.row.content_hash: r.vector for r in rows if r.vector is not None}  # a content met twice: once
    image, image_row = [], []
    for result in rows:
        vector = by_hash.get(result.row.content_hash) if result.row.status == "ok" else None
        image_row.append(len(image) if vector is not None else -1)
        if vector is not None:
            image.append(vector)
    texts = [c for caps in captions for c in caps]
    text_vectors = _embed_texts(embedder, texts, batch)
    starts = np.cumsum([0] + [len(c) for c in captions])[:-1]
    table = pa.table(
        {
            "id": pa.array([item_id(spec.index, n) for n in range(len(rows))], pa.int64()),
            "path": [display_path(r.row.path) for r in rows],
            "path_bytes": pa.array([os.fsencode(r.row.path) for r in rows], pa.binary()),
            "type": [r.row.type for r in rows],
            "status": [r.row.status for r in rows],
            "error": [r.row.error for r in rows],
            "size": pa.array([r.row.size for r in rows], pa.int64()),
            "mtime_ns": pa.array([r.row.mtime_ns for r in rows], pa.int64()),
            "content_hash": [r.row.content_hash for r in rows],
            "width": pa.array([r.row.width for r in rows], pa.int32()),
            "height": pa.array([r.row.height for r in rows], pa.int32()),
            "taken_at": pa.array([r.row.taken_at for r in rows], pa.float64()),
            "taken_at_source": [r.row.taken_at_source for r in rows],
            "image_row": pa.array(image_row, pa.int64()),
            "captions": pa.array([list(c) for c in captions], pa.list_(pa.string())),
            "text_row": pa.array([int(s) if c else -1 for s, c in zip(starts, captions, strict=True)], pa.int64()),
        }
    )
    status = [r.row.status for r in rows]
    summary = {
        "items": len(rows),
        "ok": int(sum(s == "ok" for s in status)),
        "failed": int(sum(s == "failed" for s in status)),
        "pending": int(sum(s == "pending" for s in status)),
        "captions": len(texts),
    }
    dim = embedder.dim
    image_array = np.stack(image).astype(np.float16) if image else np.zeros((0, dim), np.float16)
    return ShardContent(spec.index, spec.fingerprint(), image_array, text_vectors, table, summary)


def _embed_texts(embedder: Embedder, texts: list[str], batch: int) -> np.ndarray:
    parts = [embedder.embed_texts(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(parts).astype(np.float16) if parts else np.zeros((0, embedder.dim), np.float16)
