"""`xmodal.Library`: a folder holding a catalog and one vector index per model; index folders into
it and search them, from many threads and processes at once.

Layout of a library folder::

    catalog.sqlite               items, embeddings and segments per model, models, roots, identity
    indexes/<model-slug>/index   the vector index of one model (catalog identity + revision inside)
    writer.lock                  held (flock) by the one process writing the library

The catalog is the truth; an index is a cache of it. Readers (search, status, vectors) use their
own read-only catalog connection per thread and an immutable index snapshot that catches up in
memory with what was committed since it was saved: they never wait for an index run and never
write, so a library on read-only media is searchable. Writers (index, rebuild, tune, prune) hold
the library's writer lock for the whole run; only they save indexes. Nothing is created until the
first `index`: opening a folder that holds no library and searching it is an error.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xmodal import settings
from xmodal.captions import Candidate, LibrarySample, library_sample, scored_candidates
from xmodal.errors import (
    IndexFileError,
    InvalidArgumentError,
    LibraryError,
    LibraryNotFoundError,
    ModelNotFoundError,
    XmodalError,
)
from xmodal.media.formats import TEXT_EXTENSIONS
from xmodal.media.formats import text_extensions as text_extensions_of
from xmodal.media.walk import WalkOptions
from xmodal.models import load_model
from xmodal.models.embedder import Embedder, same_model
from xmodal.progress import Progress
from xmodal.search import (
    DEFAULT_COMBINE,
    CaptionCombine,
    Hit,
    MinScore,
    QueryTerm,
    SearchResults,
    candidates_for,
    check_k,
    decay_factors,
    floors_for,
    parse_date,
    parse_query,
    query_modality,
    query_vector,
)
from xmodal.store.catalog import (
    ITEM_TYPES,
    Catalog,
    CatalogNeedsMigration,
    ModelRecord,
)
from xmodal.store.indexes import IndexCache
from xmodal.store.lock import LOCK_FILE, WriterLock, describe_holder
from xmodal.store.query_cache import QueryCache

if TYPE_CHECKING:  # the writers' machinery (decoding, Faiss tuning, tagging) is imported when a writer runs
    from xmodal.store.ingest import EmbedConfig, IndexReport
    from xmodal.store.vector_index import TuneReport
    from xmodal.tags.run import TagReport
    from xmodal.tags.vocabulary import Vocabulary

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
ModelChoice = str | os.PathLike | Embedder | None


@dataclass
class LibraryVectors:
    """Every indexed item's stored embedding for one model, by item id, with path and type."""

    model: ModelRecord
    ids: np.ndarray  # int64 item ids
    paths: list[str]
    types: list[str]
    vectors: np.ndarray  # float32 (N, D), unit rows


