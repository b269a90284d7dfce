"""Content hashes of media files: the key of every embedding cache (library and benchmarks)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def new_hasher() -> hashlib._Hash:
    """The hash behind `content_hash`, for callers that stream a file through it themselves."""
    return hashlib.blake2b(digest_size=16)


def content_hash(source: str | os.PathLike | bytes) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (or of the bytes given).

    Whole-file hashing, not sampled: two different photos must never share an embedding, and
    hashing runs at disk speed, far ahead of the encoder.
    """
    digest = new_hasher()
    if isinstance(source, (bytes, bytearray)):
        digest.update(source)
        return digest.hexdigest()
    with open(Path(source), "rb") as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
