"""embed_video with the shipped model: segments that respect scene cuts, the moment a caption
describes found in the right half, the clip vector, blank and all-black videos, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import xmodal
from video_files import level_frame, write_clip
from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.video import FramePolicy, open_video
from xmodal.models.encoder import l2_normalize
from xmodal.models.video import embed_video


@pytest.fixture(scope="module")
def encoder():
    return xmodal.load_model("xmodal-tiny-shapes")


@pytest.fixture(scope="module")
def synth_videos(tmp_path_factory) -> tuple[Path, list[dict]]:
    """16 synth-shapes videos, four of them with a scene cut at 2 s."""
    root = tmp_path_factory.mktemp("synth_videos")
    generate_synth_shapes(root, SynthConfig(n=1, seed=3, videos=16))
    return root, [json.loads(line) for line in (root / "videos.jsonl").read_text().splitlines()]


def test_a_scene_cut_ends_a_segment_and_captions_find_their_half(encoder, synth_videos):
    root, records = synth_videos
    cut = [r for r in records if len(r["scenes"]) == 2]
    assert len(cut) == 4
    for record in cut:
        video = embed_video(encoder, root / record["path"])
        assert video.info.duration_s == pytest.approx(4.0) and len(video.frame_times) == 4
        assert any(s.start == pytest.approx(2.0) for s in video.segments)  # the cut starts a segment
        assert all(s.end <= 2.0 + 1e-9 or s.start >= 2.0 - 1e-9 for s in video.segments)  # none straddles it
        for half, scene in enumerate(record["scenes"]):
            query = encoder.embed_texts([f"a {scene['color']} {scene['shape']}"])[0]
            segment, score = video.best_segment(query)
            assert (segment.start >= 2.0 - 1e-9) == (half == 1), (record["path"], half, video.segments)
            assert score == pytest.approx(float(segment.vector @ query))


def test_segments_and_the_clip_vector_are_means_of_their_frames(encoder, synth_videos):
    root, records = synth_videos
    path = root / records[3]["path"]
    video = embed_video(encoder, path, FramePolicy(fps=4))
    assert len(video.frame_times) == 16 and video.frame_vectors.shape == (16, encoder.dim)
    frames = [f.image for f in open_video(path).frames(FramePolicy(fps=4))]
    np.testing.assert_allclose(video.frame_vectors, encoder.embed_images(frames), atol=1e-5)
    weights = np.array([s.end - s.start for s in video.segments])
    assert weights.sum() == pytest.approx(4.0)
    expected = l2_normalize(weights @ np.stack([s.vector for s in video.segments]))
    np.testing.assert_allclose(video.clip_vector, expected, atol=1e-6)
    merged = embed_video(encoder, path, FramePolicy(fps=4), merge_threshold=-1.0)  # everything merges
    assert [(s.start, s.end) for s in merged.segments] == [(0.0, 4.0)]
    np.testing.assert_allclose(merged.segments[0].vector, l2_normalize(video.frame_vectors.mean(axis=0)), atol=1e-6)
    split = embed_video(encoder, path, FramePolicy(fps=4), merge_threshold=1.0)  # nothing merges
    assert [s.start for s in split.segments] == pytest.approx([k / 4 for k in range(16)])
    np.testing.assert_allclose(np.stack([s.vector for s in split.segments]), video.frame_vectors, atol=1e-6)


def test_blank_frames_are_skipped_and_cut_segments(encoder, tmp_path):
    black = np.zeros((64, 64, 3), np.uint8)
    scene = level_frame(160, 64, 64)
    clip = write_clip(tmp_path / "fade.mkv", [scene] * 20 + [black] * 20 + [scene] * 20, codec="ffv1")
    video = embed_video(encoder, clip, FramePolicy(fps=1, exact=True))
    assert video.blank_frames == 2 and video.frame_times == pytest.approx([0.5, 1.5, 4.5, 5.5])
    assert [(s.start, s.end) for s in video.segments] == [(0.0, 2.0), (4.0, 6.0)]
    assert video.notes == []
    kept = embed_video(encoder, clip, FramePolicy(fps=1, exact=True, skip_blank=False))
    assert kept.blank_frames == 0 and len(kept.frame_times) == 6


def test_an_all_black_video_is_one_segment_with_a_note(encoder, tmp_path):
    clip = write_clip(tmp_path / "black.mp4", [np.zeros((48, 64, 3), np.uint8)] * 30)
    video = embed_video(encoder, clip)
    assert video.notes == ["all 3 sampled frames are near-black or blank"] and video.blank_frames == 3
    assert [(s.start, s.end) for s in video.segments] == [(0.0, 3.0)] and video.frame_times == [0.0]
    np.testing.assert_allclose(np.linalg.norm(video.clip_vector), 1.0, atol=1e-6)


def test_results_pickle_and_bad_input_is_a_media_error(encoder, synth_videos, tmp_path):
    root, records = synth_videos
    video = embed_video(encoder, root / records[0]["path"])
    again = pickle.loads(pickle.dumps(video))
    assert again.info == video.info and again.frame_times == video.frame_times
    np.testing.assert_array_equal(again.clip_vector, video.clip_vector)
    (tmp_path / "empty.mov").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mov: empty file"):
        embed_video(encoder, tmp_path / "empty.mov")
    with pytest.raises(InvalidArgumentError):
        embed_video(encoder, root / records[0]["path"], batch_size=0)
    assert {"probe_s", "decode_s", "preprocess_s", "embed_s", "wall_s"} <= set(video.timings)
