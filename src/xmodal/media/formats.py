"""Every file-extension list of xmodal in one place: what counts as an image, a video or a text document.

The walker, the video decoder, the dataset readers and the query parser all ask here, so a file is
the same kind of thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache

from xmodal.errors import InvalidArgumentError

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
# Text documents the library indexes by default (`--text-ext` replaces the list). A `.txt` or
# `.caption` file named like a photo in the same folder (IMG_1.jpg + IMG_1.txt, or IMG_1.jpg.txt)
# is that photo's caption: it is indexed as a text item of its own and also lets the photo be
# found through its words (see `caption_key`).
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".caption"})
CAPTION_EXTENSIONS = frozenset({".txt", ".caption"})


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


def media_type(path: str | os.PathLike, text: frozenset[str] = TEXT_EXTENSIONS) -> str | None:
    """'image', 'video', 'text' (extensions in `text`), or None for files the library does not
    index (by extension)."""
    ext = extension(path)
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS or ext in image_extensions():
        return "image"
    if ext in text:
        return "text"
    return None


def text_extensions(given: Iterable[str]) -> frozenset[str]:
    """Extensions from `--text-ext` values ('md', '.TXT', 'org') as lower-case '.ext' strings."""
    out = set()
    for raw in given:
        ext = raw.strip().lower()
        ext = ext if ext.startswith(".") else "." + ext
        if len(ext) < 2 or os.sep in ext or ext in VIDEO_EXTENSIONS or ext in image_extensions():
            raise InvalidArgumentError(
                "--text-ext", raw, "a file extension such as .txt, .md or .org (not a media one)"
            )
        out.add(ext)
    return frozenset(out)


def caption_key(path: str | os.PathLike) -> str | None:
    """What links a photo and its caption files: the path without its image extension (a photo)
    or without its caption extension and then any image extension (a caption), so IMG_1.jpg,
    IMG_1.txt, IMG_1.caption and IMG_1.jpg.txt share the key .../IMG_1. None for other files."""
    stem, ext = os.path.splitext(os.fspath(path))
    ext = ext.lower()
    if ext in CAPTION_EXTENSIONS:
        inner, inner_ext = os.path.splitext(stem)
        return inner if inner_ext.lower() in image_extensions() else stem
    if ext in image_extensions():
        return stem
    return None
