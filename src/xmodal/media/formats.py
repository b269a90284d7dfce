"""Every file-extension list of xmodal in one place: what counts as an image, a video or a text document.

The walker, the video decoder, the dataset readers and the query parser all ask here, so a file is
the same kind of thing everywhere.
"""

from __future__ import annotations

import os
from functools import lru_cache

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
# Formats Pillow opens only with a plugin (pillow-heif, pillow-avif-plugin) or a recent build.
OPTIONAL_IMAGE_EXTENSIONS = {"HEIF": (".heic", ".heif"), "AVIF": (".avif",)}
# Containers PyAV (FFmpeg) reads: phone and camera formats (mp4/mov/m4v/3gp, AVCHD .mts/.m2ts,
# broadcast .ts), web (.webm, .mkv) and older desktop ones.
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".3gp",
        ".mts",
        ".m2ts",
        ".ts",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
    }
)
TEXT_EXTENSIONS = frozenset({".txt", ".md"})


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Image extensions Pillow can open here: the built-in formats, plus HEIC/AVIF when a plugin
    (pillow-heif, pillow-avif-plugin, or Pillow's own AVIF support) is registered."""
    from PIL import Image

    import xmodal.media.image  # noqa: F401  (registers the optional HEIF opener)

    Image.init()
    extra = [ext for fmt, exts in OPTIONAL_IMAGE_EXTENSIONS.items() if fmt in Image.OPEN for ext in exts]
    return IMAGE_EXTENSIONS | frozenset(extra)


def extension(path: str | os.PathLike) -> str:
    """The lower-cased extension of a path ('' when it has none)."""
    return os.path.splitext(os.fspath(path))[1].lower()


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether a file name has a known video extension."""
    return extension(path) in VIDEO_EXTENSIONS


def media_type(path: str | os.PathLike) -> str | None:
    """'image', 'video', or None for files the library does not index as media (by extension)."""
    ext = extension(path)
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS or ext in image_extensions():
        return "image"
    return None
