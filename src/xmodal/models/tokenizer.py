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
    """Padded token ids and attention mask, both int64 (N, context_length)."""

    ids: np.ndarray
    attention_mask: np.ndarray

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

    def encode_windows(self, text: str, language: str | None = None) -> TokenBatch:
        """All context_length windows of one long text, overlapping by a quarter (long_text='window')."""
        first = self._windows.encode(self._prepare(text, language))
        return self._pad([first, *first.overflowing])

    def _pad(self, encodings: list[Encoding]) -> TokenBatch:
        n, length = len(encodings), self.context_length
        ids = np.full((n, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        for i, enc in enumerate(encodings):
            row = enc.ids[:length]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return TokenBatch(ids, mask)
