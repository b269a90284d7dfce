"""The catalog's schema: a VERSION and the ordered migrations that reach it, each run whole in one
transaction by `Catalog` (a newer database than VERSION is refused, never altered).

Version 2 adds the catalog's identity (a UUID and a random token per revision, which saved indexes
carry), video/text segments, per-video metadata, indexed roots that can be offline, and a log of
deleted item ids so indexes catch up without a full rebuild. Version 3 adds the words of text
segments (the snippet a hit shows) and zero-shot tags: tagging runs (model, vocabulary, the
thresholds used), which contents a run has tagged, and the tags themselves, all keyed by content
like embeddings (a moved or copied photo keeps its tags).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from xmodal.store.embeddings import SCHEMA as EMBEDDINGS_SCHEMA

VERSION = 3
_V1 = """
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
"""

_V2 = (
    EMBEDDINGS_SCHEMA
    + """
CREATE TABLE segments (
    model_key    TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    ordinal      INTEGER NOT NULL,
    span_start   REAL NOT NULL,
    span_end     REAL NOT NULL,
    vector       BLOB NOT NULL,
    PRIMARY KEY (model_key, content_hash, ordinal)
) WITHOUT ROWID;
ALTER TABLE items ADD COLUMN fps REAL;
ALTER TABLE items ADD COLUMN codec TEXT;
ALTER TABLE items ADD COLUMN rotation INTEGER;
ALTER TABLE items ADD COLUMN details TEXT;
CREATE TABLE roots (
    path     BLOB PRIMARY KEY,
    state    TEXT NOT NULL DEFAULT 'online',
    reason   TEXT,
    added_at REAL NOT NULL,
    seen_at  REAL
);
CREATE TABLE removed (id INTEGER PRIMARY KEY, revision INTEGER NOT NULL);
CREATE INDEX removed_revision ON removed (revision);
CREATE TABLE revisions (revision INTEGER PRIMARY KEY, token TEXT NOT NULL, at REAL NOT NULL);
"""
)


_V3 = """
ALTER TABLE segments ADD COLUMN text TEXT;
CREATE TABLE tag_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model_key   TEXT NOT NULL,
    digest      TEXT NOT NULL,
    vocabulary  TEXT NOT NULL,
    thresholds  TEXT NOT NULL,
    calibrated_on INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE tagged (
    content_hash TEXT PRIMARY KEY,
    run          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE tags (
    content_hash TEXT NOT NULL,
    label        TEXT NOT NULL,
    score        REAL NOT NULL,
    confidence   REAL NOT NULL,
    run          INTEGER NOT NULL,
    PRIMARY KEY (content_hash, label)
) WITHOUT ROWID;
CREATE INDEX tags_label ON tags (label);
"""


def _new_identity(conn: sqlite3.Connection) -> None:
    """A UUID for the catalog and a token for the revision it is at (a migrated one keeps its revision)."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('uuid', ?)", (str(uuid.uuid4()),))
    revision = int(conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])
    conn.execute("INSERT INTO revisions VALUES (?, ?, ?)", (revision, uuid.uuid4().hex, time.time()))


@dataclass(frozen=True)
class Migration:
    """One schema step: its version, a one-line reason, the SQL, and Python work after it."""

    version: int
    reason: str
    sql: str
    after: Callable[[sqlite3.Connection], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "items, models and the revision counter", _V1),
    Migration(
        2,
        "catalog identity, video segments, text items, roots that can be offline, a change log for indexes",
        _V2,
        _new_identity,
    ),
    Migration(3, "words of text segments, zero-shot tags", _V3),
)
