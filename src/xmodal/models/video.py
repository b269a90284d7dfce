"""Videos into the embedding space as timed segments: THE one video-embedding path of xmodal (the
library's ingest, the benchmarks and remote workers all call `embed_video`).

Frames are sampled by a `FramePolicy` (xmodal.media.video) and embedded in batches by any
`Embedder`, decoding on a background thread while the model runs. Each sampled frame stands for
the time from its sampling window's start to the next sampled frame's (the last one: to the end).
Consecutive frames merge into one segment while each new frame's embedding stays within
`merge_threshold` cosine of the segment's running mean (re-normalised); a frame below it — a cut, or
a drift that went far enough — starts a new segment, and so does a skipped blank frame (a fade to
black separates scenes). The clip vector is the mean of the segment vectors weighted by their
duration, re-normalised, so a long static shot counts by its length and not by its frame count.

A video whose sampled frames are all near-black or blank is not an error: it is embedded from its
first frame as one segment, with a note, so it is searchable and shows why it matches nothing.
Inputs and outputs are plain data (paths, dataclasses, numpy arrays): they pickle, so the work can
run in another process or on another machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xmodal import settings
from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.video import FramePolicy, VideoFrame, VideoInfo, open_video
from xmodal.models.embedder import Embedder
from xmodal.models.encoder import l2_normalize
from xmodal.parallel import prefetch

log = logging.getLogger(__name__)

# Cosine to a segment's mean below which a frame starts a new segment. Measured with the shipped
# model on synth-shapes videos at 1 frame/s: consecutive frames of one scene >= 0.81, across a cut
# <= 0.55 (BENCHMARKS.md, "Video"). Real CLIP weights cannot be fetched here: re-measure with
# benchmarks/video.py where they can.
MERGE_THRESHOLD = 0.8


def configured_policy(config: settings.Settings | None = None) -> FramePolicy:
    """The frame policy of the settings (XMODAL_VIDEO_FPS / --video-fps, XMODAL_VIDEO_MAX_FRAMES /
    --video-max-frames): what the library indexes with and evaluation's segment poolings use."""
    config = config or settings.current()
    return FramePolicy(fps=config.video_fps, max_frames=config.video_max_frames)


@dataclass(frozen=True)
class Segment:
    """Consecutive similar frames: seconds [start, end) and their mean embedding (unit length)."""

    start: float
    end: float
    vector: np.ndarray

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class VideoEmbedding:
    """One video embedded: what it is, the frames used, its segments and its clip-level vector."""

    info: VideoInfo
    frame_times: list[float]  # seconds of the frames embedded, in order (blank frames skipped)
    frame_vectors: np.ndarray  # (len(frame_times), D) unit rows
    segments: list[Segment]
    clip_vector: np.ndarray  # (D,) unit: segments weighted by duration
    blank_frames: int = 0  # sampled frames skipped as near-black or blank
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # probe_s, decode_s, preprocess_s, embed_s, wall_s

    def best_segment(self, query: np.ndarray) -> tuple[Segment, float]:
        """The segment closest to a unit query vector, and its cosine."""
        scores = np.stack([s.vector for s in self.segments]) @ np.asarray(query, np.float32)
        best = int(np.argmax(scores))
        return self.segments[best], float(scores[best])


@dataclass
class _Sampled:
    """A sampled frame on its way to the model: where it sits in time and its model input."""

    time: float
    start: float
    blank: bool
    pixels: np.ndarray | None  # None for a skipped blank frame


def embed_video(
    embedder: Embedder,
    path: str | os.PathLike,
    policy: FramePolicy | None = None,
    *,
    batch_size: int = 32,
    merge_threshold: float = MERGE_THRESHOLD,
) -> VideoEmbedding:
    """Sample, embed and segment one video (see the module docstring).

    Raises MediaError naming the file when it cannot be decoded (xmodal.media.video says which
    inputs those are) or no frame could be sampled from it.
    """
    if batch_size < 1:
        raise InvalidArgumentError("batch_size", batch_size, "an integer >= 1")
    if not -1.0 <= merge_threshold <= 1.0:
        raise InvalidArgumentError("merge_threshold", merge_threshold, "a cosine from -1 to 1")
    policy = policy or FramePolicy()
    started = time.perf_counter()
    video = open_video(path)
    timings = {"probe_s": time.perf_counter() - started, "decode_s": 0.0, "preprocess_s": 0.0, "embed_s": 0.0}
    frames, vectors = _embed_frames(video.frames(policy), embedder, policy, batch_size, timings)
    if not frames:
        raise MediaError(Path(path), "no frame could be sampled")
    notes = video.notes
    blank = sum(f.blank for f in frames) if policy.skip_blank else 0
    if blank == len(frames):  # every frame blank: the first stands for the whole video
        notes.append(f"all {blank} sampled frames are near-black or blank")
        frames = [replace(frames[0], blank=False)]
    segments = _segments(frames, vectors, video.info.duration_s, merge_threshold, policy.skip_blank)
    timings["wall_s"] = time.perf_counter() - started
    return VideoEmbedding(
        info=video.info,
        frame_times=[f.time for f in frames if not (f.blank and policy.skip_blank)],
        frame_vectors=vectors,
        segments=segments,
        clip_vector=clip_vector(segments),
        blank_frames=blank,
        notes=notes,
        timings=timings,
    )


