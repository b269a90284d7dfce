"""Video probing and frame sampling with PyAV: exact frame choice on lossless clips, seeking on long
files, variable frame rate, rotation, blank frames, bounded memory at 4K60, every kind of bad file,
and the real MSVD clips."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import REALDATA
from video_files import (
    broken_index_mkv,
    frame_level,
    level_frame,
    write_clip,
    write_numbered_clip,
    write_tone,
    write_uhd60,
)
from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.video import FramePolicy, open_video, probe_video, sample_frames

MSVD = REALDATA / "msvd"


def levels(frames) -> list[int]:
    return [round(frame_level(f.image) / 8) for f in frames]


# -- the sampling policy -----------------------------------------------------------------------
def test_policy_counts_one_frame_per_second_up_to_the_cap():
    policy = FramePolicy()
    assert (policy.fps, policy.max_frames) == (1.0, 120)
    assert [policy.count(d) for d in (0.2, 1.0, 1.01, 14.07, 119.5, 3600.0)] == [1, 1, 2, 15, 120, 120]
    assert FramePolicy(max_frames=5).windows(600.0) == [(0, 120), (120, 240), (240, 360), (360, 480), (480, 600)]
    assert FramePolicy(fps=2).windows(1.5) == [(0, 0.5), (0.5, 1.0), (1.0, 1.5)]
    assert FramePolicy.uniform(12).count(3.0) == 12 and FramePolicy.uniform(12).exact
    assert FramePolicy().key != FramePolicy(short_side=224).key != FramePolicy.uniform(12).key
    for bad in (dict(fps=0), dict(max_frames=0), dict(short_side=8), dict(decode_threads=0)):
        with pytest.raises(InvalidArgumentError):
            FramePolicy(**bad)


def test_exact_sampling_takes_the_frame_shown_at_each_window_centre(tmp_path):
    clip = write_numbered_clip(tmp_path / "numbered.mkv", 30)
    video = open_video(clip)
    assert video.info.duration_s == pytest.approx(3.0) and video.info.fps == 10
    frames = list(video.frames(FramePolicy.uniform(4)))
    assert levels(frames) == [3, 11, 18, 26]  # int((k + 0.5) * 30 / 4)
    assert [f.timestamp_s for f in frames] == pytest.approx([0.3, 1.1, 1.8, 2.6])
    assert [w for f in frames for w in f.window] == pytest.approx([0, 0.75, 0.75, 1.5, 1.5, 2.25, 2.25, 3.0])
    assert all(f.image.mode == "RGB" and f.image.size == (32, 32) and not f.blank for f in frames)
    assert levels(video.frames(FramePolicy.uniform(1))) == [15]
    assert levels(video.frames(FramePolicy(fps=1, exact=True))) == [5, 15, 25]
    assert [round(frame_level(image) / 8) for image in sample_frames(clip, 4)] == [3, 11, 18, 26]


def test_a_short_clip_gives_each_frame_once(tmp_path):
    clip = write_numbered_clip(tmp_path / "short.mkv", 3)
    assert levels(open_video(clip).frames(FramePolicy.uniform(8))) == [0, 1, 2]


def test_long_files_are_sampled_by_seeking_not_by_decoding_every_frame(tmp_path):
    # 60 s at 10 fps, a keyframe every second; frame i shows level 4 * (i % 60).
    clip = write_clip(tmp_path / "long.mp4", (level_frame(4 * (i % 60), 64, 48) for i in range(600)), gop=10)
    video = open_video(clip)
    assert video.info.keyframe_interval_s == pytest.approx(1.0) and video.info.frame_count == 600
    fast = list(video.frames(FramePolicy(max_frames=6)))
    assert video.stats.seeks == 5 and video.stats.decoded <= 12  # a seek per window after the first
    video.stats.decoded = video.stats.seeks = 0
    exact = list(video.frames(FramePolicy(max_frames=6, exact=True)))
    assert video.stats.seeks == 0 and 550 <= video.stats.decoded <= 560  # every frame up to 55 s
    for frames in (fast, exact):
        assert len(frames) == 6
        for k, frame in enumerate(frames):
            assert 10 * k <= frame.timestamp_s < 10 * (k + 1) and frame.window == pytest.approx([10 * k, 10 * k + 10])
            shown = round(frame.timestamp_s * 10) % 60  # the frame's content matches its timestamp
            assert abs(frame_level(frame.image) - 4 * shown) <= 2
    assert [f.timestamp_s for f in exact] == pytest.approx([5, 15, 25, 35, 45, 55])


def test_variable_frame_rate_times_come_from_the_timestamps(tmp_path):
    pts = [0, 40, 80, 500, 520, 1500, 1533, 1566, 3000, 3100]
    clip = write_clip(
        tmp_path / "vfr.mkv", (level_frame(8 * i) for i in range(len(pts))), pts_ms=pts, codec="ffv1", fps=25
    )
    info = probe_video(clip)
    assert info.variable_frame_rate and info.duration_s == pytest.approx(3.14)  # the last frame lasts 1/25 s
    frames = list(open_video(clip).frames(FramePolicy(fps=2, exact=True)))
    # windows of 3.14 / 7 s; [0.90, 1.35) and the two after 1.79 s hold no frame
    assert [(f.timestamp_s, level) for f, level in zip(frames, levels(frames), strict=True)] == [
        (0.08, 2),
        (0.52, 4),
        (1.566, 7),
        (3.0, 8),
    ]
    assert not probe_video(write_numbered_clip(tmp_path / "cfr.mkv", 20)).variable_frame_rate


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation):
    stored = np.random.default_rng(0).integers(60, 200, (48, 64, 3), dtype=np.uint8)
    stored[:8] = (255, 0, 0)  # a red band along the stored top edge
    clip = write_clip(tmp_path / f"rot{rotation}.mp4", [stored] * 5, rotation=rotation)
    info = probe_video(clip)
    assert info.rotation == rotation and (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    shown = np.asarray(next(open_video(clip).frames()).image).astype(int)
    red = shown[..., 0] - shown[..., 1]
    edges = {"top": red[:6].mean(), "right": red[:, -6:].mean(), "bottom": red[-6:].mean(), "left": red[:, :6].mean()}
    assert max(edges, key=edges.get) == {90: "right", 180: "bottom", 270: "left"}[rotation]


def test_frames_are_scaled_to_the_short_side_with_square_pixels(tmp_path):
    clip = write_clip(tmp_path / "wide.mp4", [level_frame(100, 640, 360)] * 3)
    assert (probe_video(clip).width, probe_video(clip).height) == (640, 360)
    assert next(open_video(clip).frames(FramePolicy(short_side=180))).image.size == (320, 180)
    assert next(open_video(clip).frames(FramePolicy(short_side=None))).image.size == (640, 360)
    # 32x32 stored, each pixel twice as wide as high (as DV and some broadcast files are)
    anamorphic = write_clip(tmp_path / "anamorphic.mp4", [level_frame(90)] * 3, options={"x264-params": "sar=2/1"})
    assert (probe_video(anamorphic).width, probe_video(anamorphic).height) == (64, 32)
    assert next(open_video(anamorphic).frames()).image.size == (64, 32)


def test_black_and_blank_frames_are_flagged(tmp_path):
    black = np.zeros((32, 32, 3), np.uint8)
    black[2, 2] = 255  # a speck: still near-black (blackdetect's 98 % rule)
    white = np.full((32, 32, 3), 250, np.uint8)
    clip = write_clip(tmp_path / "intro.mkv", [black] * 10 + [white] * 10 + [level_frame(128)] * 10, codec="ffv1")
    frames = list(open_video(clip).frames(FramePolicy(fps=1)))
    assert [f.blank for f in frames] == [True, True, False]
    dark = write_clip(tmp_path / "dark.mkv", [black] * 30, codec="ffv1")
    assert [f.blank for f in open_video(dark).frames()] == [True, True, True]


# -- bounded memory ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_4k60(tmp_path_factory) -> Path:
    """12 frames of 3840x2160 at 60 fps (H.264)."""
    return write_uhd60(tmp_path_factory.mktemp("4k") / "uhd60.mp4")


def test_4k60_decodes_within_bounded_memory(clip_4k60):
    """Peak memory does not grow with the frames taken: 12 full-size RGB frames would be 300 MB."""
    script = textwrap.dedent(
        """
        import json, resource, sys
        from xmodal.media.video import FramePolicy, open_video
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        video = open_video(sys.argv[1])
        start = peak()
        one = [f.image.size for f in video.frames(FramePolicy(max_frames=1))]
        after_one = peak()
        every = [f.image.size for f in video.frames(FramePolicy(fps=60, exact=True))]
        print(json.dumps([video.info.width, video.info.height, video.info.fps, start, after_one, peak(), every]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script, str(clip_4k60)], capture_output=True, text=True, check=True)
    width, height, fps, start, after_one, end, sizes = json.loads(run.stdout)
    assert (width, height, fps) == (3840, 2160, 60)
    assert len(sizes) == 12 and all(tuple(s) == (796, 448) for s in sizes)
    assert end - after_one < 100, (start, after_one, end)  # MiB: no frame is kept at full size
    assert end - start < 500, (start, after_one, end)


