"""`xmodal eval --library DIR --captions FILE`: the user's captions against their whole library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from library_helpers import make_photo_tree
from xmodal.cli import app
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.eval.library import evaluate_library
from xmodal.eval.metrics import rank_metrics
from xmodal.library import Library


@pytest.fixture(scope="module")
def captioned_library(tmp_path_factory: pytest.TempPathFactory, clip_model_dir: Path):
    """A library of 12 photos, captions for 4 of them, one captioned photo left out of the index
    and one captioned file that does not exist."""
    root = tmp_path_factory.mktemp("captioned")
    photos = make_photo_tree(root / "photos", 12)
    outside = root / "elsewhere" / "x.png"
    outside.parent.mkdir()
    shutil.copy(make_photo_tree(root / "tmp", 1, start_seed=99)[0], outside)
    lines = [
        {"path": str(p), "captions": [f"photo number {i}", f"picture {i} of the album"]}
        for i, p in enumerate(photos[:4])
    ]
    lines += [{"path": str(outside), "caption": "not in the library"}, {"path": "gone.jpg", "caption": "absent"}]
    captions = root / "captions.jsonl"
    captions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Library(root / "lib") as lib:
        lib.index([root / "photos"], model=clip_model_dir)
    return root / "lib", captions, photos


def test_library_eval_equals_ranking_the_stored_vectors(captioned_library):
    folder, captions, photos = captioned_library
    with Library(folder) as lib:
        data = read_dataset(captions, ReadOptions(split=None))
        result = evaluate_library(lib, data)
        stored = lib.vectors()
        texts = lib.encoder().embed_texts(
            [t for i in range(4) for t in (f"photo number {i}", f"picture {i} of the album")]
        )
    where = {p: n for n, p in enumerate(stored.paths)}
    positives = [[where[str(photos[t // 2])]] for t in range(8)]
    expected = rank_metrics(texts @ stored.vectors.T, positives)
    t2i = result.directions[0]
    assert (t2i.direction, t2i.queries, t2i.gallery) == ("t2i", 8, 12)
    for key, value in expected.items():
        assert t2i.metrics[key] == pytest.approx(value, abs=1e-9), key
    i2t = result.directions[1]
    assert (i2t.queries, i2t.gallery) == (4, 8)  # captioned photos -> all captions
    assert result.format == "library"
    assert sorted(Path(m).name for m in result.missing) == ["gone.jpg", "x.png"]


def test_library_eval_cli_writes_reports(captioned_library, tmp_path: Path):
    folder, captions, _ = captioned_library
    out = tmp_path / "out"
    run = CliRunner().invoke(
        app, ["eval", "--library", str(folder), "--captions", str(captions), "--out", str(out), "-q"]
    )
    assert run.exit_code == 0, run.output
    assert "Text→Image" in run.output
    report = json.loads((out / "results.json").read_text())
    (only,) = report["results"]
    assert only["format"] == "library"
    assert only["counts"]["missing"] == 2
    assert only["directions"]["t2i"]["queries"] == 8 and only["directions"]["t2i"]["gallery"] == 12
    assert (out / "results.csv").is_file() and list(out.glob("recall_at_k_*.png"))


def test_library_eval_needs_captions_and_indexed_files(captioned_library, tmp_path: Path):
    folder, _, _ = captioned_library
    runner = CliRunner()
    assert runner.invoke(app, ["eval", "--library", str(folder)]).exit_code == 2
    foreign = tmp_path / "foreign.jsonl"
    img = make_photo_tree(tmp_path / "p", 1, start_seed=500)[0]
    foreign.write_text(json.dumps({"path": str(img), "caption": "a photo"}) + "\n")
    run = runner.invoke(app, ["eval", "--library", str(folder), "--captions", str(foreign), "-q"])
    assert run.exit_code == 1
    assert "indexed in the library" in run.output
