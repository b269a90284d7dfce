"""Videos in the library with the shipped model: synth-shapes videos indexed as moments, a caption
finds its video, the moment of a scene cut is placed in the right half (by text and by a frame as an
image query), rows keep what the video is, the frame policy comes from the settings, known content
is not decoded again, and `xmodal search --json` carries the moments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xmodal
from video_files import level_frame, write_clip
from xmodal import settings
from xmodal.cli import app
from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.errors import InvalidArgumentError
from xmodal.library import Library
from xmodal.media.video import FramePolicy, open_video
from xmodal.models.video import MERGE_THRESHOLD, configured_policy

runner = CliRunner()
N_VIDEOS = 16


@pytest.fixture(scope="module")
def encoder():
    return xmodal.load_model("xmodal-tiny-shapes")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, encoder) -> tuple[Library, Path, list[dict]]:
    """16 synth-shapes videos (four with a scene cut at 2 s) indexed with the shipped model."""
    root = tmp_path_factory.mktemp("synth")
    generate_synth_shapes(root, SynthConfig(n=1, seed=3, videos=N_VIDEOS))
    records = [json.loads(line) for line in (root / "videos.jsonl").read_text().splitlines()]
    lib = Library(tmp_path_factory.mktemp("lib") / "library")
    report = lib.index([root / "videos"], model=encoder)
    assert (report.added, report.encoded, report.failed) == (N_VIDEOS, N_VIDEOS, [])
    yield lib, root, records
    lib.close()


def test_a_caption_finds_its_video_at_rank_1_for_most(indexed):
    lib, root, records = indexed
    first = []
    for record in records:
        hits = lib.search(record["captions"][0], k=N_VIDEOS, type="video", min_score=-1)
        names = [Path(h.path).name for h in hits]
        first.append(names.index(Path(record["path"]).name) + 1)
    assert sum(rank == 1 for rank in first) >= 0.6 * N_VIDEOS, first
    assert max(first) <= 4, first
    floored = lib.search(records[0]["captions"][0], k=N_VIDEOS, type="video")
    assert floored.min_scores["video"] == 0.07 and all(h.score >= 0.07 for h in floored)  # the measured floor


def test_each_scene_of_a_cut_video_is_found_in_its_half(indexed):
    lib, root, records = indexed
    cut = [r for r in records if len(r["scenes"]) == 2]
    assert len(cut) == 4
    for record in cut:
        for half, scene in enumerate(record["scenes"]):
            hits = lib.search(f"a {scene['color']} {scene['shape']}", k=N_VIDEOS, type="video", min_score=-1)
            (hit,) = [h for h in hits if Path(h.path).name == Path(record["path"]).name]
            assert (2.0 <= hit.timestamp < 4.0) == (half == 1), (record["path"], half, hit.moments)
            assert hit.moments[0].start == hit.timestamp and hit.moments[0].end > hit.timestamp
            assert hit.score == pytest.approx(hit.moments[0].score, abs=1e-6) or hit.score > hit.moments[0].score
            assert hit.duration == pytest.approx(4.0)


def test_an_image_query_finds_the_frame_similar_moment(indexed, tmp_path):
    lib, root, records = indexed
    for record in [r for r in records if len(r["scenes"]) == 2]:
        path = root / record["path"]
        late = [f for f in open_video(path).frames(FramePolicy(fps=4, exact=True)) if f.timestamp_s > 2.6][0]
        query = tmp_path / "frame.png"
        late.image.save(query)
        hit = lib.search(image=query, k=1, type="video")[0]
        assert Path(hit.path) == path and 2.0 <= hit.timestamp < 4.0, (record["path"], hit.moments)


def test_rows_segments_and_vectors_of_an_indexed_video(indexed):
    lib, root, records = indexed
    record = next(r for r in records if len(r["scenes"]) == 2)
    row = lib.catalog.item_by_path(str(root / record["path"]))
    assert (row.type, row.status, row.error) == ("video", "ok", None)
    assert (row.width, row.height, row.fps, row.codec, row.rotation) == (128, 128, 12.0, "h264", 0)
    assert row.duration == pytest.approx(4.0)
    assert row.details["frame_times"][:3] == [0.0, 1.0, 2.0] and len(row.details["frame_times"]) == 4
    assert row.details["frame_policy"] == FramePolicy().key and row.details["segments"] == 2
    (model,) = lib.catalog.models()
    segments = lib.catalog.segments(model.key, row.content_hash)
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.0), (2.0, 4.0)]  # seconds, split at the cut
    own = lib.catalog.embeddings.get_many(model.key, [row.content_hash])[row.content_hash]
    expected = segments[0].vector + segments[1].vector  # equal durations: the clip vector is their mean
    np.testing.assert_allclose(own, expected / np.linalg.norm(expected), atol=1e-5)
    entries, _ = lib.catalog.entries(model.key, np.asarray([row.id]))
    assert sorted(int(e) & 0xFFFFF for e in entries) == [0, 1, 2]  # own vector + two moments in the index


def test_moments_group_under_their_video_and_json_carries_them(indexed):
    lib, root, records = indexed
    record = next(r for r in records if len(r["scenes"]) == 2)
    query = f"a {record['scenes'][1]['color']} {record['scenes'][1]['shape']}"
    out = runner.invoke(
        app, ["search", query, "--library", str(lib.folder), "--type", "video", "--moments", "2", "--json", "-k", "16"]
    )
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)["hits"]
    assert {h["type"] for h in hits} == {"video"} and len({h["item_id"] for h in hits}) == len(hits)  # one per video
    (hit,) = [h for h in hits if h["path"].endswith(record["path"])]
    floor = json.loads(out.output)["min_scores"]["video"]
    assert hit["timestamp"] == hit["moments"][0]["start"] >= 2.0 and hit["duration"] == 4.0
    assert all(m["score"] >= floor for m in hit["moments"][1:])  # the others only when they match too
    everything = lib.search(query, k=16, type="video", moments=2, min_score=-1)
    two = next(h for h in everything if h.path.endswith(record["path"]))
    assert [(m.start, m.end) for m in two.moments] == [(2.0, 4.0), (0.0, 2.0)]  # best first, then the other half
    assert all(h.type == "video" for h in lib.search(query, k=16, type=["video"], min_score=-1))
    args = ["search", query, "--library", str(lib.folder), "--type", "video", "--min-score", "-1", "-k", "16"]
    table = runner.invoke(app, [*args, "--moments", "2", "--format", "table"]).output.splitlines()
    assert table[0].split()[:7] == ["rank", "score", "id", "type", "taken", "at", "at"]
    (line,) = [row for row in table if row.endswith(record["path"])]
    assert "0:02 0:00" in line  # the video's two moments, best first, grouped on its one line


def test_a_copied_video_is_not_decoded_again_and_keeps_its_frame_times(indexed, encoder, tmp_path):
    lib, root, records = indexed
    source = root / records[0]["path"]
    copy_folder = tmp_path / "copies"
    copy_folder.mkdir()
    shutil.copy(source, copy_folder / "copy.mp4")
    calls = []
    original = encoder.embed_pixels
    encoder.embed_pixels = lambda pixels: calls.append(len(pixels)) or original(pixels)
    try:
        report = lib.index([copy_folder], model=encoder)
    finally:
        encoder.embed_pixels = original
    assert (report.added, report.encoded, report.reused, calls) == (1, 0, 1, [])
    copy = lib.catalog.item_by_path(str(copy_folder / "copy.mp4"))
    first = lib.catalog.item_by_path(str(source))
    assert copy.content_hash == first.content_hash and copy.details["frame_times"] == first.details["frame_times"]
    assert (copy.duration, copy.fps, copy.codec) == (first.duration, first.fps, first.codec)


def test_a_video_is_dated_by_its_recording_time_and_filtered_like_photos(encoder, tmp_path):
    folder = tmp_path / "dated"
    folder.mkdir()
    frames = [level_frame(4 * i) for i in range(20)]
    write_clip(folder / "phone.mp4", frames, metadata={"creation_time": "2021-07-04T10:30:00.000000Z"})
    write_clip(folder / "unset.mp4", frames, metadata={"creation_time": "1970-01-01T00:00:00.000000Z"})
    with Library(tmp_path / "lib") as lib:
        lib.index([folder], model=encoder)
        phone, unset = (lib.catalog.item_by_path(str(folder / n)) for n in ("phone.mp4", "unset.mp4"))
        assert (phone.taken_at, phone.taken_at_source) == (1625394600.0, "metadata")
        assert unset.taken_at_source == "mtime"  # a placeholder date is no date
        during = lib.search("a shape", type="video", after="2021-07", before="2021-08", min_score=-1)
        assert [h.path for h in during] == [str(folder / "phone.mp4")]
        assert during[0].taken_at.timestamp() == 1625394600.0


def test_the_frame_policy_comes_from_the_settings(indexed, tmp_path, monkeypatch):
    lib, root, records = indexed
    defaults = settings.Settings()
    assert (defaults.video_fps, defaults.video_max_frames, defaults.video_merge) == (1.0, 120, MERGE_THRESHOLD)
    assert configured_policy(defaults) == FramePolicy()  # the settings' defaults are the policy's
    with pytest.raises(InvalidArgumentError, match="2000000; expected a whole number from 1 to 100,000"):
        settings.Settings.from_env({"XMODAL_VIDEO_MAX_FRAMES": "2000000"})
    with pytest.raises(InvalidArgumentError, match="XMODAL_VIDEO_FPS.*a number > 0"):
        settings.Settings.from_env({"XMODAL_VIDEO_FPS": "0"})
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(root / records[3]["path"], folder / "cut.mp4")
    monkeypatch.setenv("XMODAL_VIDEO_MAX_FRAMES", "3")
    try:
        args = ["index", str(folder), "--library", str(tmp_path / "lib"), "--model", "xmodal-tiny-shapes", "-q"]
        out = runner.invoke(app, [*args, "--video-fps", "2", "--video-merge", "1"])
        assert out.exit_code == 0, out.output
        with Library(tmp_path / "lib") as other:
            row = other.catalog.item_by_path(str(folder / "cut.mp4"))
            assert len(row.details["frame_times"]) == 3 and ":2fps:3:" in row.details["frame_policy"]
            assert row.details["segments"] == 3  # merge at cosine 1: every frame its own moment
        bad = runner.invoke(app, [*args, "--video-merge", "1.5"])
        assert isinstance(bad.exception, InvalidArgumentError)
        assert str(bad.exception) == "invalid --video-merge 1.5; expected a cosine from -1 to 1"
    finally:
        monkeypatch.delenv("XMODAL_VIDEO_MAX_FRAMES")
        settings.configure()  # the process's settings as the environment gives them again
