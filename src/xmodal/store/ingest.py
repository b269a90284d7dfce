"""Indexing pipeline: walk folders, decide per file what work it needs, decode in parallel with
the encoder, and commit rows with their embeddings in batches.

A plain function over a Catalog and an Encoder, so a distributed runner can call it on shards.
Incremental (rclip's scheme): a file whose size and mtime match its row is not read; a changed
file is re-hashed and, when its content hash has no embedding of this model yet, re-encoded; a
moved or duplicated file finds its embedding by content hash (no model call); files gone from
the walked folders leave the catalog. Each commit holds rows together with their embeddings, so
killing the process at any moment leaves a consistent catalog whose committed work the next run
skips. Ctrl-C stops after committing what is complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from xmodal.errors import MediaError
from xmodal.media.hashing import content_hash
from xmodal.media.image import probe_image
from xmodal.media.walk import MediaFile, WalkOptions, WalkProblem, walk_media
from xmodal.models.encoder import Encoder
from xmodal.parallel import bounded_map
from xmodal.progress import NullProgress, Progress
from xmodal.store.catalog import Catalog, ItemRecord, ItemUpdate

log = logging.getLogger(__name__)

VIDEO_PENDING = "video indexing is not supported by this version yet (recorded; indexed by a later one)"


@dataclass(frozen=True)
class IngestConfig:
    """Batching and parallelism: `workers` decode threads (default: one per CPU) run ahead of the
    encoder by two batches; the encoder takes up to `batch_size` images at a time (fewer when it
    would otherwise wait for decoding); rows are committed with each encoded batch and at least
    every `commit_seconds`."""

    batch_size: int = 32
    workers: int | None = None
    commit_seconds: float = 2.0


@dataclass
class IndexReport:
    """What one `index` run did. `failed` lists files that failed in this run; `encoded` counts
    images that went through the model, `reused` those whose embedding came from the cache."""

    model: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    pending: int = 0
    encoded: int = 0
    reused: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def model_work(self) -> bool:
        return self.encoded > 0

    def summary(self) -> str:
        parts = [
            f"{self.added} added",
            f"{self.updated} updated",
            f"{self.removed} removed",
            f"{self.unchanged} unchanged",
            f"{len(self.failed)} failed",
        ]
        if self.pending:
            parts.append(f"{self.pending} videos pending")
        work = f"{self.encoded} encoded, {self.reused} from cache" if self.model_work else "no model work needed"
        return f"{', '.join(parts)}; {work} ({self.seconds:.1f} s)"


@dataclass(frozen=True)
class _Job:
    """A file that needs reading: `known` is its row when the file is unchanged but lacks an
    embedding of this model."""

    file: MediaFile
    existing: ItemRecord | None
    known: bool = False


@dataclass
class _Prepared:
    job: _Job
    row: ItemUpdate
    pixels: np.ndarray | None = None


def ingest(
    catalog: Catalog,
    encoder: Encoder,
    roots: Sequence[str | os.PathLike],
    *,
    walk: WalkOptions | None = None,
    config: IngestConfig | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Bring the catalog up to date with the files under `roots` for `encoder`'s model."""
    config = config or IngestConfig()
    progress = progress or NullProgress()
    start = time.perf_counter()
    report = IndexReport(model=encoder.model_key)
    progress.start("scanning", None)
    found = list(walk_media(roots, walk))
    roots_abs = [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots]
    existing = catalog.items_under([r for r in roots_abs if os.path.exists(r)])
    embedded = frozenset(catalog.embedded_hashes(encoder.model_key))
    jobs, rows = _plan(found, existing, embedded, roots_abs, report)
    _remove_missing(catalog, found, existing, report)
    if rows:
        with catalog.transaction() as revision:
            catalog.upsert_items(rows, revision)
    progress.start("indexing", len(jobs))
    try:
        _process(catalog, encoder, jobs, embedded, config, progress, report)
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted: committed work is kept; run again to finish")
    report.seconds = time.perf_counter() - start
    return report


