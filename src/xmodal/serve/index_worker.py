"""The process an index run started over HTTP runs in: ``python -m xmodal.serve.index_worker LIBRARY``.

It indexes the library's folders with the library's model, as ``xmodal index --library LIBRARY``
would, at a lower CPU priority than the server so searches stay quick while it works, and in a
process of its own so its Python work never holds the server's interpreter lock. Progress goes to
stdout, one JSON object a line::

    {"event": "start", "phase": "scanning", "total": null}
    {"event": "advance", "n": 32}
    {"event": "end", "state": "done" | "cancelled" | "failed", "report": {...} | null, "error": str | null}

SIGINT (what cancelling sends) stops the run after the batch being committed; the work done is
kept, as with Ctrl-C in ``xmodal index``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from xmodal.errors import LibraryBusyError, XmodalError
from xmodal.store.ingest import IndexReport

log = logging.getLogger(__name__)

NICENESS = 10  # added to the server's: under contention the run gets a small share, else all of it


class _LineProgress:
    """A Progress that writes each report as a JSON line."""

    def __init__(self, out) -> None:
        self.out = out

    def start(self, description: str, total: int | None) -> None:
        _send(self.out, event="start", phase=description, total=total)

    def advance(self, n: int = 1) -> None:
        _send(self.out, event="advance", n=n)


def _send(out, **message: object) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def report_dict(report: IndexReport) -> dict:
    """What a run did, as the HTTP API shows it."""
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


def run(folder: str, out=sys.stdout) -> int:
    """Index the library at `folder`, reporting to `out`; the exit code says how it ended."""
    from xmodal.library import Library

    try:
        os.nice(NICENESS)
    except OSError:  # not allowed here: run at the server's priority
        pass
    try:
        with Library(folder) as library:
            if not library.exists:
                raise XmodalError(f"no library at {folder}")
            report = library.index(progress=_LineProgress(out))
    except KeyboardInterrupt:  # stopped before the first batch: nothing was half done
        _send(out, event="end", state="cancelled", report=None, error=None)
        return 130
    except LibraryBusyError as exc:
        _send(out, event="end", state="failed", report=None, error=f"the library is being indexed by {exc.holder}")
        return 75
    except XmodalError as exc:
        _send(out, event="end", state="failed", report=None, error=str(exc))
        return 1
    state = "cancelled" if report.interrupted else "done"
    _send(out, event="end", state=state, report=report_dict(report), error=None)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run(sys.argv[1]))
