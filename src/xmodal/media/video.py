"""Video decoding with PyAV (FFmpeg): what a video file is (`probe_video`) and its frames sampled by
a documented policy (`FramePolicy`, `open_video(path).frames(policy)`).

Sampling. A video of duration D is cut into n equal windows, n = min(max_frames, ceil(D * fps))
(at least 1), or n = max_frames for `FramePolicy.uniform(n)`; each window gives at most one frame:

- exact (`exact=True`): every frame is decoded and window k gives the frame shown at its centre
  (k + 0.5) * D / n, so a 30-frame clip sampled with n=4 gives frames 3, 11, 18, 26 (CLIP4Clip's
  and most benchmarks' uniform sampling).
- fast (the default): frames that no other frame refers to are not decoded, and a window is
  reached by seeking to the keyframe before its end whenever that costs less decoding (by the
  measured keyframe interval) than decoding on to it; window k gives the first frame decoded
  inside it, often that keyframe. A 10-minute 1080p file sampled at 120 frames decodes a frame
  or two per sample instead of 150 (see BENCHMARKS.md).

A window that holds no frame (a gap in a variable-frame-rate stream, a file that ends early) gives
none, and a frame never comes twice. Frame times are the frames' timestamps in seconds from the
stream's start (FFmpeg's best-effort rule: pts, or dts where pts run backwards), so variable frame
rate needs nothing special and a player seeking to a frame's time shows that frame.

Memory stays bounded whatever the resolution or length: each frame is scaled (with its pixel aspect
ratio and rotation applied) to at most `short_side` pixels on its short side as it is converted
from YUV, and handed out one at a time; nothing holds more than the decoder's own reference frames.

Near-black and blank frames are flagged (`VideoFrame.blank`): FFmpeg blackdetect's rule (98 % of
pixels below 10 % luma), or one flat colour (a spread below 4 levels in every channel). Consumers
skip them (`FramePolicy.skip_blank`); a video whose frames are all blank still yields them, flagged,
so it can be indexed with a note.

Bad input is a MediaError naming the file and the reason: missing, empty, not a readable container
(corrupt or truncated), no video stream (audio only, or only a cover picture), a codec this FFmpeg
build cannot decode, no decodable frame, or a file that changes while it is read (still being
written). A header that claims more than the stream holds (a broken index, a cut-off download) is
not an error: the real end is measured from the last packets and the mismatch is noted.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from xmodal.errors import InvalidArgumentError, MediaError

log = logging.getLogger(__name__)

DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 120
DEFAULT_SHORT_SIDE = 448  # above the largest CLIP-family input (384) so preprocessing still downsamples
PROBE_PACKETS = 300  # packets read from the start to measure the keyframe interval and frame timing
SAMPLING_VERSION = 1  # part of FramePolicy.key: bump when the frames a policy picks change
SEEK_FRAMES = 5  # a seek (demuxer jump, decoder flush, a keyframe to decode) costs about this many frames
MAX_BAD_PACKETS = 64  # consecutive undecodable packets before a stream is declared corrupt
_EPS = 1e-6  # seconds: tolerance when comparing frame times (well below any frame duration)
_ROTATE = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class VideoInfo:
    """What a video file is: measured where the header can be wrong (duration), else from the header."""

    duration_s: float
    fps: float | None  # average frames per second
    width: int  # as displayed: pixel aspect ratio and rotation applied
    height: int
    codec: str
    rotation: int  # degrees clockwise the stored picture is turned for display: 0, 90, 180, 270
    frame_count: int | None  # from the header, when it says
    variable_frame_rate: bool
    has_audio: bool
    keyframe_interval_s: float | None  # typical distance between keyframes (decides seeking)
    notes: tuple[str, ...] = ()  # what was odd about the file but did not stop it
    recorded_at: float | None = None  # epoch seconds of the container's creation_time, when it has a real one


@dataclass(frozen=True)
class FramePolicy:
    """How many frames to take from a video, and how (see the module docstring)."""

    fps: float | None = DEFAULT_FPS  # frames per second of video; None: always max_frames, spread uniformly
    max_frames: int = DEFAULT_MAX_FRAMES  # cap per video; long videos get this many, spread uniformly
    short_side: int | None = DEFAULT_SHORT_SIDE  # frames are scaled down to this short side; None: full size
    exact: bool = False  # decode every frame and take each window's centre frame
    skip_blank: bool = True  # consumers leave near-black / blank frames out (they are always flagged)
    black_level: float = 0.10  # luma (0-1) below which a pixel counts as black
    black_share: float = 0.98  # a frame with this share of black pixels is near-black
    blank_spread: float = 4.0  # a frame whose every channel's standard deviation (0-255) is below this is blank
    decode_threads: int = 2  # decoder threads (each frame thread holds frames: keep it small)

    def __post_init__(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise InvalidArgumentError("fps", self.fps, "a number of frames per second > 0, or None")
        if self.max_frames < 1:
            raise InvalidArgumentError("max_frames", self.max_frames, "an integer >= 1")
        if self.short_side is not None and self.short_side < 16:
            raise InvalidArgumentError("short_side", self.short_side, "a number of pixels >= 16, or None")
        if self.decode_threads < 1:
            raise InvalidArgumentError("decode_threads", self.decode_threads, "an integer >= 1")

    @classmethod
    def uniform(cls, n: int, **overrides: object) -> FramePolicy:
        """Exactly n windows over any duration, each giving its centre frame, blank ones included
        (the benchmarks' convention)."""
        return cls(fps=None, max_frames=n, exact=True, skip_blank=False, **overrides)  # type: ignore[arg-type]

    def count(self, duration_s: float) -> int:
        """How many windows a video of this duration is cut into."""
        if self.fps is None:
            return self.max_frames
        return max(1, min(self.max_frames, math.ceil(duration_s * self.fps - _EPS)))

    def windows(self, duration_s: float) -> list[tuple[float, float]]:
        """The (start, end) seconds of each sampling window."""
        n = self.count(duration_s)
        return [(k * duration_s / n, (k + 1) * duration_s / n) for k in range(n)]

    @property
    def key(self) -> str:
        """Names the frames this policy picks (cache keys of embeddings made from them); the leading
        version changes whenever the sampling itself does."""
        rate = "uniform" if self.fps is None else f"{self.fps:g}fps"
        blank = f"skip{self.black_level:g},{self.black_share:g},{self.blank_spread:g}" if self.skip_blank else "all"
        return f"v{SAMPLING_VERSION}:{rate}:{self.max_frames}:{self.short_side or 'full'}:{'exact' if self.exact else 'fast'}:{blank}"


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: when it is shown (seconds from the start), its upright RGB picture, and the
    sampling window it stands for (segments of a video are unions of consecutive windows)."""

    timestamp_s: float
    image: Image.Image
    window: tuple[float, float]  # (start, end) seconds
    blank: bool = False  # near-black or a single flat colour


@dataclass
class SamplingStats:
    """What one pass over a video cost: frames decoded, seeks, packets that would not decode."""

    decoded: int = 0
    seeks: int = 0
    bad_packets: int = 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """What the video file is (duration, frame rate, displayed size, codec, rotation, ...).

    Raises MediaError naming the file when it cannot be read as a video (see the module docstring).
    """
    return open_video(path).info


def sample_frames(path: str | os.PathLike, n: int, *, short_side: int | None = None) -> list[Image.Image]:
    """n frames spread uniformly over the video (fewer if it has fewer), each the one shown at the
    centre of one of n equal windows, at full size unless `short_side` (posters, timing images)."""
    if n < 1:
        raise InvalidArgumentError("n", n, "an integer >= 1")
    return [f.image for f in open_video(path).frames(FramePolicy.uniform(n, short_side=short_side))]


def open_video(path: str | os.PathLike) -> VideoReader:
    """Probe a video file and return a reader of its frames."""
    return VideoReader(Path(path))


class VideoReader:
    """A probed video file: `info`, `frames(policy)`, and the `notes` and `stats` of the passes made.

    The file's size and modification time are taken at opening and checked after every frame: a file
    that changes meanwhile (still being written or copied) raises MediaError instead of being indexed
    half-written. Each `frames()` pass opens the file anew, so the reader holds nothing between passes.
    """

    def __init__(self, path: Path):
        self.path = path
        self.stats = SamplingStats()
        self._signature = _file_signature(path)
        self._pass_notes: list[str] = []
        with self._container() as container:
            self.info, self._clock, self._pixel_aspect = self._probe(container)

    @property
    def notes(self) -> list[str]:
        """The probe's notes and those of the frame passes so far (odd but not fatal)."""
        return [*self.info.notes, *self._pass_notes]

    def frames(self, policy: FramePolicy | None = None) -> Iterator[VideoFrame]:
        """The sampled frames in time order, one at a time (see the module docstring)."""
        policy = policy or FramePolicy()
        self._check_unchanged()
        with self._container(probed=True) as container:
            stream = _video_stream(self.path, container)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = policy.decode_threads
            if not policy.exact:
                stream.codec_context.skip_frame = "NONREF"
            decoded = _DecodedFrames(self, container, stream)
            shown: float | None = None
            for start, end in policy.windows(self.info.duration_s):
                picked = decoded.pick(start, end, exact=policy.exact)
                self._check_unchanged()
                if picked is None or picked[0] == shown:
                    continue
                shown = picked[0]
                yield self._video_frame(*picked, (start, end), policy)
            if decoded.bad_packets:
                self._pass_notes.append(f"{decoded.bad_packets} damaged packets skipped")
            if decoded.read_error:
                self._pass_notes.append(f"reading stopped early: {decoded.read_error}")
        self._check_unchanged()

    # -- probing --------------------------------------------------------------------------
    def _container(self, probed: bool = False) -> av.container.InputContainer:
        """The file opened by FFmpeg; once `probed`, without estimating the frame rate from decoded
        frames again (that alone can take 100 ms for an AVI)."""
        options = {"fpsprobesize": "0"} if probed else {}
        try:
            return av.open(str(self.path), metadata_errors="replace", options=options)
        except av.FFmpegError as exc:
            raise MediaError(
                self.path, f"not a readable video: corrupt, truncated or another format ({_reason(exc)})"
            ) from None

    def _probe(self, container: av.container.InputContainer) -> tuple[VideoInfo, _Clock, Fraction | None]:
        stream = _video_stream(self.path, container)
        if stream.codec_context is None:
            raise MediaError(self.path, "unsupported video codec: this FFmpeg build has no decoder for it")
        first = self._first_frame(container, stream)
        clock = _Clock.of(container, stream, first)
        head = _packet_times(container, stream, PROBE_PACKETS)
        duration, notes = self._measure_duration(container, stream, clock)
        ccw = int(first.rotation or 0)
        rotation = -ccw % 360 if ccw % 90 == 0 else 0
        pixel_aspect = stream.sample_aspect_ratio
        width, height = _display_size(first, pixel_aspect, rotation)
        info = VideoInfo(
            duration_s=duration,
            fps=float(stream.average_rate or stream.guessed_rate or 0) or None,
            width=width,
            height=height,
            codec=stream.codec_context.name,
            rotation=rotation,
            frame_count=int(stream.frames) or None,
            variable_frame_rate=_is_variable(head),
            has_audio=any(not _is_cover(s) for s in container.streams.audio),
            keyframe_interval_s=_keyframe_interval(stream, head, duration),
            notes=tuple(notes),
            recorded_at=_recorded_at(container, stream),
        )
        return info, clock, pixel_aspect

    def _first_frame(self, container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame:
        try:
            for packet in _demuxed(container, stream):
                for frame in _decode(packet):
                    return frame
        except av.FFmpegError as exc:
            raise MediaError(self.path, f"cannot read the video stream ({_reason(exc)})") from None
        raise MediaError(self.path, "no decodable video frame (corrupt or truncated video stream)")

    def _measure_duration(
        self, container: av.container.InputContainer, stream: av.VideoStream, clock: _Clock
    ) -> tuple[float, list[str]]:
        """Seconds from the start to the end of the last packet, read from the file's tail (the
        whole stream when seeking cannot reach it); the header's word when packets carry no times."""
        header = None if clock.header_end is None else clock.seconds(clock.header_end)
        end = _last_packet_end(container, stream, clock)
        if end is None:
            if header is None:
                raise MediaError(self.path, "neither timestamps nor a duration: frames cannot be placed in time")
            return header, []
        measured = clock.seconds(end)
        notes = []
        if header is not None and header - measured > max(1.0, 0.05 * measured):
            notes.append(
                f"the header says {header:.1f} s but the video stream ends at {measured:.1f} s "
                "(broken index or truncated file); sampled what is there"
            )
            log.warning("%s: %s", self.path, notes[-1])
        return max(measured, clock.frame_s), notes

    # -- frames ---------------------------------------------------------------------------
    def _video_frame(
        self, time: float, frame: av.VideoFrame, window: tuple[float, float], policy: FramePolicy
    ) -> VideoFrame:
        """Convert to RGB already scaled down (the full-size picture never exists), rotate, judge blank."""
        width, height = _display_size(frame, self._pixel_aspect, 0)
        if policy.short_side is not None and min(width, height) > policy.short_side:
            scale = policy.short_side / min(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
        image = Image.fromarray(pixels, "RGB")
        if self.info.rotation in _ROTATE:
            image = image.transpose(_ROTATE[self.info.rotation])
        return VideoFrame(time, image, window, _is_blank(pixels, policy))

    def _check_unchanged(self) -> None:
        if _file_signature(self.path) != self._signature:
            raise MediaError(self.path, "the file changed while it was read (still being written?); try again later")


@dataclass(frozen=True)
class _Clock:
    """Stream ticks to seconds from the stream's start; the end its header declares."""

    origin: int  # pts of time 0: the stream's start time, else its first frame's
    time_base: Fraction
    frame_ticks: int  # one frame's duration (for packets and frames that do not say)
    header_end: int | None

    @classmethod
    def of(cls, container: av.container.InputContainer, stream: av.VideoStream, first: av.VideoFrame) -> _Clock:
        tb = stream.time_base
        origin = stream.start_time if stream.start_time is not None else (first.pts or 0)
        rate = stream.average_rate or stream.guessed_rate
        frame_ticks = max(1, round(1 / (rate * tb))) if rate else 1
        if stream.duration:
            header_end = origin + stream.duration
        elif container.duration:
            header_end = round(Fraction((container.start_time or 0) + container.duration, av.time_base) / tb)
        else:
            header_end = None
        return cls(origin, tb, frame_ticks, header_end)

    @property
    def frame_s(self) -> float:
        return float(self.frame_ticks * self.time_base)

    def seconds(self, pts: int) -> float:
        return float((pts - self.origin) * self.time_base)

    def ticks(self, seconds: float) -> int:
        return self.origin + int(seconds / self.time_base)


class _DecodedFrames:
    """One pass of (time, frame) in presentation order with one frame of look-ahead; seeks on request
    while seeking works (a seek that finds nothing turns it off and decoding goes on from the start)."""

    def __init__(self, reader: VideoReader, container: av.container.InputContainer, stream: av.VideoStream):
        self.reader = reader
        self.container = container
        self.stream = stream
        self.clock = reader._clock
        self.seekable = reader.info.keyframe_interval_s is not None
        self.bad_packets = 0
        self.read_error: str | None = None  # why reading stopped before the end of the file, if it did
        self._restart(seek_to=None)

    def pick(self, start: float, end: float, *, exact: bool) -> tuple[float, av.VideoFrame] | None:
        """Window [start, end)'s frame: the one shown at its centre (exact), else the first decoded in it."""
        if not exact and self.seekable and start - max(self._position, 0.0) > self._seek_cost(end - start):
            self._seek(end)
        chosen = None
        if exact:
            centre = (start + end) / 2
            while (ahead := self._peek()) is not None and ahead[0] <= centre + _EPS:
                chosen = self._next()
            if chosen is not None and chosen[0] >= start - _EPS:
                return chosen
        else:
            while (ahead := self._peek()) is not None and ahead[0] < start - _EPS:
                self._next()
        ahead = self._peek()  # nothing inside the window up to its centre: its first frame, if any
        return self._next() if ahead is not None and ahead[0] < end - _EPS else None

    def _seek_cost(self, window: float) -> float:
        """Seconds of video a seek to a window's end costs to decode, on average: nothing when the
        window holds a keyframe (it is taken), else from the keyframe before it to its start (keyframes
        `interval` apart fall in a window of length `window` with probability window / interval); plus
        the seek itself, counted as a few frames."""
        interval = self.reader.info.keyframe_interval_s or 0.0
        short = max(0.0, interval - window)
        catch_up = short * short / (2 * interval) if interval else 0.0
        return catch_up + SEEK_FRAMES * self.clock.frame_s

    def _peek(self) -> tuple[float, av.VideoFrame] | None:
        if self._ahead is None:
            self._ahead = next(self._frames, None)
        return self._ahead

    def _next(self) -> tuple[float, av.VideoFrame] | None:
        item, self._ahead = self._peek(), None
        return item

    def _seek(self, before: float) -> None:
        """Continue from the keyframe before `before` seconds, never going back over frames passed."""
        passed = self._position
        self.reader.stats.seeks += 1
        if not self._restart(seek_to=self.clock.ticks(before - _EPS)) or self._skip_to(passed) is None:
            log.info("%s: seeking finds no frames; decoding on from the start instead", self.reader.path)
            self.seekable = False
            self._restart(seek_to=self.clock.origin)
            self._skip_to(passed)

    def _restart(self, seek_to: int | None) -> bool:
        """A new pass from the keyframe before `seek_to` ticks (None: from where the file is)."""
        if seek_to is not None:
            try:
                self.container.seek(seek_to, backward=True, stream=self.stream)
            except av.FFmpegError:
                return False
        self._frames = self._decode()
        self._ahead = None
        self._position = -math.inf  # time of the last frame decoded
        self._timestamps = _BestEffortTimestamps()
        return True

    def _skip_to(self, passed: float) -> tuple[float, av.VideoFrame] | None:
        """Drop frames at or before `passed` seconds; the first frame after them."""
        while (ahead := self._peek()) is not None and ahead[0] <= passed + _EPS:
            self._next()
        return ahead

    def _decode(self) -> Iterator[tuple[float, av.VideoFrame]]:
        bad_run = 0
        for packet in _demuxed(self.container, self.stream, self):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.bad_packets += 1
                self.reader.stats.bad_packets += 1
                bad_run += 1
                if bad_run > MAX_BAD_PACKETS:
                    raise MediaError(
                        self.reader.path, f"{bad_run} damaged packets in a row: corrupt video stream"
                    ) from None
                continue
            bad_run = 0
            for frame in frames:
                self.reader.stats.decoded += 1
                stamp = self._timestamps.of(frame)
                if stamp is None:  # no timestamps at all: count frames
                    time = self._position + self.clock.frame_s if self._position > -math.inf else 0.0
                else:
                    time = self.clock.seconds(stamp)
                self._position = time
                yield time, frame


class _BestEffortTimestamps:
    """A frame's presentation time as FFmpeg's best_effort_timestamp guesses it (guess_correct_pts
    in libavcodec): its pts, unless pts values have gone backwards more often than dts values (AVI
    files with B-frames carry shuffled pts), then its dts."""

    def __init__(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def of(self, frame: av.VideoFrame) -> int | None:
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    streams = [s for s in container.streams.video if not _is_cover(s)]
    if not streams:
        audio = len(container.streams.audio)
        what = f" (audio only: {audio} audio stream{'s' if audio > 1 else ''})" if audio else ""
        raise MediaError(path, f"no video stream{what}")
    return streams[0]


def _is_cover(stream: av.stream.Stream) -> bool:
    """An attached picture (album art) is a still image, not a video stream."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _demuxed(
    container: av.container.InputContainer, stream: av.VideoStream, errors: object = None
) -> Iterator[av.Packet]:
    """The stream's packets from where the container is; a read error ends them (a damaged or cut
    file) and is kept on `errors.read_error` when given."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            if errors is not None:
                errors.read_error = _reason(exc)
            return
        yield packet


def _decode(packet: av.Packet) -> list[av.VideoFrame]:
    """A packet's frames; a damaged packet gives none (the decoder recovers at the next keyframe)."""
    try:
        return packet.decode()
    except av.InvalidDataError:
        return []


def _packet_times(container: av.container.InputContainer, stream: av.VideoStream, limit: int) -> list[tuple[int, bool]]:
    """(pts, is keyframe) of the first `limit` timed packets, in presentation order (demuxed, not decoded)."""
    container.seek(stream.start_time or 0, backward=True, stream=stream)
    out = []
    for packet in _demuxed(container, stream):
        if packet.pts is not None:
            out.append((packet.pts, packet.is_keyframe))
            if len(out) >= limit:
                break
    return sorted(out)


def _last_packet_end(container: av.container.InputContainer, stream: av.VideoStream, clock: _Clock) -> int | None:
    """The end (pts + duration) of the stream's last packet: seek to the last keyframe before the
    declared end and read on to the end of the file; read the whole stream when that finds nothing."""
    target = clock.header_end - clock.frame_ticks if clock.header_end is not None else 1 << 62
    for seek_to in (target, stream.start_time or 0):
        try:
            container.seek(max(0, seek_to), backward=True, stream=stream)
        except av.FFmpegError:
            continue
        end = None
        for packet in _demuxed(container, stream):
            if packet.pts is not None:
                stop = packet.pts + (packet.duration or clock.frame_ticks)
                end = stop if end is None else max(end, stop)
        if end is not None:
            return end
    return None


def _is_variable(head: list[tuple[int, bool]]) -> bool:
    """Whether frame durations vary beyond timestamp rounding (10 % of a frame plus 1.5 ticks)."""
    deltas = [b - a for (a, _), (b, _) in zip(head, head[1:], strict=False) if b > a]
    if len(deltas) < 3:
        return False
    return max(deltas) - min(deltas) > 0.1 * statistics.median(deltas) + 1.5


def _keyframe_interval(stream: av.VideoStream, head: list[tuple[int, bool]], duration: float) -> float | None:
    """Median seconds between keyframes among the first packets; when they hold only one, from the
    container's index (MP4, AVI) if it agrees, else at least the span of those packets."""
    tb = stream.time_base
    keys = [pts for pts, key in head if key]
    if len(keys) < 2 and len(stream.index_entries) > 1:
        indexed = [e.timestamp for e in stream.index_entries if e.flags & 1]
        if len(indexed) >= 2 and (not head or indexed[1] - indexed[0] > head[-1][0] - head[0][0]):
            keys = indexed
    if len(keys) >= 2:
        return float(statistics.median(b - a for a, b in zip(keys, keys[1:], strict=False)) * tb)
    if len(head) >= 2:
        return max(float((head[-1][0] - head[0][0]) * tb), min(duration, 1.0))
    return None


def _display_size(frame: av.VideoFrame, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """A frame's width and height as shown: non-square pixels (sample aspect ratio `sar`, a pixel's
    width over its height) stretched, 90/270-degree turns swapped."""
    width, height = frame.width, frame.height
    if sar and sar > 0 and sar != 1:
        width = max(1, round(width * float(sar)))
    return (height, width) if rotation in (90, 270) else (width, height)


def _is_blank(pixels: np.ndarray, policy: FramePolicy) -> bool:
    """Near-black (blackdetect's rule on luma) or one flat colour (every channel's spread below
    `blank_spread`), judged on every 4th pixel."""
    sample = pixels[::4, ::4].astype(np.float32)
    luma = sample @ np.array([0.299, 0.587, 0.114], np.float32)
    if float((luma < policy.black_level * 255).mean()) >= policy.black_share:
        return True
    return float(sample.reshape(-1, 3).std(axis=0).max()) < policy.blank_spread


def _recorded_at(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """When the video was recorded, from the creation_time tag cameras and phones write (ISO 8601,
    UTC unless it says); None without one, or with a placeholder before 1971 (an unset MP4 date)."""
    text = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return when.timestamp() if when.year >= 1971 else None


def _file_signature(path: Path) -> tuple[int, int]:
    """(size, mtime) of a readable, non-empty regular file; MediaError otherwise."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except OSError as exc:
        raise MediaError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if stat.st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    return stat.st_size, stat.st_mtime_ns


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's message without its errno and the repeated file name."""
    return str(getattr(exc, "strerror", None) or exc)