# -- bad input ---------------------------------------------------------------------------------
def test_missing_empty_and_garbage_files_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match=r"absent\.mp4: file not found"):
        probe_video(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file \(0 bytes\)"):
        probe_video(tmp_path / "empty.mp4")
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    with pytest.raises(MediaError, match=r"garbage\.mp4: not a readable video: corrupt, truncated"):
        probe_video(tmp_path / "garbage.mp4")
    with pytest.raises(MediaError, match="not a regular file"):
        probe_video(tmp_path)


def test_a_truncated_mp4_without_its_index_is_a_media_error(tmp_path):
    whole = write_clip(tmp_path / "whole.mp4", (level_frame(i) for i in range(30)))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # the moov index is at the end
    with pytest.raises(MediaError, match=r"cut\.mp4: not a readable video: corrupt, truncated"):
        probe_video(cut)


def test_audio_only_files_have_no_video_stream(tmp_path):
    with pytest.raises(MediaError, match=r"tone\.wav: no video stream \(audio only: 1 audio stream\)"):
        probe_video(write_tone(tmp_path / "tone.wav"))


def test_an_unsupported_codec_is_named_as_such(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", (level_frame(i) for i in range(10)))
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))  # a fourcc no decoder knows
    with pytest.raises(MediaError, match=r"unknown\.mp4: unsupported video codec"):
        probe_video(unknown)


