"""Find the media files under folders: what the library indexes, and what it could not look at.

The walk never stops on a bad entry: unreadable folders, broken symbolic links and link loops
are yielded as `WalkProblem`s (the catalog records them as failed) and the walk goes on.
Symbolic links are skipped unless `follow_symlinks` is set; then each real folder is walked once,
so a link back to an ancestor cannot loop. Names that are not valid UTF-8 come through as
Python's surrogate-escaped `str` (round-trip with `os.fsencode`).
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xmodal.media.formats import TEXT_EXTENSIONS, media_type

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalkOptions:
    """What to walk: exclude globs (matched against the full path and the name), symbolic links,
    hidden entries (names starting with '.'), and which extensions are text documents (none: no
    text is indexed)."""

    exclude: tuple[str, ...] = ()
    follow_symlinks: bool = False
    include_hidden: bool = False
    text_extensions: frozenset[str] = TEXT_EXTENSIONS


@dataclass(frozen=True)
class MediaFile:
    """A media file found by the walk, with the stat the incremental check compares."""

    path: str  # absolute, not resolved through links
    type: str  # "image" | "video" | "text"
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WalkProblem:
    """An entry the walk could not look at, with the reason."""

    path: str
    type: str | None  # the media type its name suggests, None for folders
    reason: str
    size: int = 0
    mtime_ns: int = 0


def walk_media(
    roots: Iterable[str | os.PathLike], options: WalkOptions | None = None
) -> Iterator[MediaFile | WalkProblem]:
    """Media files and problems under `roots` (folders or single files), each path once."""
    options = options or WalkOptions()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        path = os.path.abspath(os.path.expanduser(os.fspath(root)))
        for entry in _walk_root(path, options, seen_dirs):
            if entry.path not in seen_files:
                seen_files.add(entry.path)
                yield entry


def _walk_root(path: str, options: WalkOptions, seen_dirs: set[tuple[int, int]]) -> Iterator[MediaFile | WalkProblem]:
    try:
        st = os.stat(path)
    except OSError as exc:
        yield WalkProblem(path, media_type(path, options.text_extensions), _reason(exc, path))
        return
    if stat.S_ISDIR(st.st_mode):
        seen_dirs.add((st.st_dev, st.st_ino))
        yield from _walk_dir(path, options, seen_dirs, ancestors=((st.st_dev, st.st_ino),))
    elif kind := media_type(path, options.text_extensions):
        yield MediaFile(path, kind, st.st_size, st.st_mtime_ns)


def _walk_dir(
    folder: str, options: WalkOptions, seen_dirs: set[tuple[int, int]], ancestors: tuple[tuple[int, int], ...]
) -> Iterator[MediaFile | WalkProblem]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield WalkProblem(folder, None, _reason(exc, folder))
        return
    for entry in entries:
        if not options.include_hidden and entry.name.startswith("."):
            continue
        if _excluded(entry.path, entry.name, options.exclude):
            continue
        try:
            is_link = entry.is_symlink()
            if is_link and not options.follow_symlinks:
                log.debug("skipped symbolic link %s (follow_symlinks is off)", entry.path)
                continue
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            yield WalkProblem(entry.path, media_type(entry.path, options.text_extensions), _reason(exc, entry.path))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                yield WalkProblem(
                    entry.path, None, f"symbolic link loop (points back to {os.path.realpath(entry.path)})"
                )
            elif key in seen_dirs:
                log.debug("skipped %s: folder already walked through another link", entry.path)
            else:
                seen_dirs.add(key)
                yield from _walk_dir(entry.path, options, seen_dirs, (*ancestors, key))
        elif stat.S_ISREG(st.st_mode) and (kind := media_type(entry.name, options.text_extensions)):
            yield MediaFile(entry.path, kind, st.st_size, st.st_mtime_ns)


def _excluded(path: str, name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def _reason(exc: OSError, path: str) -> str:
    """A short reason for an OSError met while walking."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link" if Path(path).is_symlink() else "not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read: {exc.strerror or exc}"