class Library:
    """A library folder. Use as a context manager or call `close()`; one object may be shared by
    threads (each reads through its own connection)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.folder = Path(path).expanduser() if path is not None else settings.current().library_dir
        self._indexes = IndexCache(self.folder)
        self._writer_lock = WriterLock(self.folder)
        self._local = threading.local()
        self._readers: list[Catalog] = []
        self._guard = threading.Lock()
        self._encoders: dict[str, Embedder] = {}
        self._queries = QueryCache(self.folder)
        self._resident = False  # a long-lived process (warm_up): queries through the model's prepacked tower
        self._samples: dict[tuple[str, int], LibrarySample] = {}

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._guard:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        self._queries.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Library({str(self.folder)!r})"

    @property
    def exists(self) -> bool:
        return (self.folder / CATALOG_FILE).is_file()

    # -- connections ------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """This thread's read-only catalog connection (opened on first use)."""
        reader = getattr(self._local, "catalog", None)
        if reader is None:
            reader = self._open_reader()
            self._local.catalog = reader
            with self._guard:
                self._readers.append(reader)
        return reader

    def _open_reader(self) -> Catalog:
        path = self.folder / CATALOG_FILE
        try:
            return Catalog(path, readonly=True)
        except CatalogNeedsMigration:
            if not os.access(self.folder, os.W_OK):
                raise LibraryError(
                    f"{self.folder}: the catalog must be upgraded once by this xmodal, which needs write access "
                    "to the library folder (it is read-only here)"
                ) from None
            with self._writing(wait=True):  # opening the writer connection upgrades the catalog
                pass
            return Catalog(path, readonly=True)

    @contextmanager
    def _writing(self, *, wait: bool = False, create: bool = False) -> Iterator[Catalog]:
        """The writer's catalog connection, under the library's writer lock."""
        if not self.exists and not create:
            raise LibraryNotFoundError(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"{self.folder}: cannot create the library folder: {exc.strerror or exc}") from None
        with self._writer_lock.holding(wait):
            catalog = Catalog(self.folder / CATALOG_FILE, create=True)
            try:
                yield catalog
            finally:
                catalog.close()

    # -- indexing ---------------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
        model: ModelChoice = None,
        *,
        precision: str = "fp32",
        exclude: Sequence[str] = (),
        follow_symlinks: bool = False,
        include_hidden: bool = False,
        text_extensions: Iterable[str] | None = None,
        index_spec: str | None = None,
        config: EmbedConfig | None = None,
        progress: Progress | None = None,
        wait: bool = False,
        dry_run: bool = False,
    ) -> IndexReport:
        """Add, update, move and remove the media files under `paths` (default: every root indexed
        before) for `model` (default: the model this library was last indexed with), then bring that
        model's vector index up to date. Creates the library when it does not exist yet.

        text_extensions: the extensions of text documents to index (default .txt, .md, .caption);
        empty: no text at all (no documents, captions or descriptions embedded in photos).
        index_spec: "auto" (exact below a size threshold, ANN above), "exact", or a Faiss factory
        string ("HNSW32", "IVF1024,Flat", "IVF1024,PQ32"); remembered per model. Another process
        indexing the library raises LibraryBusyError, or is waited for with `wait=True`.
        """
        from xmodal.store.ingest import EmbedConfig, ingest

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        text = TEXT_EXTENSIONS if text_extensions is None else text_extensions_of(text_extensions)
        walk = WalkOptions(tuple(exclude), follow_symlinks, include_hidden, text)
        config = replace(config or EmbedConfig(), descriptions=bool(text))
        if dry_run:  # only reads: no lock, nothing registered
            catalog = self.catalog
            encoder = self._embedder_for_index(catalog, model, precision)
            return ingest(catalog, encoder, self._roots(catalog, paths), walk=walk, dry_run=True)
        with self._writing(wait=wait, create=True) as catalog:
            paths = self._roots(catalog, paths)
            encoder = self._embedder_for_index(catalog, model, precision)
            record = self._register(catalog, encoder)
            report = ingest(catalog, encoder, paths, walk=walk, config=config, progress=progress)
            catalog.update_model(record.key, last_indexed_at=time.time())
            record = catalog.model(record.key)
            _prepare_queries(encoder)
            if index_spec is not None and index_spec != record.index_spec:
                self._rebuild(catalog, record, index_spec)
            else:
                self._indexes.save(catalog, record)
        log.info("indexed %s: %s", list(map(str, paths)), report.summary())
        return report

    def import_embeddings(
        self,
        folder: str | os.PathLike,
        model: ModelChoice = None,
        *,
        progress: Progress | None = None,
        wait: bool = False,
    ) -> IndexReport:
        """Add the items of an embeddings folder (`xmodal embed-dataset` output, e.g. computed on a
        cluster) with their stored vectors: no model work. The folder's model must be `model`
        (default: the model it was made with, loaded by its name or folder) — the same files at the
        same precision, else LibraryError. Then brings that model's vector index up to date."""
        from xmodal.scale.importer import import_shards
        from xmodal.scale.shards import read_manifest

        made_with = read_manifest(folder)["model"]
        with self._writing(wait=wait, create=True) as catalog:
            encoder = self._embedder_for_index(catalog, model or made_with["source"], made_with["precision"])
            if not same_model(encoder.model_key, made_with["key"]):
                raise LibraryError(
                    f"{folder}: embeddings of model {made_with['name']} ({made_with['key']}), not of "
                    f"{encoder.name} ({encoder.model_key}); import with the model they were made with"
                )
            record = self._register(catalog, encoder)
            report = import_shards(catalog, record.key, folder, progress)
            catalog.update_model(record.key, last_indexed_at=time.time())
            self._indexes.save(catalog, catalog.model(record.key))
        log.info("imported %s: %s", folder, report.summary())
        return report

    def _roots(self, catalog: Catalog, paths: Sequence[str | os.PathLike] | None) -> list[str | os.PathLike]:
        """The paths given, else every root indexed before."""
        found = list(paths or [root.path for root in catalog.roots()])
        if not found:
            raise LibraryError(f"{self.folder}: no folders indexed yet; give the folders or files to index")
        return found

    def rebuild_index(self, model: ModelChoice = None, spec: str | None = None, *, wait: bool = False) -> dict:
        """Build a model's vector index afresh from the catalog (optionally with a new spec)."""
        with self._writing(wait=wait) as catalog:
            record = self._model_record(catalog, model)
            self._rebuild(catalog, record, spec or record.index_spec)
            return self._indexes.info(catalog, catalog.model(record.key))

    def _rebuild(self, catalog: Catalog, record: ModelRecord, spec: str) -> None:
        """A new index of `spec`, remembered as the model's only once it was built."""
        planned = replace(
            record, index_spec=spec, search_params=None if spec != record.index_spec else record.search_params
        )
        built = self._indexes.build(catalog, planned)
        if planned != record:
            catalog.update_model(record.key, index_spec=spec, search_params=planned.search_params)
        self._indexes.save(catalog, catalog.model(record.key), rebuilt=built)

    def tune(
        self, model: ModelChoice = None, target_recall: float = 0.95, k: int = 10, *, wait: bool = False
    ) -> TuneReport:
        """Pick the ANN search parameters (nprobe / efSearch) that reach `target_recall` recall@k
        against exact search, and remember them for this model's searches."""
        from xmodal.store.vector_index import tune_index

        with self._writing(wait=wait) as catalog:
            record = self._model_record(catalog, model)
            snapshot = self._indexes.save(catalog, record)
            with catalog.read():
                _, vectors = catalog.entries(record.key)
            report = tune_index(snapshot.base, vectors, target_recall=target_recall, k=k)
            catalog.update_model(record.key, search_params=report.chosen or None)
            tuned = replace(snapshot, search_params=report.chosen or "")
            self._indexes.save(catalog, catalog.model(record.key), rebuilt=tuned)
        return report

    def prune(self, *, offline: bool = False, wait: bool = False) -> dict[str, int]:
        """Drop cached embeddings no file refers to any more; with `offline`, also forget the items
        of roots that are offline (unmounted drives), and those roots."""
        with self._writing(wait=wait) as catalog:
            removed = 0
            if offline:
                with catalog.transaction() as revision:
                    for root in catalog.roots():
                        if root.state == "offline":
                            ids = [row.id for row in catalog.items_under([root.path]).values()]
                            removed += catalog.delete_items(ids, revision)
                            catalog.forget_root(root.path)
            return {"items": removed, "embeddings": catalog.prune_embeddings()}

    def tag(
        self,
        vocabulary: Vocabulary | str | os.PathLike | None = None,
        model: ModelChoice = None,
        *,
        templates: str | os.PathLike | None = None,
        extend: bool = False,
        threshold: str | float | None = None,
        confidence: float | None = None,
        recalibrate: bool = False,
        batch_size: int = 500,
        cache: object | None = None,
        progress: Progress | None = None,
        wait: bool = False,
    ) -> TagReport:
        """Zero-shot tag the photos and videos of the library with `model` (default: the last
        indexed): labels of `vocabulary` (a Vocabulary, a file, default the built-in one; `extend`
        adds the file's to the built-in ones), prompted
        with their templates (or `templates`: imagenet, simple, a file), kept where they pass the
        thresholds (threshold "auto": calibrated on this library to `confidence`; "off": the top
        label of each group; a number: that cosine). Only new contents are tagged unless the
        model, vocabulary or thresholds changed; `batch_size` photos are committed at a time.
        `cache` (an eval EmbeddingCache) keeps prompt embeddings between runs."""
        from xmodal.tags import TagSettings, load_vocabulary, prompt_vectors, tag_library
        from xmodal.tags.vocabulary import Vocabulary

        settings = TagSettings.parse(threshold, confidence)
        if not isinstance(vocabulary, Vocabulary):
            vocabulary = load_vocabulary(vocabulary, templates, extend=extend)
        with self._writing(wait=wait) as catalog:
            record = self._model_record(catalog, model)
            encoder = self._encoder_of(record, model)
            if progress is not None:
                progress.start("embedding the vocabulary", None)
            vectors = prompt_vectors(encoder, vocabulary, cache=cache)
            report = tag_library(
                catalog,
                encoder,
                vocabulary,
                settings,
                recalibrate=recalibrate,
                label_vectors=vectors,
                batch_size=batch_size,
                progress=progress,
            )
        log.info("tagged %s: %s", self.folder, report.summary())
        return report

    def tags(self) -> dict:
        """The tags in force: which model and vocabulary gave them, how many items carry each label
        (most frequent first), and how many photos are tagged or still waiting."""
        catalog = self.catalog
        with catalog.read():
            run = catalog.tags.current_run()
            if run is None:
                return {"run": None, "counts": [], "tagged": 0, "untagged": 0}
            tagged, untagged = catalog.tags.coverage()
            labels = run.thresholds.get("labels", {})
            return {
                "run": {
                    "id": run.id,
                    "model": catalog.model(run.model_key).name
                    if _known_model(catalog, run.model_key)
                    else run.model_key,
                    "model_key": run.model_key,
                    "vocabulary": run.vocabulary.get("source"),
                    "labels": sum(len(g["labels"]) for g in run.vocabulary.get("groups", [])),
                    "labels_used": sum(1 for t in labels.values() if t.get("cosine") is not None),
                    "threshold": run.thresholds.get("settings"),
                    "calibrated_on": run.calibrated_on,
                    "started_at": _iso(run.started_at),
                    "finished_at": _iso(run.finished_at),
                },
                "counts": [{"label": label, "items": n} for label, n in catalog.tags.counts()],
                "tagged": tagged,
                "untagged": untagged,
            }

    # -- searching --------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike | bytes | None = None,
        k: int = 10,
        type: str | Sequence[str] | None = None,
        after: str | datetime | None = None,
        before: str | datetime | None = None,
        *,
        item: int | None = None,
        path_glob: str | None = None,
        tags: Sequence[str] = (),
        min_score: MinScore = None,
        decay_days: float | None = None,
        model: ModelChoice = None,
        language: str | None = None,
        moments: int = 1,
        path_terms: bool = True,
        combine: str | float | CaptionCombine = DEFAULT_COMBINE,
    ) -> SearchResults:
        """Rank indexed items against a query. `text` may combine terms (``"beach + ./ref.jpg -
        people"``, ``"2:sunset"``); `image` (a file, or an encoded image's bytes) and `item` add an
        example image or indexed item. Filters (type — one or several of image, video, text —,
        taken-at range, path glob, tags the items must all carry) restrict the index search itself.
        Photos are also found through their captions (caption files, embedded descriptions), their
        scores combined as `combine` says (a caption weight 0-1, default 0.5, or "max"). `min_score` overrides
        the per-modality floors (one number, or {"text": 0.6, ...}). Each hit carries up to
        `moments` best-matching parts (video moments, text windows with their words).
        `path_terms=False` never reads a text term as an image file (for queries from the network)."""
        k = check_k(k)
        types = _check_types(type)
        combine = CaptionCombine.parse(combine)
        terms = parse_query(text, path_terms) if text else []
        if isinstance(image, bytes):
            terms.append(QueryTerm("image", image))
        elif image is not None:
            terms.append(QueryTerm("image", str(Path(image).expanduser())))
        if item is not None:
            terms.append(QueryTerm("item", str(item)))
        catalog = self.catalog
        record = self._model_record(catalog, model)
        encoder = _OnFirstUse(lambda: self._encoder_of(record, model))  # a cached text query needs no model

        def texts(values: list[str]) -> np.ndarray:
            def encode(missing: list[str]) -> np.ndarray:
                return _embed_queries(encoder, missing, language, resident=self._resident)

            return self._queries.vectors(record.key, values, language, encode)

        vector = query_vector(terms, encoder, lambda i: self._item_vector(catalog, record.key, i), language, texts)
        examples = catalog.items_by_id(int(t.value) for t in terms if t.kind == "item")
        modality = query_modality(terms, {i: r.type or "" for i, r in examples.items()})
        floors = floors_for(record.name, record.family, modality, min_score)
        snapshot = self._indexes.snapshot(catalog, record)  # before the read below: never newer than it
        with catalog.read():
            allowed = self._allowed(catalog, record.key, types, after, before, path_glob, tags)
            if len(snapshot) == 0 or (allowed is not None and len(allowed) == 0):
                return SearchResults([], floors.get("image"), None, record.name, floors)
            sample = self._sample(catalog, record.key)
            searched = allowed
            if allowed is not None and (types is None or "image" in types):  # photos are found by their captions too
                searched = np.union1d(allowed, sample.caption_file_ids)
            visible = None if allowed is None else set(allowed.tolist())
            wanted = candidates_for(k, decay_days is not None)
            fetch = min(len(snapshot), wanted)
            while True:
                try:
                    _, entries = snapshot.search(vector, fetch, searched)
                except IndexFileError as exc:  # a damaged block of the saved index: never served
                    snapshot = self._indexes.damaged(catalog, record, exc)
                    continue
                candidates = scored_candidates(catalog, record.key, vector, entries, visible, combine, moments, sample)
                if len(candidates) >= wanted or len(entries) < fetch or fetch >= len(snapshot):
                    break
                fetch = min(len(snapshot), 4 * fetch)  # videos and texts have several entries each
            return self._results(catalog, record, candidates, k, floors, decay_days)

    def _sample(self, catalog: Catalog, model_key: str) -> LibrarySample:
        """The library's photo/caption sample at the catalog's revision (kept until it changes)."""
        key = (model_key, catalog.revision())
        with self._guard:
            found = self._samples.get(key)
        if found is None:
            found = library_sample(catalog, model_key)
            with self._guard:
                self._samples = {k: v for k, v in self._samples.items() if k[0] != model_key} | {key: found}
        return found

    def warm_up(self, model: ModelChoice = None) -> None:
        """Load what a search needs now rather than on the first one (a resident server's start):
        the model's text tower and its index snapshot, every block of it checked and read."""
        self._resident = True
        record = self._model_record(self.catalog, model)
        _embed_queries(self._encoder_of(record, model), ["warm up"], None, resident=True)
        snapshot = self._indexes.snapshot(self.catalog, record)
        try:
            if len(snapshot):
                snapshot.search(np.ones(record.dim, np.float32) / np.sqrt(record.dim), 1)
        except IndexFileError as exc:
            self._indexes.damaged(self.catalog, record, exc)

    def _results(
        self,
        catalog: Catalog,
        record: ModelRecord,
        candidates: list[Candidate],
        k: int,
        floors: dict[str, float | None],
        decay_days: float | None,
    ) -> SearchResults:
        similarity = np.asarray([c.similarity for c in candidates], dtype=np.float64)
        ranked = similarity.copy()
        if decay_days is not None:
            taken = np.asarray([c.row.taken_at if c.row.taken_at is not None else np.nan for c in candidates])
            ranked = similarity * decay_factors(taken, decay_days, time.time())
        order = np.argsort(-ranked, kind="stable")
        best = int(np.argmax(similarity)) if len(similarity) else None
        best_floor = floors.get(candidates[best].row.type or "") if best is not None else floors.get("image")
        offline = tuple(root.path for root in catalog.roots() if root.state == "offline")
        chosen = [int(n) for n in order if candidates[n].floor_margin(floors) >= 0][:k]
        tags = catalog.tags.of(candidates[n].row.content_hash for n in chosen if candidates[n].row.content_hash)
        hits = []
        for rank, n in enumerate(chosen, start=1):
            candidate = candidates[n]
            row = candidate.row
            floor = floors.get(row.type or "")
            moments = tuple(m for i, m in enumerate(candidate.parts) if i == 0 or floor is None or m.score >= floor)
            hits.append(
                Hit(
                    rank,
                    row.id,
                    row.path,
                    row.type,
                    float(ranked[n]),
                    float(similarity[n]),
                    datetime.fromtimestamp(row.taken_at) if row.taken_at is not None else None,
                    moments,
                    any(row.path.startswith(root.rstrip(os.sep) + os.sep) for root in offline),
                    candidate.pixel_score if candidate.caption is not None else None,
                    candidate.caption,
                    tuple(t.label for t in tags.get(row.content_hash or "", [])),
                    row.duration if row.type == "video" else None,
                )
            )
        best_score = float(similarity[best]) if best is not None else None
        return SearchResults(hits, best_floor, best_score, record.name, floors)

    def _allowed(
        self,
        catalog: Catalog,
        model_key: str,
        types: tuple[str, ...] | None,
        after: str | datetime | None,
        before: str | datetime | None,
        path_glob: str | None,
        tags: Sequence[str] = (),
    ) -> np.ndarray | None:
        """Sorted ids of the items the filters let through (None: no filter)."""
        after, before = parse_date(after, "--after"), parse_date(before, "--before")
        if types is None and after is None and before is None and path_glob is None and not tags:
            return None
        tags = _check_tags(catalog, tags)
        ids = catalog.filtered_ids(type=types, after=after, before=before, model_key=model_key, tags=tags)
        if path_glob is not None:
            pattern = re.compile(fnmatch.translate(os.path.expanduser(path_glob)))
            rows = catalog.items_by_id(ids.tolist())
            ids = np.asarray([i for i in ids if pattern.match(rows[int(i)].path)], dtype=np.int64)
        return ids

    def vectors(self, model: ModelChoice = None) -> LibraryVectors:
        """The stored embeddings of every indexed item for `model` (default: the last indexed),
        read from the catalog (the truth; no index involved) — for evaluation and export."""
        catalog = self.catalog
        with catalog.read():
            record = self._model_record(catalog, model)
            ids, vectors = catalog.vectors(record.key)
            rows = catalog.items_by_id(ids.tolist())
        return LibraryVectors(record, ids, [rows[int(i)].path for i in ids], [rows[int(i)].type for i in ids], vectors)

    def encoder(self, model: ModelChoice = None) -> Embedder:
        """The model a library model was indexed with (its text tower embeds queries)."""
        return self._encoder_of(self._model_record(self.catalog, model), model)

    @staticmethod
    def _item_vector(catalog: Catalog, model_key: str, item_id: int) -> np.ndarray:
        ids, vectors = catalog.vectors(model_key, np.asarray([item_id]))
        if len(ids) == 0:
            raise InvalidArgumentError("item", item_id, "the id of an indexed item (see `xmodal search --json`)")
        return vectors[0]

    # -- status -----------------------------------------------------------------------------
    def status(self, verify: bool = False) -> dict:
        """Counts per type and status, models and their indexes, roots, the catalog's identity, and
        who is indexing the library right now (None when nobody). `verify` checks every block of
        every saved index file against its checksum (reads them whole)."""
        catalog = self.catalog
        with catalog.read():
            counts = catalog.counts()
            models = catalog.models()
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
                        "embeddings": catalog.embeddings.count(m.key),
                        "last_indexed_at": _iso(m.last_indexed_at),
                    }
                    for m in models
                ],
                "index": {
                    m.key: self._indexes.info(catalog, m, verify) for m in models
                },  # by key: a name may have 2 precisions
                "roots": [
                    {"path": r.path, "state": r.state, "reason": r.reason, "items": catalog.count_under(r.path)}
                    for r in catalog.roots()
                ],
                "catalog": {
                    "path": str(catalog.path),
                    "uuid": catalog.uuid,
                    "revision": catalog.revision(),
                    "version": catalog.version(),
                },
                "writer": self.writer(),
                "tags": self._tag_status(catalog),
            }

    @staticmethod
    def _tag_status(catalog: Catalog) -> dict | None:
        """The tags in force in a few numbers (None before the first `tag`)."""
        run = catalog.tags.current_run()
        if run is None:
            return None
        counts = catalog.tags.counts()
        tagged, untagged = catalog.tags.coverage()
        return {
            "model_key": run.model_key,
            "vocabulary": run.vocabulary.get("source"),
            "threshold": run.thresholds.get("settings"),
            "labels_given": len(counts),
            "tags": sum(n for _, n in counts),
            "tagged": tagged,
            "untagged": untagged,
            "finished": run.finished_at is not None,
            "top": [{"label": label, "items": n} for label, n in counts[:10]],
        }

    def writer(self) -> str | None:
        """Who holds the library's writer lock ('PID 123 (xmodal index ...) since ...'), or None."""
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return describe_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file recorded as failed."""
        return self.catalog.failures()

    # -- models -----------------------------------------------------------------------------
    def _embedder_for_index(self, catalog: Catalog, model: ModelChoice, precision: str) -> Embedder:
        if model is None:
            record = self._model_record(catalog, None)
            return self._encoder_of(record, None)
        if not isinstance(model, (str, os.PathLike)):
            return model
        encoder = load_model(model, precision=precision)
        with self._guard:
            return self._encoders.setdefault(encoder.model_key, encoder)

    def _register(self, catalog: Catalog, encoder: Embedder) -> ModelRecord:
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
        catalog.register_model(record)
        with self._guard:
            self._encoders.setdefault(encoder.model_key, encoder)
        return catalog.model(encoder.model_key)

    def _model_record(self, catalog: Catalog, model: ModelChoice) -> ModelRecord:
        records = catalog.models()
        if not records:
            raise LibraryError(
                f"{self.folder}: the library has no model yet; index with one first: xmodal index PATH --model NAME|DIR"
            )
        if model is None:
            return records[0]
        if not isinstance(model, (str, os.PathLike)):
            key = model.model_key
        else:
            matches = [r for r in records if str(model) in (r.name, r.key, r.source)]
            if matches:
                return matches[0]
            key = load_model(model).model_key
        for record in records:
            if same_model(record.key, key):
                return record
        names = ", ".join(r.name for r in records)
        raise LibraryError(f"{self.folder}: model {model!s} has not indexed this library (its models: {names})")

    def _encoder_of(self, record: ModelRecord, given: ModelChoice = None) -> Embedder:
        """The loaded model of a record: the one given (an Embedder, or a name/folder whose files
        are the same model), else loaded from where the library remembers it, else by its name."""
        with self._guard:
            if record.key in self._encoders:
                return self._encoders[record.key]
        if given is not None and not isinstance(given, (str, os.PathLike)):
            encoder = given
        else:
            encoder = self._load_again(record, given)
        with self._guard:
            return self._encoders.setdefault(record.key, encoder)

    @staticmethod
    def _load_again(record: ModelRecord, given: ModelChoice) -> Embedder:
        sources = [record.source, record.name]
        if given is not None and str(given) not in (record.name, record.key, record.source):
            sources = [str(given)]  # the same model files somewhere else
        problems = []
        for source in dict.fromkeys(sources):
            try:
                encoder = load_model(source, precision=record.precision)
            except ModelNotFoundError as exc:
                problems.append(str(exc))
                continue
            if same_model(encoder.model_key, record.key):
                return encoder
            problems.append(f"{source} holds other model files than the library was indexed with")
        raise LibraryError(
            f"model {record.name}: cannot load it again ({'; '.join(problems)}); if its folder moved, pass "
            f"--model NEWPATH (the same files); to use other files, index again with them"
        )


def _embed_queries(encoder: Embedder, texts: list[str], language: str | None, resident: bool) -> np.ndarray:
    """Search texts through the encoder's query towers when it has them (any Embedder otherwise)."""
    if getattr(encoder, "embed_queries", None) is None:
        return encoder.embed_texts(texts, language)
    return encoder.embed_queries(texts, language, resident=resident)


