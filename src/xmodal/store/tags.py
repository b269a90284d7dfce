"""Zero-shot tags in the catalog: the tagging run in force (model, vocabulary, thresholds), which
contents it has tagged, and their tags — keyed by content hash like embeddings, so a moved or
copied photo keeps its tags.

One run is in force at a time: starting one with another model, vocabulary or calibration drops
the tags of the one before in the same transaction. A run's work is committed in batches, each
batch's tags together with the marks saying those contents are done, so a run killed at any moment
resumes where it stopped: no content is tagged twice and none is skipped.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xmodal.store.sql import select_in


@dataclass(frozen=True)
class Tag:
    """One label of one item: the item's cosine similarity to the label's prompts, and how sure
    the calibration is that the label applies (0-1)."""

    label: str
    score: float
    confidence: float

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 6), "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class TagRun:
    """A tagging run: the model, the vocabulary (groups of labels with their templates), the
    thresholds in force and how many items they were calibrated on."""

    id: int
    model_key: str
    digest: str
    vocabulary: dict
    thresholds: dict
    calibrated_on: int
    started_at: float
    finished_at: float | None


class TagStore:
    """The tag tables of one catalog connection (writes inside the catalog's transactions)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def current_run(self) -> TagRun | None:
        row = self.conn.execute(
            "SELECT id, model_key, digest, vocabulary, thresholds, calibrated_on, started_at, finished_at "
            "FROM tag_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return TagRun(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), *row[5:])

    def start_run(self, model_key: str, digest: str, vocabulary: dict, thresholds: dict, calibrated_on: int) -> int:
        """A new run in force, the tags of the one before dropped (call inside `transaction()`)."""
        self.conn.execute("DELETE FROM tags")
        self.conn.execute("DELETE FROM tagged")
        cursor = self.conn.execute(
            "INSERT INTO tag_runs (model_key, digest, vocabulary, thresholds, calibrated_on, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (model_key, digest, json.dumps(vocabulary), json.dumps(thresholds), calibrated_on, time.time()),
        )
        return int(cursor.lastrowid)

    def finish_run(self, run: int) -> None:
        self.conn.execute("UPDATE tag_runs SET finished_at = ? WHERE id = ?", (time.time(), run))

    def reopen_run(self, run: int) -> None:
        """A finished run takes new items: it is unfinished until they are tagged."""
        self.conn.execute("UPDATE tag_runs SET finished_at = NULL WHERE id = ?", (run,))

    def tagged(self, run: int) -> set[str]:
        """Content hashes the run has tagged (with or without a tag passing its thresholds)."""
        return {h for (h,) in self.conn.execute("SELECT content_hash FROM tagged WHERE run = ?", (run,))}

    def put(self, run: int, results: Iterable[tuple[str, Sequence[Tag]]]) -> int:
        """Record contents as tagged by `run`, with their tags (call inside `transaction()`)."""
        results = list(results)
        self.conn.executemany("INSERT INTO tagged (content_hash, run) VALUES (?, ?)", [(h, run) for h, _ in results])
        self.conn.executemany(
            "INSERT INTO tags (content_hash, label, score, confidence, run) VALUES (?, ?, ?, ?, ?)",
            [(h, t.label, float(t.score), float(t.confidence), run) for h, tags in results for t in tags],
        )
        return len(results)

    def of(self, hashes: Iterable[str]) -> dict[str, list[Tag]]:
        """Tags of these contents, most confident first."""
        out: dict[str, list[Tag]] = {}
        rows = select_in(
            self.conn, "SELECT content_hash, label, score, confidence FROM tags WHERE content_hash IN ({marks})", hashes
        )
        for digest, label, score, confidence in rows:
            out.setdefault(digest, []).append(Tag(label, score, confidence))
        for tags in out.values():
            tags.sort(key=lambda t: (-t.confidence, -t.score, t.label))
        return out

    def counts(self) -> list[tuple[str, int]]:
        """(label, indexed items carrying it), the most frequent first."""
        rows = self.conn.execute(
            "SELECT t.label, COUNT(*) FROM tags t JOIN items i ON i.content_hash = t.content_hash "
            "WHERE i.status = 'ok' GROUP BY t.label ORDER BY COUNT(*) DESC, t.label"
        )
        return [(label, n) for label, n in rows]

    def coverage(self) -> tuple[int, int]:
        """(photos and videos tagged by the run in force, those not tagged yet)."""
        row = self.conn.execute(
            "SELECT COUNT(g.content_hash), COUNT(*) - COUNT(g.content_hash) FROM items i "
            "LEFT JOIN tagged g ON g.content_hash = i.content_hash "
            "WHERE i.status = 'ok' AND i.type IN ('image', 'video')"
        ).fetchone()
        return int(row[0]), int(row[1])

    def known(self, labels: Iterable[str]) -> set[str]:
        """Those of `labels` the run in force can give (in its vocabulary)."""
        run = self.current_run()
        if run is None:
            return set()
        vocabulary = {label for group in run.vocabulary.get("groups", []) for label in group["labels"]}
        return {label for label in labels if label in vocabulary}
