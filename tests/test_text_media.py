"""Text documents as media: decoding with its fallback, every bad text input refused with its
reason, bounded head reads, languages, caption keys, descriptions embedded in photos, and the
tokenizer's window spans in the original text."""

from __future__ import annotations

import codecs
import io
import os
import random
import struct
import time
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

import xmodal
from xmodal.errors import InvalidArgumentError, MediaError
from xmodal.media.files import read_file
from xmodal.media.formats import caption_key, text_extensions
from xmodal.media.image import decode_image, embedded_description, probe_image
from xmodal.media.text import declared_language, decode_text, detect_language, document_language
from xmodal.models.tokenizer import clean_text, clean_with_positions

XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
    '<rdf:li xml:lang="x-default">Grandma at the lake</rdf:li><rdf:li xml:lang="de-DE">Oma am See</rdf:li>'
    "</rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def test_utf8_and_byte_order_marks():
    assert decode_text("café über 東京".encode(), "a.txt").text == "café über 東京"
    assert decode_text("café".encode(), "a.txt").encoding == "utf-8"
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec) or (
            codecs.BOM_UTF32_LE if codec.endswith("le") else codecs.BOM_UTF32_BE
        )
        decoded = decode_text(bom + "Grüße aus Köln".encode(codec), "a.txt")
        assert (decoded.text, decoded.encoding) == ("Grüße aus Köln", codec)
    assert decode_text(codecs.BOM_UTF8 + b"hello", "a.txt").text == "hello"


def test_invalid_utf8_falls_back_as_documented():
    legacy = "Café crème, 20 °C — «bien»".encode("cp1252")
    decoded = decode_text(legacy, "old.txt")
    assert (decoded.text, decoded.encoding) == ("Café crème, 20 °C — «bien»", "cp1252")
    assert decode_text(b"\x81 undefined in cp1252", "x.txt").text == "\x81 undefined in cp1252"  # as Latin-1
    damaged = ("ü" * 200).encode() + b"\xff" + ("é" * 200).encode()
    decoded = decode_text(damaged, "damaged.txt")
    assert decoded.encoding == "utf-8 (1 invalid sequence replaced)"
    assert decoded.text == "ü" * 200 + "\ufffd" + "é" * 200


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"   \n\t  \n", "no text in it (only whitespace)"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 8, "binary data, not text (a NUL byte"),
        (bytes(range(1, 32)) * 40, "binary data, not text (1000 control characters in its first 1240)"),
        (b"\x7fELF\x02\x01\x01" + os.urandom(4000).replace(b"\0", b"\1"), "binary data, not text"),
    ],
)
def test_binary_and_empty_text_refused_with_reason(data: bytes, reason: str):
    with pytest.raises(MediaError, match="^junk.txt: ") as info:
        decode_text(data, "junk.txt")
    assert reason in info.value.reason


def test_head_reads_are_bounded_and_cut_at_a_character(tmp_path: Path):
    big = tmp_path / "huge.txt"
    with open(big, "wb") as fp:
        fp.write(("日本語のテキスト " * 20_000).encode())
        fp.truncate(2 << 30)  # a 2 GB file (sparse: its end is zeros)
    started = time.perf_counter()
    content = read_file(str(big), 1 << 20, head=True)
    assert time.perf_counter() - started < 5
    assert (len(content.data), content.size, content.truncated) == (1 << 20, 2 << 30, True)
    decoded = decode_text(content.data, big, truncated=True)
    assert decoded.truncated and decoded.text.startswith("日本語") and "\ufffd" not in decoded.text
    with pytest.raises(MediaError, match="over the 1.0 MB limit"):
        read_file(str(big), 1 << 20)  # whole-file reads refuse it
    small = tmp_path / "small.txt"
    small.write_text("short")
    assert read_file(str(small), 1 << 20, head=True).truncated is False
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        read_file(str(tmp_path / "empty.txt"), 1 << 20, head=True)


