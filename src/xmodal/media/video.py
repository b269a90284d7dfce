"""Video frames: uniformly sampled RGB frames of a video file, decoded with PyAV (FFmpeg).

Frames are picked by index at the centres of n equal segments of the video, so a 14 s clip
sampled with n=8 gives frames near 0.9 s, 2.6 s, ... 13.1 s. The video is decoded in one
sequential pass (cost grows with its length; short clips such as MSVD's decode in well under
a second) and only the chosen frames are converted to images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
from PIL import Image

from xmodal.errors import InvalidArgumentError, MediaError

log = logging.getLogger(__name__)


def sample_frames(path: str | os.PathLike, n: int) -> list[Image.Image]:
    """`n` RGB frames spread uniformly over the video (fewer only if it has fewer frames).

    Raises MediaError naming the file when it is missing, not a video, or has no decodable frame.
    """
    if n < 1:
        raise InvalidArgumentError("n", n, "an integer >= 1")
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            total = _frame_count(container, stream)
            if total is None:  # neither a frame count nor a duration: count in a first pass
                total = sum(1 for _ in container.decode(stream))
                container.seek(0)
            return _pick(container, stream, path, _targets(total, n))
    except av.FFmpegError as exc:
        raise MediaError(path, f"cannot decode video: {exc}") from None


def _frame_count(container: av.container.InputContainer, stream: av.VideoStream) -> int | None:
    """Frames in the stream: from its header, else duration x frame rate; None when unknown."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return max(1, round(float(stream.duration * stream.time_base * rate)))
    if container.duration and rate:
        return max(1, round(container.duration / av.time_base * float(rate)))
    return None


def _targets(total: int, n: int) -> list[int]:
    """Frame indices at the centres of n equal segments (duplicates dropped for short videos)."""
    return sorted({min(total - 1, int((i + 0.5) * total / n)) for i in range(n)})


def _pick(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, targets: list[int]
) -> list[Image.Image]:
    frames: list[Image.Image] = []
    wanted = iter(targets)
    next_index = next(wanted)
    last = None
    for index, frame in enumerate(container.decode(stream)):
        last = frame
        if index == next_index:
            frames.append(frame.to_image())
            next_index = next(wanted, None)
            if next_index is None:
                return frames
    if last is None:
        raise MediaError(path, "no decodable video frame")
    # The header over-stated the length: the remaining targets take the last frame decoded.
    log.info("%s: %d frames decoded, fewer than the header says; last frame repeated", path, index + 1)
    tail = last.to_image()
    return frames + [tail] * (len(targets) - len(frames))
