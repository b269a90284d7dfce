"""Zero-shot tags: vocabularies, calibration on the library's own scores, tag quality on synthetic
shapes with the shipped model, incremental runs, the --tag filter, and kill -9 during tagging."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import xmodal
from xmodal.datasets.shapes import COLORS, SHAPES, tag_vocabulary
from xmodal.datasets.synth_shapes import SynthConfig, generate_synth_shapes
from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.library import Library
from xmodal.tags import calibrate, default_vocabulary, load_vocabulary
from xmodal.tags.calibrate import fit_mixture

MODEL = "xmodal-tiny-shapes"
VOCABULARY = tag_vocabulary()


@pytest.fixture(scope="module")
def shapes_library(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tags")
    generate_synth_shapes(root / "synth", SynthConfig(n=360, seed=8))
    records = json.loads((root / "synth" / "dataset_synth_shapes.json").read_text())["images"]
    photos = root / "photos"
    photos.mkdir()
    for r in records[:300]:
        shutil.copy(root / "synth" / "images" / r["filename"], photos / r["filename"])
    vocabulary = root / "shapes.json"
    vocabulary.write_text(json.dumps(VOCABULARY))
    with Library(root / "lib") as lib:
        lib.index([photos], model=MODEL)
    truth = {r["filename"]: {s["color"] for s in r["shapes"]} | {s["shape"] for s in r["shapes"]} for r in records}
    return root, photos, vocabulary, truth, records


def tags_by_file(lib: Library) -> dict[str, set[str]]:
    rows = lib.catalog.items_by_id(lib.catalog.filtered_ids(type="image").tolist()).values()
    given = lib.catalog.tags.of(r.content_hash for r in rows)
    return {Path(r.path).name: {t.label for t in given.get(r.content_hash, [])} for r in rows}


def precision_recall(tags: dict[str, set[str]], truth: dict[str, set[str]]) -> tuple[float, float]:
    right = sum(len(labels & truth[name]) for name, labels in tags.items())
    given = sum(len(labels) for labels in tags.values())
    return right / given, right / sum(len(truth[name]) for name in tags)


def test_vocabulary_files(tmp_path: Path):
    default = default_vocabulary()
    assert [g.name for g in default.groups] == ["imagenet", "scenes and events"]
    assert len(default.groups[0].labels) == 998 and "tench" in default.labels and "beach" in default.labels
    assert len(set(default.labels)) == len(default.labels)
    (tmp_path / "mine.txt").write_text("# my labels\nGrandma\n\nthe lake house\nGrandma\n")
    mine = load_vocabulary(tmp_path / "mine.txt", templates="imagenet")
    assert mine.labels == ["Grandma", "the lake house"] and len(mine.groups[0].templates) == 80
    extended = load_vocabulary(tmp_path / "mine.txt", extend=True)
    assert extended.labels[:998] == default.labels[:998] and extended.labels[-2:] == ["Grandma", "the lake house"]
    (tmp_path / "birds.json").write_text(
        json.dumps({"groups": [{"labels": ["robin", "wren"], "templates": ["a photo of a {}, a type of bird."]}]})
    )
    assert load_vocabulary(tmp_path / "birds.json").groups[0].templates == ("a photo of a {}, a type of bird.",)
    (tmp_path / "cifar.json").write_text(json.dumps({"class_set": "cifar10", "templates": "simple"}))
    assert len(load_vocabulary(tmp_path / "cifar.json").labels) == 10
    assert mine.digest() != load_vocabulary(tmp_path / "mine.txt").digest()  # templates count
    for name, content, reason in [
        ("bad.json", "{nope", "not valid JSON"),
        ("empty.txt", "# nothing\n", "no labels"),
        ("notemplate.json", json.dumps({"labels": ["a"], "templates": ["a photo"]}), "has no {} for the label"),
        ("numbers.json", json.dumps([1, 2]), "is not a non-empty string"),
    ]:
        (tmp_path / name).write_text(content)
        with pytest.raises(DatasetFormatError, match=f"{name}.*{reason}"):
            load_vocabulary(tmp_path / name)


def test_calibration_finds_the_upper_group_and_leaves_out_what_it_cannot_tell():
    rng = np.random.default_rng(0)
    background = rng.normal(0.05, 0.04, size=900)
    present = rng.normal(0.35, 0.03, size=100)
    column = np.concatenate([background, present])
    mixture = fit_mixture(column)
    assert mixture.means == pytest.approx((0.05, 0.35), abs=0.01) and mixture.weights[1] == pytest.approx(0.1, abs=0.01)
    scores = np.stack([column, rng.normal(0.1, 0.05, size=1000), rng.normal(0.4, 0.02, size=1000)], axis=1)
    used, unimodal, everywhere = calibrate(["present", "noise", "everywhere"], scores, 0.9)
    assert 0.15 < used.cosine < 0.32
    kept = column >= used.cosine
    assert kept[900:].mean() > 0.95 and kept[:900].mean() < 0.01
    assert used.confidence(np.asarray([used.cosine, 0.5])).tolist() == pytest.approx([0.9, 1.0], abs=0.01)
    assert unimodal.cosine is None and "no distinct group" in unimodal.reason
    assert everywhere.cosine is None
    with pytest.raises(InvalidArgumentError, match="at least 50 photos"):
        calibrate(["a"], scores[:20], 0.9)
    with pytest.raises(InvalidArgumentError, match="--confidence"):
        calibrate(["a"], scores, 1.5)


def test_tag_quality_on_synthetic_shapes(shapes_library, tmp_path: Path):
    root, _, vocabulary, truth, _ = shapes_library
    shutil.copytree(root / "lib", tmp_path / "lib")
    with Library(tmp_path / "lib") as lib:
        report = lib.tag(vocabulary)
        assert report.new_run and report.tagged == 300 and report.calibrated_on == 300
        precision, recall = precision_recall(tags_by_file(lib), truth)
        assert precision >= 0.9 and recall >= 0.5, (precision, recall)
        off = lib.tag(vocabulary, threshold="off")
        assert off.new_run and off.tagged == 300
        tags = tags_by_file(lib)
        assert all(len(labels & set(COLORS)) == 1 and len(labels & set(SHAPES)) == 1 for labels in tags.values())
        fixed = lib.tag(vocabulary, threshold=0.99)
        assert fixed.new_run and fixed.tags == 0  # nobody scores that high: no tag rather than a wrong one


def test_tags_are_incremental_searchable_and_in_status(shapes_library, tmp_path: Path):
    root, photos, vocabulary, truth, records = shapes_library
    shutil.copytree(root / "lib", tmp_path / "lib")
    with Library(tmp_path / "lib") as lib:
        first = lib.tag(vocabulary)
        again = lib.tag(vocabulary)
        assert (again.new_run, again.tagged, again.already, again.tags) == (False, 0, 300, 0)
        for r in records[300:330]:
            shutil.copy(root / "synth" / "images" / r["filename"], photos / r["filename"])
        lib.index(model=MODEL)
        more = lib.tag(vocabulary)
        assert (more.new_run, more.tagged, more.already) == (False, 30, 300)  # only the new photos
        listed = lib.tags()
        assert listed["run"]["finished_at"] and (listed["tagged"], listed["untagged"]) == (330, 0)
        counts = {c["label"]: c["items"] for c in listed["counts"]}
        assert counts["circle"] > 0 and sum(counts.values()) == first.tags + more.tags
        status = lib.status()["tags"]
        assert status["tags"] == sum(counts.values()) and status["finished"] and status["untagged"] == 0
        colour = max((label for label in counts if label in COLORS), key=counts.get)
        both = [colour, max((label for label in counts if label in SHAPES), key=counts.get)]
        hits = lib.search("a small shape", k=300, tags=both, min_score=-1)
        assert hits and all(set(both) <= set(h.tags) for h in hits)
        tagged = tags_by_file(lib)
        assert len(hits) == sum(set(both) <= labels for labels in tagged.values())
        assert hits[0].to_dict()["tags"] == list(hits[0].tags)
        with pytest.raises(InvalidArgumentError, match="--tag 'zebra'"):
            lib.search("x", tags=["zebra"])
        (root / "colours.json").write_text(json.dumps({"groups": VOCABULARY["groups"][:1]}))
        changed = lib.tag(root / "colours.json")
        assert changed.new_run and changed.tagged == 330  # another vocabulary: everything again
        assert set().union(*tags_by_file(lib).values()) <= set(COLORS)


def test_tag_and_tags_list_commands(shapes_library, tmp_path: Path):
    from typer.testing import CliRunner

    from xmodal.cli import app

    root, _, vocabulary, _, _ = shapes_library
    shutil.copytree(root / "lib", tmp_path / "lib")
    runner = CliRunner()
    result = runner.invoke(app, ["tag", "--library", str(tmp_path / "lib"), "--vocabulary", str(vocabulary), "-q"])
    assert result.exit_code == 0, result.output
    assert "300 photos tagged (0 already)" in result.output
    listed = runner.invoke(app, ["tags", "list", "--library", str(tmp_path / "lib")])
    assert listed.exit_code == 0 and "300 photos tagged, 0 waiting" in listed.output and "circle" in listed.output
    as_json = json.loads(runner.invoke(app, ["tags", "list", "-l", str(tmp_path / "lib"), "--json"]).output)
    assert as_json["run"]["threshold"] == "auto:0.9" and as_json["counts"]
    found = runner.invoke(app, ["search", "a shape", "-l", str(tmp_path / "lib"), "--tag", "star", "--json"])
    assert all("star" in h["tags"] for h in json.loads(found.output)["hits"])
    bad = runner.invoke(app, ["tag", "--library", str(tmp_path / "lib"), "--extend"])
    assert bad.exit_code != 0 and "--extend needs --vocabulary" in bad.output


def tagged_count(catalog: Path) -> int:
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM tagged").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_9_during_tagging_then_resume(shapes_library, tmp_path: Path):
    root, _, vocabulary, _, _ = shapes_library
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    shutil.copytree(root / "lib", reference)
    shutil.copytree(root / "lib", crashed)
    with Library(reference) as lib:
        lib.tag(vocabulary)
        expected = {(h, t.label): t.score for h, tags in _all_tags(lib).items() for t in tags}
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, "-m", "xmodal", "tag", "-l", str(crashed), "--vocabulary", str(vocabulary)]
    command += ["--batch-size", "1", "--no-cache", "-q"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and tagged_count(crashed / "catalog.sqlite") < 20:
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.fail(f"tagging ended before the kill: {proc.stderr.read().decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = tagged_count(crashed / "catalog.sqlite")
    assert 20 <= done < 300  # killed part-way
    with Library(crashed) as lib:
        resumed = lib.tag(vocabulary)
        assert (resumed.new_run, resumed.already, resumed.tagged) == (False, done, 300 - done)  # none twice, none lost
        got = {(h, t.label): t.score for h, tags in _all_tags(lib).items() for t in tags}
        assert set(got) == set(expected) and all(got[k] == pytest.approx(expected[k], abs=1e-5) for k in got)
        with sqlite3.connect(crashed / "catalog.sqlite") as conn:
            assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM tagged").fetchone() == (300, 300)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _all_tags(lib: Library) -> dict:
    rows = lib.catalog.items_by_id(lib.catalog.filtered_ids(type="image").tolist()).values()
    return lib.catalog.tags.of(r.content_hash for r in rows)
