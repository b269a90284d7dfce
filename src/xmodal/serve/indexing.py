"""Index runs started over HTTP: one at a time, on a thread of their own, followed by polling or
server-sent events.

A run rescans the library's folders (the roots it was indexed from; a request never names a path)
with the library's model, holding the library's writer lock like `xmodal index`: a run of another
process is reported with its holder instead of started. Searches go on meanwhile (readers never
wait). Cancelling stops the run after the batch being committed, keeping all work done so far, as
Ctrl-C does for `xmodal index`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from xmodal.errors import LibraryBusyError, XmodalError
from xmodal.library import Library
from xmodal.store.ingest import IndexReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexRunState:
    """What the server's index run is doing (or last did). `version` grows with every change."""

    state: str = "idle"
    run: int = 0  # runs started by this server so far
    phase: str | None = None  # "scanning" (walking the folders), then "indexing" (reading and embedding)
    done: int = 0
    total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    report: dict | None = None
    error: str | None = None
    version: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Progress:
    """The Progress a run reports to; raises KeyboardInterrupt (the ingest's stop signal) once a
    cancel was asked for."""

    runs: IndexRuns
    cancel: threading.Event = field(default_factory=threading.Event)

    def start(self, description: str, total: int | None) -> None:
        self.runs._update(phase=description, done=0, total=total)
        self._check()

    def advance(self, n: int = 1) -> None:
        self.runs._advance(n)
        self._check()

    def _check(self) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt


class IndexRunBusyError(XmodalError):
    """An index run is going already (this server's, or another process's)."""

    def __init__(self, reason: str, holder: str | None = None):
        super().__init__(reason)
        self.holder = holder


class IndexRuns:
    """Starts, follows and cancels the index runs of one library."""

    def __init__(self, library: Library, on_change: Callable[[IndexRunState], None] | None = None):
        self.library = library
        self.on_change = on_change
        self._state = IndexRunState()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._progress: _Progress | None = None
        self._writer: tuple[float, str | None] = (float("-inf"), None)

    @property
    def state(self) -> IndexRunState:
        return self._state

    def writer(self) -> str | None:
        """Who holds the library's writer lock right now (this server's run included), or None."""
        holder = self.library.writer()
        self._writer = (time.monotonic(), holder)
        return holder

    def writer_now(self, max_age: float = 1.0) -> str | None:
        """Who holds the writer lock: this server while its run goes, else `writer()` as seen at most
        `max_age` seconds ago (however many clients follow, the lock is probed about once a second:
        a probe holds it shared for an instant)."""
        run = self._state
        if run.state == "running":
            since = datetime.fromtimestamp(run.started_at or time.time()).isoformat(sep=" ", timespec="seconds")
            return f"PID {os.getpid()} (this server) since {since}"
        seen, holder = self._writer
        if time.monotonic() - seen > max_age:
            return self.writer()
        return holder

    def start(self) -> IndexRunState:
        """Start a run of the library's folders; IndexRunBusyError when one is going already."""
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                raise IndexRunBusyError("an index run of this server is going already")
            holder = self.writer()
            if holder is not None:
                raise IndexRunBusyError(f"the library is being indexed by {holder}", holder)
            if not self.library.catalog.roots():
                raise IndexRunBusyError("the library has no folders to index yet: index one with xmodal index PATH")
            self._progress = _Progress(self)
            self._set(
                IndexRunState(
                    state="running", run=self._state.run + 1, started_at=time.time(), version=self._state.version
                )
            )
            self._thread = threading.Thread(target=self._run, args=(self._progress,), name="xmodal-index", daemon=True)
            self._thread.start()
            return self._state

    def cancel(self) -> IndexRunState:
        """Ask the running run to stop after its current batch; IndexRunBusyError when none runs."""
        with self._guard:
            if self._thread is None or not self._thread.is_alive() or self._progress is None:
                raise IndexRunBusyError("no index run of this server is going")
            self._progress.cancel.set()
        self._update(cancel_requested=True)
        return self._state

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel a running run and wait (up to `timeout` s) for it to commit and end."""
        thread, progress = self._thread, self._progress
        if thread is not None and thread.is_alive() and progress is not None:
            progress.cancel.set()
            thread.join(timeout)

    def _run(self, progress: _Progress) -> None:
        try:
            report = self.library.index(progress=progress)
        except KeyboardInterrupt:  # cancelled before the first batch: nothing was half done
            self._finish("cancelled")
        except LibraryBusyError as exc:
            self._finish("failed", error=f"the library is being indexed by {exc.holder}")
        except XmodalError as exc:
            self._finish("failed", error=str(exc))
        except Exception as exc:  # the run's thread must record why it ended, whatever happened
            log.exception("index run failed")
            self._finish("failed", error=f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            self._finish("cancelled" if report.interrupted else "done", report=_report_dict(report))

    def _finish(self, state: str, *, report: dict | None = None, error: str | None = None) -> None:
        self._update(state=state, report=report, error=error, finished_at=time.time())
        log.info("index run %d %s: %s", self._state.run, state, (report or {}).get("summary") or error)

    def _advance(self, n: int) -> None:
        with self._guard:
            self._set(replace(self._state, done=self._state.done + n))

    def _update(self, **changes: object) -> None:
        with self._guard:
            self._set(replace(self._state, **changes))

    def _set(self, state: IndexRunState) -> None:
        self._state = replace(state, version=self._state.version + 1)
        if self.on_change is not None:
            self.on_change(self._state)


def _report_dict(report: IndexReport) -> dict:
    return {
        "added": report.added,
        "updated": report.updated,
        "moved": report.moved,
        "removed": report.removed,
        "unchanged": report.unchanged,
        "failed": len(report.failed),
        "pending": report.pending,
        "encoded": report.encoded,
        "reused": report.reused,
        "offline_folders": len(report.offline),
        "seconds": round(report.seconds, 3),
        "summary": report.summary(),
    }