def test_a_stream_with_no_decodable_frame_is_a_media_error(tmp_path):
    clip = write_clip(tmp_path / "clip.mkv", (level_frame(i) for i in range(10)))
    data = bytearray(clip.read_bytes())
    start = data.find(b"\x1f\x43\xb6\x75")  # the first Cluster: every frame after it is noise
    data[start + 40 :] = np.random.default_rng(0).integers(0, 255, len(data) - start - 40, dtype=np.uint8).tobytes()
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"broken\.mkv: (no decodable video frame|cannot read the video stream)"):
        probe_video(broken)


def test_a_file_that_changes_while_it_is_read_is_refused(tmp_path):
    clip = write_clip(tmp_path / "growing.mp4", (level_frame(i) for i in range(40)))
    frames = open_video(clip).frames(FramePolicy(fps=2))
    next(frames)
    with open(clip, "ab") as fp:  # another program is still writing it
        fp.write(b"\0" * 1000)
    with pytest.raises(MediaError, match=r"growing\.mp4: the file changed while it was read"):
        list(frames)


def test_a_huge_duration_with_a_broken_index_is_measured_not_trusted(tmp_path):
    clip = write_clip(tmp_path / "clip.mkv", (level_frame(4 * (i % 60)) for i in range(50)), gop=10)
    huge = broken_index_mkv(clip, tmp_path / "huge.mkv", 3.6e9)  # "1,000 hours"
    with av.open(str(huge)) as container:
        assert container.duration / av.time_base == pytest.approx(3.6e6)
    video = open_video(huge)
    assert video.info.duration_s == pytest.approx(5.0)
    assert "the header says 3600000.0 s but the video stream ends at 5.0 s" in video.info.notes[0]
    frames = list(video.frames())
    assert [f.timestamp_s for f in frames] == pytest.approx([0, 1, 2, 3, 4])


