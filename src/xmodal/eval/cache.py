"""The benchmark embedding cache: an EmbeddingStore in a SQLite database of its own.

Vectors are keyed by the encoder's model key (name, precision, weights digest) and the content
hash of the image / video file or of the caption text, so re-running a benchmark, adding a model
or a dataset that shares images only encodes what is new. WAL journaling and one commit per
batch: a run killed at any point (even kill -9) keeps every batch it finished. Writing is optional:
when it fails (a full disk, read-only media) the run warns once and goes on without storing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from xmodal import settings
from xmodal.errors import XmodalError
from xmodal.media.hashing import content_hash
from xmodal.store.embeddings import EmbeddingStore

log = logging.getLogger(__name__)

# Content hashes of files by (path, size, mtime): a re-run stats its 5,000 COCO images instead of
# hashing 0.7 GB again (the same shortcut rclip and photo indexers take for unchanged files).
FILE_HASHES = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path         TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT NOT NULL
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    """<cache folder>/eval/embeddings.sqlite ($XMODAL_CACHE moves it)."""
    return settings.current().cache_dir / "eval" / "embeddings.sqlite"


class EmbeddingCache:
    """Benchmark embeddings by (model key, content key); use as a context manager."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.writable = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
            self.store = EmbeddingStore(self.conn)
            self.conn.executescript(FILE_HASHES)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise XmodalError(
                f"{self.path}: embedding cache cannot be used ({exc}); delete it or pass --no-cache"
            ) from None

    def get(self, model_key: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors for those keys that have one."""
        return self.store.get_many(model_key, keys)

    def put(self, model_key: str, pairs: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store one batch of vectors and commit it (skipped, with one warning, once writing failed)."""
        self._write("embeddings", lambda: self.store.put_many(model_key, pairs))

    def _write(self, what: str, write) -> None:
        """Run one write transaction; a failure to write disables writing for the rest of the run."""
        if not self.writable:
            return
        try:
            with self.conn:
                write()
        except (sqlite3.OperationalError, OSError) as exc:  # database or disk is full, read-only, I/O error
            self.writable = False
            log.warning("%s: %s not stored (%s); going on without writing the cache", self.path, what, exc)

    def file_hashes(self, paths: Sequence[Path]) -> list[str]:
        """content_hash of each file, reusing the stored one while its size and mtime are unchanged.

        Raises OSError (FileNotFoundError, PermissionError) for a file that cannot be read.
        """
        out, fresh = [], []
        for path in paths:
            key = os.path.abspath(path)
            stat = Path(path).stat()
            row = self.conn.execute(
                "SELECT size, mtime_ns, content_hash FROM file_hashes WHERE path = ?", (key,)
            ).fetchone()
            if row is not None and row[0] == stat.st_size and row[1] == stat.st_mtime_ns:
                out.append(row[2])
                continue
            digest = content_hash(path)
            out.append(digest)
            fresh.append((key, stat.st_size, stat.st_mtime_ns, digest))
        if fresh:
            self._write(
                "file hashes",
                lambda: self.conn.executemany(
                    "INSERT INTO file_hashes VALUES (?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash",
                    fresh,
                ),
            )
        return out

    @property
    def parsed_datasets(self) -> Path:
        """Folder of parsed dataset splits kept beside the database (see datasets.parsed)."""
        return self.path.parent / "datasets"

    def count(self, model_key: str | None = None) -> int:
        return self.store.count(model_key)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
