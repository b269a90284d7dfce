"""The library catalog: one SQLite database (WAL) with a row per file, its embeddings (and video or
text segments) per model, the models used, the roots indexed, and the catalog's identity.

The schema lives here with a VERSION and ordered migrations, each run whole in one transaction; a
database written by a newer xmodal is refused rather than altered. Paths are stored as the file
system's bytes (BLOB), so names that are not valid UTF-8 round-trip exactly.

Identity and revisions: every catalog has a UUID made when it is created (or migrated to version
2), and every write transaction bumps the revision and records a random token for it. A vector
index saved from the catalog carries (UUID, revision, token), so an index of another catalog, of a
catalog re-created in the same folder, or of a moment the catalog was rolled back past, is refused.
Rows written after a revision (`changed_since`) and ids deleted after it (`removed_since`) let an
index catch up without a full rebuild.

Connections: a writer (`Catalog(path)`) migrates and writes; readers (`Catalog(path,
readonly=True)`) never write, never wait for the writer (WAL) and work on read-only media.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from xmodal.errors import DiskFullError, LibraryError, LibraryNotFoundError
from xmodal.media.formats import CAPTION_EXTENSIONS, caption_key, extension
from xmodal.store.embeddings import EmbeddingStore
from xmodal.store.schema import MIGRATIONS, VERSION
from xmodal.store.sql import select_in
from xmodal.store.tags import TagStore

log = logging.getLogger(__name__)

ITEM_TYPES = ("image", "video", "text")
# ok: decoded (and embedded for the models run since); failed: `error` says why, retried when the
# file changes; pending: recognised but not indexed by this version (recorded for a later one).
STATUSES = ("ok", "failed", "pending")
# Index entries are item ids shifted left by ENTRY_BITS, or-ed with a part number: 0 is the item's
# own vector (a photo, a whole video, a whole document), 1.. its segments (video moments, text windows).
ENTRY_BITS = 20
MAX_SEGMENTS = (1 << ENTRY_BITS) - 1

_ITEM_COLUMNS = (
    "id, path, type, status, error, size, mtime_ns, content_hash, width, height, duration, taken_at, "
    "taken_at_source, fps, codec, rotation, details, added_at"
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
    taken_at: float | None  # seconds since the epoch (EXIF capture time, a video's recording time, else mtime)
    taken_at_source: str | None  # "exif" | "metadata" | "mtime"
    fps: float | None = None
    codec: str | None = None
    rotation: int | None = None
    details: dict | None = None  # per type: a video's frame timestamps, notes
    added_at: float | None = None

    @classmethod
    def from_row(cls, row: Sequence) -> ItemRecord:
        details = json.loads(row[16]) if row[16] else None
        return cls(row[0], decode_path(row[1]), *row[2:16], details, row[17])


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
    fps: float | None = None
    codec: str | None = None
    rotation: int | None = None
    details: dict | None = None


@dataclass(frozen=True)
class Segment:
    """A part of an item with its own vector: a video moment (seconds) or a text window
    (characters), with a text window's words (what a hit shows as its snippet)."""

    start: float
    end: float
    vector: np.ndarray
    text: str | None = None


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


@dataclass(frozen=True)
class RootRecord:
    """A folder (or file) given to `index`: 'online', or 'offline' with the reason (missing, empty)."""

    path: str
    state: str
    reason: str | None
    seen_at: float | None


def encode_path(path: str) -> bytes:
    return os.fsencode(path)


def decode_path(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else os.fsdecode(raw)


def _printable(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:  # C0/C1 controls (ESC starts terminal escape sequences)
        return f"\\x{code:02x}"
    return char


def display_path(path: str) -> str:
    """A printable form of a path: undecodable bytes and control characters shown as \\xNN escapes
    (so a file name cannot move the cursor or recolour a terminal)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(map(_printable, text))


def entry_id(item_id: int, part: int = 0) -> int:
    return (int(item_id) << ENTRY_BITS) | int(part)


def entry_items(entries: np.ndarray) -> np.ndarray:
    """The item id of each index entry."""
    return np.asarray(entries, dtype=np.int64) >> ENTRY_BITS


def entry_parts(entries: np.ndarray) -> np.ndarray:
    """0 for an item's own vector, n for its n-th segment."""
    return np.asarray(entries, dtype=np.int64) & MAX_SEGMENTS


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if not readonly:
        return sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.parent, os.W_OK):
            raise
    # A WAL database on media we cannot write (no -shm can be made there): nobody can be writing
    # it either, so it is read as an immutable file.
    return sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None, check_same_thread=False)


