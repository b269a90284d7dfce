"""Ingest, stage 2: read, hash, decode and embed the files of a plan — with no catalog inside.

`embed(jobs, embedder, known)` takes picklable `FileJob`s and yields lists of picklable
`EmbedResult`s, so a thread, a process or a Ray actor can run it; the library's index run,
`embed-dataset`'s Ray workers, eval's image embedding and the benchmarks go through this one stage
(a job's `data` stands in for a file: an archive member, an image held in memory). Files are
read bounded in size (settings) and decoded on a thread pool that runs ahead of the encoder by two
batches; the encoder takes full batches, or a partial one rather than wait for decoding (unless
`EmbedConfig.whole_batches`). A file whose content hash is in `known`
(already embedded) is only probed for its metadata; a content met twice in one run is encoded once.

Per type: a photo's vector is its pixels', and the description embedded in it (XMP, IPTC, EXIF)
becomes its segments, one per text window. A text document (see `xmodal.media.text` for decoding
and language) is split into the model's overlapping context-length windows (at most
`max_text_windows`), each stored as a segment with its character span and words; the document's
own vector is the mean of its windows' (re-normalized). A video goes through
`xmodal.models.video.embed_video` on its decode thread (frames sampled by the settings' frame
policy, decoded one at a time, embedded in batches): its own vector is the clip vector, its
segments the moments (seconds); the row keeps what the video is (duration, fps, size, codec,
rotation) and, in `details`, the frame times used and the notes on anything odd about the file.
A video is never held in memory: its bytes are only hashed as they stream, and it is handed on as
soon as it is done, so a crash loses at most the video being decoded.
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
from xmodal.media.files import FileContent, content_of, read_file
from xmodal.media.image import Description, decode_image, probe_image
from xmodal.media.text import decode_text, document_language
from xmodal.media.video import probe_video
from xmodal.models.embedder import Embedder
from xmodal.models.encoder import l2_normalize
from xmodal.models.tokenizer import TokenBatch, concat_batches, known_language
from xmodal.models.video import VideoEmbedding, configured_policy, embed_video
from xmodal.parallel import bounded_map
from xmodal.store.catalog import ItemUpdate, Segment
from xmodal.store.ingest.plan import FileJob

log = logging.getLogger(__name__)

# Media types this version embeds; files of other types are recorded as pending for a later one.
READY_TYPES = frozenset({"image", "video", "text"})
PENDING_REASON = "{type} indexing is not supported by this version yet (recorded; indexed by a later one)"
_LIMIT_SETTINGS = {
    "image": "XMODAL_MAX_IMAGE_BYTES",
    "video": "XMODAL_MAX_VIDEO_BYTES",
    "text": "XMODAL_MAX_TEXT_BYTES",
}
SNIPPET_CHARS = 400  # the words of a text window kept for a hit to show
WINDOWS_PER_IMAGE = 4  # text windows per model call count as one image of the batch size


@dataclass(frozen=True)
class EmbedConfig:
    """Batching and parallelism: `workers` decode threads (default: one per CPU) run ahead of the
    encoder by two batches; the encoder takes up to `batch_size` images (or 4x as many text
    windows) at a time (fewer when it would otherwise wait for decoding); results that need no
    encoder (failures, known content) are handed on at least every `flush_seconds`.
    `descriptions`: embed the descriptions photos carry (off with the library's text indexing).
    `whole_batches`: the encoder only ever takes `batch_size` inputs in job order (the last batch
    shorter), never a partial batch while decoding lags, so the same jobs give bit-identical
    vectors whatever the machine's load (benchmarks want that; an index run wants the encoder busy).
    `types`: the media types this run embeds (default: every type this version embeds); files of
    the others are recorded as pending, with `skipped_reason`."""

    batch_size: int = 32
    workers: int | None = None
    flush_seconds: float = 2.0
    descriptions: bool = True
    whole_batches: bool = False
    types: frozenset[str] = READY_TYPES
    skipped_reason: str = PENDING_REASON

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
    """A file read and decoded: the model input its content needs (none when known or failed)."""

    result: EmbedResult
    pixels: np.ndarray | None = None
    windows: TokenBatch | None = None  # a document's, or the description a photo carries
    snippets: list[str] | None = None

    @property
    def needs_model(self) -> bool:
        return self.pixels is not None or self.windows is not None


class EmbedRun:
    """The results of embedding `jobs`, as an iterator of lists (one list per encoder batch, or
    per flush of results that needed no encoder). After an interruption, `unfinished()` gives the
    results that are complete but were not handed on yet (failures, known content)."""

    def __init__(self, jobs: Iterable[FileJob], embedder: Embedder, known: Container[str], config: EmbedConfig):
        self.jobs, self.embedder, self.known, self.config = jobs, embedder, known, config
        self.limits = settings.current()
        self.frame_policy = configured_policy(self.limits)
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
        if item.needs_model and digest not in self._encoded:
            self._batch.append(item)
            self._encoded.add(digest)
        else:
            item.pixels = item.windows = None  # failed, known content, or a duplicate of content already encoded
            self._ready.append(item)
        if item.result.encoded and item.result.row.type == "video":
            self._flush(encode=False)  # a video is costly work: committed at once, not lost to a crash
        elif self._fill() >= self.config.batch_size:
            self._flush(encode=True)
        elif time.monotonic() - self._last >= self.config.flush_seconds:
            self._flush(encode=False)

    def _fill(self) -> float:
        """How full the waiting batch is, in images (text windows count a quarter each)."""
        windows = sum(len(p.windows) for p in self._batch if p.windows is not None)
        return max(sum(p.pixels is not None for p in self._batch), windows / WINDOWS_PER_IMAGE)

    def _on_wait(self) -> None:
        """The next file is still being decoded: keep the encoder busy with a partial batch (at
        least a quarter of one) rather than idle; full batches return once decoding keeps up."""
        if self.config.whole_batches:
            return
        if self._batch and self._fill() >= max(1, self.config.batch_size // 4):
            self._flush(encode=True)

    def _flush(self, encode: bool) -> None:
        if encode and self._batch:
            self._encode(self._batch)
            self._ready += self._batch
            self._batch = []
        # a duplicate waits for its twin: a row is never handed on before its content's vector
        waiting = {p.result.row.content_hash for p in self._batch}
        done = [p.result for p in self._ready if p.result.row.content_hash not in waiting]
        self._ready = [p for p in self._ready if p.result.row.content_hash in waiting]
        if done:
            self._out.append(done)
        self._last = time.monotonic()

    def _encode(self, batch: list[_Prepared]) -> None:
        """One model call per tower for a batch: pixels to photo vectors; text windows to segments
        (and to a document's own vector, their mean)."""
        with_pixels = [p for p in batch if p.pixels is not None]
        if with_pixels:
            vectors = self.embedder.embed_pixels(np.stack([p.pixels for p in with_pixels]))
            for prepared, vector in zip(with_pixels, vectors, strict=True):
                prepared.result.vector = vector
                prepared.pixels = None
        with_text = [p for p in batch if p.windows is not None]
        if not with_text:
            return
        tokens = concat_batches([p.windows for p in with_text])
        step = WINDOWS_PER_IMAGE * self.config.batch_size
        rows = np.concatenate(
            [self.embedder.embed_tokens(_rows(tokens, i, i + step)) for i in range(0, len(tokens), step)]
        )
        start = 0
        for prepared in with_text:
            windows, snippets = prepared.windows, prepared.snippets or []
            part = rows[start : start + len(windows)]
            start += len(windows)
            prepared.result.segments = [
                Segment(a, b, vector, snippet)
                for (a, b), vector, snippet in zip(windows.spans or [], part, snippets, strict=True)
            ]
            if prepared.result.row.type == "text":
                prepared.result.vector = l2_normalize(part.mean(axis=0, keepdims=True))[0]
            prepared.windows = prepared.snippets = None

    def _prepare(self, job: FileJob) -> _Prepared:
        """Read, hash and (when its content is not known) decode one file; never raises MediaError."""
        if job.type not in READY_TYPES or job.type not in self.config.types:
            reason = (PENDING_REASON if job.type not in READY_TYPES else self.config.skipped_reason).format(
                type=job.type.capitalize()
            )
            return _Prepared(EmbedResult(job, _row(job, "pending", error=reason)))
        if job.data is not None and job.type == "video":
            reason = "a video inside an archive: videos are decoded from files of their own (extract it first)"
            return _Prepared(EmbedResult(job, _row(job, "failed", error=reason)))
        limit, limit_name = self.limits.max_bytes(job.type), _LIMIT_SETTINGS[job.type]
        try:
            head = job.type == "text"
            if job.data is not None:
                content = content_of(
                    job.path,
                    job.data,
                    limit,
                    job.mtime_ns,
                    digest=job.known_hash is None,
                    limit_name=limit_name,
                    head=head,
                )
            else:
                content = read_file(
                    job.path,
                    limit,
                    keep=job.type != "video",  # a video is only hashed here; it is decoded from its file
                    digest=job.known_hash is None,
                    limit_name=limit_name,
                    head=head,
                )
        except MediaError as exc:
            return _Prepared(EmbedResult(job, _row(job, "failed", error=exc.reason)))
        digest = job.known_hash or content.digest
        assert digest is not None
        try:
            if job.type == "video":
                return self._prepare_video(job, content, digest)
            assert content.data is not None
            if job.type == "text":
                return self._prepare_text(job, content, digest)
            return self._prepare_image(job, content, digest)
        except MediaError as exc:
            row = _row(job, "failed", error=exc.reason, size=content.size, mtime_ns=content.mtime_ns)
            return _Prepared(EmbedResult(job, row))

    def _prepare_image(self, job: FileJob, content: FileContent, digest: str) -> _Prepared:
        if digest in self.known:
            info, pixels = probe_image(content.data, job.path, self.embedder.decode_options), None
        else:
            decoded = decode_image(content.data, self.embedder.decode_options)
            info, pixels = decoded, self.embedder.preprocess(decoded.image)
        description = info.description if self.config.descriptions else None
        taken = info.taken_at.timestamp() if info.taken_at else content.mtime_ns / 1e9
        row = _ok_row(
            job,
            content,
            digest,
            width=info.width,
            height=info.height,
            taken_at=taken,
            taken_at_source="exif" if info.taken_at else "mtime",
            details=_description_details(description),
        )
        prepared = _Prepared(EmbedResult(job, row), pixels)
        if description is not None and pixels is not None:
            self._windows(prepared, description.text, description.language)
        return prepared

    def _prepare_video(self, job: FileJob, content: FileContent, digest: str) -> _Prepared:
        """Embed a video (or, when its content is known, only probe it) from its file, which must
        still be the file that was hashed."""
        video: VideoEmbedding | None = None
        if digest in self.known:
            info = probe_video(job.path)
            details = {"notes": list(info.notes)} if info.notes else {}
        else:
            video = embed_video(
                self.embedder,
                job.path,
                self.frame_policy,
                batch_size=self.config.batch_size,
                merge_threshold=self.limits.video_merge,
            )
            info = video.info
            details = video_details(video, self.frame_policy.key)
        _check_unchanged(job.path, content)
        what = {"duration": info.duration_s, "fps": info.fps, "codec": info.codec, "rotation": info.rotation}
        if info.recorded_at is not None:  # else the file's modification time
            what |= {"taken_at": info.recorded_at, "taken_at_source": "metadata"}
        row = _ok_row(job, content, digest, width=info.width, height=info.height, details=details or None, **what)
        result = EmbedResult(job, row)
        if video is not None:
            result.vector = video.clip_vector
            result.segments = [Segment(s.start, s.end, s.vector) for s in video.segments]
        return _Prepared(result)

    def _prepare_text(self, job: FileJob, content: FileContent, digest: str) -> _Prepared:
        decoded = decode_text(content.data, job.path, truncated=content.truncated)
        language, language_source = document_language(decoded.text)
        details: dict = {"encoding": decoded.encoding, "chars": len(decoded.text)}
        if language:
            details |= {"language": language, "language_source": language_source}
        if decoded.truncated:
            details["read_bytes"] = len(content.data)
        row = _ok_row(job, content, digest, details=details)
        prepared = _Prepared(EmbedResult(job, row))
        if digest not in self.known:
            self._windows(prepared, decoded.text, language)
            if not any(b > a for a, b in prepared.windows.spans or []):
                raise MediaError(job.path, "no text the model can read in it")
        return prepared

    def _windows(self, prepared: _Prepared, text: str, language: str | None) -> None:
        """The model's windows of `text` (at most max_text_windows) with their snippets."""
        windows = self.embedder.text_windows(text, known_language(language), self.limits.max_text_windows)
        prepared.windows = windows
        prepared.snippets = [" ".join(text[a:b].split())[:SNIPPET_CHARS] for a, b in windows.spans or []]


def embed(
    jobs: Iterable[FileJob], embedder: Embedder, known: Container[str] = frozenset(), config: EmbedConfig | None = None
) -> EmbedRun:
    """Embed the files of `jobs` with `embedder`; iterate the result for lists of `EmbedResult`s."""
    return EmbedRun(jobs, embedder, known, config or EmbedConfig())


def video_details(video: VideoEmbedding, policy_key: str) -> dict:
    """What a video's row keeps beyond its columns: the frame times embedded (seconds), the
    sampling policy they came from, blank frames skipped, and the notes on anything odd."""
    details: dict = {
        "frame_times": [round(t, 3) for t in video.frame_times],
        "frame_policy": policy_key,
        "segments": len(video.segments),
    }
    if video.info.variable_frame_rate:
        details["variable_frame_rate"] = True
    if video.blank_frames:
        details["blank_frames"] = video.blank_frames
    return details | ({"notes": list(video.notes)} if video.notes else {})


def _check_unchanged(path: str, content: FileContent) -> None:
    """The file decoded must be the one hashed: one still being written has changed since."""
    try:
        stat = os.stat(path)
    except OSError:
        raise MediaError(path, "file disappeared while it was read") from None
    if (stat.st_size, stat.st_mtime_ns) != (content.size, content.mtime_ns):
        raise MediaError(path, "the file changed while it was read (still being written?); try again later")


def _rows(tokens: TokenBatch, start: int, stop: int) -> TokenBatch:
    return TokenBatch(tokens.ids[start:stop], tokens.attention_mask[start:stop])


def _description_details(description: Description | None) -> dict | None:
    if description is None:
        return None
    details = {"description": description.text[:SNIPPET_CHARS], "description_source": description.source}
    return details | ({"description_language": description.language} if description.language else {})


def _ok_row(job: FileJob, content: FileContent, digest: str, **fields) -> ItemUpdate:
    """The row of a file read and decoded: its type, size, mtime, content hash and `fields` (the
    date taken is the file's modification time unless the fields say otherwise)."""
    fields = {"taken_at": content.mtime_ns / 1e9, "taken_at_source": "mtime", **fields}
    return ItemUpdate(job.path, job.type, "ok", content.size, content.mtime_ns, content_hash=digest, **fields)


def _row(job: FileJob, status: str, *, error: str, size: int | None = None, mtime_ns: int | None = None) -> ItemUpdate:
    return ItemUpdate(
        job.path,
        job.type,
        status,
        job.size if size is None else size,
        job.mtime_ns if mtime_ns is None else mtime_ns,
        error=error,
    )