def _plan(
    found: list[MediaFile | WalkProblem],
    existing: dict[str, ItemRecord],
    embedded: frozenset[str],
    roots: list[str],
    report: IndexReport,
) -> tuple[list[_Job], list[ItemUpdate]]:
    """Split what the walk found into unchanged files, files to read, and rows to write now
    (walk problems and videos)."""
    jobs: list[_Job] = []
    rows: list[ItemUpdate] = []
    for entry in found:
        old = existing.get(entry.path)
        if isinstance(entry, WalkProblem):
            if old is not None and old.status == "failed" and old.error == entry.reason:
                report.unchanged += 1
                continue
            if entry.path in roots and not os.path.lexists(entry.path):
                report.failed.append((entry.path, entry.reason))  # a missing root: nothing to record
                continue
            rows.append(ItemUpdate(entry.path, entry.type, "failed", entry.size, entry.mtime_ns, error=entry.reason))
            report.failed.append((entry.path, entry.reason))
            continue
        same = old is not None and (old.size, old.mtime_ns, old.type) == (entry.size, entry.mtime_ns, entry.type)
        if same and (old.status != "ok" or old.content_hash in embedded):
            report.unchanged += 1
        elif entry.type == "video":
            rows.append(ItemUpdate(entry.path, "video", "pending", entry.size, entry.mtime_ns, error=VIDEO_PENDING))
            report.pending += 1
        else:
            jobs.append(_Job(entry, old, known=same))
    return jobs, rows


def _remove_missing(
    catalog: Catalog, found: list[MediaFile | WalkProblem], existing: dict[str, ItemRecord], report: IndexReport
) -> None:
    """Delete rows of files no longer under the roots; rows under folders the walk could not read
    are kept (an unreadable folder is not proof its files are gone)."""
    seen = {entry.path for entry in found}
    blocked = tuple(p.path + os.sep for p in found if isinstance(p, WalkProblem) and p.type is None)
    gone = [r.id for path, r in existing.items() if path not in seen and not path.startswith(blocked or ("\0",))]
    if gone:
        with catalog.transaction():
            report.removed = catalog.delete_items(gone)