class Catalog:
    """The catalog database of one library folder, through one connection.

    A writer connection (the default) creates and migrates the database; `readonly=True` opens a
    reader that cannot write. A connection is used by one thread at a time (the Library gives each
    reading thread its own)."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, create: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if not self.path.exists() and (readonly or not create):
            raise LibraryNotFoundError(self.path.parent)
        try:
            self.conn = _connect(self.path, readonly)
        except sqlite3.Error as exc:
            raise LibraryError(f"{self.path}: cannot open the catalog: {exc}") from None
        self._depth = 0
        try:
            if readonly:
                self.conn.execute("PRAGMA query_only=1")
                self._check_version()
            else:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise LibraryError(f"{self.path}: not a usable catalog database: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        self.embeddings = EmbeddingStore(self.conn, create=False)
        self.tags = TagStore(self.conn)

    def close(self) -> None:
        self.conn.close()

    # -- schema -----------------------------------------------------------------------------
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self) -> None:
        self._refuse_newer()
        if self.version() < VERSION:
            raise CatalogNeedsMigration(self.path, self.version())

    def _migrate(self) -> None:
        self._refuse_newer()
        for step in MIGRATIONS:
            if step.version <= self.version():
                continue
            if step.version > 1:
                log.info("%s: upgrading the catalog to version %d: %s", self.path, step.version, step.reason)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if self.version() < step.version:  # another process may have migrated meanwhile
                    for statement in step.sql.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    if step.after is not None:
                        step.after(self.conn)
                    self.conn.execute(f"PRAGMA user_version = {step.version}")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _refuse_newer(self) -> None:
        version = self.version()
        if version > VERSION:
            raise LibraryError(
                f"{self.path}: catalog schema version {version} is newer than this xmodal understands "
                f"({VERSION}); upgrade xmodal"
            )

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self, bump: bool = True) -> Iterator[int]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error or interruption, wherever it lands); yields
        the revision rows written in it should carry (-1 when `bump` is off: for writes that change
        no item). A full disk raises DiskFullError; what was committed before stays."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            revision = self.revision() + 1 if bump else -1
            if bump:
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (str(revision),))
                self.conn.execute(
                    "INSERT OR REPLACE INTO revisions VALUES (?, ?, ?)", (revision, uuid.uuid4().hex, time.time())
                )
            yield revision
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise _operational(self.path, exc) from None
            raise

    @contextmanager
    def read(self) -> Iterator[Catalog]:
        """A consistent view for several queries (one read transaction; the writer is not blocked)."""
        began = self._depth == 0 and not self.conn.in_transaction  # inside a write transaction: its view
        self._depth += 1
        try:
            if began:
                self.conn.execute("BEGIN")
                self.conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()  # pins the snapshot
            yield self
        finally:
            self._depth -= 1
            if began and self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # -- identity ---------------------------------------------------------------------------
    def revision(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    @property
    def uuid(self) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'uuid'").fetchone()
        return row[0] if row else ""

    def revision_token(self, revision: int) -> str | None:
        """The random token recorded for `revision` (None if the catalog never reached it)."""
        row = self.conn.execute("SELECT token FROM revisions WHERE revision = ?", (revision,)).fetchone()
        return row[0] if row else None

    # -- items ------------------------------------------------------------------------------
    def items_under(self, roots: Iterable[str]) -> dict[str, ItemRecord]:
        """Rows whose path is one of `roots` or inside one of them, by path."""
        found: dict[str, ItemRecord] = {}
        for root in roots:
            raw, prefix, upper = _prefix_range(root)
            rows = self.conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE path = ? OR (path >= ? AND path < ?)", (raw, prefix, upper)
            )
            for row in rows:
                record = ItemRecord.from_row(row)
                found[record.path] = record
        return found

    def count_under(self, root: str) -> int:
        raw, prefix, upper = _prefix_range(root)
        return self.conn.execute(
            "SELECT COUNT(*) FROM items WHERE path = ? OR (path >= ? AND path < ?)", (raw, prefix, upper)
        ).fetchone()[0]

    def items_by_id(self, ids: Iterable[int]) -> dict[int, ItemRecord]:
        rows = select_in(self.conn, f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({{marks}})", map(int, ids))
        return {row[0]: ItemRecord.from_row(row) for row in rows}

    def caption_group(self, path: str) -> list[ItemRecord]:
        """The indexed items sharing `path`'s caption key: a photo and its caption files
        (IMG_1.jpg, IMG_1.txt, IMG_1.jpg.caption), `path` itself included when indexed."""
        key = caption_key(path)
        if key is None:
            return []
        prefix = encode_path(key) + b"."
        rows = self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE path >= ? AND path < ? AND status = 'ok'",
            (prefix, prefix[:-1] + b"/"),
        )
        return [r for r in map(ItemRecord.from_row, rows) if caption_key(r.path) == key]

    def caption_files(self) -> list[ItemRecord]:
        """Indexed text items named like caption files (.txt, .caption), by id."""
        rows = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE status = 'ok' AND type = 'text' ORDER BY id")
        return [r for r in map(ItemRecord.from_row, rows) if extension(r.path) in CAPTION_EXTENSIONS]

    def item_by_path(self, path: str) -> ItemRecord | None:
        row = self.conn.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE path = ?", (encode_path(path),)).fetchone()
        return ItemRecord.from_row(row) if row else None

    def details_by_hash(self, hashes: Iterable[str], type: str) -> dict[str, dict]:
        """The details of an ok row of each content (of one type) that has any: what was learnt
        decoding it, for another file with the same content that was not decoded again."""
        rows = select_in(
            self.conn,
            "SELECT content_hash, details FROM items WHERE type = ? AND status = 'ok' AND details IS NOT NULL "
            "AND content_hash IN ({marks}) ORDER BY id",
            hashes,
            (type,),
        )
        return {digest: json.loads(details) for digest, details in reversed(list(rows))}

    def upsert_items(self, updates: Sequence[ItemUpdate], revision: int) -> None:
        """Insert or update rows by path (call inside `transaction()`)."""
        now = time.time()
        self.conn.executemany(
            "INSERT INTO items (path, type, status, error, size, mtime_ns, content_hash, width, height, duration, "
            "taken_at, taken_at_source, fps, codec, rotation, details, added_at, updated_at, revision) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET type = excluded.type, status = excluded.status, "
            "error = excluded.error, size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "content_hash = excluded.content_hash, width = excluded.width, height = excluded.height, "
            "duration = excluded.duration, taken_at = excluded.taken_at, taken_at_source = excluded.taken_at_source, "
            "fps = excluded.fps, codec = excluded.codec, rotation = excluded.rotation, details = excluded.details, "
            "updated_at = excluded.updated_at, revision = excluded.revision",
            [_row_values(u, now, revision) for u in updates],
        )

    def move_item(self, item_id: int, update: ItemUpdate, revision: int) -> None:
        """Give an existing row a new path and its file's state (a moved file keeps its id and added date)."""
        values = _row_values(update, time.time(), revision)
        self.conn.execute(
            "UPDATE items SET path = ?, type = ?, status = ?, error = ?, size = ?, mtime_ns = ?, content_hash = ?, "
            "width = ?, height = ?, duration = ?, taken_at = ?, taken_at_source = ?, fps = ?, codec = ?, "
            "rotation = ?, details = ?, updated_at = ?, revision = ? WHERE id = ?",
            (*values[:16], values[17], values[18], int(item_id)),
        )

    def touch_hashes(self, hashes: Iterable[str], revision: int) -> None:
        """Mark the rows of these content hashes changed (they gained an embedding)."""
        self.conn.executemany(
            "UPDATE items SET revision = ? WHERE content_hash = ? AND status = 'ok'", [(revision, h) for h in hashes]
        )

    def delete_items(self, ids: Iterable[int], revision: int) -> int:
        """Remove rows (call inside `transaction()`); their embeddings stay until `prune_embeddings`."""
        ids = [int(i) for i in ids]
        self.conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
        self.conn.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(i, revision) for i in ids])
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
        type: str | Sequence[str] | None = None,
        after: float | None = None,
        before: float | None = None,
        model_key: str | None = None,
        tags: Sequence[str] = (),
    ) -> np.ndarray:
        """Ids of indexed items (with an embedding of `model_key` when given) matching the filters
        (every one of `tags`, when given)."""
        sql = ["SELECT i.id FROM items i"]
        args: list = []
        if model_key is not None:
            sql.append("JOIN embeddings e ON e.content_hash = i.content_hash AND e.model_key = ?")
            args.append(model_key)
        sql.append("WHERE i.status = 'ok'")
        if type is not None:
            types = [type] if isinstance(type, str) else list(type)
            sql.append(f"AND i.type IN ({','.join('?' * len(types))})")
            args += types
        for clause, value in (("i.taken_at >= ?", after), ("i.taken_at < ?", before)):
            if value is not None:
                sql.append(f"AND {clause}")
                args.append(value)
        for label in tags:
            sql.append("AND i.content_hash IN (SELECT content_hash FROM tags WHERE label = ?)")
            args.append(label)
        rows = self.conn.execute(" ".join(sql) + " ORDER BY i.id", args)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    # -- vectors ----------------------------------------------------------------------------
    def vectors(self, model_key: str, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors) of indexed items that have an embedding of `model_key`, all of
        them or those of `ids`, by id: each item's own vector (a whole video's, not its segments)."""
        base = (
            "SELECT i.id, e.vector FROM items i JOIN embeddings e "
            "ON e.content_hash = i.content_hash AND e.model_key = ? WHERE i.status = 'ok'"
        )
        if ids is None:
            rows = list(self.conn.execute(base + " ORDER BY i.id", (model_key,)))
        else:
            rows = sorted(select_in(self.conn, base + " AND i.id IN ({marks})", map(int, ids), (model_key,)))
        return _stack(rows, self._dim(model_key, rows))

    def entries(self, model_key: str, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(entry ids, float32 vectors) of what a vector index of `model_key` holds for these items
        (default: all): each item's own vector and its segments, in entry order."""
        item_ids, own = self.vectors(model_key, ids)
        base = (
            "SELECT i.id, s.ordinal, s.vector FROM items i JOIN segments s "
            "ON s.content_hash = i.content_hash AND s.model_key = ? WHERE i.status = 'ok'"
        )
        if ids is None:
            rows = list(self.conn.execute(base, (model_key,)))
        else:
            rows = list(select_in(self.conn, base + " AND i.id IN ({marks})", map(int, ids), (model_key,)))
        seg_ids, seg_vectors = _stack([(entry_id(i, n), blob) for i, n, blob in rows], self._dim(model_key, rows))
        if not len(seg_ids):
            return item_ids << ENTRY_BITS, own
        entries = np.concatenate([item_ids << ENTRY_BITS, seg_ids])
        order = np.argsort(entries, kind="stable")
        return entries[order], np.concatenate([own, seg_vectors])[order]

    def segments(self, model_key: str, content_hash: str) -> list[Segment]:
        """The segments of one content (a video's moments, a document's windows), in order."""
        rows = self.conn.execute(
            "SELECT span_start, span_end, vector, text FROM segments WHERE model_key = ? AND content_hash = ? "
            "ORDER BY ordinal",
            (model_key, content_hash),
        )
        return [Segment(a, b, np.frombuffer(v, dtype=np.float32), t) for a, b, v, t in rows]

    def segments_of(self, model_key: str, hashes: Iterable[str]) -> dict[str, list[Segment]]:
        """The segments of several contents (those that have any), each in order."""
        out: dict[str, list[Segment]] = {}
        rows = select_in(
            self.conn,
            "SELECT content_hash, ordinal, span_start, span_end, vector, text FROM segments "
            "WHERE model_key = ? AND content_hash IN ({marks})",
            hashes,
            (model_key,),
        )
        for digest, _, a, b, v, t in sorted(rows, key=lambda r: (r[0], r[1])):
            out.setdefault(digest, []).append(Segment(a, b, np.frombuffer(v, dtype=np.float32), t))
        return out

    def put_segments(self, model_key: str, content_hash: str, segments: Sequence[Segment]) -> None:
        """Replace the segments of one content (call inside `transaction()`)."""
        if len(segments) > MAX_SEGMENTS:
            raise LibraryError(f"{content_hash}: {len(segments)} segments, at most {MAX_SEGMENTS} are stored")
        self.conn.execute("DELETE FROM segments WHERE model_key = ? AND content_hash = ?", (model_key, content_hash))
        self.conn.executemany(
            "INSERT INTO segments (model_key, content_hash, ordinal, span_start, span_end, vector, text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    model_key,
                    content_hash,
                    n,
                    float(s.start),
                    float(s.end),
                    np.asarray(s.vector, np.float32).tobytes(),
                    s.text,
                )
                for n, s in enumerate(segments, start=1)
            ],
        )

    def description_vectors(self, model_key: str, limit: int) -> np.ndarray:
        """Up to `limit` vectors of the descriptions photos carry (their segments), float32 (n, D)."""
        rows = self.conn.execute(
            "SELECT s.vector FROM items i JOIN segments s ON s.content_hash = i.content_hash AND s.model_key = ? "
            "WHERE i.status = 'ok' AND i.type = 'image' ORDER BY i.id LIMIT ?",
            (model_key, int(limit)),
        ).fetchall()
        return _stack([(0, blob) for (blob,) in rows], self._dim(model_key, rows))[1]

    def changed_since(self, revision: int) -> np.ndarray:
        """Ids of rows written after `revision`."""
        rows = self.conn.execute("SELECT id FROM items WHERE revision > ? ORDER BY id", (revision,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def removed_since(self, revision: int) -> np.ndarray:
        """Ids of rows deleted after `revision`."""
        rows = self.conn.execute("SELECT id FROM removed WHERE revision > ? ORDER BY id", (revision,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def prune_embeddings(self) -> int:
        """Drop embeddings (and segments) no row refers to any more, returning how many embeddings
        went (they are kept until then so moves and re-added folders cost no model work)."""
        unreferenced = "WHERE content_hash NOT IN (SELECT content_hash FROM items WHERE content_hash IS NOT NULL)"
        with self.transaction(bump=False):
            for table in ("segments", "tags", "tagged"):
                self.conn.execute(f"DELETE FROM {table} {unreferenced}")
            return self.conn.execute(f"DELETE FROM embeddings {unreferenced}").rowcount

    def _dim(self, model_key: str, rows: Sequence) -> int:
        return self.model(model_key).dim if rows else 0

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

    # -- roots ------------------------------------------------------------------------------
    def roots(self) -> list[RootRecord]:
        rows = self.conn.execute("SELECT path, state, reason, seen_at FROM roots ORDER BY path")
        return [RootRecord(decode_path(p), s, r, t) for p, s, r, t in rows]

    def set_root(self, path: str, state: str, reason: str | None = None) -> None:
        """Record a root as online (seen now) or offline (with the reason); call inside `transaction()`."""
        now = time.time()
        self.conn.execute(
            "INSERT INTO roots (path, state, reason, added_at, seen_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
            "seen_at = COALESCE(excluded.seen_at, roots.seen_at)",
            (encode_path(path), state, reason, now, now if state == "online" else None),
        )

    def forget_root(self, path: str) -> None:
        self.conn.execute("DELETE FROM roots WHERE path = ?", (encode_path(path),))


class CatalogNeedsMigration(LibraryError):
    """A reader met a catalog of an older schema: a writer must upgrade it first."""

    def __init__(self, path: Path, version: int):
        super().__init__(f"{path}: catalog version {version} must be upgraded to {VERSION} by a writer")
        self.version = version


def _operational(path: Path, exc: sqlite3.OperationalError) -> Exception:
    text = str(exc)
    if "full" in text:
        return DiskFullError(path, "the disk is full; the work committed so far is kept: free space and run again")
    if "readonly" in text or "read-only" in text:
        return LibraryError(f"{path}: the catalog is on read-only storage; it can be searched but not indexed")
    return LibraryError(f"{path}: {text}")


def _row_values(u: ItemUpdate, now: float, revision: int) -> tuple:
    details = json.dumps(u.details, separators=(",", ":")) if u.details else None
    return (
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
        u.fps,
        u.codec,
        u.rotation,
        details,
        now,
        now,
        revision,
    )


def _prefix_range(root: str) -> tuple[bytes, bytes, bytes]:
    """The path itself and the byte range of every path inside it (for an index range scan)."""
    raw = encode_path(root.rstrip(os.sep) or os.sep)
    prefix = raw if raw.endswith(os.sep.encode()) else raw + os.sep.encode()
    upper = prefix[:-1] + bytes([prefix[-1] + 1])
    return raw, prefix, upper


def _stack(rows: Sequence[tuple[int, bytes]], dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) from (id, float32 blob) rows."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    out = np.empty((len(rows), dim or 0), dtype=np.float32)
    for n, (_, blob) in enumerate(rows):
        out[n] = np.frombuffer(blob, dtype=np.float32)
    return ids, out
