"""The synthetic shapes dataset: deterministic per seed, captions that name every shape, readable by the
eval readers, videos that decode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal.datasets import ANNOTATIONS, SynthConfig, generate_synth_shapes
from xmodal.datasets.shapes import TERSE_POSITIONS
from xmodal.errors import InvalidArgumentError
from xmodal.eval import ReadOptions, read_dataset
from xmodal.media.video import FramePolicy, open_video


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate_synth_shapes(tmp_path / "a", SynthConfig(n=40, seed=3))
    generate_synth_shapes(tmp_path / "b", SynthConfig(n=40, seed=3))
    generate_synth_shapes(tmp_path / "c", SynthConfig(n=40, seed=4))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert len(a) == 41 and a[ANNOTATIONS] != c[ANNOTATIONS]
    assert sum(a[k] == c.get(k) for k in a) == 0


def test_captions_name_every_shape_and_splits_are_karpathy(tmp_path):
    path = generate_synth_shapes(tmp_path, SynthConfig(n=50, seed=1))
    images = json.loads(path.read_text())["images"]
    assert [im["split"] for im in images] == ["train"] * 40 + ["val"] * 5 + ["test"] * 5
    assert {im["filename"].rsplit(".", 1)[1] for im in images} == {"jpg", "png"}
    for im in images:
        assert len(im["sentences"]) == 5 and 1 <= len(im["shapes"]) <= 3
        for sentence in im["sentences"]:
            for shape in im["shapes"]:
                assert f"{shape['color']} {shape['shape']}" in sentence["raw"]
    test = read_dataset(f"karpathy:{path}", ReadOptions(split="test"))
    assert len(test.items) == 5 and len(test.texts) == 25 and test.kind == "image"
    assert all(p.is_file() for p in test.items)
    assert len(set(TERSE_POSITIONS.values())) == 9


def test_videos_decode_and_are_listed_with_motion_captions(tmp_path):
    generate_synth_shapes(tmp_path, SynthConfig(n=2, seed=0, videos=3))
    records = [json.loads(line) for line in (tmp_path / "videos.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        frames = [f.image for f in open_video(tmp_path / record["path"]).frames(FramePolicy.uniform(4))]
        assert len(frames) == 4 and frames[0].size == (128, 128)
        first, last = (np.asarray(f, dtype=np.float32) for f in (frames[0], frames[-1]))
        assert np.abs(first - last).mean() > 1  # the shape moved or changed size
        assert all(
            caption.split()[1] in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "black")
            for caption in record["captions"]
        )
    videos = read_dataset(f"jsonl:{tmp_path / 'videos.jsonl'}", ReadOptions(split=None))
    assert videos.kind == "video" and len(videos.items) == 3


def test_every_fourth_video_cuts_to_another_scene_halfway(tmp_path):
    generate_synth_shapes(tmp_path, SynthConfig(n=1, seed=2, videos=8))
    records = [json.loads(line) for line in (tmp_path / "videos.jsonl").read_text().splitlines()]
    assert [len(r["scenes"]) for r in records] == [1, 1, 1, 2, 1, 1, 1, 2]
    for record in (records[3], records[7]):
        first, second = record["scenes"]
        assert (first["start"], first["end"], second["start"], second["end"]) == (0.0, 2.0, 2.0, 4.0)
        assert first["color"] != second["color"] and first["shape"] != second["shape"]
        assert record["captions"][0] == f"{first['captions'][0]}, then {second['captions'][0]}"
        video = open_video(tmp_path / record["path"])
        assert video.info.duration_s == pytest.approx(4.0)
        frames = list(video.frames(FramePolicy(fps=12, exact=True)))
        jumps = [
            np.abs(np.asarray(a.image, np.float32) - np.asarray(b.image, np.float32)).mean()
            for a, b in zip(frames, frames[1:], strict=False)
        ]
        assert int(np.argmax(jumps)) == 23 and frames[24].timestamp_s == pytest.approx(2.0)  # the cut: frame 24


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="invalid n 0"):
        generate_synth_shapes(tmp_path, SynthConfig(n=0))