def _process(
    catalog: Catalog,
    encoder: Encoder,
    jobs: list[_Job],
    embedded: frozenset[str],
    config: IngestConfig,
    progress: Progress,
    report: IndexReport,
) -> None:
    writer = _BatchWriter(catalog, encoder, config, progress, report)
    workers = config.workers or os.cpu_count() or 2
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xmodal-decode")
    try:
        prepared = bounded_map(
            pool, lambda job: _prepare(job, encoder, embedded), jobs, 2 * config.batch_size, writer.on_wait
        )
        for item in prepared:
            writer.add(item)
        writer.flush(encode=True)
    except KeyboardInterrupt:
        writer.flush(encode=False)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _BatchWriter:
    """Collects prepared files, runs the encoder on full batches and commits rows together with
    their embeddings in one transaction."""

    def __init__(self, catalog: Catalog, encoder: Encoder, config: IngestConfig, progress: Progress, report):
        self.catalog, self.encoder, self.config, self.progress, self.report = catalog, encoder, config, progress, report
        self.ready: list[_Prepared] = []  # rows whose embedding (if any) is known
        self.batch: list[_Prepared] = []  # waiting for the encoder
        self.vectors: dict[str, np.ndarray] = {}  # encoded, not yet committed
        self.encoded: set[str] = set()  # every hash encoded in this run (duplicates reuse it)
        self.last_commit = time.monotonic()

    def add(self, item: _Prepared) -> None:
        if item.pixels is not None and item.row.content_hash not in self.encoded:
            self.batch.append(item)
            self.encoded.add(item.row.content_hash)
        else:
            item.pixels = None  # failed, cached embedding, or a duplicate of a file already encoded
            self.ready.append(item)
        if len(self.batch) >= self.config.batch_size:
            self.flush(encode=True)
        elif time.monotonic() - self.last_commit >= self.config.commit_seconds:
            self.flush(encode=False)

    def on_wait(self) -> None:
        """The next file is still being decoded: keep the encoder busy with a partial batch (at
        least a quarter of one) rather than idle; full batches return once decoding keeps up."""
        if len(self.batch) >= max(1, self.config.batch_size // 4):
            self.flush(encode=True)

    def flush(self, encode: bool) -> None:
        if encode and self.batch:
            vectors = self.encoder.embed_pixels(np.stack([item.pixels for item in self.batch]))
            self.vectors.update((item.row.content_hash, v) for item, v in zip(self.batch, vectors, strict=True))
            self.report.encoded += len(self.batch)
            self.ready += self.batch
            self.batch = []
        # a duplicate waits for its twin: a row is never committed before its embedding
        waiting = {item.row.content_hash for item in self.batch}
        commit = [item for item in self.ready if item.row.content_hash not in waiting]
        self.ready = [item for item in self.ready if item.row.content_hash in waiting]
        self._commit(commit)
        self.last_commit = time.monotonic()

    def _commit(self, items: list[_Prepared]) -> None:
        if not items:
            return
        with self.catalog.transaction() as revision:
            self.catalog.upsert_items([item.row for item in items], revision)
            self.catalog.embeddings.put_many(self.encoder.model_key, self.vectors.items())
            self.catalog.touch_hashes(self.vectors, revision)
        self.vectors = {}
        for item in items:
            self._count(item)
        self.progress.advance(len(items))

    def _count(self, item: _Prepared) -> None:
        report, row, job = self.report, item.row, item.job
        if row.status == "failed":
            report.failed.append((row.path, row.error or ""))
        elif job.existing is None:
            report.added += 1
        elif job.known:
            report.unchanged += 1
        else:
            report.updated += 1
        if row.status == "ok" and item.pixels is None:
            report.reused += 1


def _prepare(job: _Job, encoder: Encoder, embedded: frozenset[str]) -> _Prepared:
    """Read, hash and (when its embedding is not cached) decode one file; never raises MediaError."""
    file = job.file
    try:
        data, size, mtime_ns = _read_stable(file.path)
    except MediaError as exc:
        return _Prepared(job, ItemUpdate(file.path, file.type, "failed", file.size, file.mtime_ns, error=exc.reason))
    digest = job.existing.content_hash if job.known and job.existing else content_hash(data)
    try:
        if digest in embedded:
            info = probe_image(data, file.path, encoder.decode_options)
            pixels = None
        else:
            decoded = encoder.decode(data)
            info, pixels = decoded, encoder.preprocess(decoded.image)
    except MediaError as exc:
        return _Prepared(job, ItemUpdate(file.path, file.type, "failed", size, mtime_ns, error=exc.reason))
    taken = info.taken_at.timestamp() if info.taken_at else mtime_ns / 1e9
    row = ItemUpdate(
        file.path,
        "image",
        "ok",
        size,
        mtime_ns,
        content_hash=digest,
        width=info.width,
        height=info.height,
        taken_at=taken,
        taken_at_source="exif" if info.taken_at else "mtime",
    )
    return _Prepared(job, row, pixels)


def _read_stable(path: str, attempts: int = 3) -> tuple[bytes, int, int]:
    """The file's bytes with the size and mtime they belong to; re-reads a file being rewritten."""
    for _ in range(attempts):
        try:
            with open(path, "rb") as fp:
                before = os.fstat(fp.fileno())
                data = fp.read()
                after = os.fstat(fp.fileno())
        except FileNotFoundError:
            raise MediaError(path, "file disappeared before it could be read") from None
        except PermissionError:
            raise MediaError(path, "permission denied") from None
        except OSError as exc:
            raise MediaError(path, f"cannot read: {exc.strerror or exc}") from None
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) and len(data) == after.st_size:
            if not data:
                raise MediaError(path, "empty file (0 bytes)")
            return data, after.st_size, after.st_mtime_ns
        time.sleep(0.05)
    raise MediaError(path, "file kept changing while being read")
