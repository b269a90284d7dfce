"""Catalogued items as the HTTP API shows and serves them.

Files are only ever reached through an item id: the path comes from the catalog, never from the
request, and an item whose path (or the file its path leads to, through links) is not inside one of
the library's folders is neither listed nor served.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from datetime import datetime

from fastapi import HTTPException

from xmodal.library import Library
from xmodal.search import SearchResults
from xmodal.store.catalog import ItemRecord, display_path


def under(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies inside it (by path components, not string prefixes)."""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def library_roots(library: Library) -> list[str]:
    return [root.path for root in library.catalog.roots()]


def visible_results(results: SearchResults, roots: list[str]) -> SearchResults:
    """The results without hits outside the library's folders (ranks renumbered)."""
    hits = [hit for hit in results.hits if any(under(hit.path, root) for root in roots)]
    if len(hits) == len(results.hits):
        return results
    return replace(results, hits=[replace(hit, rank=n) for n, hit in enumerate(hits, 1)])


def catalogued(library: Library, item_id: int) -> ItemRecord:
    """The catalog's row of `item_id`; 404 when there is none, or it lies outside the library's folders."""
    record = library.catalog.items_by_id([item_id]).get(item_id)
    if record is None or not any(under(record.path, root) for root in library_roots(library)):
        raise HTTPException(404, f"no item {item_id} in this library")
    return record


def locate(record: ItemRecord, library: Library) -> tuple[str, os.stat_result]:
    """The real location (links resolved) of the item's file and its stat(); refused unless it is a
    regular file inside one of the library's folders."""
    real = os.path.realpath(record.path)
    roots = [os.path.realpath(root) for root in library_roots(library)]
    if not any(under(real, root) for root in roots):
        raise HTTPException(403, f"item {record.id}: its file now leads outside the library's folders")
    try:
        result = os.stat(real)
    except FileNotFoundError:
        raise HTTPException(
            404, f"item {record.id}: its file is gone (moved or deleted since it was indexed)"
        ) from None
    except OSError as exc:
        raise HTTPException(503, f"item {record.id}: its file cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(result.st_mode):
        raise HTTPException(404, f"item {record.id}: its path is no longer a regular file")
    return real, result


def unchanged_since_indexed(record: ItemRecord, result: os.stat_result) -> bool:
    """Whether the file is still what the catalog describes (so its content hash still holds)."""
    return (result.st_size, result.st_mtime_ns) == (record.size, record.mtime_ns)


def item_details(record: ItemRecord, library: Library) -> dict:
    """The JSON form of one item: what the catalog knows, and the models it is embedded for."""
    with library.catalog.read():
        models = [m.name for m in library.catalog.models() if _embedded(library, m.key, record.id)]
    return {
        "item_id": record.id,
        "type": record.type,
        "status": record.status,
        "error": record.error,
        "path": display_path(record.path),
        "path_bytes": base64.b64encode(os.fsencode(record.path)).decode("ascii"),
        "name": display_path(os.path.basename(record.path)),
        "size": record.size,
        "modified_at": _iso(record.mtime_ns / 1e9),
        "taken_at": _iso(record.taken_at),
        "taken_at_source": record.taken_at_source,
        "added_at": _iso(record.added_at),
        "width": record.width,
        "height": record.height,
        "duration": record.duration,
        "fps": record.fps,
        "codec": record.codec,
        "rotation": record.rotation,
        "details": record.details or {},
        "models": models,
        "thumbnail": f"/api/items/{record.id}/thumbnail" if record.type in ("image", "video") else None,
        "file": f"/api/items/{record.id}/file",
    }


def _embedded(library: Library, model_key: str, item_id: int) -> bool:
    ids, _ = library.catalog.vectors(model_key, [item_id])
    return len(ids) > 0


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else None
