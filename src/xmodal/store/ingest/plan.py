"""Ingest, stage 1: walk the roots and compare with the catalog to decide what work each file needs.

Only reads the catalog. A file whose size, mtime and type match its row is not read again (rclip's
scheme); a changed or new file becomes a `FileJob` for the embed stage; rows of files gone from the
walked folders are kept aside so the commit stage can recognise moves (same content at a new path)
before it deletes the rest. A root that vanished or became empty as a whole (an unmounted drive)
is not taken as proof its files are gone: it is marked offline and its rows are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from xmodal.media.walk import MediaFile, WalkOptions, WalkProblem, walk_media
from xmodal.store.catalog import Catalog, ItemRecord, ItemUpdate


@dataclass(frozen=True)
class FileJob:
    """A file the embed stage must read (picklable; no catalog inside). `known_hash` is its content
    hash when the file is unchanged and only lacks an embedding of this model. `data` holds the
    content of an item that is no file of its own (an archive member, named `archive#member`):
    the embed stage takes it instead of reading `path`, under the same size limit."""

    path: str
    type: str
    size: int
    mtime_ns: int
    known_hash: str | None = None
    data: bytes | None = None


@dataclass
class IngestPlan:
    """What one index run will do, decided before any file is read."""

    roots: list[str]  # as walked: absolute, symbolic links in them resolved
    jobs: list[FileJob] = field(default_factory=list)
    rows: list[ItemUpdate] = field(default_factory=list)  # written at once: what the walk could not read
    existing: dict[str, ItemRecord] = field(default_factory=dict)  # rows under the online roots, by path
    gone: dict[str, ItemRecord] = field(default_factory=dict)  # rows whose file is no longer there
    offline: dict[str, str] = field(default_factory=dict)  # root -> why it is taken as offline
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # walk problems (recorded in `rows`)


def canonical_root(path: str | os.PathLike) -> str:
    """The absolute path of a root with symbolic links resolved, so a folder indexed by its real
    path and through a link is one set of items."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def plan(
    catalog: Catalog,
    roots: list[str | os.PathLike],
    embedded: frozenset[str],
    *,
    walk: WalkOptions | None = None,
    ready_types: frozenset[str] = frozenset({"image"}),
) -> IngestPlan:
    """Decide the work of indexing `roots` for a model whose embedded content hashes are `embedded`.

    `ready_types` are the media types this version embeds; a file of another type recorded as
    pending stays unchanged until a version that embeds it runs."""
    result = IngestPlan(roots=list(dict.fromkeys(canonical_root(r) for r in roots)))
    online = []
    for root in result.roots:
        reason = _offline_reason(catalog, root)
        if reason:
            result.offline[root] = reason
        else:
            online.append(root)
    found = list(walk_media(online, walk))
    with catalog.read():
        result.existing = catalog.items_under(online)
    for entry in found:
        old = result.existing.get(entry.path)
        if isinstance(entry, WalkProblem):
            _plan_problem(result, entry, old, online)
        elif _unchanged(entry, old, embedded, ready_types):
            result.unchanged += 1
        else:
            known = old.content_hash if old is not None and _same_file(entry, old) and old.status == "ok" else None
            result.jobs.append(FileJob(entry.path, entry.type, entry.size, entry.mtime_ns, known))
    result.gone = _gone(found, result.existing, online)
    return result


def _offline_reason(catalog: Catalog, root: str) -> str | None:
    """Why a root looks unmounted rather than emptied: it is missing, or a folder with nothing in
    it, while the catalog holds items under it. A single file root that is gone was deleted."""
    with catalog.read():
        if os.path.isfile(root) or catalog.item_by_path(root) is not None or not catalog.count_under(root):
            return None
    if not os.path.lexists(root):
        return "missing (not mounted?)"
    try:
        empty = os.path.isdir(root) and not os.listdir(root)
    except OSError:
        return None  # unreadable: the walk records it
    if empty:
        return "empty folder (not mounted?)"
    return None


def _same_file(entry: MediaFile, old: ItemRecord) -> bool:
    return (old.size, old.mtime_ns, old.type) == (entry.size, entry.mtime_ns, entry.type)


def _unchanged(entry: MediaFile, old: ItemRecord | None, embedded: frozenset[str], ready: frozenset[str]) -> bool:
    if old is None or not _same_file(entry, old):
        return False
    if old.status == "ok":
        return old.content_hash in embedded
    return old.status == "failed" or entry.type not in ready


def _plan_problem(result: IngestPlan, entry: WalkProblem, old: ItemRecord | None, roots: list[str]) -> None:
    if old is not None and old.status == "failed" and old.error == entry.reason:
        result.unchanged += 1
        return
    result.failed.append((entry.path, entry.reason))
    if entry.path in roots and not os.path.lexists(entry.path):
        return  # a root that does not exist: nothing to record
    result.rows.append(ItemUpdate(entry.path, entry.type, "failed", entry.size, entry.mtime_ns, error=entry.reason))


def _gone(
    found: list[MediaFile | WalkProblem], existing: dict[str, ItemRecord], roots: list[str]
) -> dict[str, ItemRecord]:
    """Rows of files no longer under the roots (a file root that no longer exists included); rows
    under folders the walk could not read are kept (an unreadable folder is not proof its files are
    gone)."""
    seen = {
        e.path for e in found if not (isinstance(e, WalkProblem) and e.path in roots and not os.path.lexists(e.path))
    }
    blocked = tuple(p.path + os.sep for p in found if isinstance(p, WalkProblem) and p.type is None)
    return {
        path: row for path, row in existing.items() if path not in seen and not (blocked and path.startswith(blocked))
    }
