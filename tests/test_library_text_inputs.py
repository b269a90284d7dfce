"""Bad and unusual text documents through a library index run: each recorded with its reason or
indexed as documented, never fatal; incremental runs; languages reach the model; bounded work on a
2 GB document; --no-text and --text-ext."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from library_helpers import PixelEmbedder, photo
from xmodal import settings
from xmodal.library import Library


class LanguageRecorder(PixelEmbedder):
    """The test embedder, noting the language each document's windows were made with."""

    def __init__(self) -> None:
        super().__init__()
        self.languages: dict[str, str | None] = {}
        self.window_calls = 0

    def text_windows(self, text, language=None, limit=None):
        self.languages[text[:20]] = language
        self.window_calls += 1
        return super().text_windows(text, language, limit)


@pytest.fixture
def small_limits():
    before = settings.current()
    settings.configure(max_text_bytes=8 << 10, max_text_windows=5)
    yield
    settings._current = before


def make_text_corpus(root: Path) -> dict[str, str]:
    """name -> "ok" or a substring of the failure reason."""
    root.mkdir(parents=True)
    (root / "plain.md").write_text("# Holiday\n\nWe walked along the beach and found shells.\n")
    (root / "legacy.txt").write_bytes("Café crème à 20 °C, très «bien».".encode("cp1252"))
    (root / "utf16.txt").write_bytes("\ufeffGrüße aus Köln".encode("utf-16-le"))
    (root / "junk.txt").write_bytes(bytes(range(256)) * 64)
    (root / "control.txt").write_bytes(bytes(range(1, 9)) * 200)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.md").write_text(" \n\t\n")
    (root / "german.md").write_text("Der Hund läuft am Strand entlang und spielt mit dem roten Ball im warmen Sand.")
    (root / "declared.md").write_text("---\ntitle: Notes\nlang: fr\n---\nLe chat dort sur le canapé rouge.")
    (root / "long.txt").write_text(" ".join(f"word{i}" for i in range(400)))
    with open(root / "huge.txt", "wb") as fp:  # 2 GB, sparse: a text beginning, then zeros
        fp.write(("the first lines of a very large log file\n" * 300).encode())
        fp.truncate(2 << 30)
    return {
        "plain.md": "ok",
        "legacy.txt": "ok",
        "utf16.txt": "ok",
        "junk.txt": "binary data, not text (a NUL byte in its first 8 KB)",
        "control.txt": "binary data, not text (1600 control characters in its first 1600)",
        "empty.txt": "empty file (0 bytes)",
        "blank.md": "no text in it (only whitespace)",
        "german.md": "ok",
        "declared.md": "ok",
        "long.txt": "ok",
        "huge.txt": "ok",
    }


def test_each_bad_text_input_is_recorded_and_the_rest_indexed(tmp_path: Path, small_limits):
    corpus = tmp_path / "docs"
    expected = make_text_corpus(corpus)
    embedder = LanguageRecorder()
    with Library(tmp_path / "lib") as lib:
        report = lib.index([corpus], model=embedder)
        rows = {Path(p).name: r for p, r in lib.catalog.items_under([str(corpus)]).items()}
        for name, outcome in expected.items():
            row = rows[name]
            assert row.type == "text", name
            if outcome == "ok":
                assert row.status == "ok", (name, row.error)
            else:
                assert row.status == "failed" and outcome in row.error, (name, row.error)
        assert len(report.failed) == 4 and report.added == 7
        assert rows["legacy.txt"].details["encoding"] == "cp1252"
        assert rows["utf16.txt"].details["encoding"] == "utf-16-le"
        assert (rows["german.md"].details["language"], rows["german.md"].details["language_source"]) == (
            "de",
            "detected",
        )
        assert rows["declared.md"].details["language"] == "fr"
        languages = {text.split()[1]: language for text, language in embedder.languages.items()}
        assert (languages["Hund"], languages["title:"], languages["Holiday"]) == ("de", "fr", "en")
        huge = rows["huge.txt"]
        assert huge.size == 2 << 30 and huge.details["read_bytes"] == 8 << 10  # only the head was read
        key = lib.catalog.models()[0].key
        assert len(lib.catalog.segments(key, rows["long.txt"].content_hash)) == 5  # max_text_windows
        hits = lib.search("beach shells", k=20, type="text", min_score=-1)
        assert {Path(h.path).name for h in hits} == {n for n, o in expected.items() if o == "ok"}

        calls = embedder.window_calls
        again = lib.index([corpus], model=embedder)
        assert (again.unchanged, again.failed, embedder.window_calls) == (11, [], calls)  # nothing read again
        (corpus / "junk.txt").write_text("now it is a real note")
        (corpus / "plain.md").write_text("# Holiday\n\nWe walked along the lake instead.\n")
        fixed = lib.index([corpus], model=embedder)
        assert (fixed.updated, fixed.encoded, embedder.window_calls - calls) == (2, 2, 2)
        assert lib.status()["failed"] == 3 and lib.status()["items"]["text"] == 8


