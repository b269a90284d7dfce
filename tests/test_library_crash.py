"""kill -9 of `xmodal index` at several points, then the same command again: the catalog and
index are consistent and complete, no duplicates, and committed work is not encoded again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xmodal
from library_helpers import check_consistent, count_model_calls, image_files, make_photo_tree
from xmodal import settings
from xmodal.library import Library

N_FILES = 160


def committed_ok(catalog: Path) -> int:
    if not catalog.exists():
        return 0
    try:
        with sqlite3.connect(catalog, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def start_index(tree: Path, library: Path, model: Path | str) -> subprocess.Popen:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, "-m", "xmodal", "index", str(tree), "--library", str(library), "--model", str(model)]
    command += ["--quiet", "--batch-size", "4", "--workers", "1"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(
    proc: subprocess.Popen, catalog: Path, at_least: int, timeout: float = 60, sig: int = signal.SIGKILL
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if catalog.exists() and committed_ok(catalog) >= at_least:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail(f"indexing ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
    os.kill(proc.pid, sig)
    code = proc.wait()
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
    return committed_ok(catalog)


@pytest.mark.parametrize("kill_points", [(0, 40, 100)])
def test_kill_9_then_rerun_is_consistent_and_complete(tmp_path: Path, clip_model_dir: Path, kill_points):
    tree = tmp_path / "photos"
    make_photo_tree(tree, N_FILES)
    library = tmp_path / "lib"
    catalog = library / "catalog.sqlite"
    done, seen = 0, []
    for point in kill_points:  # before the first commit, early, late; each kill resumes the last
        done = kill_when(start_index(tree, library, clip_model_dir), catalog, max(point, done + 1) if point else 0)
        seen.append(done)
        assert done < N_FILES
    assert seen[-1] > seen[0]  # the kills did land at different points of the work
    encoder = xmodal.load_model(clip_model_dir)
    calls = count_model_calls(encoder)
    with Library(library) as lib:
        report = lib.index([tree], model=encoder)
        assert sum(calls) == N_FILES - done == report.encoded  # committed work is not encoded again
        assert report.added == N_FILES - done and report.unchanged == done and report.failed == []
        check_consistent(lib, image_files(tree))
        assert len(lib.search(text="x", k=N_FILES, min_score=-1)) == N_FILES


def test_ctrl_c_stops_cleanly_and_keeps_the_work(tmp_path: Path, clip_model_dir: Path):
    tree = tmp_path / "photos"
    make_photo_tree(tree, 120)
    library = tmp_path / "lib"
    done = kill_when(start_index(tree, library, clip_model_dir), library / "catalog.sqlite", 20, sig=signal.SIGINT)
    assert 20 <= done < 120
    encoder = xmodal.load_model(clip_model_dir)
    calls = count_model_calls(encoder)
    with Library(library) as lib:
        index_info = lib.status()["index"][encoder.model_key]
        assert index_info["size"] == done and index_info["up_to_date"]  # the interrupted run saved its index
        report = lib.index([tree], model=encoder)
        assert sum(calls) == 120 - done and report.unchanged == done
        check_consistent(lib, image_files(tree))


def test_kill_9_during_video_indexing_loses_only_unfinished_videos(tmp_path: Path):
    """Synth-shapes videos sampled at every frame (12 per second), one at a time: killed after some
    are committed, the next run decodes only the others and the library is complete."""
    from xmodal.datasets import SynthConfig, generate_synth_shapes

    n_videos = 24
    generate_synth_shapes(tmp_path / "synth", SynthConfig(n=1, seed=4, videos=n_videos))
    tree, library = tmp_path / "synth" / "videos", tmp_path / "lib"
    catalog = library / "catalog.sqlite"
    os.environ["XMODAL_VIDEO_FPS"] = "12"
    try:
        done = kill_when(start_index(tree, library, "xmodal-tiny-shapes"), catalog, 3)
        assert 3 <= done < n_videos
        with sqlite3.connect(catalog) as conn:  # what was committed is whole: rows with vectors and moments
            committed = {h for (h,) in conn.execute("SELECT content_hash FROM items WHERE status = 'ok'")}
            for table in ("embeddings", "segments"):
                having = {h for (h,) in conn.execute(f"SELECT DISTINCT content_hash FROM {table}")}
                assert having == committed, table
        settings.configure()
        encoder = xmodal.load_model("xmodal-tiny-shapes")
        calls = count_model_calls(encoder)
        with Library(library) as lib:
            report = lib.index([tree], model=encoder)
            assert (report.unchanged, report.added, report.encoded, report.failed) == (
                done,
                n_videos - done,
                n_videos - done,
                [],
            )
            rows = lib.catalog.items_under([str(tree)]).values()
            fresh = [r for r in rows if r.content_hash not in committed]
            assert len(fresh) == n_videos - done
            assert sum(calls) == sum(len(r.details["frame_times"]) for r in fresh)  # only those were decoded
            assert all(":12fps:" in r.details["frame_policy"] and r.details["frame_times"] for r in rows)
            hits = lib.search("a shape", k=100, type="video", min_score=-1)
            assert sorted(h.path for h in hits) == sorted(str(p) for p in tree.glob("*.mp4"))
    finally:
        del os.environ["XMODAL_VIDEO_FPS"]
        settings.configure()
