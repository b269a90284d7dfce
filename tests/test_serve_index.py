"""Index runs over real HTTP: started by POST, followed by server-sent events while searches keep
answering, one at a time, cancelled with the work done kept, and a run of another process reported
with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from library_helpers import check_consistent, make_photo_tree
from serve_helpers import SHIPPED, running_server, sse_events
from test_serve_api import SRC, metric
from xmodal.library import Library
from xmodal.settings import Settings

NEW = 400


@pytest.fixture
def growing(tmp_path):
    """A library indexed once with the shipped model, whose folder then gains NEW photos."""
    photos = tmp_path / "photos"
    make_photo_tree(photos, 8)
    lib = Library(tmp_path / "lib")
    lib.index([photos], model=SHIPPED)
    make_photo_tree(photos / "new", NEW, start_seed=1000)
    yield lib
    lib.close()


def growing_files(lib: Library) -> list:
    (root,) = lib.catalog.roots()
    return [p.resolve() for p in Path(root.path).rglob("*") if p.is_file()]


def follow(events, until=lambda run: run["state"] not in ("idle", "running")):
    """The index events (from `sse_events`) until `until(run)` holds: [(time, run)]."""
    seen = []
    for name, run in events:
        assert name == "index"
        seen.append((time.monotonic(), run))
        if until(run):
            return seen
    raise AssertionError(f"the stream ended before the run did: {seen[-1:]}")


def test_run_over_http_with_progress_events_while_searches_answer(growing):
    with running_server(Settings(), growing) as server:
        searches: list[tuple[float, float, int]] = []
        stop = threading.Event()

        def keep_searching() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    answer = client.get("/api/search", params={"q": "a red circle", "k": 10})
                    searches.append((started, time.monotonic(), answer.status_code))

        with server.client.stream("GET", "/api/index/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
            name, idle = next(events)
            assert (name, idle["state"], idle["run"], idle["writer"]) == ("index", "idle", 0, None)
            searcher = threading.Thread(target=keep_searching)
            searcher.start()
            started = server.client.post("/api/index")
            assert started.status_code == 202 and started.json()["state"] == "running" and started.json()["run"] == 1
            busy = server.client.post("/api/index")
            assert busy.status_code == 409 and "going already" in busy.json()["detail"]
            seen = follow(events)
        stop.set()
        searcher.join()
        polled = server.client.get("/api/index").json()
        metrics = server.client.get("/metrics").text

    running = [run for _, run in seen if run["state"] == "running"]
    final = seen[-1][1]
    assert running and all(run["writer"] for run in running)  # this server holds the writer lock meanwhile
    progress = [run["done"] for run in running if run["phase"] == "indexing"]
    assert progress == sorted(progress)
    assert final["state"] == "done" and final["done"] == final["total"] == NEW and final["writer"] is None
    assert final["report"]["added"] == NEW and final["report"]["failed"] == 0 and final["error"] is None
    assert polled | {"writer": None} == final | {"writer": None} and polled["finished_at"] >= polled["started_at"]
    began, ended = seen[0][0], seen[-1][0]
    during = [s for s in searches if s[0] > began and s[1] < ended]
    assert all(status == 200 for _, _, status in searches), searches
    assert during, f"no search was asked and answered within the {ended - began:.2f} s run"
    assert len(growing.search("a red circle", k=1000, min_score=-1)) == 8 + NEW
    assert metric(metrics, "xmodal_index_run_state", xmodal_index_run_state="done") == 1
    assert metric(metrics, "xmodal_index_run_files", count="done") == NEW


def test_cancel_keeps_the_work_done_and_the_next_run_finishes(growing):
    with running_server(Settings(), growing) as server:
        with server.client.stream("GET", "/api/index/events") as stream:
            events = sse_events(stream)
            assert server.client.post("/api/index").status_code == 202
            follow(events, until=lambda run: run["phase"] == "indexing" and run["done"] > 0)
            cancel = server.client.post("/api/index/cancel")
            assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
            seen = follow(events)
        stopped = seen[-1][1]
        assert stopped["state"] == "cancelled", stopped
        kept = stopped["report"]["added"]
        assert 0 < kept < NEW and stopped["done"] == kept
        assert len(growing.search("a red circle", k=1000, min_score=-1)) == 8 + kept
        assert server.client.post("/api/index/cancel").status_code == 409  # nothing runs now
        with server.client.stream("GET", "/api/index/events") as stream:
            events = sse_events(stream)
            assert server.client.post("/api/index").json()["run"] == 2
            finished = follow(events, until=lambda run: run["run"] == 2 and run["state"] != "running")[-1][1]
    assert finished["state"] == "done" and finished["report"]["added"] == NEW - kept, finished
    assert finished["report"]["unchanged"] == 8 + kept


def test_a_killed_run_is_reported_and_the_next_one_finishes_its_work(growing):
    with running_server(Settings(), growing) as server:
        with server.client.stream("GET", "/api/index/events") as stream:
            events = sse_events(stream)
            pid = server.client.post("/api/index").json()["pid"]
            follow(events, until=lambda run: run["phase"] == "indexing" and run["done"] > 0)
            os.kill(pid, signal.SIGKILL)
            killed = follow(events)[-1][1]
            assert killed["state"] == "failed" and "ended unexpectedly (exit code -9)" in killed["error"], killed
            assert server.client.get("/api/search", params={"q": "a red circle"}).status_code == 200
            assert server.client.post("/api/index").status_code == 202
            finished = follow(events, until=lambda run: run["run"] == 2 and run["state"] != "running")[-1][1]
    assert finished["state"] == "done", finished
    assert len(growing.search("a red circle", k=1000, min_score=-1)) == 8 + NEW
    check_consistent(growing, {str(p) for p in growing_files(growing)})


def test_a_run_of_another_process_is_reported_with_its_holder(growing):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from xmodal.store.lock import WriterLock\n"
            "with WriterLock(sys.argv[1]).holding():\n print('held', flush=True); time.sleep(120)",
            str(growing.folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with running_server(Settings(), growing) as server:
            refused = server.client.post("/api/index")
            assert refused.status_code == 409 and f"PID {holder.pid}" in refused.json()["detail"]
            writer = server.client.get("/api/index").json()["writer"]
            assert f"PID {holder.pid}" in writer and str(growing.folder) not in writer  # no paths of its command
            with server.client.stream("GET", "/api/index/events") as stream:
                events = sse_events(stream)
                _, first = next(events)
                assert first["state"] == "idle" and f"PID {holder.pid}" in first["writer"]
                holder.kill()
                holder.wait()
                _, freed = next(events)  # the stream tells when the other run is over
                assert freed["writer"] is None
            assert server.client.get("/api/search", params={"q": "a red circle"}).status_code == 200
            assert server.client.post("/api/index").status_code == 202
    finally:
        holder.kill()
        holder.wait()


def test_open_event_streams_do_not_hold_up_shutdown(growing):
    opened = threading.Event()

    def listen(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client, client.stream("GET", "/api/index/events") as stream:
            for _ in stream.iter_lines():
                opened.set()

    with running_server(Settings(), growing) as server:
        listener = threading.Thread(target=listen, args=(server.url,), daemon=True)
        listener.start()
        assert opened.wait(10)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5
    listener.join(5)
    assert not listener.is_alive()
