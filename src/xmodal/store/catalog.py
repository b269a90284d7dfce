"""The library catalog: one SQLite database (WAL) with a row per file, its embeddings per model,
and the models used.

The schema lives here with a VERSION and ordered migrations; a database written by a newer
xmodal is refused rather than altered. Paths are stored as the file system's bytes (BLOB), so
names that are not valid UTF-8 round-trip exactly. Every write goes through `transaction()`,
which also bumps the catalog revision: vector indexes remember the revision they were built at
and catch up from the rows changed since (`changed_since`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.errors import LibraryError
from xmodal.store.embeddings import EmbeddingStore

VERSION = 1
ITEM_TYPES = ("image", "video")
# ok: decoded (and embedded for the models run since); failed: `error` says why, retried when the
# file changes; pending: recognised but not indexed by this version (videos until video indexing).
STATUSES = ("ok", "failed", "pending")

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE items (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        path            BLOB NOT NULL UNIQUE,
        type            TEXT,
        status          TEXT NOT NULL,
        error           TEXT,
        size            INTEGER NOT NULL,
        mtime_ns        INTEGER NOT NULL,
        content_hash    TEXT,
        width           INTEGER,
        height          INTEGER,
        duration        REAL,
        taken_at        REAL,
        taken_at_source TEXT,
        added_at        REAL NOT NULL,
        updated_at      REAL NOT NULL,
        revision        INTEGER NOT NULL
    );
    CREATE INDEX items_content_hash ON items (content_hash);
    CREATE INDEX items_status_type ON items (status, type);
    CREATE INDEX items_revision ON items (revision);
    CREATE TABLE models (
        key             TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        source          TEXT NOT NULL,
        precision       TEXT NOT NULL,
        family          TEXT NOT NULL,
        dim             INTEGER NOT NULL,
        index_spec      TEXT NOT NULL DEFAULT 'auto',
        search_params   TEXT,
        added_at        REAL NOT NULL,
        last_indexed_at REAL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('revision', '0');
    """,
}

_ITEM_COLUMNS = (
    "id, path, type, status, error, size, mtime_ns, content_hash, width, height, duration, taken_at, taken_at_source"
)


@dataclass(frozen=True)
class ItemRecord:
    """What the catalog knows about one file."""

    id: int
    path: str
    type: str | None
    status: str
    error: str | None
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    duration: float | None
    taken_at: float | None  # seconds since the epoch (EXIF capture time, else the file's mtime)
    taken_at_source: str | None  # "exif" | "mtime"

    @classmethod
    def from_row(cls, row: Sequence) -> ItemRecord:
        return cls(row[0], decode_path(row[1]), *row[2:])


@dataclass(frozen=True)
class ItemUpdate:
    """A row to insert or replace (matched by path); the id stays when the path is known."""

    path: str
    type: str | None
    status: str
    size: int
    mtime_ns: int
    error: str | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    taken_at: float | None = None
    taken_at_source: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """A model used in this library: how to load it again and how its index is configured."""

    key: str
    name: str
    source: str
    precision: str
    family: str
    dim: int
    index_spec: str
    search_params: str | None
    last_indexed_at: float | None


def encode_path(path: str) -> bytes:
    return os.fsencode(path)


