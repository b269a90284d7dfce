"""`xmodal.Library`: a folder holding a catalog and one vector index per model; index folders into
it and search them.

Layout of a library folder::

    catalog.sqlite                     items, embeddings per (content hash, model), models
    indexes/<model-slug>/index         the vector index of one model (xmodal.store.vector_index)
    indexes/<model-slug>/state.json    catalog revision, spec and size the index was saved at

The catalog is the truth; an index is a cache of it. Opening an index checks its checksum and the
catalog revision it was saved at: a corrupt or missing file is rebuilt from the catalog, a stale
one catches up with the rows changed since (never served silently out of date).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from xmodal import settings
from xmodal.errors import InvalidArgumentError, LibraryError, XmodalError
from xmodal.media.walk import WalkOptions
from xmodal.models import Encoder, load_model
from xmodal.progress import Progress
from xmodal.search import (
    Hit,
    QueryTerm,
    SearchResults,
    candidates_for,
    decay_factors,
    default_min_score,
    parse_date,
    parse_query,
    query_vector,
)
from xmodal.store.catalog import ITEM_TYPES, Catalog, ModelRecord
from xmodal.store.ingest import IndexReport, IngestConfig, ingest
from xmodal.store.vector_index import TuneReport, VectorIndex, build_index, choose_spec, tune_index

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"


def _locked(method: Callable) -> Callable:
    """Run a Library method under the library's lock."""

    @functools.wraps(method)
    def locked(self: Library, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


@dataclass
class LibraryVectors:
    """Every indexed item's stored embedding for one model, by item id, with path and type."""

    model: ModelRecord
    ids: np.ndarray  # int64 item ids
    paths: list[str]
    types: list[str]
    vectors: np.ndarray  # float32 (N, D), unit rows


class Library:
    """A library folder (created when missing). Use as a context manager or call `close()`."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.folder = Path(path).expanduser() if path is not None else settings.current().library_dir
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"{self.folder}: cannot create the library folder: {exc.strerror or exc}") from None
        self.catalog = Catalog(self.folder / CATALOG_FILE)
        self._encoders: dict[str, Encoder] = {}
        self._indexes: dict[str, tuple[int, VectorIndex]] = {}
        # One catalog connection, used by one thread at a time: a web server's worker threads may
        # share a Library (an index run holds the lock until it is done).
        self._lock = threading.RLock()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.catalog.close()

    def __repr__(self) -> str:
        return f"Library({str(self.folder)!r})"

    # -- indexing ---------------------------------------------------------------------------
    @_locked
    def index(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        model: str | os.PathLike | Encoder | None = None,
        *,
        precision: str = "fp32",
        exclude: Sequence[str] = (),
        follow_symlinks: bool = False,
        include_hidden: bool = False,
        index_spec: str | None = None,
        config: IngestConfig | None = None,
        progress: Progress | None = None,
    ) -> IndexReport:
        """Add, update and remove the media files under `paths` for `model` (default: the model
        this library was last indexed with), then bring that model's vector index up to date.

        index_spec: "auto" (exact below a size threshold, ANN above), "exact", or a Faiss factory
        string ("HNSW32", "IVF1024,Flat", "IVF1024,PQ32"); remembered per model.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        encoder = self._encoder_for_index(model, precision)
        record = self._register(encoder)
        walk = WalkOptions(tuple(exclude), follow_symlinks, include_hidden)
        report = ingest(self.catalog, encoder, list(paths), walk=walk, config=config, progress=progress)
        self.catalog.update_model(record.key, last_indexed_at=time.time())
        record = self.catalog.model(record.key)
        if index_spec is not None and index_spec != record.index_spec:
            self._build(record, index_spec)
        else:
            self._index_of(record)
        log.info("indexed %s: %s", list(map(str, paths)), report.summary())
        return report

    @_locked
    def rebuild_index(self, model: str | os.PathLike | Encoder | None = None, spec: str | None = None) -> dict:
        """Build a model's vector index afresh from the catalog (optionally with a new spec)."""
        record = self._model_record(model)
        self._build(record, spec)
        return self._index_info(self.catalog.model(record.key))

    @_locked
    def tune(
        self, model: str | os.PathLike | Encoder | None = None, target_recall: float = 0.95, k: int = 10
    ) -> TuneReport:
        """Pick the ANN search parameters (nprobe / efSearch) that reach `target_recall` recall@k
        against exact search, and remember them for this model's searches."""
        record = self._model_record(model)
        index = self._index_of(record)
        _, vectors = self.catalog.vectors(record.key)
        report = tune_index(index, vectors, target_recall=target_recall, k=k)
        self.catalog.update_model(record.key, search_params=report.chosen or None)
        self._save(self.catalog.model(record.key), index, self._indexes[record.key][0])
        return report

    @_locked
    def prune(self) -> int:
        """Drop cached embeddings no file refers to any more; returns how many."""
        return self.catalog.prune_embeddings()

    # -- searching --------------------------------------------------------------------------
    @_locked
    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike | None = None,
        k: int = 10,
        type: str | None = None,
        after: str | datetime | None = None,
        before: str | datetime | None = None,
        *,
        item: int | None = None,
        path_glob: str | None = None,
        min_score: float | None = None,
        decay_days: float | None = None,
        model: str | os.PathLike | Encoder | None = None,
        language: str | None = None,
    ) -> SearchResults:
        """Rank indexed items against a query. `text` may combine terms (``"beach + ./ref.jpg -
        people"``, ``"2:sunset"``); `image` and `item` add an example image file or indexed item.
        Filters (type, taken-at range, path glob) restrict the index search itself."""
        if k < 1:
            raise InvalidArgumentError("k", k, "an integer >= 1")
        if type is not None and type not in ITEM_TYPES:
            raise InvalidArgumentError("type", type, ITEM_TYPES)
        terms = parse_query(text) if text else []
        if image is not None:
            terms.append(QueryTerm("image", str(Path(image).expanduser())))
        if item is not None:
            terms.append(QueryTerm("item", str(item)))
        record = self._model_record(model)
        encoder = self._encoder_of(record)
        vector = query_vector(terms, encoder, lambda i: self._item_vector(record.key, i), language)
        floor = min_score if min_score is not None else default_min_score(record.family, terms)
        allowed = self._allowed(record.key, type, parse_date(after, "after"), parse_date(before, "before"), path_glob)
        index = self._index_of(record)
        if len(index) == 0 or (allowed is not None and len(allowed) == 0):
            return SearchResults([], floor, None)
        scores, ids = index.search(vector[None, :], candidates_for(k, decay_days is not None), allowed=allowed)
        return self._results(scores[0], ids[0], k, floor, decay_days)

    def _results(
        self, scores: np.ndarray, ids: np.ndarray, k: int, floor: float | None, decay_days: float | None
    ) -> SearchResults:
        keep = ids >= 0
        rows = self.catalog.items_by_id(ids[keep].tolist())
        pairs = [(float(s), int(i)) for s, i in zip(scores[keep], ids[keep], strict=True) if int(i) in rows]
        similarity = np.asarray([s for s, _ in pairs], dtype=np.float64)  # rows deleted since are dropped
        ids = np.asarray([i for _, i in pairs], dtype=np.int64)
        ranked = similarity.copy()
        if decay_days is not None:
            taken = np.asarray([rows[i].taken_at if rows[i].taken_at is not None else np.nan for i in ids])
            ranked = similarity * decay_factors(taken, decay_days, time.time())
        order = np.argsort(-ranked, kind="stable")
        best = float(similarity.max()) if len(similarity) else None
        hits = []
        for n in order:
            if floor is not None and similarity[n] < floor:
                continue
            row = rows[int(ids[n])]
            taken = datetime.fromtimestamp(row.taken_at) if row.taken_at is not None else None
            hits.append(Hit(len(hits) + 1, row.id, row.path, row.type, float(ranked[n]), float(similarity[n]), taken))
            if len(hits) == k:
                break
        return SearchResults(hits, floor, best)

    def _allowed(
        self, model_key: str, type: str | None, after: float | None, before: float | None, path_glob: str | None
    ) -> np.ndarray | None:
        if type is None and after is None and before is None and path_glob is None:
            return None
        ids = self.catalog.filtered_ids(type=type, after=after, before=before, model_key=model_key)
        if path_glob is not None:
            pattern = re.compile(fnmatch.translate(os.path.expanduser(path_glob)))
            rows = self.catalog.items_by_id(ids.tolist())
            ids = np.asarray([i for i in ids if pattern.match(rows[int(i)].path)], dtype=np.int64)
        return ids

    @_locked
    def vectors(self, model: str | os.PathLike | Encoder | None = None) -> LibraryVectors:
        """The stored embeddings of every indexed item for `model` (default: the first one), read
        from the catalog (the truth; no index involved) — for evaluation and export."""
        record = self._model_record(model)
        ids, vectors = self.catalog.vectors(record.key)
        rows = self.catalog.items_by_id(ids.tolist())
        return LibraryVectors(record, ids, [rows[int(i)].path for i in ids], [rows[int(i)].type for i in ids], vectors)

    @_locked
    def encoder(self, model: str | os.PathLike | Encoder | None = None) -> Encoder:
        """The encoder a model of this library was indexed with (its text tower embeds queries)."""
        return self._encoder_of(self._model_record(model))

    def _item_vector(self, model_key: str, item_id: int) -> np.ndarray:
        ids, vectors = self.catalog.vectors(model_key, np.asarray([item_id]))
        if len(ids) == 0:
            raise InvalidArgumentError("item", item_id, "the id of an indexed item (see `xmodal search --json`)")
        return vectors[0]

    # -- status -----------------------------------------------------------------------------
    @_locked
    def status(self) -> dict:
        """Counts per type and status, models and their indexes (design §7 keys and more)."""
        counts = self.catalog.counts()
        models = self.catalog.models()
        return {
            "library": str(self.folder),
            "items": {t: counts["ok"].get(t, 0) for t in ITEM_TYPES},
            "failed": sum(counts["failed"].values()),
            "pending": {t: counts["pending"].get(t, 0) for t in ITEM_TYPES},
            "models": [
                {
                    "name": m.name,
                    "key": m.key,
                    "source": m.source,
                    "precision": m.precision,
                    "family": m.family,
                    "dim": m.dim,
                    "embeddings": self.catalog.embeddings.count(m.key),
                    "last_indexed_at": _iso(m.last_indexed_at),
                }
                for m in models
            ],
            "index": {m.key: self._index_info(m) for m in models},  # by key: one name may have two precisions
            "catalog": {"path": str(self.catalog.path), "revision": self.catalog.revision()},
        }

    @_locked
    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file recorded as failed."""
        return self.catalog.failures()

    # -- models -----------------------------------------------------------------------------
    def _encoder_for_index(self, model: str | os.PathLike | Encoder | None, precision: str) -> Encoder:
        if isinstance(model, Encoder):
            return model
        if model is None:
            return self._encoder_of(self._model_record(None))
        encoder = load_model(model, precision=precision)
        return self._encoders.setdefault(encoder.model_key, encoder)

    def _register(self, encoder: Encoder) -> ModelRecord:
        """Add the model to the catalog (index spec "auto" until one is built with another)."""
        record = ModelRecord(
            key=encoder.model_key,
            name=encoder.name,
            source=encoder.source,
            precision=encoder.precision,
            family=encoder.family,
            dim=encoder.dim,
            index_spec="auto",
            search_params=None,
            last_indexed_at=None,
        )
        self.catalog.register_model(record)
        self._encoders.setdefault(encoder.model_key, encoder)
        return self.catalog.model(encoder.model_key)

    def _model_record(self, model: str | os.PathLike | Encoder | None) -> ModelRecord:
        records = self.catalog.models()
        if not records:
            raise LibraryError(
                f"{self.folder}: the library has no model yet; index with one first: xmodal index PATH --model NAME|DIR"
            )
        if model is None:
            return records[0]
        if isinstance(model, Encoder):
            key = model.model_key
            self._encoders.setdefault(key, model)
        else:
            matches = [r for r in records if model in (r.name, r.key, r.source)]
            if matches:
                return matches[0]
            key = load_model(model).model_key
        for record in records:
            if record.key == key:
                return record
        names = ", ".join(r.name for r in records)
        raise LibraryError(f"{self.folder}: model {model!s} has not indexed this library (its models: {names})")

    def _encoder_of(self, record: ModelRecord) -> Encoder:
        if record.key not in self._encoders:
            encoder = load_model(record.source, precision=record.precision)
            if encoder.model_key != record.key:
                raise LibraryError(
                    f"{record.source}: the model files changed since this library was indexed with them "
                    f"({record.key} -> {encoder.model_key}); run `xmodal index` again with it"
                )
            self._encoders[record.key] = encoder
        return self._encoders[record.key]

    # -- vector indexes ---------------------------------------------------------------------
    def _index_dir(self, model_key: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_key.split(":")[0])[:60]
        return self.folder / "indexes" / f"{slug}-{hashlib.blake2b(model_key.encode(), digest_size=6).hexdigest()}"

    def _read_state(self, model_key: str) -> dict | None:
        try:
            state = json.loads((self._index_dir(model_key) / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("model_key") == model_key else None

    def _index_of(self, record: ModelRecord) -> VectorIndex:
        """The model's index, consistent with the catalog's current revision: the one in memory or
        on disk caught up with the rows changed since it was saved, else rebuilt from the catalog."""
        revision = self.catalog.revision()
        cached = self._indexes.get(record.key)
        if cached is not None:
            index, since = cached[1], cached[0]
        else:
            index, since = self._load(record)
            if index is None:
                return self._build(record)
        if since != revision:
            index = self._catch_up(record, index, since)
        self._indexes[record.key] = (revision, index)
        return index

    def _load(self, record: ModelRecord) -> tuple[VectorIndex | None, int]:
        """The saved index and the catalog revision it reflects; (None, -1) when it is missing, was
        built with another spec setting, or fails its checks."""
        state = self._read_state(record.key)
        if state is None or state.get("spec_setting") != record.index_spec:
            return None, -1
        try:
            return VectorIndex.load(self._index_dir(record.key) / "index"), int(state["revision"])
        except XmodalError as exc:
            log.warning("rebuilding the %s index from the catalog: %s", record.name, exc)
            return None, -1

    def _catch_up(self, record: ModelRecord, index: VectorIndex, since: int) -> VectorIndex:
        """Apply the catalog changes after revision `since` to `index` and save it."""
        revision = self.catalog.revision()
        wanted = self.catalog.filtered_ids(model_key=record.key)
        have = np.asarray(index.ids, dtype=np.int64)
        changed = self.catalog.changed_since(since)
        remove = np.union1d(np.setdiff1d(have, wanted), np.intersect1d(changed, have))
        add = np.union1d(np.intersect1d(changed, wanted), np.setdiff1d(wanted, have))
        if len(remove):
            index.remove(remove)
        if len(add):
            ids, vectors = self.catalog.vectors(record.key, add)
            index.add(ids, vectors)
        if record.index_spec == "auto" and choose_spec(len(wanted)) != index.spec:
            return self._build(record)  # grew past (or shrank below) the exact-search threshold
        if len(index) != len(wanted):
            log.warning("the %s index disagrees with the catalog after catching up; rebuilding", record.name)
            return self._build(record)
        self._save(record, index, revision)
        return index

    def _build(self, record: ModelRecord, spec: str | None = None) -> VectorIndex:
        """Build the model's index from the catalog and save it; a new `spec` is remembered only
        once an index of that kind was built (a spec that cannot be built changes nothing)."""
        revision = self.catalog.revision()
        ids, vectors = self.catalog.vectors(record.key)
        if len(ids) == 0:
            vectors = np.zeros((0, record.dim), dtype=np.float32)
        new_spec = spec is not None and spec != record.index_spec
        index = build_index(ids, vectors, spec=spec or record.index_spec)
        if new_spec:
            self.catalog.update_model(record.key, index_spec=spec, search_params=None)
            record = self.catalog.model(record.key)
        index.params = record.search_params or ""
        self._save(record, index, revision)
        return index

    def _save(self, record: ModelRecord, index: VectorIndex, revision: int) -> None:
        folder = self._index_dir(record.key)
        folder.mkdir(parents=True, exist_ok=True)
        index.save(folder / "index")
        state = {
            "model_key": record.key,
            "revision": revision,
            "spec": index.spec,
            "spec_setting": record.index_spec,
            "size": len(index),
            "saved_at": time.time(),
        }
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, folder / "state.json")
        self._indexes[record.key] = (revision, index)

    def _index_info(self, record: ModelRecord) -> dict:
        state = self._read_state(record.key) or {}
        return {
            "spec": state.get("spec"),
            "setting": record.index_spec,
            "size": state.get("size", 0),
            "search_params": record.search_params,
            "up_to_date": state.get("revision") == self.catalog.revision(),
            "path": str(self._index_dir(record.key) / "index"),
        }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else None
