"""The saved index format: one file, written atomically, verified before anything is served.

    b"XMVINDEX" | ids (count x int64 LE) | payload (backend bytes) | header JSON | sha256(header)
    | header length (u64 LE) | b"XMVIEND1"

The header (spec, kind, dim, count, search params, sizes and SHA-256 of the ids and of the
payload) sits in a trailer so the payload can be streamed out without holding it in memory; a
truncated file loses its trailer and is caught at once. `read` checks sizes and both checksums
before the backend parses a byte, then compares the ids with the catalog's.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from xmodal.errors import IndexCorruptError, StaleIndexError

FORMAT = 1
_MAGIC = b"XMVINDEX"
_END = b"XMVIEND1"
_TRAILER = 32 + 8 + len(_END)  # header digest, header length, end marker
_CHUNK = 1 << 22

T = TypeVar("T")


class _HashingWriter:
    """Writes through to a file while counting and hashing what passes."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.file.write(view)
        self.sha.update(view)
        self.size += len(view)
        return len(view)


def write(path: Path, header: dict[str, Any], ids: np.ndarray, write_payload: Callable) -> None:
    """Write ids, the payload streamed by `write_payload(write)` and the header to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per writer
    tmp = Path(name)
    os.fchmod(fd, 0o644)  # mkstemp makes it private; an index is as readable as the catalog beside it
    ids_bytes = np.ascontiguousarray(ids, dtype="<i8").tobytes()
    try:
        with open(fd, "wb") as file:
            file.write(_MAGIC)
            file.write(ids_bytes)
            payload = _HashingWriter(file)
            extra = write_payload(payload.write)
            full = {
                **header,
                **extra,
                "format": FORMAT,
                "count": len(ids),
                "ids_sha256": hashlib.sha256(ids_bytes).hexdigest(),
                "payload_bytes": payload.size,
                "payload_sha256": payload.sha.hexdigest(),
            }
            blob = json.dumps(full, sort_keys=True).encode()
            file.write(blob + hashlib.sha256(blob).digest() + struct.pack("<Q", len(blob)) + _END)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of a saved index after checking its frame (magic, trailer, sizes, header digest)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return _read_header(path, file)
    except OSError as error:
        raise IndexCorruptError(path, f"cannot read: {error.strerror or error}") from error


def read(
    path: str | Path,
    build: Callable[[dict[str, Any], np.ndarray, Callable[[int], bytes]], T],
    expected_ids: np.ndarray | None = None,
) -> T:
    """Verify a saved index and hand its header, ids and a payload reader to `build`."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            header = _read_header(path, file)
            file.seek(len(_MAGIC))
            ids_bytes = file.read(header["count"] * 8)
            if hashlib.sha256(ids_bytes).hexdigest() != header["ids_sha256"]:
                raise IndexCorruptError(path, "ids checksum mismatch")
            ids = np.frombuffer(ids_bytes, dtype="<i8").astype(np.int64)
            if expected_ids is not None:
                _check_ids(path, ids, np.asarray(expected_ids, dtype=np.int64))
            payload_start = file.tell()
            _verify_payload(path, file, header)
            file.seek(payload_start)
            reader = _BoundedReader(file, header["payload_bytes"])
            try:
                result = build(header, ids, reader.read)
            except (RuntimeError, ValueError, KeyError, TypeError, struct.error) as error:
                raise IndexCorruptError(path, f"payload does not parse: {error}") from error
            if reader.left:
                raise IndexCorruptError(path, f"{reader.left} payload bytes left unread")
            return result
    except OSError as error:
        raise IndexCorruptError(path, f"cannot read: {error.strerror or error}") from error


class _BoundedReader:
    def __init__(self, file: BinaryIO, size: int):
        self.file = file
        self.left = size

    def read(self, n: int) -> bytes:
        data = self.file.read(min(n, self.left))
        self.left -= len(data)
        return data


def _read_header(path: Path, file: BinaryIO) -> dict[str, Any]:
    size = os.fstat(file.fileno()).st_size
    if size < len(_MAGIC) + _TRAILER or file.read(len(_MAGIC)) != _MAGIC:
        raise IndexCorruptError(path, "not an xmodal index file (bad start marker)")
    file.seek(size - _TRAILER)
    trailer = file.read(_TRAILER)
    digest, (length,), end = trailer[:32], struct.unpack("<Q", trailer[32:40]), trailer[40:]
    if end != _END or length > size - len(_MAGIC) - _TRAILER:
        raise IndexCorruptError(path, "truncated or damaged (bad end marker)")
    file.seek(size - _TRAILER - length)
    blob = file.read(length)
    if hashlib.sha256(blob).digest() != digest:
        raise IndexCorruptError(path, "header checksum mismatch")
    try:
        header = json.loads(blob)
        expected_size = len(_MAGIC) + 8 * header["count"] + header["payload_bytes"] + length + _TRAILER
    except (ValueError, KeyError, TypeError) as error:
        raise IndexCorruptError(path, f"header unreadable: {error}") from error
    if header.get("format") != FORMAT:
        raise IndexCorruptError(path, f"format {header.get('format')!r}, this xmodal reads {FORMAT}")
    if expected_size != size:
        raise IndexCorruptError(path, f"size {size} bytes, header says {expected_size}")
    return header


def _verify_payload(path: Path, file: BinaryIO, header: dict[str, Any]) -> None:
    sha = hashlib.sha256()
    left = header["payload_bytes"]
    while left:
        chunk = file.read(min(_CHUNK, left))
        if not chunk:
            raise IndexCorruptError(path, "payload truncated")
        sha.update(chunk)
        left -= len(chunk)
    if sha.hexdigest() != header["payload_sha256"]:
        raise IndexCorruptError(path, "payload checksum mismatch")


def _check_ids(path: Path, ids: np.ndarray, expected: np.ndarray) -> None:
    if len(ids) == len(expected) and np.array_equal(np.sort(ids), np.sort(expected)):
        return
    missing = len(np.setdiff1d(expected, ids))
    extra = len(np.setdiff1d(ids, expected))
    raise StaleIndexError(
        path, f"holds {len(ids)} ids, the catalog {len(expected)} ({missing} missing from the index, {extra} extra)"
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
