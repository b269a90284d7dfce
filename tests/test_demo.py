"""`xmodal demo`: the README's main job — generate, index with the shipped model, search, offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.demo import DEMO_QUERIES, run_demo
from xmodal.library import Library


def test_demo_indexes_and_searches_the_generated_library(tmp_path: Path):
    report = run_demo(tmp_path / "demo", n=40, k=3)
    assert report.photos == 40 and report.index.added == 40 and report.index.encoded == 40
    assert [s.query for s in report.searches[: len(DEMO_QUERIES)]] == [q.text for q in DEMO_QUERIES]
    for search in report.searches:
        assert len(search.results) == len(search.correct) == 3
        for hit in search.results:
            assert Path(hit.path).is_file() and Path(hit.path).parent == tmp_path / "demo" / "photos" / "images"
    example = report.searches[-1]
    assert all(Path(hit.path).name != "000000.jpg" for hit in example.results)  # the example itself is left out
    with Library(report.library) as lib:
        assert lib.status()["items"]["image"] == 40

    again = run_demo(tmp_path / "demo", n=40, k=3)  # the same folder: nothing generated or encoded again
    assert again.index.unchanged == 40 and not again.index.model_work
    assert [h.path for h in again.searches[0].results] == [h.path for h in report.searches[0].results]


def test_demo_command_prints_results_with_paths(tmp_path: Path):
    run = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--n", "30", "-q"])
    assert run.exit_code == 0, run.output
    assert "search: a red circle" in run.output
    assert "photos indexed with xmodal-tiny-shapes" in run.output
    assert "hits are right by the photos' own annotations" in run.output
    assert "images" in run.output
