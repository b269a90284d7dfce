"""Video files the video tests need, written with PyAV's encoders (libx264, FFV1, PCM): frames that
identify themselves, chosen timestamps (variable frame rate), rotation metadata, audio-only files."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def level_frame(level: int, width: int = 32, height: int = 32) -> np.ndarray:
    """A frame that says which it is: its left half has grey `level`, its right half is the same
    noise in every frame (so it is not a blank frame)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, : width // 2] = level
    frame[:, width // 2 :] = np.random.default_rng(7).integers(0, 256, (height, width - width // 2, 3))
    return frame


def frame_level(image) -> int:
    """The level a `level_frame` was written with (read back from the left half)."""
    pixels = np.asarray(image)
    return round(float(pixels[:, : pixels.shape[1] // 2].mean()))


def write_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 10,
    codec: str = "libx264",
    pts_ms: Sequence[int] | None = None,
    rotation: int | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames; `pts_ms` gives each frame's time in ms (variable frame rate), `rotation`
    the display rotation in degrees clockwise (as phones write it), `metadata` container tags."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as out:
        out.metadata.update(metadata or {})
        lossless = codec == "ffv1"
        opts = {"threads": "1", "preset": "ultrafast"} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=fps, options={**opts, **(options or {})})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(-rotation)  # PyAV takes counterclockwise degrees
        for i, array in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_numbered_clip(path: Path, n_frames: int, size: int = 32, fps: int = 10) -> Path:
    """A lossless (FFV1) clip whose frame i has level 8*i: sampled frames say which they are."""
    return write_clip(path, (level_frame(8 * i, size, size) for i in range(n_frames)), fps=fps, codec="ffv1")


def write_tone(path: Path, seconds: float = 0.5, rate: int = 8000) -> Path:
    """A silent PCM WAV file: audio, no video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, int(seconds * rate)), np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_uhd60(path: Path, frames: int = 12) -> Path:
    """`frames` frames of 3840x2160 at 60 fps (H.264): a gradient with a bright bar moving across."""
    height, width = 2160, 3840
    luma = (np.add.outer(np.arange(height) * 150 // height, np.arange(width) * 50 // width) + 16).astype(np.uint8)
    chroma = np.full((height // 2, width), 128, np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=60, options={"preset": "ultrafast", "threads": "2"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            plane = luma.copy()
            plane[400:800, 100 + 200 * i : 500 + 200 * i] = 235
            frame = av.VideoFrame.from_ndarray(np.concatenate([plane, chroma]), format="yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def broken_index_mkv(source: Path, out: Path, duration_ms: float) -> Path:
    """A copy of an MKV whose header claims `duration_ms` and whose index (Cues) is unreadable."""
    data = bytearray(source.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Info > Duration, an 8-byte float
    data[at + 3 : at + 11] = struct.pack(">d", duration_ms)
    data = data.replace(b"\x1c\x53\xbb\x6b", b"\x1c\x53\xbb\x6c")  # Cues renamed: an unknown element
    out.write_bytes(bytes(data))
    return out
