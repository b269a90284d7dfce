"""Search results as text for terminals and pipes: an aligned table that fits the terminal (long
paths shortened in the middle, never wrapped), TSV, JSON (the results' one dict form), or bare paths
one per line (what `xargs`, `feh` and rclip users expect in a pipe)."""

from __future__ import annotations

import json
import os

from xmodal.search import Hit, SearchResults
from xmodal.store.catalog import display_path

FORMATS = ("table", "tsv", "json", "paths")
WORDS_WIDTH = 40  # characters of a matched window or caption shown in the table
_ELLIPSIS = "…"


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` characters by replacing its middle with an ellipsis (the file name at
    the end and the top folders at the start both stay readable)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return _ELLIPSIS[:width]
    tail = (width - 1) // 2 + (width - 1) % 2
    head = width - 1 - tail
    return text[:head] + _ELLIPSIS + text[len(text) - tail :]


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def _cells(hit: Hit, with_time: bool) -> list[str]:
    taken = hit.taken_at.isoformat(sep=" ", timespec="minutes") if hit.taken_at else ""
    cells = [str(hit.rank), f"{hit.score:.4f}", str(hit.item_id), hit.type, taken]
    if with_time:  # a video's moments, best first (one or several, as --moments asks)
        starts = [m.start for m in hit.moments] if hit.type == "video" else []
        cells.append(" ".join(_clock(start) for start in starts))
    return cells


def words(hit: Hit) -> str:
    """What matched in words: a document's best window, a photo's caption (quoted), else ''."""
    text = hit.snippet or (hit.caption.moment.text if hit.caption and hit.caption.moment else None)
    return f'"{text}"' if text else ""


def table(results: SearchResults, width: int) -> str:
    """An aligned table `width` characters wide at most; the path column takes what is left."""
    with_time = any(h.timestamp is not None for h in results)
    with_words = any(words(h) for h in results)
    header = ["rank", "score", "id", "type", "taken at"] + (["at"] if with_time else [])
    header += (["words"] if with_words else []) + ["path"]
    rows = [
        _cells(hit, with_time)
        + ([shorten_middle(display_path(words(hit)), WORDS_WIDTH)] if with_words else [])
        + [display_path(hit.path)]
        for hit in results
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    room = max(12, width - sum(widths) - 2 * len(widths))
    lines = []
    for row in [header, *rows]:
        left = "  ".join(
            cell.rjust(w) if i < 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        )
        lines.append(f"{left}  {shorten_middle(row[-1], room)}".rstrip())
    return "\n".join(lines)


def tsv(results: SearchResults) -> str:
    """Tab-separated with a header; paths are display paths (control characters escaped); a last
    column `words` (a document's matched window, a photo's caption) when any hit has them."""
    with_words = any(words(hit) for hit in results)
    lines = ["rank\tscore\titem_id\ttype\ttaken_at\ttimestamp\tpath" + ("\twords" if with_words else "")]
    for hit in results:
        d = hit.to_dict()
        timestamp = "" if d["timestamp"] is None else f"{d['timestamp']:.3f}"
        line = f"{hit.rank}\t{d['score']}\t{hit.item_id}\t{hit.type}\t{d['taken_at'] or ''}\t{timestamp}\t{d['path']}"
        lines.append(line + (f"\t{' '.join(display_path(words(hit)).split())}" if with_words else ""))
    return "\n".join(lines)


def as_json(results: SearchResults) -> str:
    return json.dumps(results.to_dict(), indent=2, ensure_ascii=False)


def paths(results: SearchResults, *, raw: bool, separator: bytes = b"\n") -> bytes:
    """One path per line: the file system's exact bytes when `raw` (a pipe), else display paths."""
    names = [os.fsencode(h.path) if raw else display_path(h.path).encode() for h in results]
    return b"".join(name + separator for name in names)