def decode_path(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else os.fsdecode(raw)


def display_path(path: str) -> str:
    """A printable form of a path (undecodable bytes shown as \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class Catalog:
    """The catalog database of one library folder. One connection: callers serialize access
    (`Library` holds a lock), threads may take turns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LibraryError(f"{self.path}: cannot open the catalog: {exc}") from None
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self.embeddings = EmbeddingStore(self.conn)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise LibraryError(f"{self.path}: not a usable catalog database: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise LibraryError(
                f"{self.path}: catalog schema version {version} is newer than this xmodal understands "
                f"({VERSION}); upgrade xmodal"
            )
        for step in range(version + 1, VERSION + 1):
            with self.transaction(bump=False):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {step}")

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, bump: bool = True) -> Iterator[int]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); yields the revision rows written in
        it should carry (-1 when `bump` is off: for writes that change no item)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            revision = self.revision() + 1 if bump else -1
            if bump:
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (str(revision),))
            yield revision
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def revision(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    # -- items ------------------------------------------------------------------------------
    def items_under(self, roots: Iterable[str]) -> dict[str, ItemRecord]:
        """Rows whose path is one of `roots` or inside one of them, by path."""
        found: dict[str, ItemRecord] = {}
        for root in roots:
            raw = encode_path(root.rstrip(os.sep) or os.sep)
            prefix = raw if raw.endswith(os.sep.encode()) else raw + os.sep.encode()
            upper = prefix[:-1] + bytes([prefix[-1] + 1])
            rows = self.conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE path = ? OR (path >= ? AND path < ?)", (raw, prefix, upper)
            )
            for row in rows:
                record = ItemRecord.from_row(row)
                found[record.path] = record
        return found

    def items_by_id(self, ids: Iterable[int]) -> dict[int, ItemRecord]:
        found: dict[int, ItemRecord] = {}
        unique = list(dict.fromkeys(int(i) for i in ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({marks})", chunk):
                found[row[0]] = ItemRecord.from_row(row)
        return found

    def item_by_path(self, path: str) -> ItemRecord | None:
        row = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE path = ?", (encode_path(path),)).fetchone()
        return ItemRecord.from_row(row) if row else None

    def upsert_items(self, updates: Sequence[ItemUpdate], revision: int) -> None:
        """Insert or update rows by path (call inside `transaction()`)."""
        now = time.time()
        self.conn.executemany(
            "INSERT INTO items (path, type, status, error, size, mtime_ns, content_hash, width, height, duration, "
            "taken_at, taken_at_source, added_at, updated_at, revision) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET type = excluded.type, status = excluded.status, "
            "error = excluded.error, size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "content_hash = excluded.content_hash, width = excluded.width, height = excluded.height, "
            "duration = excluded.duration, taken_at = excluded.taken_at, taken_at_source = excluded.taken_at_source, "
            "updated_at = excluded.updated_at, revision = excluded.revision",
            [
                (
                    encode_path(u.path),
                    u.type,
                    u.status,
                    u.error,
                    u.size,
                    u.mtime_ns,
                    u.content_hash,
                    u.width,
                    u.height,
                    u.duration,
                    u.taken_at,
                    u.taken_at_source,
                    now,
                    now,
                    revision,
                )
                for u in updates
            ],
        )

    def touch_hashes(self, hashes: Iterable[str], revision: int) -> None:
        """Mark the rows of these content hashes changed (they gained an embedding)."""
        self.conn.executemany(
            "UPDATE items SET revision = ? WHERE content_hash = ? AND status = 'ok'", [(revision, h) for h in hashes]
        )

    def delete_items(self, ids: Iterable[int]) -> int:
        """Remove rows (call inside `transaction()`); their embeddings stay until `prune`."""
        ids = [(int(i),) for i in ids]
        self.conn.executemany("DELETE FROM items WHERE id = ?", ids)
        return len(ids)

    def counts(self) -> dict[str, dict[str, int]]:
        """{status: {type: n}} over all rows (type 'folder' for rows without a media type)."""
        out: dict[str, dict[str, int]] = {s: {} for s in STATUSES}
        for status, kind, n in self.conn.execute("SELECT status, type, COUNT(*) FROM items GROUP BY status, type"):
            out.setdefault(status, {})[kind or "folder"] = n
        return out

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of every failed row, by path."""
        rows = self.conn.execute("SELECT path, error FROM items WHERE status = 'failed' ORDER BY path")
        return [(decode_path(p), e or "") for p, e in rows]

    def filtered_ids(
        self,
        *,
        type: str | None = None,
        after: float | None = None,
        before: float | None = None,
        model_key: str | None = None,
    ) -> np.ndarray:
        """Ids of indexed items (with an embedding of `model_key` when given) matching the filters."""
        sql = ["SELECT i.id FROM items i"]
        args: list = []
        if model_key is not None:
            sql.append("JOIN embeddings e ON e.content_hash = i.content_hash AND e.model_key = ?")
            args.append(model_key)
        sql.append("WHERE i.status = 'ok'")
        for clause, value in (("i.type = ?", type), ("i.taken_at >= ?", after), ("i.taken_at < ?", before)):
            if value is not None:
                sql.append(f"AND {clause}")
                args.append(value)
        rows = self.conn.execute(" ".join(sql) + " ORDER BY i.id", args)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    # -- vectors ----------------------------------------------------------------------------
    def vectors(self, model_key: str, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of indexed items that have an embedding of `model_key`,
        all of them or those of `ids`, by id."""
        base = (
            "SELECT i.id, e.vector FROM items i JOIN embeddings e "
            "ON e.content_hash = i.content_hash AND e.model_key = ? WHERE i.status = 'ok'"
        )
        if ids is None:
            rows = list(self.conn.execute(base + " ORDER BY i.id", (model_key,)))
        else:
            rows = []
            wanted = [int(i) for i in ids]
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(base + f" AND i.id IN ({marks})", [model_key, *chunk]).fetchall()
            rows.sort()
        dim = self.model(model_key).dim if rows else 0
        out_ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        out = np.empty((len(rows), dim), dtype=np.float32)
        for n, (_, blob) in enumerate(rows):
            out[n] = np.frombuffer(blob, dtype=np.float32)
        return out_ids, out

    def changed_since(self, revision: int) -> np.ndarray:
        """Ids of rows written after `revision`."""
        rows = self.conn.execute("SELECT id FROM items WHERE revision > ? ORDER BY id", (revision,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def prune_embeddings(self) -> int:
        """Drop embeddings no row refers to any more (kept until then so moves and re-added folders
        cost no model work)."""
        with self.transaction(bump=False):
            cur = self.conn.execute(
                "DELETE FROM embeddings WHERE content_hash NOT IN "
                "(SELECT content_hash FROM items WHERE content_hash IS NOT NULL)"
            )
            return cur.rowcount

    # -- models -----------------------------------------------------------------------------
    def register_model(self, record: ModelRecord) -> None:
        """Add a model, or refresh how to load it; its index settings are kept."""
        with self.transaction(bump=False):
            self.conn.execute(
                "INSERT INTO models (key, name, source, precision, family, dim, index_spec, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET name = excluded.name, "
                "source = excluded.source",
                (
                    record.key,
                    record.name,
                    record.source,
                    record.precision,
                    record.family,
                    record.dim,
                    record.index_spec,
                    time.time(),
                ),
            )

    def update_model(self, key: str, **fields: object) -> None:
        allowed = {"index_spec", "search_params", "last_indexed_at"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"update_model: fields must be among {sorted(allowed)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction(bump=False):
            self.conn.execute(f"UPDATE models SET {sets} WHERE key = ?", [*fields.values(), key])

    def models(self) -> list[ModelRecord]:
        """Models of this library, the most recently indexed first."""
        rows = self.conn.execute(
            "SELECT key, name, source, precision, family, dim, index_spec, search_params, last_indexed_at FROM models "
            "ORDER BY COALESCE(last_indexed_at, 0) DESC, added_at DESC"
        )
        return [ModelRecord(*row) for row in rows]

    def model(self, key: str) -> ModelRecord:
        for record in self.models():
            if record.key == key:
                return record
        raise LibraryError(f"{self.path}: model {key!r} is not in this library")

    def embedded_hashes(self, model_key: str) -> set[str]:
        """Content hashes that already have an embedding of `model_key`."""
        return {
            h for (h,) in self.conn.execute("SELECT content_hash FROM embeddings WHERE model_key = ?", (model_key,))
        }
