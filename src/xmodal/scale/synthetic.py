"""Embeddings folders of synthetic unit vectors, to build and measure large indexes without
embedding anything: uniform on the sphere (the hardest case for compression: no structure), or
clustered (what real embeddings look like: topics). Shards are generated and written one at a
time, so a 10M-vector folder needs one shard's memory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.progress import NullProgress, Progress
from xmodal.scale.shards import FORMAT, MANIFEST, ShardContent, item_id, write_json_atomic, write_shard

DISTRIBUTIONS = ("uniform", "clustered")


def write_synthetic_embeddings(
    folder: str | Path,
    count: int,
    dim: int,
    *,
    shard_size: int = 100_000,
    distribution: str = "uniform",
    clusters: int = 10_000,
    spread: float = 0.5,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Write `count` float16 unit vectors as an embeddings folder (model key `synthetic-...`).

    clustered: centres uniform on the sphere, each vector a centre plus Gaussian noise of norm
    about `spread` (0.5: neighbours within a cluster at cosine ~0.8), then renormalized."""
    if distribution not in DISTRIBUTIONS:
        raise InvalidArgumentError("distribution", distribution, DISTRIBUTIONS)
    import pyarrow as pa

    folder = Path(folder)
    progress = progress or NullProgress()
    progress.start(f"writing {distribution} vectors", count)
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32)) if distribution == "clustered" else None
    key = f"synthetic-{distribution}-{dim}d@fp16:{seed}"
    markers = []
    for shard, start in enumerate(range(0, count, shard_size)):
        n = min(shard_size, count - start)
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        if centres is not None:
            vectors = centres[rng.integers(0, clusters, n)] + vectors * (spread / np.sqrt(dim))
        image = _unit(vectors).astype(np.float16)
        ids = [item_id(shard, i) for i in range(n)]
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "path": [f"synthetic/{i}" for i in ids],
                "path_bytes": pa.array([f"synthetic/{i}".encode() for i in ids], pa.binary()),
                "status": ["ok"] * n,
                "image_row": pa.array(np.arange(n), pa.int64()),
                "captions": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
                "taken_at": pa.array([None] * n, pa.float64()),
            }
        )
        summary = {"items": n, "ok": n, "failed": 0, "pending": 0, "captions": 0}
        content = ShardContent(shard, f"{key}:{shard}", image, np.zeros((0, dim), np.float16), table, summary)
        markers.append(write_shard(folder, content, key))
        progress.advance(n)
    manifest = {
        "format": FORMAT,
        "model": {"key": key, "name": key, "source": None, "precision": "fp16", "family": "synthetic", "dim": dim},
        "source": {"description": f"{count:,} synthetic {distribution} unit vectors", "kind": "synthetic"},
        "settings": {"shard_size": shard_size, "dtype": "float16", "clusters": clusters, "spread": spread},
        "counts": {"items": count, "ok": count, "failed": 0, "pending": 0, "captions": 0, "shards": len(markers)},
        "shards": [{k: m[k] for k in ("shard", "items", "ok", "files")} for m in markers],
        "updated_at": time.time(),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return folder


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
