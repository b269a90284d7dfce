"""Reading media files for the library: bounded in size, hashed as they stream, and only accepted
when the file did not change while it was read.

A file larger than its kind's limit is refused before a byte is read (a 64 GB sparse `huge.jpg`
costs a stat, not the machine's memory), or, for kinds whose beginning is useful on its own (text),
read only up to the limit (`head=True`); a file that changes while it is read (still being copied
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
    """What one stable read of a file gave: its bytes (unless only hashed), digest, size, mtime;
    `truncated` when only its first `limit` bytes were read (and hashed)."""

    data: bytes | None
    digest: str | None
    size: int
    mtime_ns: int
    truncated: bool = False


def human_size(size: float) -> str:
    """1536 -> '1.5 KB', 64 * 2**30 -> '64.0 GB' (binary units, as the limits are given)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def read_file(
    path: str,
    limit: int,
    *,
    keep: bool = True,
    digest: bool = True,
    attempts: int = 3,
    limit_name: str = "",
    head: bool = False,
) -> FileContent:
    """Read (`keep`) and/or hash (`digest`) a whole file of at most `limit` bytes, stable while read;
    with `head`, a larger file's first `limit` bytes instead (the digest covers those bytes).

    Raises MediaError naming the file: missing, unreadable, empty, over the limit (the message names
    `limit_name`, the setting that raises it), or changing on every attempt. Neither kept nor
    hashed (a known video, decoded from its file later), the file is only opened and checked."""
    reading = keep or digest
    for _ in range(attempts):
        try:
            with open(path, "rb") as fp:
                before = os.fstat(fp.fileno())
                if not head:
                    _check_size(path, before.st_size, limit, limit_name)
                hasher = new_hasher() if digest else None
                chunks: list[bytes] = []
                total = 0
                while reading and (chunk := fp.read(min(_CHUNK, limit - total) if head else _CHUNK)):
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
        expected = min(after.st_size, limit) if head else after.st_size
        total = total if reading else expected
        stable = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) and total == expected
        if stable:
            if total == 0:
                raise MediaError(path, "empty file (0 bytes)")
            data = b"".join(chunks) if keep else None
            truncated = after.st_size > total
            return FileContent(
                data, hasher.hexdigest() if hasher else None, after.st_size, after.st_mtime_ns, truncated
            )
        time.sleep(0.05)
    raise MediaError(path, "file kept changing while being read (still being written?)")


def content_of(
    path: str,
    data: bytes,
    limit: int,
    mtime_ns: int,
    *,
    digest: bool = True,
    limit_name: str = "",
    head: bool = False,
) -> FileContent:
    """The same checks, `head` cut and digest as `read_file` for content already in memory (an
    archive member or a dataset row named `path`): MediaError when it is empty or over the limit."""
    size = len(data)
    if head:
        data = data[:limit]
    else:
        _check_size(path, size, limit, limit_name)
    if not data:
        raise MediaError(path, "empty file (0 bytes)")
    hexdigest = None
    if digest:
        hasher = new_hasher()
        hasher.update(data)
        hexdigest = hasher.hexdigest()
    return FileContent(data, hexdigest, size, mtime_ns, size > len(data))


def _check_size(path: str, size: int, limit: int, limit_name: str) -> None:
    if size > limit:
        setting = f" ({limit_name})" if limit_name else ""
        raise MediaError(path, f"file is {human_size(size)}, over the {human_size(limit)} limit{setting}")
