"""Index runs started over HTTP: one at a time, in a process of their own, followed by polling or
server-sent events.

A run rescans the library's folders (the roots it was indexed from; a request never names a path)
with the library's model, holding the library's writer lock like `xmodal index`: a run of another
process is reported with its holder instead of started. It runs in `xmodal.serve.index_worker`, a
child process at a lower CPU priority, so the server keeps its interpreter and most of the CPU for
searches (readers never wait for the writer). Cancelling sends it SIGINT: it stops after the batch
being committed, keeping all work done so far, as Ctrl-C does for `xmodal index`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from xmodal.errors import XmodalError
from xmodal.library import Library
from xmodal.settings import Settings

log = logging.getLogger(__name__)

# Settings an index run depends on, handed to its process as the variables they are read from.
_WORKER_SETTINGS = {
    "threads": "XMODAL_THREADS",
    "cache": "XMODAL_CACHE",
    "offline": "XMODAL_OFFLINE",
    "max_image_bytes": "XMODAL_MAX_IMAGE_BYTES",
    "max_video_bytes": "XMODAL_MAX_VIDEO_BYTES",
    "max_text_bytes": "XMODAL_MAX_TEXT_BYTES",
    "video_fps": "XMODAL_VIDEO_FPS",
    "video_max_frames": "XMODAL_VIDEO_MAX_FRAMES",
    "video_merge": "XMODAL_VIDEO_MERGE",
}


@dataclass(frozen=True)
class IndexRunState:
    """What the server's index run is doing (or last did). `version` grows with every change."""

    state: str = "idle"
    run: int = 0  # runs started by this server so far
    pid: int | None = None  # the process the run goes on in
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


_HOLDER = re.compile(r"^PID (\d+) \((.*)\) since (.+)$")


def public_holder(holder: str | None) -> str | None:
    """A lock holder as clients see it: its PID, program and start time, without the file paths of
    its command line ('PID 12 (xmodal index) since ...' for `xmodal index ~/Pictures -l /data/lib`)."""
    match = _HOLDER.match(holder or "")
    if match is None:
        return holder
    pid, command, since = match.groups()
    words = []
    for word in command.split():
        if not re.fullmatch(r"[A-Za-z][\w.-]*", word):
            break
        words.append(word)
    return f"PID {pid}" + (f" ({' '.join(words)})" if words else "") + f" since {since}"


class IndexRunBusyError(XmodalError):
    """An index run is going already (this server's, or another process's)."""

    def __init__(self, reason: str, holder: str | None = None):
        super().__init__(reason)
        self.holder = holder


class IndexRuns:
    """Starts, follows and cancels the index runs of one library."""

    def __init__(self, library: Library, settings: Settings, on_change: Callable[[IndexRunState], None] | None = None):
        self.library = library
        self.settings = settings
        self.on_change = on_change
        self._state = IndexRunState()
        self._guard = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._follower: threading.Thread | None = None
        self._writer: tuple[float, str | None] = (float("-inf"), None)

    @property
    def state(self) -> IndexRunState:
        return self._state

    def writer(self) -> str | None:
        """Who holds the library's writer lock right now (this server's run included), or None."""
        holder = public_holder(self.library.writer())
        self._writer = (time.monotonic(), holder)
        return holder

    def writer_now(self, max_age: float = 1.0) -> str | None:
        """Who holds the writer lock: this server's run while it goes, else `writer()` as seen at most
        `max_age` seconds ago (however many clients follow, the lock is probed about once a second:
        a probe holds it shared for an instant)."""
        run, process = self._state, self._process
        if run.state == "running" and process is not None:
            since = datetime.fromtimestamp(run.started_at or time.time()).isoformat(sep=" ", timespec="seconds")
            return f"PID {process.pid} (this server's index run) since {since}"
        seen, holder = self._writer
        if time.monotonic() - seen > max_age:
            return self.writer()
        return holder

    def start(self) -> IndexRunState:
        """Start a run of the library's folders; IndexRunBusyError when one is going already."""
        with self._guard:
            if self._state.state == "running":
                raise IndexRunBusyError("an index run of this server is going already")
            holder = self.writer()
            if holder is not None:
                raise IndexRunBusyError(f"the library is being indexed by {holder}", holder)
            if not self.library.catalog.roots():
                raise IndexRunBusyError("the library has no folders to index yet: index one with xmodal index PATH")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "xmodal.serve.index_worker", str(self.library.folder)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self._worker_env(),
            )
            self._set(
                IndexRunState(
                    state="running",
                    run=self._state.run + 1,
                    pid=self._process.pid,
                    started_at=time.time(),
                    version=self._state.version,
                )
            )
            self._follower = threading.Thread(
                target=self._follow, args=(self._process,), name="xmodal-index-follower", daemon=True
            )
            self._follower.start()
            return self._state

    def cancel(self) -> IndexRunState:
        """Ask the running run to stop after its current batch; IndexRunBusyError when none runs."""
        with self._guard:
            process = self._process
            if self._state.state != "running" or process is None or process.poll() is not None:
                raise IndexRunBusyError("no index run of this server is going")
            process.send_signal(signal.SIGINT)
            self._set(replace(self._state, cancel_requested=True))
            return self._state

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel a running run and wait (up to `timeout` s) for it to commit and end, then kill it
        (the catalog is consistent at any moment: a killed run is resumed by the next)."""
        process, follower = self._process, self._follower
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if follower is not None:
            follower.join(5)

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, variable in _WORKER_SETTINGS.items():
            value = getattr(self.settings, name)
            if value is not None:
                env[variable] = str(int(value) if isinstance(value, bool) else value)
        return env

    def _follow(self, process: subprocess.Popen) -> None:
        """Turn the run's progress lines into states until it ends (however it ends)."""
        errors: deque[str] = deque(maxlen=5)

        def read_errors() -> None:  # the run's warnings go to the server's log
            for line in process.stderr:
                errors.append(line)
                log.warning("index run %d: %s", self._state.run, line.rstrip())

        reader = threading.Thread(target=read_errors, daemon=True)
        reader.start()
        ended = False
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("event") == "start":
                self._update(phase=message["phase"], done=0, total=message["total"])
            elif message.get("event") == "advance":
                with self._guard:
                    self._set(replace(self._state, done=self._state.done + int(message["n"])))
            elif message.get("event") == "end":
                ended = True
                self._finish(message["state"], report=message.get("report"), error=message.get("error"))
        code = process.wait()
        reader.join(5)
        if not ended:
            reason = errors[-1].strip() if errors else "no message"
            self._finish("failed", error=f"the index run ended unexpectedly (exit code {code}): {reason}")

    def _finish(self, state: str, *, report: dict | None = None, error: str | None = None) -> None:
        self._update(state=state, report=report, error=error, finished_at=time.time())
        log.info("index run %d %s: %s", self._state.run, state, (report or {}).get("summary") or error)

    def _update(self, **changes: object) -> None:
        with self._guard:
            self._set(replace(self._state, **changes))

    def _set(self, state: IndexRunState) -> None:
        self._state = replace(state, version=self._state.version + 1)
        if self.on_change is not None:
            self.on_change(self._state)
