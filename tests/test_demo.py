"""`xmodal demo`: the README's main job — generate, index with the shipped model, search, offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.datasets.shapes import Shape
from xmodal.demo import DEMO_FORMS, demo_queries, run_demo
from xmodal.library import Library


def test_demo_queries_ask_for_the_most_frequent_shapes():
    red = Shape("red", "circle", "small", (0, 0))
    scenes = [[red, Shape("blue", "star", "large", (1, 1))], [Shape("red", "circle", "large", (2, 2))], [red]]
    queries = demo_queries(scenes)
    assert queries[0] == ("a red circle", [(red, frozenset({"color"}))])  # in 3 scenes
    texts = [text for text, _ in queries]
    # no third colour+kind to ask for; then size+colour and colour+position of the commonest shape
    assert texts[1:3] == ["a blue star", "a small red circle"] and len(texts) == 4
    assert texts[3].startswith("a red circle ") and "left" in texts[3]
    assert queries[3][1] == [(red, frozenset({"color", "position"}))]


def test_demo_indexes_the_library_and_finds_what_it_asks_for(tmp_path: Path):
    report = run_demo(tmp_path / "demo", k=3)
    assert report.photos == 200 and report.index.added == 200 and report.index.encoded == 200
    assert len(report.searches) == len(DEMO_FORMS)
    for search in report.searches:
        assert search.relevant >= 3 and len(search.results) == len(search.correct) == 3
        for hit in search.results:
            assert Path(hit.path).parent == tmp_path / "demo" / "photos" / "images" and Path(hit.path).is_file()
    right = sum(sum(s.correct) for s in report.searches)
    assert right >= 12, [(s.query, s.correct) for s in report.searches]  # 13 of 15 with the shipped model
    with Library(report.library) as lib:
        assert lib.status()["items"]["image"] == 200

    again = run_demo(tmp_path / "demo", k=3)  # the same folder: nothing generated or encoded again
    assert again.index.unchanged == 200 and not again.index.model_work
    assert [h.path for h in again.searches[0].results] == [h.path for h in report.searches[0].results]


def test_demo_command_prints_results_with_paths(tmp_path: Path):
    run = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--n", "60", "-q"])
    assert run.exit_code == 0, run.output
    assert "60 photos indexed with xmodal-tiny-shapes" in run.output
    assert "hits are right by the photos' own annotations" in run.output
    assert str(tmp_path / "d" / "photos" / "images") in run.output