def _prepare_queries(encoder: Embedder) -> None:
    """Give the model its query towers (a mapped fp32 copy, the int8 one when asked for) where they
    agree with fp32 (made once, by a writer: a search never waits for them)."""
    prepare = getattr(encoder, "prepare_queries", None)
    if prepare is None:
        return
    try:
        prepare()
    except (XmodalError, OSError, RuntimeError) as exc:  # an optimization: searching works without it
        log.warning("%s: no query tower (%s); queries use the model's own text tower", encoder.name, exc)


class _OnFirstUse:
    """Stands for an object made by `make()` when one of its attributes is first asked for."""

    def __init__(self, make):
        self._make, self._made = make, None

    def __getattr__(self, name: str):
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)


def _check_types(type: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if type is None:
        return None
    types = (type,) if isinstance(type, str) else tuple(type)
    for t in types:
        if t not in ITEM_TYPES:
            raise InvalidArgumentError("--type", t, ITEM_TYPES)
    return types or None


def _known_model(catalog: Catalog, key: str) -> bool:
    return any(m.key == key for m in catalog.models())


def _check_tags(catalog: Catalog, tags: Sequence[str]) -> list[str]:
    """The tags asked for; one the library's tagging cannot give is an error naming it."""
    tags = [t.strip() for t in tags if t.strip()]
    unknown = sorted(set(tags) - catalog.tags.known(tags))
    if unknown:
        run = catalog.tags.current_run()
        hint = "the library has no tags yet (xmodal tag)" if run is None else "a label of the tag vocabulary"
        raise InvalidArgumentError("--tag", unknown[0], hint + "; see xmodal tags list")
    return tags


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else None


__all__ = ["Library", "LibraryVectors"]
