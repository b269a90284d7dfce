"""One writer per library: an OS file lock held for the whole write, across processes and threads.

The lock is `flock` on `writer.lock` in the library folder. The kernel releases it when the holder
exits for any reason (kill -9 included), so a stale lock can never block a library; the file's
content (pid, command, start time) only serves to tell the next writer who holds it. Readers never
take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from xmodal.errors import LibraryBusyError, LibraryError

LOCK_FILE = "writer.lock"


class WriterLock:
    """Exclusive write access to a library folder (`with lock.holding(wait): ...`).

    Without `wait`, another writer holding it raises LibraryBusyError at once (naming its pid,
    command and start time); with `wait`, it blocks until the lock is free. Re-entrant within one
    thread; another thread of the same process is another writer."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._fd: int | None = None
        self._owner: int | None = None
        self._depth = 0
        self._guard = threading.Lock()

    def acquire(self, wait: bool = False) -> None:
        with self._guard:
            if self._owner == threading.get_ident():
                self._depth += 1
                return
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise LibraryError(f"{self.folder}: cannot be written ({reason}); it can only be searched") from None
        try:
            _lock_exclusive(fd, wait)
        except BlockingIOError:
            holder = describe_holder(fd)
            os.close(fd)
            raise LibraryBusyError(self.folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        _write_holder(fd)
        with self._guard:
            self._fd, self._owner, self._depth = fd, threading.get_ident(), 1

    def release(self) -> None:
        with self._guard:
            if self._owner != threading.get_ident():
                return
            self._depth -= 1
            if self._depth:
                return
            fd, self._fd, self._owner = self._fd, None, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def holding(self, wait: bool = False) -> Iterator[WriterLock]:
        self.acquire(wait)
        try:
            yield self
        finally:
            self.release()


def _lock_exclusive(fd: int, wait: bool) -> None:
    """flock(LOCK_EX); without `wait`, a few quick retries first: `Library.writer()` probes with a
    shared lock held for microseconds, which must not turn a starting writer away."""
    if wait:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    for delay in (0.005, 0.02, 0.05, None):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if delay is None:
                raise
            time.sleep(delay)


def _write_holder(fd: int) -> None:
    program = "xmodal" if "xmodal" in sys.argv[0] else Path(sys.argv[0]).name
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "command": [program, *sys.argv[1:6]],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def describe_holder(fd: int) -> str:
    """'PID 1234 (xmodal index ~/Pictures) since 2026-12-01 10:42:01' from the lock file's content."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = datetime.fromtimestamp(float(info["since"])).isoformat(sep=" ", timespec="seconds")
        command = " ".join(map(str, info.get("command") or []))
        return f"PID {int(info['pid'])}" + (f" ({command})" if command else "") + f" since {since}"
    except (ValueError, KeyError, TypeError, IndexError, OSError):
        return "another process"  # the holder has not written its name yet
