"""Reading media files for the library: bounded in size, hashed as they stream, and only accepted
when the file did not change while it was read.

A file larger than its kind's limit is refused before a byte is read (a 64 GB sparse `huge.jpg`
costs a stat, not the machine's memory); a file that changes while it is read (still being copied
or recorded) is read again a few times, then refused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from xmodal.errors import MediaError
from xmodal.media.hashing import new_hasher

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileContent:
    """What one stable read of a file gave: its bytes (unless only hashed), digest, size, mtime."""

    data: bytes | None
    digest: str | None
    size: int
    mtime_ns: int


def human_size(size: float) -> str:
    """1536 -> '1.5 KB', 64 * 2**30 -> '64.0 GB' (binary units, as the limits are given)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def read_file(
    path: str, limit: int, *, keep: bool = True, digest: bool = True, attempts: int = 3, limit_name: str = ""
) -> FileContent:
    """Read (`keep`) and/or hash (`digest`) a whole file of at most `limit` bytes, stable while read.

    Raises MediaError naming the file: missing, unreadable, empty, over the limit (the message names
    `limit_name`, the setting that raises it), or changing on every attempt."""
    for _ in range(attempts):
        try:
            with open(path, "rb") as fp:
                before = os.fstat(fp.fileno())
                _check_size(path, before.st_size, limit, limit_name)
                hasher = new_hasher() if digest else None
                chunks: list[bytes] = []
                total = 0
                while chunk := fp.read(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        _check_size(path, total, limit, limit_name)  # grew past the limit while read
                    if hasher is not None:
                        hasher.update(chunk)
                    if keep:
                        chunks.append(chunk)
                after = os.fstat(fp.fileno())
        except FileNotFoundError:
            raise MediaError(path, "file disappeared before it could be read") from None
        except PermissionError:
            raise MediaError(path, "permission denied") from None
        except IsADirectoryError:
            raise MediaError(path, "is a folder, not a file") from None
        except OSError as exc:
            raise MediaError(path, f"cannot read: {exc.strerror or exc}") from None
        stable = (
            (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) == (total, after.st_mtime_ns)
        )
        if stable:
            if total == 0:
                raise MediaError(path, "empty file (0 bytes)")
            data = b"".join(chunks) if keep else None
            return FileContent(data, hasher.hexdigest() if hasher else None, total, after.st_mtime_ns)
        time.sleep(0.05)
    raise MediaError(path, "file kept changing while being read (still being written?)")


def content_of(
    path: str, data: bytes, limit: int, mtime_ns: int, *, digest: bool = True, limit_name: str = ""
) -> FileContent:
    """The same checks and digest as `read_file` for content already in memory (an archive member
    named `path`): MediaError when it is empty or over the limit."""
    _check_size(path, len(data), limit, limit_name)
    if not data:
        raise MediaError(path, "empty file (0 bytes)")
    hexdigest = None
    if digest:
        hasher = new_hasher()
        hasher.update(data)
        hexdigest = hasher.hexdigest()
    return FileContent(data, hexdigest, len(data), mtime_ns)


def _check_size(path: str, size: int, limit: int, limit_name: str) -> None:
    if size > limit:
        setting = f" ({limit_name})" if limit_name else ""
        raise MediaError(path, f"file is {human_size(size)}, over the {human_size(limit)} limit{setting}")
