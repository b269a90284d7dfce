"""The benchmark embedding cache: an EmbeddingStore in a SQLite database of its own.

Vectors are keyed by the encoder's model key (name, precision, weights digest) and the content
hash of the image / video file or of the caption text, so re-running a benchmark, adding a model
or a dataset that shares images only encodes what is new. WAL journaling and one commit per
batch: a run killed at any point (even kill -9) keeps every batch it finished.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from xmodal.errors import XmodalError
from xmodal.paths import cache_root
from xmodal.store.embeddings import EmbeddingStore

log = logging.getLogger(__name__)


def default_cache_path() -> Path:
    """cache_root()/eval/embeddings.sqlite ($XMODAL_CACHE moves it)."""
    return cache_root() / "eval" / "embeddings.sqlite"


class EmbeddingCache:
    """Benchmark embeddings by (model key, content key); use as a context manager."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
            self.store = EmbeddingStore(self.conn)
        except sqlite3.DatabaseError as exc:
            raise XmodalError(f"{self.path}: embedding cache cannot be used ({exc}); delete it or pass --no-cache") from None

    def get(self, model_key: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors for those keys that have one."""
        return self.store.get_many(model_key, keys)

    def put(self, model_key: str, pairs: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store one batch of vectors and commit it."""
        with self.conn:
            self.store.put_many(model_key, pairs)

    def count(self, model_key: str | None = None) -> int:
        return self.store.count(model_key)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
