"""Embedding storage keyed by (model key, content hash) in a SQLite table.

The same class backs the library catalog's embeddings (inside the catalog database, so items and
their vectors commit in one transaction) and the benchmark cache (a database of its own). The
caller owns the connection and its transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import numpy as np

from xmodal.store.sql import select_in

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_key    TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    dim          INTEGER NOT NULL,
    vector       BLOB NOT NULL,
    PRIMARY KEY (model_key, content_hash)
) WITHOUT ROWID;
"""


class EmbeddingStore:
    """float32 vectors by (model_key, content_hash); put/get in batches."""

    def __init__(self, conn: sqlite3.Connection, *, create: bool = True):
        self.conn = conn
        if create:  # a database of its own (the benchmark cache); the catalog creates it in a migration
            conn.executescript(SCHEMA)

    def get_many(self, model_key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors for those of `hashes` that have one."""
        found: dict[str, np.ndarray] = {}
        rows = select_in(
            self.conn,
            "SELECT content_hash, dim, vector FROM embeddings WHERE model_key = ? AND content_hash IN ({marks})",
            hashes,
            before=(model_key,),
        )
        for content_hash, dim, blob in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape == (dim,):  # a torn or foreign row is treated as missing
                found[content_hash] = vector
        return found

    def put_many(self, model_key: str, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Insert or replace vectors; returns how many were written."""
        rows = [(model_key, h, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in items]
        self.conn.executemany(
            "INSERT INTO embeddings (model_key, content_hash, dim, vector) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (model_key, content_hash) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
            rows,
        )
        return len(rows)

    def count(self, model_key: str | None = None) -> int:
        if model_key is None:
            return self.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM embeddings WHERE model_key = ?", (model_key,)).fetchone()[0]