def clip_vector(segments: list[Segment]) -> np.ndarray:
    """Mean of the segment vectors weighted by their duration, re-normalised."""
    weights = np.array([max(s.duration, 1e-6) for s in segments], np.float32)
    return l2_normalize(weights @ np.stack([s.vector for s in segments]))


def _embed_frames(
    frames: Iterator[VideoFrame], embedder: Embedder, policy: FramePolicy, batch_size: int, timings: dict[str, float]
) -> tuple[list[_Sampled], np.ndarray]:
    """Embed the frames in batches as they are decoded (on a background thread); blank ones are
    skipped, except the first when every frame is blank. Returns every frame and the (F, D) vectors
    of those embedded."""
    sampled: list[_Sampled] = []
    vectors: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    first_blank: np.ndarray | None = None
    for frame in prefetch(_prepared(frames, embedder, policy, timings), ahead=batch_size):
        sampled.append(frame)
        pixels, frame.pixels = frame.pixels, None
        if frame.blank and policy.skip_blank:
            first_blank = pixels if first_blank is None else first_blank
            continue
        batch.append(pixels)
        if len(batch) == batch_size:
            vectors.append(_embed(embedder, batch, timings))
            batch = []
    if batch:
        vectors.append(_embed(embedder, batch, timings))
    if not vectors and first_blank is not None:
        vectors.append(_embed(embedder, [first_blank], timings))
    return sampled, np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)


def _prepared(
    frames: Iterator[VideoFrame], embedder: Embedder, policy: FramePolicy, timings: dict[str, float]
) -> Iterator[_Sampled]:
    """Frames preprocessed for the model (on the decoding thread); of the blank frames to skip only
    the first (it stands for the video if every frame is blank)."""
    kept_blank = False
    while True:
        tick = time.perf_counter()
        frame = next(frames, None)
        timings["decode_s"] += time.perf_counter() - tick
        if frame is None:
            return
        pixels = None
        if not (frame.blank and policy.skip_blank and kept_blank):
            tick = time.perf_counter()
            pixels = embedder.preprocess(frame.image)
            timings["preprocess_s"] += time.perf_counter() - tick
            kept_blank = kept_blank or (frame.blank and policy.skip_blank)
        yield _Sampled(frame.timestamp_s, frame.window[0], frame.blank, pixels)


def _embed(embedder: Embedder, batch: list[np.ndarray], timings: dict[str, float]) -> np.ndarray:
    tick = time.perf_counter()
    vectors = embedder.embed_pixels(np.stack(batch))
    timings["embed_s"] += time.perf_counter() - tick
    return np.asarray(vectors, np.float32)


def _spans(frames: list[_Sampled], duration: float) -> list[tuple[float, float]]:
    """Each frame's time: from its window's start to the next frame's (the last: to the end)."""
    starts = [f.start for f in frames]
    return [(start, max(end, start)) for start, end in zip(starts, [*starts[1:], duration], strict=True)]


def _segments(
    frames: list[_Sampled], vectors: np.ndarray, duration: float, threshold: float, blank_cuts: bool
) -> list[Segment]:
    """Merge runs of similar consecutive frames (see the module docstring)."""
    spans = _spans(frames, duration)
    segments: list[Segment] = []
    total: np.ndarray | None = None
    start = end = 0.0
    row = 0
    for frame, (span_start, span_end) in zip(frames, spans, strict=True):
        if frame.blank and blank_cuts:
            if total is not None:
                segments.append(Segment(start, end, l2_normalize(total)))
            total = None
            continue
        vector = vectors[row]
        row += 1
        if total is not None and float(vector @ l2_normalize(total)) >= threshold:
            total, end = total + vector, span_end
            continue
        if total is not None:
            segments.append(Segment(start, end, l2_normalize(total)))
        total, start, end = vector.astype(np.float32).copy(), span_start, span_end
    if total is not None:
        segments.append(Segment(start, end, l2_normalize(total)))
    return segments
