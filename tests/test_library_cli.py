"""`xmodal index / search / status` end to end (Typer's runner, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from library_helpers import make_bad_corpus, make_photo_tree
from xmodal.cli import app

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def cli_library(tmp_path_factory: pytest.TempPathFactory, clip_model_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    make_photo_tree(root / "photos", 30)
    make_bad_corpus(root / "photos" / "bad")
    out = run("index", root / "photos", "--library", root / "lib", "--model", clip_model_dir, "--quiet")
    assert "added" in out and "failed" in out
    return root / "lib", root / "photos"


def test_index_again_says_no_model_work(cli_library, clip_model_dir: Path):
    library, photos = cli_library
    out = run("index", photos, "--library", library, "--quiet")  # the library's model by default
    assert "no model work needed" in out and "0 added" in out


def test_search_json_and_table(cli_library):
    library, photos = cli_library
    search = ("search", "a photo", "--library", library, "-k", "4", "--json", "--min-score", "-1")
    hits = json.loads(run(*search, "--type", "image"))["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert set(hits[0]) >= {"path", "score", "rank", "item_id", "type", "taken_at", "snippet", "tags", "caption"}
    assert {h["type"] for h in hits} == {"image"} and Path(hits[0]["path"]).is_file()
    (doc,) = json.loads(run(*search, "--type", "text"))["hits"]  # the corpus has one readable document
    assert doc["path"].endswith("notes.txt") and doc["snippet"] == "a text document"
    assert doc["moments"][0] == {
        "start": 0,
        "end": 15,
        "score": doc["moments"][0]["score"],
        "snippet": "a text document",
    }
    ref = sorted(photos.rglob("*.jpg"))[0]
    (best,) = json.loads(run("search", "--image", ref, "--library", library, "-k", "1", "--json"))["hits"]
    assert best["path"] == str(ref)
    table = run("search", "--image", ref, "--library", library, "-k", "2", "--format", "table")
    assert table.splitlines()[0].split() == ["rank", "score", "id", "type", "taken", "at", "path"]
    assert table.splitlines()[1].split()[2] == str(best["item_id"])
    floor = run("search", "a photo", "--library", library, "--min-score", "0.9999")
    assert floor.startswith("no good match")


def test_status_json_and_errors(cli_library):
    library, _ = cli_library
    status = json.loads(run("status", "--library", library, "--json"))
    assert set(status) >= {"items", "failed", "models", "index"}
    assert set(status["items"]) == {"image", "video", "text"} and status["items"]["image"] > 30
    assert status["failed"] == 6 and status["pending"]["video"] == 0 and status["items"]["text"] == 1
    assert status["models"][0]["dim"] == 32
    assert list(status["index"].values())[0]["up_to_date"] is True
    errors = run("status", "--library", library, "--errors")
    assert "zero.jpg: empty file (0 bytes)" in errors and "not a recognized image format" in errors
    as_json = json.loads(run("status", "--library", library, "--json", "--errors"))
    assert len(as_json["errors"]) == 6 and "junk.txt: binary data, not text" in errors
    assert "clip.mp4: not a readable video: corrupt, truncated or another format" in errors


def test_exit_codes(tmp_path: Path, clip_model_dir: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    run("index", bad, "--library", tmp_path / "lib", "--model", clip_model_dir, "-q", code=1)
    result = runner.invoke(app, ["search", "x", "--library", str(tmp_path / "empty")])
    assert "no library at" in str(result.exception) and not (tmp_path / "empty").exists()


def test_help_texts():
    for command in ("index", "search", "status"):
        assert "--library" in run(command, "--help")
    assert "--target-recall" in run("index", "--help")
    assert "--decay-days" in run("search", "--help")


def test_index_spec_and_tune(tmp_path: Path, clip_model_dir: Path):
    make_photo_tree(tmp_path / "photos", 60)
    library = tmp_path / "lib"
    run("index", tmp_path / "photos", "--library", library, "--model", clip_model_dir, "--index", "HNSW32", "-q")
    out = run("index", "--tune", "--target-recall", "0.9", "--library", library)
    assert out.startswith("index HNSW32: efSearch=") and "recall@10" in out
    status = json.loads(run("status", "--library", library, "--json"))
    (info,) = status["index"].values()
    assert info["spec"] == "HNSW32" and info["search_params"].startswith("efSearch=") and info["size"] == 60


def test_library_folder_defaults_to_env(tmp_path: Path):
    make_photo_tree(tmp_path / "photos", 3)
    env = {"XMODAL_LIBRARY": str(tmp_path / "envlib")}
    result = runner.invoke(app, ["index", str(tmp_path / "photos"), "-m", "xmodal-tiny-shapes", "-q"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(runner.invoke(app, ["status", "--json"], env=env).output)
    assert status["library"] == str(tmp_path / "envlib") and status["items"] == {"image": 3, "video": 0, "text": 0}
    assert (tmp_path / "envlib" / "catalog.sqlite").is_file()
