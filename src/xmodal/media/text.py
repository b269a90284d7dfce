"""Text documents for the library: bytes to text with a documented decoding fallback, binary files
refused, and the language a document declares or is detected in.

Decoding, in this order (the first that applies wins; the choice is recorded per item):

1. A byte-order mark names the encoding: UTF-8, UTF-16 or UTF-32 (little or big endian).
2. Valid UTF-8 (ASCII included): decoded as it is.
3. UTF-8 with a few damaged sequences (at most one per 100 bytes, and no more of them than valid
   multi-byte characters): decoded as UTF-8, each damaged sequence replaced by U+FFFD.
4. Anything else: Windows-1252 (the encoding of most legacy Western text files; the five bytes it
   leaves undefined are read as Latin-1), which decodes every byte string.

Refused (recorded as failed with the reason): binary data (a NUL byte in the first 8 KB, as git
and grep decide, or more than 10 % control characters), and documents with no text at all
(empty, or only whitespace). A document larger than the text size limit is not refused: its
first bytes up to the limit are indexed (cut at a character boundary) and the item says so.

Language: one declared in a Markdown front matter (``lang: de`` / ``language: de``) wins;
otherwise a document of at least 40 letters is identified with py3langid and the answer kept when
its probability is at least 0.9. Multilingual (NLLB) models get the language's code; others
ignore it.
"""

from __future__ import annotations

import codecs
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass

from xmodal.errors import MediaError

log = logging.getLogger(__name__)

BINARY_PROBE = 8000  # bytes looked at for NUL (git's and grep's heuristic)
MAX_CONTROL_SHARE = 0.10
MAX_BAD_UTF8_SHARE = 0.01
MIN_DETECT_LETTERS = 40
MIN_DETECT_PROBABILITY = 0.9
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_LANG_LINE = re.compile(
    r"^(?:lang|language)[ \t]*:[ \t]*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,4})?)[\"']?[ \t]*$", re.M
)


@dataclass(frozen=True)
class DecodedText:
    """A document's text, how its bytes were decoded, and whether only its head was read."""

    text: str
    encoding: str  # 'utf-8', 'utf-16-le', 'utf-8 (3 bad bytes replaced)', 'cp1252', ...
    truncated: bool = False


def decode_text(data: bytes, item: object, *, truncated: bool = False) -> DecodedText:
    """Bytes of a document -> text by the rules in the module docstring; MediaError naming `item`
    for binary data or a document without text."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            body = data[len(bom) :]
            if truncated:
                body = _whole_units(body, encoding)
            text = body.decode(encoding, errors="replace")
            return _checked(DecodedText(text, encoding, truncated), item)
    if b"\0" in data[:BINARY_PROBE]:
        raise MediaError(item, "binary data, not text (a NUL byte in its first 8 KB)")
    if truncated:
        data = _whole_utf8(data)
    try:
        return _checked(DecodedText(data.decode("utf-8"), "utf-8", truncated), item)
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    multibyte = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    if bad <= MAX_BAD_UTF8_SHARE * len(data) and multibyte >= bad:
        label = f"utf-8 ({bad} invalid sequence{'s' * (bad != 1)} replaced)"
        return _checked(DecodedText(text, label, truncated), item)
    return _checked(DecodedText(data.decode("cp1252", errors="xmodal-latin1"), "cp1252", truncated), item)


def _latin1_for_undefined(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: bytes Windows-1252 leaves undefined are read as Latin-1."""
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("xmodal-latin1", _latin1_for_undefined)


def _whole_utf8(data: bytes) -> bytes:
    """`data` without a UTF-8 sequence cut off at its end (a head read stops mid-character)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # the lead byte of the last sequence
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _whole_units(data: bytes, encoding: str) -> bytes:
    unit = 4 if encoding.startswith("utf-32") else 2 if encoding.startswith("utf-16") else 1
    data = data[: len(data) - len(data) % unit]
    if encoding == "utf-8":
        return _whole_utf8(data)
    if unit == 2 and len(data) >= 2:  # a lone high surrogate at the end
        last = data[-2:] if encoding.endswith("le") else data[-2:][::-1]
        if 0xD8 <= last[1] <= 0xDB:
            return data[:-2]
    return data


def _checked(decoded: DecodedText, item: object) -> DecodedText:
    text = decoded.text
    if not text.strip():
        raise MediaError(item, "no text in it (only whitespace)")
    sample = text[:BINARY_PROBE]
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS)
    if controls > MAX_CONTROL_SHARE * len(sample):
        raise MediaError(item, f"binary data, not text ({controls} control characters in its first {len(sample)})")
    return decoded


def declared_language(text: str) -> str | None:
    """The language a Markdown/YAML front matter declares (``lang: de``), else None."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return None
    found = _LANG_LINE.search(match.group(1))
    return found.group(1).replace("_", "-").lower() if found else None


_identifier = None
_identifier_lock = threading.Lock()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language when py3langid is sure (probability >= 0.9 on at
    least 40 letters), else None."""
    sample = text[:4000]
    if sum(ch.isalpha() for ch in sample) < MIN_DETECT_LETTERS:
        return None
    code, probability = _language_identifier().classify(sample)
    return str(code) if probability >= MIN_DETECT_PROBABILITY else None


def _language_identifier():
    global _identifier
    with _identifier_lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier


def document_language(text: str) -> tuple[str | None, str | None]:
    """(language code, 'declared' | 'detected') of a document, (None, None) when unknown."""
    declared = declared_language(text)
    if declared:
        return declared, "declared"
    detected = detect_language(text)
    return (detected, "detected") if detected else (None, None)