@pytest.mark.parametrize("name, options", [("clip.mkv", {}), ("clip.avi", {}), ("clip.mp4", {"movflags": "faststart"})])
def test_a_truncated_file_with_its_header_is_sampled_as_far_as_it_goes(tmp_path, name, options):
    """A cut-off download: the header (at the start) promises 10 s, the data stops near 6 s."""
    frames = (level_frame(4 * (i % 60)) for i in range(100))
    clip = write_clip(tmp_path / name, frames, gop=10, container_options=options)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    video = open_video(cut)
    assert 3.0 < video.info.duration_s < 8.0
    if name != "clip.avi":  # an AVI's index is at its end: the cut file has no header duration to doubt
        assert "(broken index or truncated file)" in video.notes[0]
    late = 1 if name == "clip.avi" else 0  # AVI stamps B-frame streams one frame late (players follow it)
    for policy in (FramePolicy(), FramePolicy(exact=True)):
        sampled = list(video.frames(policy))
        assert len(sampled) >= 3 and all(f.timestamp_s < video.info.duration_s for f in sampled)
        for frame in sampled:  # each frame's content is the frame its timestamp names
            assert abs(frame_level(frame.image) - 4 * (round(frame.timestamp_s * 10 - late) % 60)) <= 3


def test_results_and_errors_pickle(tmp_path):
    clip = write_numbered_clip(tmp_path / "clip.mkv", 12)
    info = probe_video(clip)
    assert pickle.loads(pickle.dumps(info)) == info
    frame = next(open_video(clip).frames())
    again = pickle.loads(pickle.dumps(frame))
    assert again.timestamp_s == frame.timestamp_s and np.array_equal(np.asarray(again.image), np.asarray(frame.image))
    error = MediaError(clip, "no video stream")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.reason, copy.item) == (str(error), "no video stream", clip)


# -- real clips --------------------------------------------------------------------------------
@pytest.mark.skipif(not MSVD.is_dir(), reason=f"real MSVD clips not found at {MSVD} (shared test data absent)")
def test_real_msvd_clips_probe_and_sample_like_a_reference_decode():
    records = [json.loads(line) for line in (MSVD / "clips_with_captions.jsonl").read_text().splitlines()]
    expected = {  # from the data set's description: size, frame rate, length
        "3qqEKTPxLNs_1_15.avi": (480, 360, 30.0, 14.0),
        "UXs3eq68ZjE_250_255.avi": (1280, 720, 30.0, 5.0),
        "WTf5EgVY5uU_124_128.avi": (320, 240, 29.97, 4.0),
        "j2Dhf-xFUxU_13_20.avi": (320, 240, 15.0, 7.1),
        "klteYv1Uv9A_27_33.avi": (352, 288, 15.0, 6.1),
    }
    assert len(records) == 5
    for record in records:
        path = MSVD / record["path"]
        video = open_video(path)
        info = video.info
        width, height, fps, seconds = expected[path.name]
        assert (info.width, info.height, info.codec, info.rotation) == (width, height, "h264", 0)
        assert info.fps == pytest.approx(fps, rel=0.01) and info.duration_s == pytest.approx(seconds, abs=0.15)
        assert not info.variable_frame_rate and not info.has_audio and info.notes == ()
        frames = list(video.frames(FramePolicy.uniform(8, short_side=None)))
        first = 1 / info.fps  # these clips' first frame is stamped one frame in
        shown = [int(round(((k + 0.5) * info.duration_s / 8 - first) * info.fps, 6)) for k in range(8)]
        with av.open(str(path)) as container:  # reference: the decoder's frames in order, one per 1/fps
            stream = container.streams.video[0]
            decoded = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream)) if i in shown}
        reference = [decoded[i] for i in shown]
        assert len(frames) == 8 and all(f.image.size == (width, height) for f in frames)
        assert all(np.array_equal(np.asarray(f.image), r) for f, r in zip(frames, reference, strict=True))
        fast = list(video.frames())  # the default policy: about one frame per second
        assert len(fast) == FramePolicy().count(info.duration_s) and min(fast[0].image.size) == min(height, 448)
