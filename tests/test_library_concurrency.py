"""Many callers at once, with real threads and processes: searches answered during an index run
(seeing each committed batch), one writer per library (the others told who holds it), kill -9 of
the holder, SIGTERM, parallel searches, and a library on read-only storage."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import xmodal
from library_helpers import PixelEmbedder, make_photo_tree
from xmodal.errors import LibraryBusyError
from xmodal.library import Library

SHIPPED = "xmodal-tiny-shapes"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(Path(xmodal.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
}


def xmodal_cli(*args: object, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "xmodal", *map(str, args)]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def count_ok(library: Path) -> int:
    """Committed items, read as another process would (0 while the catalog is being created)."""
    try:
        with sqlite3.connect(f"file:{library / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("concurrency") / "photos"
    make_photo_tree(tree, 400)
    return tree


def test_searches_in_another_process_answer_during_an_index_run_and_see_its_batches(tmp_path: Path, big_tree: Path):
    library = tmp_path / "lib"
    first = sorted(big_tree.rglob("*.png"))[0]
    with Library(library) as lib:
        lib.index([first], model=SHIPPED)
    run = xmodal_cli("index", big_tree, "-l", library, "--batch-size", "4", "--workers", "1", "-q")
    seen, during = [], 0
    with Library(library) as lib:
        while run.poll() is None:
            hits = lib.search(image=first, k=1000)
            seen.append(len(hits))
            during += run.poll() is None
        assert run.wait() == 0, run.stderr.read()
        final = len(lib.search(image=first, k=1000))
    assert final == 400 and during >= 3
    assert seen == sorted(seen)  # never loses what it saw
    assert any(1 < n < 400 for n in seen)  # batches committed mid-run were served


def test_a_shared_library_object_searches_while_its_own_thread_indexes(tmp_path: Path, big_tree: Path):
    embedder = PixelEmbedder()
    first = sorted(big_tree.rglob("*.png"))[0]
    from xmodal.store.ingest import EmbedConfig

    with Library(tmp_path / "lib") as lib:
        lib.index([first], model=embedder)
        thread = threading.Thread(
            target=lib.index, args=([big_tree],), kwargs={"model": embedder, "config": EmbedConfig(batch_size=4)}
        )
        thread.start()
        seen = []
        while thread.is_alive():
            seen.append(len(lib.search(image=first, k=1000, model=embedder)))
        thread.join()
        assert len(lib.search(image=first, k=1000, model=embedder)) == 400
    assert seen == sorted(seen) and len(seen) >= 3


def start_and_freeze(library: Path, *args: object) -> subprocess.Popen:
    """An `xmodal index` run stopped (SIGSTOP) once it has committed some work: it holds the library."""
    run = xmodal_cli("index", *args, "-l", library, "--batch-size", "4", "--workers", "1", "-q")
    deadline = time.monotonic() + 120
    while not (library / "catalog.sqlite").exists() or count_ok(library) < 20:
        assert time.monotonic() < deadline and run.poll() is None, run.stderr.read() if run.poll() else "timeout"
        time.sleep(0.01)
    run.send_signal(signal.SIGSTOP)
    return run


def test_two_writers_one_indexes_the_other_says_who_and_kill_9_frees_the_library(tmp_path: Path, big_tree: Path):
    library = tmp_path / "lib"
    holder = start_and_freeze(library, big_tree, "-m", SHIPPED)
    other = xmodal_cli("index", big_tree, "-l", library, "-q")
    assert other.wait(60) == 75
    message = other.stderr.read()
    assert f"being indexed by PID {holder.pid} (xmodal index" in message and "--wait" in message
    with Library(library) as lib:
        assert lib.status()["writer"].startswith(f"PID {holder.pid}")
        assert len(lib.search("a red circle", k=1000, min_score=-1)) == count_ok(library)  # readers go on
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert count_ok(library) < 400  # killed mid-run
    rerun = xmodal_cli("index", "-l", library, "-q")  # no paths: the library's roots
    assert rerun.wait(120) == 0, rerun.stderr.read()
    with sqlite3.connect(library / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paths = [p for (p,) in conn.execute("SELECT path FROM items")]
    assert len(paths) == len(set(paths)) == 400
    with Library(library) as lib:
        assert lib.status()["writer"] is None


def test_a_writer_can_wait_for_the_other(tmp_path: Path, big_tree: Path):
    library = tmp_path / "lib"
    holder = start_and_freeze(library, big_tree, "-m", SHIPPED)
    waiter = xmodal_cli("index", big_tree, "-l", library, "--wait", "-q")
    time.sleep(1.0)
    assert waiter.poll() is None  # blocked on the lock, not failed
    holder.send_signal(signal.SIGCONT)
    assert holder.wait(120) == 0 and waiter.wait(120) == 0
    assert "400 unchanged" in waiter.stdout.read()


def test_threads_of_one_process_are_writers_too(tmp_path: Path, big_tree: Path):
    embedder = PixelEmbedder()
    with Library(tmp_path / "lib") as lib:
        lib.index([sorted(big_tree.rglob("*.png"))[0]], model=embedder)
        started = threading.Event()

        def slow_pixels(pixels, real=embedder.embed_pixels):
            started.set()
            time.sleep(0.2)
            return real(pixels)

        embedder.embed_pixels = slow_pixels
        thread = threading.Thread(target=lib.index, args=([big_tree],), kwargs={"model": embedder})
        thread.start()
        started.wait(30)
        with pytest.raises(LibraryBusyError, match=f"being indexed by PID {os.getpid()}"):
            lib.index([big_tree], model=embedder)
        thread.join()


def test_sigterm_commits_what_is_done_and_exits_143(tmp_path: Path, big_tree: Path):
    library = tmp_path / "lib"
    run = start_and_freeze(library, big_tree, "-m", SHIPPED)
    run.send_signal(signal.SIGTERM)
    run.send_signal(signal.SIGCONT)
    assert run.wait(60) == 143, run.stderr.read()
    kept = count_ok(library)
    assert 20 <= kept < 400
    with Library(library) as lib:
        report = lib.index()
        assert report.unchanged == kept and report.added == 400 - kept


def test_parallel_search_processes_never_fail(tmp_path: Path, big_tree: Path):
    library = tmp_path / "lib"
    with Library(library) as lib:
        lib.index([big_tree], model=SHIPPED)
    catalog = library / "catalog.sqlite"
    with sqlite3.connect(catalog) as conn:  # rows changed after the index was saved: every reader catches up
        conn.execute("UPDATE items SET revision = revision + 1 WHERE id % 7 = 0")
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
        conn.execute("INSERT INTO revisions SELECT CAST(value AS INTEGER), 'x', 0 FROM meta WHERE key = 'revision'")
    script = (
        "import sys\nfrom xmodal.library import Library\n"
        "with Library(sys.argv[1]) as lib:\n"
        "    for _ in range(30):\n"
        "        assert len(lib.search('a red circle', k=5, min_score=-1)) == 5\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(library)], env=ENV, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [(r.wait(120), r.stderr.read()) for r in runs]
    assert errors == [(0, "")] * 6
    assert not [p for p in library.rglob("*") if ".tmp" in p.name]


def test_worker_count_is_checked(tmp_path: Path):
    make_photo_tree(tmp_path / "photos", 2)
    run = xmodal_cli("index", tmp_path / "photos", "-l", tmp_path / "lib", "-m", SHIPPED, "--workers", "-1")
    assert run.wait(60) == 2 and "--workers" in run.stderr.read()


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run_as_nobody(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not shutil.which("setpriv") or os.geteuid() != 0, reason="needs root and setpriv to drop to nobody")
def test_a_library_on_read_only_storage_is_searchable(tmp_path: Path, big_tree: Path):
    home = Path(tempfile.mkdtemp(prefix="xmodal-readonly-"))  # pytest's own folders are closed to others
    try:
        os.chmod(home, 0o755)
        env = {**ENV, "XMODAL_CACHE": str(home / "cache"), "HOME": str(home)}
        os.makedirs(home / "cache", mode=0o777)
        if run_as_nobody("-c", "import xmodal", env=env).returncode:
            pytest.skip("the user nobody cannot read this checkout")
        library = home / "lib"
        with Library(library) as lib:
            lib.index([big_tree], model=SHIPPED)
        for path in [library, *library.rglob("*")]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        for command in (["search", "a red circle", "-k", "3"], ["status"]):
            out = run_as_nobody("-m", "xmodal", *command, "-l", str(library), env=env)
            assert out.returncode == 0, out.stderr
        out = run_as_nobody("-m", "xmodal", "index", "-l", str(library), env=env)
        assert out.returncode == 1 and "can only be searched" in out.stderr
    finally:
        for path in [home, *home.rglob("*")]:
            os.chmod(path, 0o755)
        shutil.rmtree(home, ignore_errors=True)