def _bytes_read() -> int:
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_a_file_neither_kept_nor_hashed_is_not_read(tmp_path: Path):
    video = tmp_path / "known.mp4"
    video.write_bytes(os.urandom(8 << 20))
    before = _bytes_read()
    content = read_file(str(video), 1 << 30, keep=False, digest=False)
    assert _bytes_read() - before < 1 << 20  # a known video is decoded from its file later: no read here
    assert (content.data, content.digest, content.size, content.truncated) == (None, None, 8 << 20, False)
    hashed = read_file(str(video), 1 << 30, keep=False)
    assert _bytes_read() - before >= 8 << 20 and hashed.digest is not None and hashed.data is None
    with pytest.raises(MediaError, match="over the 1.0 MB limit"):
        read_file(str(video), 1 << 20, keep=False, digest=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        read_file(str(tmp_path / "empty.mp4"), 1 << 20, keep=False, digest=False)


def test_languages_declared_or_detected():
    assert declared_language("---\ntitle: Notizen\nlang: de\n---\nText") == "de"
    assert declared_language('---\nlanguage: "pt_BR"\n---\n') == "pt-br"
    assert declared_language("no front matter\nlang: de") is None
    german = "Der Hund läuft am Strand entlang und spielt mit dem roten Ball im warmen Sand."
    assert detect_language(german) == "de" and document_language(german) == ("de", "detected")
    assert detect_language("a red circle") is None  # too short to be sure
    assert document_language("---\nlang: fr\n---\n" + german) == ("fr", "declared")


def test_caption_keys_link_photos_and_their_captions():
    assert caption_key("/p/IMG_1.jpg") == caption_key("/p/IMG_1.txt") == caption_key("/p/IMG_1.caption") == "/p/IMG_1"
    assert caption_key("/p/IMG_1.jpg.txt") == "/p/IMG_1" and caption_key("/p/IMG_1.JPG") == "/p/IMG_1"
    assert caption_key("/p/notes.md") is None and caption_key("/p/clip.mp4") is None
    assert text_extensions(["md", ".TXT", "org"]) == frozenset({".md", ".txt", ".org"})
    with pytest.raises(InvalidArgumentError, match="--text-ext"):
        text_extensions([".jpg"])


def _iptc_jpeg(caption: bytes) -> bytes:
    """A JPEG with an APP13 Photoshop block holding an IPTC caption (2:120)."""
    record = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record + b"\x00" * (len(record) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_descriptions_embedded_in_photos(tmp_path: Path):
    img = Image.new("RGB", (16, 16), (200, 30, 30))
    img.save(tmp_path / "xmp.jpg", xmp=XMP.encode())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    img.save(tmp_path / "xmp.png", pnginfo=info)
    for name in ("xmp.jpg", "xmp.png"):
        found = decode_image(tmp_path / name).description
        assert (found.text, found.source, found.language) == ("Grandma at the lake", "xmp", None)
        assert probe_image((tmp_path / name).read_bytes()).description == found
    (tmp_path / "iptc.jpg").write_bytes(_iptc_jpeg(b"Sommerfest im Garten"))
    found = decode_image(tmp_path / "iptc.jpg").description
    assert (found.text, found.source) == ("Sommerfest im Garten", "iptc")
    exif = img.getexif()
    exif[0x010E] = "OLYMPUS DIGITAL CAMERA"
    img.save(tmp_path / "camera.jpg", exif=exif)
    assert decode_image(tmp_path / "camera.jpg").description is None  # a camera's placeholder
    exif[0x010E] = "  The   old mill  "
    img.save(tmp_path / "exif.jpg", exif=exif)
    assert decode_image(tmp_path / "exif.jpg").description.text == "The old mill"
    img.save(tmp_path / "plain.jpg")
    assert embedded_description(Image.open(tmp_path / "plain.jpg")) is None


def test_clean_with_positions_matches_clean_text():
    rng = random.Random(7)
    alphabet = "aB _,.!?\t\n  İΣσ日本x-'"
    for mode in ("whitespace", "canonicalize", "lower", "none"):
        for _ in range(2000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            cleaned, positions = clean_with_positions(text, mode)
            assert cleaned == clean_text(text, mode)
            assert len(positions) == len(cleaned) and positions == sorted(positions)
            for p, c in zip(positions, cleaned, strict=True):  # each character comes from its position
                assert c == " " or c.upper() == text[p].upper() or c in text[p].lower()


def test_window_spans_point_into_the_original_text():
    encoder = xmodal.load_model("xmodal-tiny-shapes")
    sentence = "a small blue square in the centre and a green star on the right"
    text = "  A red   circle at the top left.\n\n" + "  ".join([sentence] * 12) + "\n"
    windows = encoder.text_windows(text)
    assert len(windows) >= 4 and len(windows.spans) == len(windows)
    starts = [a for a, _ in windows.spans]
    assert starts == sorted(starts) and windows.spans[0][0] == 2  # leading whitespace skipped
    assert windows.spans[-1][1] == len(text.rstrip())
    for (_, end), (next_start, _) in zip(windows.spans, windows.spans[1:], strict=False):
        assert next_start < end  # windows overlap
    for a, b in windows.spans:
        assert not text[a].isspace() and not text[b - 1].isspace()
    first = encoder.tokenizer.encode([" ".join(text[slice(*windows.spans[0])].split())]).ids[0]
    assert first.tolist() == windows.ids[0].tolist()  # the first window is exactly its span's tokens
    assert encoder.text_windows(text, limit=2).spans == windows.spans[:2]
