"""Text -> token ids for the textual tower, with Hugging Face `tokenizers`.

Cleaning follows open_clip ("whitespace" collapses runs of whitespace, "canonicalize" also drops
punctuation and lower-cases); ids are padded/truncated to the context length with the configured
pad token, keeping the end-of-text token (the tokenizer's post-processor re-adds it after
truncation). NLLB tokenizers (those whose vocabulary holds FLORES-200 codes) get the language code
prepended, as Immich does.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from xmodal.errors import InvalidArgumentError, ModelFormatError
from xmodal.models.config import TextCfg

DEFAULT_FLORES = "eng_Latn"
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass
class TokenBatch:
    """Padded token ids and attention mask, both int64 (N, context_length); for the windows of one
    text, `spans` gives each row's [start, end) character offsets in the text as it was given."""

    ids: np.ndarray
    attention_mask: np.ndarray
    spans: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def clean_text(text: str, mode: str) -> str:
    """Normalize text as open_clip does for the given tokenizer_kwargs.clean mode."""
    if mode == "none":
        return text
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    elif mode == "lower":
        text = text.lower()
    return " ".join(text.split())


def clean_with_positions(text: str, mode: str) -> tuple[str, list[int]]:
    """`clean_text(text, mode)` and, for each of its characters, the index in `text` it came from
    (so spans found in the cleaned text can be reported in the original one)."""
    if mode == "none":
        return text, list(range(len(text)))
    chars = list(zip(text, range(len(text)), strict=True))
    if mode == "canonicalize":
        chars = [(" " if ch == "_" else ch, i) for ch, i in chars if ch == "_" or ch not in string.punctuation]
    if mode in ("canonicalize", "lower"):
        kept = "".join(ch for ch, _ in chars)
        lowered = kept.lower()  # as a whole: a word-final sigma lowers unlike a lone one
        origin = [i for ch, i in chars for _ in ch.lower()]  # 'İ' lowers into two characters
        chars = list(zip(lowered, origin, strict=True))
    out: list[tuple[str, int]] = []
    for ch, i in chars:
        if ch.isspace():
            if out and not out[-1][0].isspace():
                out.append((" ", i))
        else:
            out.append((ch, i))
    if out and out[-1][0] == " ":
        out.pop()
    return "".join(ch for ch, _ in out), [i for _, i in out]


@lru_cache(maxsize=1)
def _flores_codes() -> dict[str, str]:
    return json.loads(resources.files("xmodal.data").joinpath("flores200.json").read_text())


def flores_code(language: str | None) -> str:
    """Map an ISO/BCP-47 code ('de', 'zh-TW', 'pt_BR') or a FLORES-200 code to FLORES-200."""
    if not language:
        return DEFAULT_FLORES
    if "_" in language and len(language.split("_")[1]) == 4:  # already FLORES-200, e.g. deu_Latn
        return language
    key = language.lower().replace("_", "-")
    codes = _flores_codes()
    if key in codes:
        return codes[key]
    if key.split("-")[0] in codes:
        return codes[key.split("-")[0]]
    raise InvalidArgumentError(
        "language", language, "an ISO 639-1 code such as en, de, zh, zh-tw, or a FLORES-200 code such as deu_Latn"
    )


class TextTokenizer:
    """Tokenizes text for one model folder's textual tower."""

    def __init__(self, tokenizer_path: Path, cfg: TextCfg):
        if not Path(tokenizer_path).is_file():
            raise ModelFormatError(tokenizer_path, "missing file")
        try:
            self._tok = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on parse errors
            raise ModelFormatError(tokenizer_path, f"not a valid tokenizers file: {exc}") from None
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.pad_id = self._pad_id(tokenizer_path)
        self.is_multilingual_nllb = self._tok.token_to_id(DEFAULT_FLORES) is not None
        # Two configured copies instead of toggling one: encode() stays thread-safe.
        self._tok.no_padding()
        self._windows = Tokenizer.from_str(self._tok.to_str())
        self._tok.enable_truncation(max_length=self.context_length)
        self._windows.enable_truncation(max_length=self.context_length, stride=self.context_length // 4)

    def _pad_id(self, path: Path) -> int:
        if self.cfg.pad_token is None:
            return 0  # open_clip pads with 0 when no pad token is configured
        pad_id = self._tok.token_to_id(self.cfg.pad_token)
        if pad_id is None:
            raise ModelFormatError(path, f"pad token {self.cfg.pad_token!r} is not in the vocabulary")
        return pad_id

    def _prepare(self, text: str, language: str | None) -> str:
        if not isinstance(text, str):
            raise InvalidArgumentError("text", text, "a str")
        text = clean_text(text, self.cfg.clean)
        if self.is_multilingual_nllb:
            text = flores_code(language) + text
        return text

    def encode(self, texts: list[str], language: str | None = None) -> TokenBatch:
        """Tokenize, truncate (keeping special tokens) and pad every text to context_length."""
        return self._pad(self._tok.encode_batch([self._prepare(t, language) for t in texts]))

    def encode_windows(self, text: str, language: str | None = None, limit: int | None = None) -> TokenBatch:
        """The context_length windows of one long text (the first `limit` of them), overlapping by
        a quarter (long_text='window'), with each window's character span in `text`."""
        if not isinstance(text, str):
            raise InvalidArgumentError("text", text, "a str")
        cleaned, positions = clean_with_positions(text, self.cfg.clean)
        prefix = flores_code(language) if self.is_multilingual_nllb else ""
        first = self._windows.encode(prefix + cleaned)
        windows = [first, *first.overflowing][:limit]
        batch = self._pad(windows)
        batch.spans = [_trimmed(text, *_span(w, len(prefix), positions)) for w in windows]
        return batch

    def _pad(self, encodings: list[Encoding]) -> TokenBatch:
        n, length = len(encodings), self.context_length
        ids = np.full((n, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        for i, enc in enumerate(encodings):
            row = enc.ids[:length]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return TokenBatch(ids, mask)


def concat_batches(batches: list[TokenBatch]) -> TokenBatch:
    """One batch of the rows of several (windows of many documents embedded in one model call)."""
    spans = [span for b in batches for span in (b.spans or [(0, 0)] * len(b))]
    return TokenBatch(
        np.concatenate([b.ids for b in batches]), np.concatenate([b.attention_mask for b in batches]), spans
    )


def known_language(language: str | None) -> str | None:
    """`language` when it maps to a FLORES-200 code NLLB models know, else None (the default)."""
    try:
        return language if language and flores_code(language) else None
    except InvalidArgumentError:
        return None


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """A span without the whitespace a token's offset may start with."""
    while start < end and text[start].isspace():
        start += 1
    return start, end


def _span(window: Encoding, skip: int, positions: list[int]) -> tuple[int, int]:
    """A window's [start, end) in the original text: its non-special tokens' offsets in the
    prepared text (after `skip` prefix characters) mapped through `positions`."""
    offsets = [
        (a - skip, b - skip)
        for (a, b), special in zip(window.offsets, window.special_tokens_mask, strict=True)
        if not special and b > a and b > skip
    ]
    if not offsets or not positions:
        return (0, 0)
    start = positions[min(max(0, offsets[0][0]), len(positions) - 1)]
    end = positions[min(offsets[-1][1], len(positions)) - 1] + 1
    return start, end