def test_no_text_and_text_extensions(tmp_path: Path):
    from xmodal.cli import app

    tree = tmp_path / "tree"
    tree.mkdir()
    photo(1).save(tree / "a.jpg")
    (tree / "a.txt").write_text("the caption of a")
    (tree / "notes.org").write_text("* an org note")
    (tree / "readme.md").write_text("a readme")
    runner = CliRunner()

    def index(*flags):
        result = runner.invoke(
            app, ["index", str(tree), "-l", str(tmp_path / "lib"), "-m", "xmodal-tiny-shapes", "-q", *flags]
        )
        assert result.exit_code == 0, result.output
        status = json.loads(runner.invoke(app, ["status", "-l", str(tmp_path / "lib"), "--json"]).output)
        return status["items"]

    assert index("--no-text") == {"image": 1, "video": 0, "text": 0}
    assert index() == {"image": 1, "video": 0, "text": 2}
    assert index("--text-ext", "org", "--text-ext", ".md") == {"image": 1, "video": 0, "text": 2}  # a.txt gone
    with Library(tmp_path / "lib") as lib:
        names = {Path(h.path).name for h in lib.search("note", k=10, type="text", min_score=-1)}
        assert names == {"notes.org", "readme.md"}
    bad = runner.invoke(app, ["index", str(tree), "-l", str(tmp_path / "lib"), "--text-ext", ".jpg", "-q"])
    assert bad.exit_code != 0 and "invalid --text-ext '.jpg'" in str(bad.exception)


def test_kill_9_while_indexing_documents_then_resume(tmp_path: Path):
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import xmodal

    tree = tmp_path / "docs"
    tree.mkdir()
    colours, shapes = ["red", "blue", "green", "pink"], ["circle", "square", "star", "cross"]
    for i in range(200):
        words = [f"a {colours[(i + j) % 4]} {shapes[(i * 3 + j) % 4]} at the top" for j in range(1 + i % 9)]
        (tree / f"note{i:03d}.md").write_text(" and ".join(words) + f" ({i})\n")
    library = tmp_path / "lib"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    command = [sys.executable, "-m", "xmodal", "index", str(tree), "-l", str(library), "-m", "xmodal-tiny-shapes"]
    proc = subprocess.Popen([*command, "-q", "--batch-size", "1", "--workers", "1"], env=env, stderr=subprocess.PIPE)

    def committed() -> int:
        try:
            with sqlite3.connect(f"file:{library / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and committed() < 20:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail(f"indexing ended before the kill: {proc.stderr.read().decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = committed()
    assert 20 <= done < 200
    with Library(library) as lib:
        report = lib.index([tree])
        assert (report.added, report.unchanged, report.failed) == (200 - done, done, [])
        assert report.encoded == 200 - done  # nothing committed is embedded again
        key = lib.catalog.models()[0].key
        rows = lib.catalog.items_under([str(tree)])
        assert len(rows) == 200 and all(r.status == "ok" and r.type == "text" for r in rows.values())
        for row in rows.values():  # every document with its vector and its windows
            assert lib.catalog.embeddings.get_many(key, [row.content_hash])
            assert lib.catalog.segments(key, row.content_hash)
        assert len(lib.search("a red circle", k=500, min_score=-1)) == 200
