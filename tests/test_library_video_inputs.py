"""Bad video files in a library: each is a recorded failure naming its reason (or, where the file
holds usable video, indexed with a note), beside a good video that is indexed all the same; a 4K
60 fps file is indexed in bounded memory; a file still being written is refused, then indexed
once it is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from library_helpers import PixelEmbedder
from video_files import broken_index_mkv, level_frame, write_clip, write_numbered_clip, write_tone, write_uhd60
from xmodal import settings
from xmodal.library import Library
from xmodal.store.catalog import ItemRecord


def index_folder(folder: Path, library: Path, embedder=None) -> dict[str, ItemRecord]:
    """Index `folder` (which holds a good video besides the file under test): rows by file name."""
    write_numbered_clip(folder / "good.mkv", 20)
    with Library(library) as lib:
        report = lib.index([folder], model=embedder or PixelEmbedder())
        rows = {Path(p).name: r for p, r in lib.catalog.items_under([str(folder)]).items()}
        assert dict(report.failed) == {r.path: r.error for r in rows.values() if r.status == "failed"}
        assert dict(lib.errors()) == dict(report.failed)
    good = rows["good.mkv"]
    assert good.status == "ok" and good.duration == pytest.approx(2.0) and len(good.details["frame_times"]) == 2
    return rows


def failed(rows: dict[str, ItemRecord], name: str) -> str:
    row = rows[name]
    assert (row.type, row.status, row.content_hash) == ("video", "failed", None), row
    return row.error or ""


def test_a_corrupt_container_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    assert failed(rows, "garbage.mp4").startswith("not a readable video: corrupt, truncated or another format")


def test_a_truncated_mp4_without_its_index_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    whole = write_clip(tmp_path / "whole.mp4", (level_frame(i) for i in range(30)))
    (tmp_path / "in" / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # moov at the end
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    assert failed(rows, "cut.mp4").startswith("not a readable video: corrupt, truncated")


def test_a_truncated_file_with_its_header_is_indexed_as_far_as_it_goes_with_a_note(tmp_path):
    (tmp_path / "in").mkdir()
    whole = write_clip(tmp_path / "whole.mkv", (level_frame(4 * (i % 60)) for i in range(100)), gop=10)
    (tmp_path / "in" / "cut.mkv").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    cut = rows["cut.mkv"]
    assert cut.status == "ok" and 3.0 < cut.duration < 8.0
    assert any("(broken index or truncated file)" in note for note in cut.details["notes"])
    assert all(t < cut.duration for t in cut.details["frame_times"])


def test_a_zero_length_file_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.mov").write_bytes(b"")
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    assert failed(rows, "empty.mov") == "empty file (0 bytes)"


def test_an_audio_only_file_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "voice.mkv")
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    assert failed(rows, "voice.mkv") == "no video stream (audio only: 1 audio stream)"


def test_an_unsupported_codec_is_a_failure(tmp_path):
    (tmp_path / "in").mkdir()
    clip = write_clip(tmp_path / "clip.mp4", (level_frame(i) for i in range(10)))
    (tmp_path / "in" / "unknown.mp4").write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    assert failed(rows, "unknown.mp4").startswith("unsupported video codec")


def test_variable_frame_rate_is_indexed_by_its_timestamps(tmp_path):
    (tmp_path / "in").mkdir()
    pts = [0, 40, 80, 500, 520, 1500, 1533, 1566, 3000, 3100]
    frames = (level_frame(8 * i) for i in range(len(pts)))
    write_clip(tmp_path / "in" / "vfr.mkv", frames, pts_ms=pts, codec="ffv1", fps=25)
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    vfr = rows["vfr.mkv"]
    assert vfr.status == "ok" and vfr.duration == pytest.approx(3.14) and vfr.details["variable_frame_rate"]
    assert vfr.details["frame_times"] == [0.0, 1.5, 3.0]  # the first frame in each 1.05 s window


def test_a_huge_duration_with_a_broken_index_is_measured_and_noted(tmp_path):
    (tmp_path / "in").mkdir()
    clip = write_clip(tmp_path / "clip.mkv", (level_frame(4 * (i % 60)) for i in range(50)), gop=10)
    broken_index_mkv(clip, tmp_path / "in" / "huge.mkv", 3.6e9)  # the header says 1,000 hours
    rows = index_folder(tmp_path / "in", tmp_path / "lib")
    huge = rows["huge.mkv"]
    assert huge.status == "ok" and huge.duration == pytest.approx(5.0)
    assert huge.details["frame_times"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert "the header says 3600000.0 s but the video stream ends at 5.0 s" in huge.details["notes"][0]


class AppendingEmbedder(PixelEmbedder):
    """Another program appends to `path` while its first frames are being embedded."""

    def __init__(self, path: Path):
        super().__init__()
        self.path, self.appended = path, False

    def embed_pixels(self, pixels):
        if not self.appended:
            self.appended = True
            with open(self.path, "ab") as fp:
                fp.write(b"\0" * 4096)
        return super().embed_pixels(pixels)


def test_a_file_still_being_written_is_refused_then_indexed_once_complete(tmp_path):
    (tmp_path / "in").mkdir()
    growing = write_clip(tmp_path / "in" / "growing.mp4", (level_frame(4 * i) for i in range(40)))
    with Library(tmp_path / "lib") as lib:
        report = lib.index([tmp_path / "in"], model=AppendingEmbedder(growing))
        row = lib.catalog.item_by_path(str(growing))
        assert row.status == "failed" and row.error.startswith("the file changed while it was read")
        assert report.failed == [(str(growing), row.error)]
        again = lib.index([tmp_path / "in"], model=PixelEmbedder())  # the writer is done: changed, retried
        row = lib.catalog.item_by_path(str(growing))
        assert (again.updated, again.failed, row.status) == (1, [], "ok") and row.duration == pytest.approx(4.0)


def test_a_4k60_video_is_indexed_in_bounded_memory(tmp_path):
    """Peak memory of an index run: 30 frames of 3840x2160 RGB would be 750 MB if they were kept."""
    (tmp_path / "in").mkdir()
    clip = write_uhd60(tmp_path / "in" / "uhd60.mp4", frames=30)
    script = textwrap.dedent(
        """
        import json, sys
        from xmodal.library import Library
        from library_helpers import PixelEmbedder
        def memory(kind):  # MiB: VmRSS now, VmHWM the peak so far
            line = next(l for l in open("/proc/self/status") if l.startswith(kind))
            return int(line.split()[1]) // 1024
        start = memory("VmRSS")
        with Library(sys.argv[2]) as lib:
            report = lib.index([sys.argv[1]], model=PixelEmbedder())
            row = lib.catalog.item_by_path(sys.argv[1] + "/uhd60.mp4")
        print(json.dumps([start, memory("VmHWM"), row.status, row.width, row.height, row.fps, row.details["frame_times"]]))
        """
    )
    env = dict(os.environ, XMODAL_VIDEO_FPS="60", PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    run = subprocess.run(
        [sys.executable, "-c", script, str(clip.parent), str(tmp_path / "lib")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    start, end, status, width, height, fps, times = json.loads(run.stdout)
    assert (status, width, height, fps) == ("ok", 3840, 2160, 60.0)
    assert len(times) == 30  # every frame sampled (60 per second)
    assert end - start < 300, (start, end)  # MiB: decoder buffers, never the frames at full size


def test_a_video_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write_clip(tmp_path / "in" / "long.mkv", (level_frame(i % 250, 64, 64) for i in range(300)), codec="ffv1")
    monkeypatch.setenv("XMODAL_MAX_VIDEO_BYTES", str((tmp_path / "in" / "long.mkv").stat().st_size - 1))
    settings.configure()
    try:
        rows = index_folder(tmp_path / "in", tmp_path / "lib")
    finally:
        monkeypatch.delenv("XMODAL_MAX_VIDEO_BYTES")
        settings.configure()
    assert "limit (XMODAL_MAX_VIDEO_BYTES)" in failed(rows, "long.mkv")
