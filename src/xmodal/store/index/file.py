"""The saved index format: one file, written atomically, mapped into memory when opened, and never
served from a block that was not verified.

    b"XMVINDEX" | ids (count x int64 LE) | payload (backend bytes) | header JSON | sha256(header)
    | header length (u64 LE) | b"XMVIEND2"

The header (spec, kind, dim, count, search params, sizes, an XXH3 digest of the ids and one of
every payload block) sits in a trailer so the payload can be streamed out without holding it in
memory; a truncated file loses its trailer or its size and is refused at once.

Opening (`open_index_file`) checks the frame (markers, sizes, the header's SHA-256) and the ids,
and maps the payload without reading it: opening a 1 GB index costs a millisecond, not a second.
Each payload block is checked against its digest the first time anything reads it (`check`), so
an exact scan verifies what it scans as it goes and a damaged block raises IndexCorruptError
before a result computed from it is returned; `verify()` checks every block (writers after each
save, `xmodal status --verify`). XXH3 runs at memory speed (~8 GB/s a core here; SHA-256 1.2,
BLAKE2b 0.4), which is what makes checking on every open affordable.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import xxhash

from xmodal.errors import IndexCorruptError, StaleIndexError

FORMAT = 2
BLOCK_BYTES = 1 << 19  # payload checksum granularity unless the backend asks for its own
_MAGIC = b"XMVINDEX"
_END = b"XMVIEND2"
_TRAILER = 32 + 8 + len(_END)  # header digest, header length, end marker


def _digest(data) -> str:
    return xxhash.xxh3_64_hexdigest(data)


class _BlockHashingWriter:
    """Writes through to a file while counting the bytes and hashing them in fixed-size blocks."""

    def __init__(self, file: BinaryIO, block_bytes: int):
        self.file = file
        self.block_bytes = block_bytes
        self.size = 0
        self.digests: list[str] = []
        self._hasher = xxhash.xxh3_64()
        self._filled = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.file.write(view)
        self.size += len(view)
        while len(view):
            take = min(self.block_bytes - self._filled, len(view))
            self._hasher.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.block_bytes:
                self._close_block()
        return self.size

    def _close_block(self) -> None:
        self.digests.append(self._hasher.hexdigest())
        self._hasher = xxhash.xxh3_64()
        self._filled = 0

    def finish(self) -> list[str]:
        if self._filled:
            self._close_block()
        return self.digests


def write(
    path: Path, header: dict[str, Any], ids: np.ndarray, write_payload: Callable, block_bytes: int = BLOCK_BYTES
) -> None:
    """Write ids, the payload streamed by `write_payload(write)` and the header to `path`
    atomically; the payload is checksummed in blocks of `block_bytes`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per writer
    tmp = Path(name)
    os.fchmod(fd, 0o644)  # mkstemp makes it private; an index is as readable as the catalog beside it
    ids_bytes = np.ascontiguousarray(ids, dtype="<i8").tobytes()
    try:
        with open(fd, "wb") as file:
            file.write(_MAGIC)
            file.write(ids_bytes)
            payload = _BlockHashingWriter(file, block_bytes)
            extra = write_payload(payload.write)
            full = {
                **header,
                **extra,
                "format": FORMAT,
                "count": len(ids),
                "ids_xxh3": _digest(ids_bytes),
                "payload_bytes": payload.size,
                "block_bytes": block_bytes,
                "block_xxh3": payload.finish(),
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
    """The header of a saved index after checking its frame (markers, sizes, header digest)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < len(_MAGIC) + _TRAILER or file.read(len(_MAGIC)) != _MAGIC:
                raise IndexCorruptError(path, "not an xmodal index file (bad start marker)")
            file.seek(size - _TRAILER)
            trailer = file.read(_TRAILER)
            length = _trailer_length(path, trailer, size)
            file.seek(size - _TRAILER - length)
            return _parse_header(path, file.read(length), trailer, size)
    except OSError as error:
        raise IndexCorruptError(path, f"cannot read: {error.strerror or error}") from error


class IndexFile:
    """A saved index, opened: its checked header and ids, and its payload mapped (read on demand,
    each block verified on first use). Safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size < len(_MAGIC) + _TRAILER:
                    raise IndexCorruptError(self.path, "not an xmodal index file (bad start marker)")
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise IndexCorruptError(self.path, f"cannot read: {error.strerror or error}") from error
        data = memoryview(self._map)
        if data[: len(_MAGIC)] != _MAGIC:
            raise IndexCorruptError(self.path, "not an xmodal index file (bad start marker)")
        trailer = bytes(data[size - _TRAILER :])
        length = _trailer_length(self.path, trailer, size)
        self.header = _parse_header(self.path, bytes(data[size - _TRAILER - length : size - _TRAILER]), trailer, size)
        count = self.header["count"]
        ids = data[len(_MAGIC) : len(_MAGIC) + 8 * count]
        if _digest(ids) != self.header["ids_xxh3"]:
            raise IndexCorruptError(self.path, "ids checksum mismatch")
        self.ids = np.frombuffer(ids, dtype="<i8")
        self.payload_offset = len(_MAGIC) + 8 * count
        self.payload = np.frombuffer(data, np.uint8, self.header["payload_bytes"], self.payload_offset)
        self.block_bytes = int(self.header["block_bytes"])
        self._digests = self.header["block_xxh3"]
        if len(self._digests) != -(-len(self.payload) // self.block_bytes):
            raise IndexCorruptError(self.path, "header lists the wrong number of block checksums")
        self._verified = np.zeros(len(self._digests), dtype=bool)
        self._guard = threading.Lock()

    def check(self, start: int = 0, stop: int | None = None) -> None:
        """Verify the payload blocks holding bytes [start, stop) that were not verified yet;
        IndexCorruptError when one does not match its checksum."""
        stop = len(self.payload) if stop is None else stop
        if stop <= start:
            return
        first, last = start // self.block_bytes, (stop - 1) // self.block_bytes
        for number in range(first, last + 1):
            if self._verified[number]:
                continue
            block = self.payload[number * self.block_bytes : (number + 1) * self.block_bytes]
            if _digest(block) != self._digests[number]:
                raise IndexCorruptError(
                    self.path,
                    f"payload block {number} (bytes {number * self.block_bytes:,}+) does not match its checksum",
                )
            self._verified[number] = True  # a benign race: two threads may both verify one block

    def verify(self) -> None:
        """Verify every payload block (IndexCorruptError on the first bad one)."""
        self.check()

    def payload_reader(self) -> Callable[[int], bytes]:
        """A `read(n)` over the whole payload, verified first (for backends that parse it)."""
        self.verify()
        position = 0

        def read(n: int) -> bytes:
            nonlocal position
            chunk = self.payload[position : position + n].tobytes()
            position += len(chunk)
            return chunk

        read.left = lambda: len(self.payload) - position  # type: ignore[attr-defined]
        return read


def open_index_file(path: str | Path, expected_ids: np.ndarray | None = None) -> IndexFile:
    """Open a saved index (frame, header and ids checked; payload mapped, blocks checked when
    read); StaleIndexError when its ids differ from `expected_ids` (compared as sets)."""
    file = IndexFile(path)
    if expected_ids is not None:
        _check_ids(file.path, file.ids, np.asarray(expected_ids, dtype=np.int64))
    return file


def _trailer_length(path: Path, trailer: bytes, size: int) -> int:
    (length,), end = struct.unpack("<Q", trailer[32:40]), trailer[40:]
    if end != _END:
        if end[:6] == _END[:6]:
            raise IndexCorruptError(path, f"format {end[6:].decode(errors='replace')!r}, this xmodal reads {FORMAT}")
        raise IndexCorruptError(path, "truncated or damaged (bad end marker)")
    if length > size - len(_MAGIC) - _TRAILER:
        raise IndexCorruptError(path, "truncated or damaged (bad end marker)")
    return length


def _parse_header(path: Path, blob: bytes, trailer: bytes, size: int) -> dict[str, Any]:
    if hashlib.sha256(blob).digest() != trailer[:32]:
        raise IndexCorruptError(path, "header checksum mismatch")
    try:
        header = json.loads(blob)
        expected_size = len(_MAGIC) + 8 * header["count"] + header["payload_bytes"] + len(blob) + _TRAILER
    except (ValueError, KeyError, TypeError) as error:
        raise IndexCorruptError(path, f"header unreadable: {error}") from error
    if header.get("format") != FORMAT:
        raise IndexCorruptError(path, f"format {header.get('format')!r}, this xmodal reads {FORMAT}")
    if expected_size != size:
        raise IndexCorruptError(path, f"size {size} bytes, header says {expected_size}")
    return header


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
