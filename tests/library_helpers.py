"""Helpers of the library tests: photo trees and the bad-input corpus they build, model-call counting,
and the catalog/index consistency check."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from xmodal.store.catalog import entry_items


def photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A small RGB image whose pixels depend on `seed` (distinct content hash and embedding)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    wave = 60 * np.sin(xx / (3 + seed % 7)) + 60 * np.cos(yy / (2 + seed % 5))
    arr = base + wave[..., None] + rng.integers(0, 40, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_photo_tree(root: Path, n: int, start_seed: int = 0) -> list[Path]:
    """`n` photos (JPEG and PNG, in a few nested folders) under `root`."""
    paths = []
    for i in range(n):
        folder = root / f"album{i % 4}" / ("sub" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"p{i:04d}.jpg" if i % 2 else f"p{i:04d}.png")
        photo(start_seed + i).save(path)
        paths.append(path)
    return paths


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def make_bad_corpus(root: Path) -> dict[str, str | None]:
    """The issue's bad-input list as files under `root`. Returns name -> expected outcome:
    "ok" (indexed), a substring of the recorded failure reason, or None (skipped by the walk)."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}

    (root / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = "empty"
    good = jpeg_bytes(photo(1, (64, 64)))
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    expected["truncated.jpg"] = "truncated"
    (root / "text.jpg").write_text("this is not an image\n" * 20)
    expected["text.jpg"] = "not a recognized image format"
    (root / "bomb.png").write_bytes(png_header_only(40000, 40000))
    expected["bomb.png"] = "decompression bomb"
    Image.new("CMYK", (32, 32), (0, 128, 255, 10)).save(root / "cmyk.jpg")
    expected["cmyk.jpg"] = "ok"
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(root / "deep16.png")
    expected["deep16.png"] = "ok"
    palette = Image.new("P", (32, 32), 3)
    palette.info["transparency"] = 3
    palette.save(root / "palette_alpha.png", transparency=3)
    expected["palette_alpha.png"] = "ok"
    frames = [photo(i, (32, 32)) for i in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    expected["animated.gif"] = "ok"
    rotated = photo(5, (40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    exif[0x0132] = "2021:07:04 10:30:00"
    rotated.save(root / "rotated.jpg", exif=exif)
    expected["rotated.jpg"] = "ok"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "one.png")
    expected["one.png"] = "ok"
    photo(7, (30000, 200)).save(root / "panorama.jpg", quality=60)
    expected["panorama.jpg"] = "ok"
    (root / "unreadable.jpg").write_bytes(good)
    os.chmod(root / "unreadable.jpg", 0)
    expected["unreadable.jpg"] = "ok" if os.access(root / "unreadable.jpg", os.R_OK) else "permission denied"
    os.symlink(root / "missing-target.jpg", root / "broken_link.jpg")
    expected["broken_link.jpg"] = None  # symbolic links are not followed by default
    os.symlink(root, root / "loop")
    expected["loop"] = None
    name = os.fsdecode(b"caf\xe9-latin1.jpg")  # not valid UTF-8
    (root / name).write_bytes(good)
    expected[name] = "ok"
    (root / "notes.txt").write_text("a text document")
    expected["notes.txt"] = "ok"
    (root / "junk.txt").write_bytes(bytes(range(256)) * 4)
    expected["junk.txt"] = "binary data"
    (root / ".hidden.jpg").write_bytes(good)
    expected[".hidden.jpg"] = None
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    expected["clip.mp4"] = "not a readable video"
    return expected


def count_model_calls(encoder) -> list[int]:
    """Wrap `encoder.embed_pixels` (the only way images reach the model) to record batch sizes."""
    calls: list[int] = []
    original = encoder.embed_pixels

    def counted(pixels):
        calls.append(len(pixels))
        return original(pixels)

    encoder.embed_pixels = counted
    return calls


def with_exif_date(img: Image.Image, when: str) -> Image.Exif:
    """EXIF with DateTimeOriginal = `when` ('YYYY:MM:DD HH:MM:SS')."""
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9003] = when
    return exif


def check_consistent(lib, files_on_disk: set[str]) -> None:
    """Every file once, every indexed row with its embedding, the index equal to the catalog."""
    conn = lib.catalog.conn
    paths = [os.fsdecode(p) for (p,) in conn.execute("SELECT path FROM items WHERE type = 'image'")]
    assert len(paths) == len(set(paths))
    assert set(paths) == files_on_disk
    (model,) = lib.catalog.models()
    missing = conn.execute(
        "SELECT COUNT(*) FROM items i LEFT JOIN embeddings e ON e.content_hash = i.content_hash AND e.model_key = ? "
        "WHERE i.status = 'ok' AND e.vector IS NULL",
        (model.key,),
    ).fetchone()[0]
    assert missing == 0
    ok_ids = lib.catalog.filtered_ids(model_key=model.key)
    snapshot = lib._indexes.snapshot(lib.catalog, model)
    assert np.unique(entry_items(snapshot.live_ids())).tolist() == ok_ids.tolist()


def image_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.suffix in (".jpg", ".png") and p.is_file()}


class PixelEmbedder:
    """A small deterministic Embedder for library tests where the model is not the point: an image's
    vector is its 8x8 thumbnail (so a photo finds itself at cosine 1), a text's is seeded by its hash."""

    model_key = "pixel-test@fp32:1"
    name = "pixel-test"
    dim = 192
    precision = "fp32"
    family = "test"
    source = "pixel-test"

    def __init__(self) -> None:
        from xmodal.media.image import DecodeOptions

        self.decode_options = DecodeOptions(draft_size=64)
        self.calls: list[int] = []

    def preprocess(self, image: Image.Image) -> np.ndarray:
        small = np.asarray(image.convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255.0
        return small.transpose(2, 0, 1) - 0.5

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        flat = pixels.reshape(len(pixels), -1).astype(np.float32)
        return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)

    def embed_texts(self, texts, language=None) -> np.ndarray:
        rows = [_seeded_row(text.encode(), self.dim) for text in texts]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def text_windows(self, text: str, language=None, limit=None):
        """Windows of 8 words overlapping by 2; a window's 'tokens' are its words' hashes."""
        import hashlib
        import re

        from xmodal.models.tokenizer import TokenBatch

        words = [m.span() for m in re.finditer(r"\S+", text)]
        starts = list(range(0, max(1, len(words) - 2), 6))[:limit]
        spans = [(words[i][0], words[min(i + 8, len(words)) - 1][1]) for i in starts] if words else [(0, 0)]
        ids = np.zeros((len(spans), 8), dtype=np.int64)
        for row, (a, b) in enumerate(spans):
            ids[row, 0] = int.from_bytes(hashlib.blake2b(text[a:b].encode(), digest_size=7).digest(), "little")
        return TokenBatch(ids, np.ones_like(ids), spans)

    def embed_tokens(self, tokens) -> np.ndarray:
        rows = [_seeded_row(row.tobytes(), self.dim) for row in tokens.ids]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def _seeded_row(data: bytes, dim: int) -> np.ndarray:
    import hashlib

    seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    row = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return row / np.linalg.norm(row)
