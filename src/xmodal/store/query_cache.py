"""Embeddings of text queries, kept in the library folder (`queries.sqlite`) by (model key, language,
text): a query typed again costs a lookup instead of opening and running the text tower.

A cache, never the truth: the model key names the model's files (new weights, new key), so an entry
can only be stale by being unused; it is best effort — a library on read-only media, a busy or
damaged cache file just means the text is encoded. It holds at most MAX_ENTRIES queries, the oldest
dropped first.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_FILE = "queries.sqlite"
MAX_ENTRIES = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    model_key TEXT NOT NULL,
    language  TEXT NOT NULL,
    text      TEXT NOT NULL,
    vector    BLOB NOT NULL,
    added_at  REAL NOT NULL,
    PRIMARY KEY (model_key, language, text)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queries_added ON queries (added_at)
"""


class QueryCache:
    """Text-query embeddings of one library folder, shared by the threads of a process."""

    def __init__(self, folder: Path):
        self.path = folder / CACHE_FILE
        self._conn: sqlite3.Connection | None = None
        self._usable = True
        self._guard = threading.Lock()

    def vectors(
        self,
        model_key: str,
        texts: Sequence[str],
        language: str | None,
        encode: Callable[[list[str]], np.ndarray],
    ) -> np.ndarray:
        """(len(texts), D) float32 unit rows: cached ones looked up, the rest `encode`d and kept."""
        language = language or ""
        found = self._lookup(model_key, language, texts)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            encoded = np.asarray(encode(missing), dtype=np.float32)
            found.update(zip(missing, encoded, strict=True))
            self._store(model_key, language, dict(zip(missing, encoded, strict=True)))
        return np.stack([found[t] for t in texts])

    def close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None and self._usable:
            try:
                conn = sqlite3.connect(self.path, timeout=0.2, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA.split(";"):
                    conn.execute(statement)
                self._conn = conn
            except sqlite3.Error as exc:  # read-only media, a damaged file: no cache, same results
                log.info("%s: query cache unavailable (%s); queries are encoded each time", self.path, exc)
                self._usable = False
        return self._conn

    def _lookup(self, model_key: str, language: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        with self._guard:
            if not self.path.exists() or (conn := self._connection()) is None:
                return {}
            try:
                marks = ",".join("?" * len(texts))
                rows = conn.execute(
                    f"SELECT text, vector FROM queries WHERE model_key = ? AND language = ? AND text IN ({marks})",
                    (model_key, language, *texts),
                ).fetchall()
            except sqlite3.Error as exc:
                log.info("%s: query cache not read (%s)", self.path, exc)
                return {}
        return {text: np.frombuffer(blob, dtype=np.float32) for text, blob in rows}

    def _store(self, model_key: str, language: str, vectors: dict[str, np.ndarray]) -> None:
        with self._guard:
            if (conn := self._connection()) is None:
                return
            now = time.time()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR REPLACE INTO queries VALUES (?, ?, ?, ?, ?)",
                    [(model_key, language, t, v.astype(np.float32).tobytes(), now) for t, v in vectors.items()],
                )
                conn.execute(
                    "DELETE FROM queries WHERE added_at < "
                    "(SELECT added_at FROM queries ORDER BY added_at DESC LIMIT 1 OFFSET ?)",
                    (MAX_ENTRIES - 1,),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:  # busy (another process writing), full disk: keep going uncached
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.info("%s: query not cached (%s)", self.path, exc)
