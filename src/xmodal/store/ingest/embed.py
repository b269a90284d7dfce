"""Ingest, stage 2: read, hash, decode and embed the files of a plan — with no catalog inside.

`embed(jobs, embedder, known)` takes picklable `FileJob`s and yields lists of picklable
`EmbedResult`s, so a thread, a process or a Ray actor can run it; the library's index run and the
benchmarks' embedding go through this one stage. Files are read bounded in size (settings) and
decoded on a thread pool that runs ahead of the encoder by two batches; the encoder takes full
batches, or a partial one rather than wait for decoding. A file whose content hash is in `known`
(already embedded) is only probed for its metadata; a content met twice in one run is encoded once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from xmodal import settings
from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.files import content_of, read_file
from xmodal.media.image import decode_image, probe_image
from xmodal.models.embedder import Embedder
from xmodal.parallel import bounded_map
from xmodal.store.catalog import ItemUpdate, Segment
from xmodal.store.ingest.plan import FileJob

log = logging.getLogger(__name__)

# Media types this version embeds; files of other types are recorded as pending for a later one.
READY_TYPES = frozenset({"image"})
PENDING_REASON = "{type} indexing is not supported by this version yet (recorded; indexed by a later one)"
_LIMIT_SETTINGS = {
    "image": "XMODAL_MAX_IMAGE_BYTES",
    "video": "XMODAL_MAX_VIDEO_BYTES",
    "text": "XMODAL_MAX_TEXT_BYTES",
}


@dataclass(frozen=True)
class EmbedConfig:
    """Batching and parallelism: `workers` decode threads (default: one per CPU) run ahead of the
    encoder by two batches; the encoder takes up to `batch_size` images at a time (fewer when it
    would otherwise wait for decoding); results that need no encoder (failures, known content) are
    handed on at least every `flush_seconds`."""

    batch_size: int = 32
    workers: int | None = None
    flush_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidArgumentError("--batch-size", self.batch_size, "a whole number >= 1")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise InvalidArgumentError("--workers", self.workers, "a whole number >= 1 (decode threads)")


@dataclass
class EmbedResult:
    """One file's outcome: its catalog row, and what the model made of its content when it was
    encoded in this run (`vector`, and `segments` for content with parts)."""

    job: FileJob
    row: ItemUpdate
    vector: np.ndarray | None = None
    segments: list[Segment] | None = None

    @property
    def encoded(self) -> bool:
        return self.vector is not None


@dataclass
class _Prepared:
    result: EmbedResult
    pixels: np.ndarray | None = None


class EmbedRun:
    """The results of embedding `jobs`, as an iterator of lists (one list per encoder batch, or
    per flush of results that needed no encoder). After an interruption, `unfinished()` gives the
    results that are complete but were not handed on yet (failures, known content)."""

    def __init__(self, jobs: Iterable[FileJob], embedder: Embedder, known: Container[str], config: EmbedConfig):
        self.jobs, self.embedder, self.known, self.config = jobs, embedder, known, config
        self.limits = settings.current()
        self._ready: list[_Prepared] = []  # complete: the row's vector (if any) is known
        self._batch: list[_Prepared] = []  # waiting for the encoder
        self._out: list[list[EmbedResult]] = []
        self._encoded: set[str] = set()  # hashes encoded (or being encoded) in this run
        self._last = time.monotonic()

    def __iter__(self) -> Iterator[list[EmbedResult]]:
        workers = self.config.workers or os.cpu_count() or 2
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xmodal-decode") as pool:
            prepared = bounded_map(pool, self._prepare, self.jobs, 2 * self.config.batch_size, self._on_wait)
            try:
                for item in prepared:
                    self._add(item)
                    yield from self._drain()
                self._flush(encode=True)
                yield from self._drain()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def unfinished(self) -> list[EmbedResult]:
        """Results complete but not yet handed on (none of them waits for the encoder)."""
        waiting = {p.result.row.content_hash for p in self._batch}
        done = [p.result for p in self._ready if p.result.row.content_hash not in waiting]
        self._ready = []
        return [r for batch in self._out for r in batch] + done

    def _drain(self) -> Iterator[list[EmbedResult]]:
        while self._out:
            yield self._out.pop(0)

    def _add(self, item: _Prepared) -> None:
        digest = item.result.row.content_hash
        if item.pixels is not None and digest not in self._encoded:
            self._batch.append(item)
            self._encoded.add(digest)
        else:
            item.pixels = None  # failed, known content, or a duplicate of content already encoded
            self._ready.append(item)
        if len(self._batch) >= self.config.batch_size:
            self._flush(encode=True)
        elif time.monotonic() - self._last >= self.config.flush_seconds:
            self._flush(encode=False)

    def _on_wait(self) -> None:
        """The next file is still being decoded: keep the encoder busy with a partial batch (at
        least a quarter of one) rather than idle; full batches return once decoding keeps up."""
        if len(self._batch) >= max(1, self.config.batch_size // 4):
            self._flush(encode=True)

    def _flush(self, encode: bool) -> None:
        if encode and self._batch:
            vectors = self.embedder.embed_pixels(np.stack([p.pixels for p in self._batch]))
            for prepared, vector in zip(self._batch, vectors, strict=True):
                prepared.result.vector = vector
                prepared.pixels = None
            self._ready += self._batch
            self._batch = []
        # a duplicate waits for its twin: a row is never handed on before its content's vector
        waiting = {p.result.row.content_hash for p in self._batch}
        done = [p.result for p in self._ready if p.result.row.content_hash not in waiting]
        self._ready = [p for p in self._ready if p.result.row.content_hash in waiting]
        if done:
            self._out.append(done)
        self._last = time.monotonic()

    def _prepare(self, job: FileJob) -> _Prepared:
        """Read, hash and (when its content is not known) decode one file; never raises MediaError."""
        if job.type not in READY_TYPES:
            reason = PENDING_REASON.format(type=job.type.capitalize())
            return _Prepared(EmbedResult(job, _row(job, "pending", error=reason)))
        limit, limit_name = self.limits.max_bytes(job.type), _LIMIT_SETTINGS[job.type]
        try:
            if job.data is not None:
                content = content_of(job.path, job.data, limit, job.mtime_ns, limit_name=limit_name)
            else:
                content = read_file(job.path, limit, digest=job.known_hash is None, limit_name=limit_name)
        except MediaError as exc:
            return _Prepared(EmbedResult(job, _row(job, "failed", error=exc.reason)))
        digest = job.known_hash or content.digest
        assert content.data is not None and digest is not None
        try:
            if digest in self.known:
                info, pixels = probe_image(content.data, job.path, self.embedder.decode_options), None
            else:
                decoded = decode_image(content.data, self.embedder.decode_options)
                info, pixels = decoded, self.embedder.preprocess(decoded.image)
        except MediaError as exc:
            row = _row(job, "failed", error=exc.reason, size=content.size, mtime_ns=content.mtime_ns)
            return _Prepared(EmbedResult(job, row))
        taken = info.taken_at.timestamp() if info.taken_at else content.mtime_ns / 1e9
        row = ItemUpdate(
            job.path,
            "image",
            "ok",
            content.size,
            content.mtime_ns,
            content_hash=digest,
            width=info.width,
            height=info.height,
            taken_at=taken,
            taken_at_source="exif" if info.taken_at else "mtime",
        )
        return _Prepared(EmbedResult(job, row), pixels)


def embed(
    jobs: Iterable[FileJob], embedder: Embedder, known: Container[str] = frozenset(), config: EmbedConfig | None = None
) -> EmbedRun:
    """Embed the files of `jobs` with `embedder`; iterate the result for lists of `EmbedResult`s."""
    return EmbedRun(jobs, embedder, known, config or EmbedConfig())


def _row(job: FileJob, status: str, *, error: str, size: int | None = None, mtime_ns: int | None = None) -> ItemUpdate:
    return ItemUpdate(
        job.path,
        job.type,
        status,
        job.size if size is None else size,
        job.mtime_ns if mtime_ns is None else mtime_ns,
        error=error,
    )
