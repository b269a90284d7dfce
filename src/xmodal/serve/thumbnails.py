"""Thumbnails of catalogued photos and videos, made once and kept beside the library::

    <library>/thumbnails/<size>/<hash[:2]>/<content hash>.webp

Keyed by content, so a moved or copied file reuses its thumbnail and an edited one gets a new one;
the ETag names the content and size, so a browser's If-None-Match costs no decoding. Files are
written atomically (a temporary file renamed into place): a crash never leaves a torn thumbnail. A
file that changed since it was indexed (its content hash no longer holds), or a library folder that
cannot be written, gets its thumbnail made for the request and not kept.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, features

from xmodal.media.image import DecodeOptions, decode_image
from xmodal.media.video import sample_frames
from xmodal.store.catalog import ItemRecord

log = logging.getLogger(__name__)

THUMBNAIL_SIZES = (128, 256, 512, 1024)  # longest side in pixels; a fixed set bounds the disk used
DEFAULT_SIZE = 256
FOLDER = "thumbnails"
_VERSION = 1  # bump when the way thumbnails are made changes: old ETags and files stop matching
_DIGEST = re.compile(r"[0-9a-f]{16,128}")


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str
    etag: str
    kept: bool  # stored by content (True), or made for this request only


class ThumbnailCache:
    """Makes and keeps thumbnails under `folder` (thread-safe: one maker per content and size)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.format, self.media_type, self.suffix = (
            ("WEBP", "image/webp", "webp") if features.check("webp") else ("JPEG", "image/jpeg", "jpg")
        )
        self._locks = [threading.Lock() for _ in range(64)]
        self._writable = True

    def etag(self, record: ItemRecord, size: int, *, content_holds: bool, mtime_ns: int) -> str:
        """The thumbnail's ETag, known before it is made."""
        if content_holds and record.content_hash and _DIGEST.fullmatch(record.content_hash):
            return f'"{record.content_hash[:40]}-{size}-t{_VERSION}"'
        return f'"m{mtime_ns:x}-{size}-t{_VERSION}"'

    def get(self, record: ItemRecord, path: str, size: int, *, content_holds: bool, mtime_ns: int) -> Thumbnail:
        """The thumbnail of the item whose file is at `path`, `size` pixels on its longest side."""
        etag = self.etag(record, size, content_holds=content_holds, mtime_ns=mtime_ns)
        target = self._target(record, size) if content_holds else None
        if target is None:
            return Thumbnail(self._make(record, path, size), self.media_type, etag, kept=False)
        with self._locks[hash(target) % len(self._locks)]:
            data = _read(target)
            if data is None:
                data = self._make(record, path, size)
                self._keep(target, data)
        return Thumbnail(data, self.media_type, etag, kept=True)

    def _target(self, record: ItemRecord, size: int) -> Path | None:
        digest = record.content_hash
        if not digest or not _DIGEST.fullmatch(digest):
            return None
        return self.folder / str(size) / digest[:2] / f"{digest}.{self.suffix}"

    def _make(self, record: ItemRecord, path: str, size: int) -> bytes:
        if record.type == "video":
            image = video_poster(path)
        else:
            image = decode_image(path, DecodeOptions(draft_size=size)).image
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, self.format, quality=80)
        return buf.getvalue()

    def _keep(self, target: Path, data: bytes) -> None:
        if not self._writable:
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fp:
                    fp.write(data)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            self._writable = False
            log.warning("thumbnails are not kept: %s cannot be written (%s)", self.folder, exc.strerror or exc)


def video_poster(path: str) -> Image.Image:
    """The frame a video is shown by: the one at the middle of its length."""
    return sample_frames(path, 1)[0]


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data or None
