"""Image decoding: any file or in-memory image to an upright RGB Pillow image, with clear errors.

One place decides how odd inputs become RGB (alpha, palette, CMYK, 16-bit), how EXIF orientation
and capture time are read, and how big an image may be, so every consumer (encoders, the library
indexer, dataset readers) sees the same pixels.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from xmodal.errors import ImageTooLargeError, MediaError

log = logging.getLogger(__name__)

try:  # HEIC/HEIF (and AVIF on older Pillow) when the optional plugin is installed.
    from pillow_heif import register_heif_opener  # type: ignore[import-not-found]

    register_heif_opener()
except ImportError:  # pragma: no cover - optional plugin
    pass

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray

# Pillow raises DecompressionBombError itself above twice its MAX_IMAGE_PIXELS; using the same
# number keeps our limit and Pillow's in agreement by default while allowing a lower one.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
WHITE = (255, 255, 255)

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_DATETIME = 0x0132
_IMAGE_DESCRIPTION = 0x010E
_IPTC_CAPTION = (2, 120)
# What cameras write into EXIF ImageDescription when nobody described the photo.
_CAMERA_PLACEHOLDERS = frozenset(
    {
        "olympus digital camera",
        "sony dsc",
        "digital camera",
        "konica minolta digital camera",
        "minolta digital camera",
        "exif_jpeg_picture",
        "default",
        "dcim",
        "image",
        "picture",
        "untitled",
    }
)


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: pixel limit, background for transparency, JPEG draft target."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] = WHITE
    # JPEG only: let libjpeg scale down in the DCT domain while both sides stay >= this many
    # pixels (a 12 MP photo decodes ~6x faster). None decodes at full resolution.
    draft_size: int | None = None


@dataclass(frozen=True)
class Description:
    """What a photo says about itself in words (XMP dc:description, IPTC caption or EXIF
    ImageDescription), with the language XMP tags it with when it does."""

    text: str
    source: str  # "xmp" | "iptc" | "exif"
    language: str | None = None


@dataclass
class DecodedImage:
    """An upright RGB image plus what the catalog wants to know about the file."""

    image: Image.Image
    width: int  # of the original, after EXIF rotation
    height: int
    format: str | None
    taken_at: datetime | None
    description: Description | None = None


def load_image(item: ImageInput, options: DecodeOptions | None = None) -> Image.Image:
    """Decode `item` (path, bytes, PIL image or HWC uint8 array) to an upright RGB image."""
    return decode_image(item, options).image


def decode_image(item: ImageInput, options: DecodeOptions | None = None) -> DecodedImage:
    """Decode `item` and report its original size, format and EXIF capture time.

    Raises MediaError (or ImageTooLargeError) naming the item and the reason.
    """
    options = options or DecodeOptions()
    if isinstance(item, Image.Image):
        return _finish(item, item, options)
    if isinstance(item, np.ndarray):
        return _finish(_from_array(item), item, options)
    if isinstance(item, (bytes, bytearray)):
        if not item:
            raise MediaError(item, "empty image data (0 bytes)")
        return _decode_stream(io.BytesIO(item), item, options)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        with _open_file(path) as fp:
            return _decode_stream(fp, path, options)
    raise MediaError(item, f"unsupported image input type {type(item).__name__}")


def _open_file(path: Path) -> io.BufferedReader:
    try:
        if path.is_dir():
            raise MediaError(path, "is a directory, not an image file")
        fp = open(path, "rb")
    except FileNotFoundError:
        reason = "broken symbolic link" if path.is_symlink() else "file not found"
        raise MediaError(path, reason) from None
    except PermissionError:
        raise MediaError(path, "permission denied") from None
    except OSError as exc:
        raise MediaError(path, f"cannot open file: {exc.strerror or exc}") from None
    if os.fstat(fp.fileno()).st_size == 0:
        fp.close()
        raise MediaError(path, "empty file (0 bytes)")
    return fp


def _decode_stream(fp: io.IOBase, item: object, options: DecodeOptions) -> DecodedImage:
    img = _open_checked(fp, item, options)
    width, height = img.size
    if options.draft_size and img.format == "JPEG":
        img.draft(img.mode, (options.draft_size, options.draft_size))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(item, f"corrupt or truncated image data: {exc}") from None
    return _finish(img, item, options, original_size=(width, height))


def _open_checked(fp: io.IOBase, item: object, options: DecodeOptions) -> Image.Image:
    """Image.open (header only) with the size checks; raises MediaError / ImageTooLargeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(item, f"decompression bomb refused by Pillow: {exc}") from None
    except UnidentifiedImageError:
        raise MediaError(item, "not a recognized image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(item, f"corrupt or truncated image header: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise MediaError(item, f"invalid image size {width}x{height}")
    if width * height > options.max_pixels:
        raise ImageTooLargeError(
            item,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {options.max_pixels:,} (max_pixels)",
        )
    return img


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: upright size, format and EXIF capture time."""

    width: int
    height: int
    format: str | None
    taken_at: datetime | None
    description: Description | None = None


def probe_image(data: bytes, item: object = None, options: DecodeOptions | None = None) -> ImageInfo:
    """Read an encoded image's header only (no pixel decode): for files whose embedding is cached."""
    if not data:
        raise MediaError(item if item is not None else data, "empty image data (0 bytes)")
    img = _open_checked(io.BytesIO(data), item if item is not None else data, options or DecodeOptions())
    width, height = img.size
    if _exif_orientation(img) in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(width, height, img.format, exif_taken_at(img), embedded_description(img))


def _finish(
    img: Image.Image,
    item: object,
    options: DecodeOptions,
    original_size: tuple[int, int] | None = None,
) -> DecodedImage:
    taken_at = exif_taken_at(img)
    orientation = _exif_orientation(img)
    try:
        upright = ImageOps.exif_transpose(img)
        rgb = to_rgb(upright, options.background)
    except (OSError, ValueError) as exc:
        raise MediaError(item, f"cannot convert {img.mode} image to RGB: {exc}") from None
    width, height = original_size or img.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(rgb, width, height, img.format, taken_at, embedded_description(img))


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        raise MediaError(arr, f"arrays must be uint8 HWC, got dtype {arr.dtype}")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
        return Image.fromarray(arr.squeeze(2) if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    raise MediaError(arr, "arrays must be HxW, HxWx1, HxWx3 or HxWx4")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha composited over `background`, 16-bit scaled, CMYK
    through its ICC profile when it has one."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own I->RGB conversion clips at 255, which turns most 16-bit photos white.
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "CMYK" and img.info.get("icc_profile"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as exc:
            log.debug("ICC conversion failed (%s); using Pillow's CMYK->RGB", exc)
    return img.convert("RGB")


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def exif_taken_at(img: Image.Image) -> datetime | None:
    """Capture time from EXIF DateTimeOriginal (with its UTC offset when recorded), else DateTime."""
    try:
        exif = img.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
        raw = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        offset = sub.get(_OFFSET_TIME_ORIGINAL)
    except Exception:
        return None
    return parse_exif_datetime(raw, offset)


def parse_exif_datetime(raw: object, offset: object = None) -> datetime | None:
    """Parse EXIF's 'YYYY:MM:DD HH:MM:SS' (+ optional '+HH:MM'); None when absent or invalid."""
    if not isinstance(raw, str):
        return None
    try:
        when = datetime.strptime(raw.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if isinstance(offset, str) and len(offset) >= 6 and offset[0] in "+-":
        try:
            hours, minutes = int(offset[1:3]), int(offset[4:6])
        except ValueError:
            return when
        sign = 1 if offset[0] == "+" else -1
        when = when.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return when


def embedded_description(img: Image.Image) -> Description | None:
    """The photo's own description: XMP dc:description (its x-default entry, else the first),
    else the IPTC caption, else EXIF ImageDescription unless it is a camera's placeholder
    ("OLYMPUS DIGITAL CAMERA"); None when there is none or it cannot be read."""
    for source, read in (("xmp", _xmp_description), ("iptc", _iptc_caption), ("exif", _exif_description)):
        try:
            found = read(img)
        except Exception as exc:  # metadata is optional: a malformed block never fails the photo
            log.debug("unreadable %s description: %s", source, exc)
            continue
        if found and found[0].strip():
            return Description(" ".join(found[0].split()), source, found[1])
    return None


def _xmp_description(img: Image.Image) -> tuple[str, str | None] | None:
    if not any(key in img.info for key in ("xmp", "XML:com.adobe.xmp")) and 700 not in getattr(img, "tag_v2", {}):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns when defusedxml is missing; then there is no XMP
        xmp = img.getxmp()
    blocks = xmp.get("xmpmeta", {}).get("RDF", {}).get("Description", [])
    for block in blocks if isinstance(blocks, list) else [blocks]:
        value = block.get("description") if isinstance(block, dict) else None
        if isinstance(value, str):
            return value, None
        if isinstance(value, dict):
            entries = value.get("Alt", {}).get("li", [])
            entries = entries if isinstance(entries, list) else [entries]
            entries = [e if isinstance(e, dict) else {"text": e} for e in entries if e]
            if entries:
                chosen = next((e for e in entries if e.get("lang") == "x-default"), entries[0])
                lang = chosen.get("lang")
                return str(chosen.get("text") or ""), None if lang in (None, "x-default") else str(lang)
    return None


def _iptc_caption(img: Image.Image) -> tuple[str, None] | None:
    if img.format not in ("JPEG", "TIFF"):
        return None
    from PIL import IptcImagePlugin

    info = IptcImagePlugin.getiptcinfo(img) or {}
    raw = info.get(_IPTC_CAPTION)
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    if not isinstance(raw, bytes):
        return None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("latin-1"), None


def _exif_description(img: Image.Image) -> tuple[str, None] | None:
    raw = img.getexif().get(_IMAGE_DESCRIPTION)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return None
    text = raw.strip().rstrip("\x00").strip()
    return None if text.lower() in _CAMERA_PLACEHOLDERS else (text, None)
