"""Uniform frame sampling with PyAV: exact frame choice on a lossless clip, real MSVD clips, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import REALDATA
from xmodal.errors import MediaError
from xmodal.media.video import sample_frames

MSVD = REALDATA / "msvd"


def write_numbered_clip(path: Path, n_frames: int, size: int = 32) -> Path:
    """A lossless (FFV1) clip whose frame i is a flat grey of level 8*i: frames identify themselves."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv444p"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 8 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def frame_numbers(frames) -> list[int]:
    return [round(float(np.asarray(f).mean()) / 8) for f in frames]


def test_frames_are_the_centres_of_equal_segments(tmp_path):
    clip = write_numbered_clip(tmp_path / "numbered.mkv", 30)
    frames = sample_frames(clip, 4)
    assert frame_numbers(frames) == [3, 11, 18, 26]  # int((i + 0.5) * 30 / 4)
    assert all(f.mode == "RGB" and f.size == (32, 32) for f in frames)
    assert frame_numbers(sample_frames(clip, 1)) == [15]


def test_short_video_gives_each_frame_once(tmp_path):
    clip = write_numbered_clip(tmp_path / "short.mkv", 3)
    assert frame_numbers(sample_frames(clip, 8)) == [0, 1, 2]


def test_bad_files_raise_media_error_naming_the_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        sample_frames(tmp_path / "absent.mp4", 4)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 50)
    with pytest.raises(MediaError, match=r"garbage\.mp4: cannot decode video"):
        sample_frames(garbage, 4)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        sample_frames(audio, 4)


@pytest.mark.skipif(not MSVD.is_dir(), reason=f"real MSVD clips not found at {MSVD} (shared test data absent)")
def test_real_msvd_clips_decode_uniformly():
    records = [json.loads(line) for line in (MSVD / "clips_with_captions.jsonl").read_text().splitlines()]
    assert len(records) == 5
    for record in records:
        path = MSVD / record["path"]
        frames = sample_frames(path, 8)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total, size = stream.frames, (stream.width, stream.height)
            reference = [
                f.to_ndarray(format="rgb24")
                for i, f in enumerate(container.decode(stream))
                if i in {int((k + 0.5) * total / 8) for k in range(8)}
            ]
        assert len(frames) == 8 and all(f.size == size for f in frames)
        assert all(np.array_equal(np.asarray(f), r) for f, r in zip(frames, reference, strict=True))
        assert len({np.asarray(f).tobytes() for f in frames}) > 1  # really different moments
