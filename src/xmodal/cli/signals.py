"""SIGTERM handled like Ctrl-C: long commands commit what is done and stop (exit 143, not 130)."""

from __future__ import annotations

import signal
import threading

_terminated = threading.Event()


def _on_sigterm(signum: int, frame: object) -> None:
    _terminated.set()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGTERM to KeyboardInterrupt in the main thread (a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """Whether the interruption came from SIGTERM."""
    return _terminated.is_set()
