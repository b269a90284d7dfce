"""The index cache of one library: immutable snapshots of each model's vector index for readers,
saves by the writer.

A snapshot is a base index (loaded from `indexes/<model>/index` when that file carries this
catalog's identity, else built from the catalog) plus small exact "delta" parts holding what was
committed since, and per part the entries superseded since (changed or deleted items). Catching up
with new commits adds a delta part and marks superseded entries; nothing is ever changed in place,
so a search keeps using the snapshot it started with while another thread publishes the next one
(the structure of Lucene's segments and deletes). Deltas are merged when there are many, into the
base when they grow large; only the writer saves, always one merged index with the catalog's
UUID, revision and revision token in its header.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import DiskFullError, IndexFileError, XmodalError
from xmodal.store.catalog import ENTRY_BITS, Catalog, ModelRecord
from xmodal.store.index.base import PAD_ID, top_k_sorted
from xmodal.store.vector_index import ExactIndex, VectorIndex, build_index, choose_spec, index_file_info

log = logging.getLogger(__name__)

INDEX_FOLDER = "indexes"
MAX_DELTA_PARTS = 8  # more deltas than this are merged into one
BASE_MERGE_SHARE = 0.25  # deltas (or dead base entries) above this share of the base: merge into the base
BASE_MERGE_MIN = 50_000  # ... but never for fewer entries than this (a delta that small scans in ~1 ms)


@dataclass(frozen=True)
class Part:
    """One index of a snapshot and the entries of it that are superseded (sorted entry ids)."""

    index: VectorIndex
    dead: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    sorted_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.sorted_ids is None:
            object.__setattr__(self, "sorted_ids", np.sort(self.index.ids))

    @property
    def live(self) -> int:
        return len(self.sorted_ids) - len(self.dead)

    def entries_of(self, items: np.ndarray) -> np.ndarray:
        """The entry ids this part holds for these (sorted, unique) item ids."""
        if not len(items) or not len(self.sorted_ids):
            return np.empty(0, dtype=np.int64)
        lo = np.searchsorted(self.sorted_ids, items << ENTRY_BITS)
        hi = np.searchsorted(self.sorted_ids, (items + 1) << ENTRY_BITS)
        counts = hi - lo
        if not counts.any():
            return np.empty(0, dtype=np.int64)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        return self.sorted_ids[starts + np.arange(counts.sum())]

    def superseded(self, items: np.ndarray) -> Part:
        """This part with the entries of `items` marked dead as well."""
        gone = self.entries_of(items)
        if not len(gone):
            return self
        return Part(self.index, np.union1d(self.dead, gone), self.sorted_ids)


@dataclass(frozen=True)
class IndexSnapshot:
    """A model's vector index as of one catalog revision; never changed once published."""

    model_key: str
    catalog_uuid: str
    revision: int
    spec_setting: str  # the model's index setting ("auto", "exact", a Faiss string) it was made for
    search_params: str  # the model's tuned search parameters it was made with ("" for none)
    parts: tuple[Part, ...]

    def with_parts(self, parts: tuple[Part, ...], revision: int | None = None) -> IndexSnapshot:
        return IndexSnapshot(
            self.model_key,
            self.catalog_uuid,
            self.revision if revision is None else revision,
            self.spec_setting,
            self.search_params,
            parts,
        )

    @property
    def base(self) -> VectorIndex:
        return self.parts[0].index

    def __len__(self) -> int:
        return sum(p.live for p in self.parts)

    def live_ids(self) -> np.ndarray:
        """Sorted entry ids of every live (not superseded) entry."""
        parts = [np.setdiff1d(p.sorted_ids, p.dead, assume_unique=True) for p in self.parts]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def search(self, query: np.ndarray, k: int, items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k entries over every part, superseded ones left out, only entries of `items` (sorted
        unique item ids) when given: (scores (<= k,), entry ids (<= k,)), best first."""
        queries = np.asarray(query, dtype=np.float32).reshape(1, -1)
        scores, ids, ties = [], [], []
        for number, part in enumerate(self.parts):
            if part.live == 0:
                continue
            part_allowed = None
            if items is not None:
                part_allowed = part.entries_of(items)
                if not len(part_allowed):
                    continue
            s, i = part.index.search(queries, min(k, part.live), allowed=part_allowed, excluded=part.dead)
            scores.append(s)
            ids.append(i)
            ties.append(number * k + np.arange(s.shape[1])[None, :])
        if not scores:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        best_scores, best_ids = top_k_sorted(
            np.concatenate(scores, axis=1), np.concatenate(ids, axis=1), np.concatenate(ties, axis=1), k
        )
        keep = best_ids[0] != PAD_ID
        return best_scores[0][keep], best_ids[0][keep]


class IndexCache:
    """Snapshots of every model's index of one library folder, shared by the threads of a process.

    `snapshot()` never writes: a reader catches up in memory. `save()` is for the writer (under the
    library's writer lock): it merges, saves atomically and publishes the result."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._snapshots: dict[str, IndexSnapshot] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, model_key: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_key.split(":")[0])[:60]
        digest = hashlib.blake2b(model_key.encode(), digest_size=6).hexdigest()
        return self.folder / INDEX_FOLDER / f"{slug}-{digest}" / "index"

    def _lock(self, model_key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_key, threading.Lock())

    def forget(self, model_key: str) -> None:
        with self._guard:
            self._snapshots.pop(model_key, None)

    # -- readers ----------------------------------------------------------------------------
    def snapshot(self, catalog: Catalog, record: ModelRecord) -> IndexSnapshot:
        """The model's index as of the catalog's latest revision (at least), caught up in memory."""
        with catalog.read():
            revision, identity = catalog.revision(), catalog.uuid
            current = self._snapshots.get(record.key)
            if current is not None and self._fits(current, identity, record) and current.revision >= revision:
                return current
            with self._lock(record.key):  # one thread catches up; the others then use its snapshot
                current = self._snapshots.get(record.key)
                if current is None or not self._fits(current, identity, record):
                    current = self._open(catalog, record)
                if current.revision < revision:
                    current = _compact(self._catch_up(current, catalog, record))
                self._snapshots[record.key] = current
                return current

    @staticmethod
    def _fits(snapshot: IndexSnapshot, identity: str, record: ModelRecord) -> bool:
        return (
            snapshot.catalog_uuid == identity
            and snapshot.spec_setting == record.index_spec
            and snapshot.search_params == (record.search_params or "")
        )

    def _open(self, catalog: Catalog, record: ModelRecord) -> IndexSnapshot:
        """The saved index when it is this catalog's at a revision the catalog went through, else
        one built from the catalog (in memory: only the writer saves)."""
        path = self.path(record.key)
        reason = self._refusal(path, catalog, record)
        if reason is None:
            try:
                index = VectorIndex.load(path)
                return _snapshot_of(catalog, record, int(index.meta["revision"]), index)
            except IndexFileError as exc:
                reason = exc.reason
        if path.exists():
            log.warning("rebuilding the %s index from the catalog: %s", record.name, reason)
        return self.build(catalog, record)

    @staticmethod
    def _refusal(path: Path, catalog: Catalog, record: ModelRecord) -> str | None:
        """Why the index file at `path` cannot stand for the catalog now, or None when it can."""
        if not path.exists():
            return "no saved index"
        try:
            header = index_file_info(path)
        except IndexFileError as exc:
            return exc.reason
        meta = header.get("meta")
        if not isinstance(meta, dict):
            return "saved by an older xmodal (no catalog identity in its header)"
        expected = {
            "catalog_uuid": str,
            "revision": int,
            "revision_token": str,
            "model_key": str,
            "spec_setting": str,
            "search_params": str,
        }
        if any(not isinstance(meta.get(name), kind) for name, kind in expected.items()):
            return "its header does not say which catalog revision it reflects"
        if meta["catalog_uuid"] != catalog.uuid:
            return "it belongs to another catalog (the catalog was replaced or re-created)"
        if meta["model_key"] != record.key or meta.get("entry_bits") != ENTRY_BITS:
            return "it was built for another model or layout"
        if meta["revision"] > catalog.revision() or catalog.revision_token(meta["revision"]) != meta["revision_token"]:
            return f"it reflects revision {meta['revision']}, which this catalog never went through"
        if meta["spec_setting"] != record.index_spec or meta["search_params"] != (record.search_params or ""):
            return "the index settings changed since it was saved"
        return None

    @staticmethod
    def build(catalog: Catalog, record: ModelRecord) -> IndexSnapshot:
        """A snapshot with one index of the model's setting built from every entry in the catalog."""
        with catalog.read():
            return _snapshot_of(catalog, record, catalog.revision(), _built(catalog, record, record.index_spec))

    def _catch_up(self, snapshot: IndexSnapshot, catalog: Catalog, record: ModelRecord) -> IndexSnapshot:
        """`snapshot` plus what the catalog committed after its revision (inside `catalog.read()`)."""
        changed = catalog.changed_since(snapshot.revision)
        touched = np.union1d(changed, catalog.removed_since(snapshot.revision))
        parts = [part.superseded(touched) for part in snapshot.parts]
        ids, vectors = catalog.entries(record.key, changed) if len(changed) else (np.empty(0, np.int64), None)
        if len(ids):
            parts.append(Part(_delta_index(snapshot.base, ids, vectors)))
        return snapshot.with_parts(tuple(parts), catalog.revision())

    # -- the writer -------------------------------------------------------------------------
    def save(self, catalog: Catalog, record: ModelRecord, rebuilt: IndexSnapshot | None = None) -> IndexSnapshot:
        """Merge the model's snapshot into one index and save it with the catalog's identity (the
        writer only). A full disk leaves the old file and is logged: searches catch up in memory."""
        with catalog.read():
            snapshot = rebuilt or self.snapshot(catalog, record)
            merged = _merged(snapshot, catalog, record)
            merged.base.meta = {
                "catalog_uuid": merged.catalog_uuid,
                "revision": merged.revision,
                "revision_token": catalog.revision_token(merged.revision),
                "model_key": record.key,
                "spec_setting": merged.spec_setting,
                "search_params": merged.search_params,
                "entry_bits": ENTRY_BITS,
            }
        path = self.path(record.key)
        if (
            self._refusal(path, catalog, record) is None
            and index_file_info(path)["meta"]["revision"] == merged.revision
        ):
            self._snapshots[record.key] = merged  # the file already holds exactly this
            return merged
        try:
            merged.base.save(path)
        except OSError as exc:
            if exc.errno != 28:  # ENOSPC
                raise
            log.warning("%s: %s", path, DiskFullError(path, "not saved, the disk is full; searches rebuild it").reason)
        self._snapshots[record.key] = merged
        return merged

    def info(self, catalog: Catalog, record: ModelRecord) -> dict[str, Any]:
        """What the saved index file says (spec, size, whether it reflects the latest revision)."""
        path = self.path(record.key)
        reason = self._refusal(path, catalog, record)
        header: dict[str, Any] = {}
        if reason is None:
            header = index_file_info(path)
        return {
            "spec": header.get("spec"),
            "setting": record.index_spec,
            "size": header.get("count", 0),
            "search_params": record.search_params,
            "up_to_date": reason is None and header["meta"]["revision"] == catalog.revision(),
            "saved_revision": header["meta"]["revision"] if header else None,
            "problem": reason if reason != "no saved index" else None,
            "path": str(path),
        }


def _delta_index(base: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> ExactIndex:
    """An exact index of new entries: the base's storage when it is exact, float16 otherwise."""
    storage = base.storage if isinstance(base, ExactIndex) else "fp16"
    index = ExactIndex(base.dim, storage)
    index.add(ids, vectors)
    return index


def _merge_exact(parts: tuple[Part, ...], like: ExactIndex) -> ExactIndex:
    """One exact index of the live entries of exact `parts`, with `like`'s storage, spec and params."""
    merged = ExactIndex(like.dim, like.storage, like.spec, like.params)
    for part in parts:
        assert isinstance(part.index, ExactIndex) and part.index.storage == like.storage
        ids, rows = part.index.live(part.dead)
        merged.add_stored(ids, rows)
    return merged


def _compact(snapshot: IndexSnapshot) -> IndexSnapshot:
    """Fewer parts when there are many deltas, one part when they outgrow the base (exact bases)."""
    base, deltas = snapshot.parts[0], snapshot.parts[1:]
    delta_rows = sum(p.live for p in deltas)
    limit = max(BASE_MERGE_MIN, BASE_MERGE_SHARE * base.live)
    if isinstance(base.index, ExactIndex) and deltas and (delta_rows > limit or len(base.dead) > limit):
        parts: tuple[Part, ...] = (Part(_merge_exact(snapshot.parts, base.index)),)
    elif len(deltas) > MAX_DELTA_PARTS:
        parts = (base, Part(_merge_exact(deltas, deltas[0].index)))
    else:
        return snapshot
    return snapshot.with_parts(parts)


def _merged(snapshot: IndexSnapshot, catalog: Catalog, record: ModelRecord) -> IndexSnapshot:
    """The snapshot as a single index without dead entries: exact parts are concatenated, an ANN
    base is copied and updated (no retraining), and an "auto" setting whose choice changed with the
    collection's size is built afresh."""
    base = snapshot.parts[0]
    wanted = choose_spec(len(snapshot)) if snapshot.spec_setting == "auto" else snapshot.spec_setting
    if snapshot.spec_setting == "auto" and wanted != base.index.spec:
        try:
            return _snapshot_of(catalog, record, snapshot.revision, _built(catalog, record, wanted))
        except XmodalError as exc:
            log.warning("keeping the %s index as %s: %s", record.name, base.index.spec, exc)
    if len(snapshot.parts) == 1 and not len(base.dead):
        return snapshot
    if isinstance(base.index, ExactIndex):
        index: VectorIndex = _merge_exact(snapshot.parts, base.index)
    else:
        index = base.index.copy()
        index.remove(base.dead)
        for part in snapshot.parts[1:]:  # an entry changed twice is live in its last part only
            ids, rows = part.index.live(part.dead)
            index.add(ids, rows.astype(np.float32))
    return snapshot.with_parts((Part(index),))


def _built(catalog: Catalog, record: ModelRecord, spec: str) -> VectorIndex:
    """An index of `spec` over every entry of the model in the catalog (tuned parameters kept when
    they were tuned for this spec, else the spec's defaults)."""
    ids, vectors = catalog.entries(record.key)
    if len(ids) == 0:
        vectors = np.zeros((0, record.dim), dtype=np.float32)
    index = build_index(ids, vectors, spec=spec)
    if record.search_params and spec == record.index_spec:
        index.params = record.search_params
    return index


def _snapshot_of(catalog: Catalog, record: ModelRecord, revision: int, index: VectorIndex) -> IndexSnapshot:
    return IndexSnapshot(
        record.key, catalog.uuid, revision, record.index_spec, record.search_params or "", (Part(index),)
    )
