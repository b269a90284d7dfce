"""The dual encoder: images and texts into one L2-normalized embedding space."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from xmodal.errors import InvalidArgumentError, MediaError, ModelFormatError
from xmodal.media.image import DecodedImage, DecodeOptions, ImageInput, decode_image
from xmodal.models.config import ModelConfig
from xmodal.models.preprocess import ImagePreprocessor
from xmodal.models.quantize import PROBE_TEXTS, probe_images
from xmodal.models.registry import known_models
from xmodal.models.runtime import NPU_RUNTIMES, EncoderSession, Int8Probe, create_session
from xmodal.models.tokenizer import TextTokenizer, TokenBatch
from xmodal.parallel import bounded_map

log = logging.getLogger(__name__)

ErrorHandler = Literal["raise", "skip"] | Callable[[int, object, MediaError], None]
LONG_TEXT_MODES = ("truncate", "window")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder:
    """A CLIP-family model loaded from a model folder (see `xmodal.load_model`).

    Sessions are opened on first use, so indexing images never loads the text tower.
    All methods are thread-safe.
    """

    def __init__(
        self,
        config: ModelConfig,
        name: str,
        *,
        precision: str = "fp32",
        runtime: str = "auto",
        threads: int | None = None,
        decode: DecodeOptions | None = None,
        source: str | None = None,
    ):
        for path in (config.visual_path, config.textual_path, config.tokenizer_path):
            if not path.is_file():
                raise ModelFormatError(path, "missing file")
        self.config = config
        self.name = name
        self.source = source or str(config.folder.resolve())  # how to load it again (see load_model)
        self.dim = config.embed_dim
        self.precision = precision
        self.runtime = runtime
        self.threads = threads
        self.image_size = config.preprocess.size
        self.decode_options = decode or DecodeOptions(draft_size=2 * self.image_size)
        self.preprocess = ImagePreprocessor(config.preprocess)
        self._lock = threading.RLock()  # reentrant: an int8 session's probe needs the tokenizer
        self._sessions: dict[str, EncoderSession] = {}
        self._tokenizer: TextTokenizer | None = None

    @cached_property
    def model_key(self) -> str:
        """Names this model's embedding space for caches: name, precision and a digest of the
        folder's files (re-exported or fine-tuned weights under the same name get a new key)."""
        digest = hashlib.blake2b(digest_size=8)
        folder = self.config.folder
        for rel in ("config.json", "visual/preprocess_cfg.json", "textual/tokenizer.json"):
            path = folder / rel
            digest.update(path.read_bytes() if path.is_file() else b"-")
        for path in (self.config.visual_path, self.config.textual_path):
            digest.update(_file_signature(path))
        kind, _, soc = self.runtime.partition(":")
        if kind in NPU_RUNTIMES:  # other embeddings than the ONNX graphs': the NPU graphs' own key
            from xmodal.models.rknn import graphs_signature

            digest.update(kind.encode() + graphs_signature(folder, soc))
        return f"{self.name}@{self.precision}:{digest.hexdigest()}"

    @cached_property
    def family(self) -> str:
        """The model's family ("clip", "siglip", ...): from xmodal's catalogue by name, else from its
        folder's config."""
        for known in known_models():
            if known.name == self.name:
                return known.family
        raw = self.config.raw
        model_type = (raw.get("xmodal") or {}).get("model_type")
        if model_type:
            return str(model_type)
        if "init_logit_bias" in raw:  # open_clip configs of SigLIP models carry their sigmoid bias
            return "siglip"
        return "clip"

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, precision={self.precision!r})"

    # -- sessions -------------------------------------------------------------------------
    def session(self, tower: str) -> EncoderSession:
        """The loaded graph of "visual" or "textual" (opened on first use)."""
        with self._lock:
            if tower not in self._sessions:
                path = self.config.visual_path if tower == "visual" else self.config.textual_path
                npu = self.runtime.partition(":")[0] in NPU_RUNTIMES  # NPU graphs keep their own precision
                probe = self._int8_probe(tower) if self.precision == "int8" and not npu else None
                self._sessions[tower] = create_session(
                    path, runtime=self.runtime, precision=self.precision, threads=self.threads, probe=probe
                )
            return self._sessions[tower]

    def load(self) -> dict[str, Path]:
        """Open both towers and the tokenizer now rather than on first use (a server's start-up,
        a load-time measurement); returns the graph file each tower runs (for int8 the quantized copy)."""
        _ = self.tokenizer
        return {tower: self.session(tower).path for tower in ("visual", "textual")}

    def _int8_probe(self, tower: str) -> Int8Probe:
        """The fixed probe images or texts, prepared for this model, an int8 tower is checked on."""
        if tower == "visual":
            pixels = self.preprocess.batch(probe_images())
            return Int8Probe("image tower", _digest(pixels), lambda s: l2_normalize(s.run({s.input_names[0]: pixels})))
        tokens = self.tokenize(PROBE_TEXTS)
        return Int8Probe(
            "text tower",
            _digest(tokens.ids, tokens.attention_mask),
            lambda s: l2_normalize(s.run(self._text_feeds(s, tokens))),
        )

    @property
    def tokenizer(self) -> TextTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = TextTokenizer(self.config.tokenizer_path, self.config.text)
            return self._tokenizer

    # -- images ---------------------------------------------------------------------------
    def decode(self, item: ImageInput) -> DecodedImage:
        """Decode one image with this model's decode options (JPEG draft to 2x its input size)."""
        return decode_image(item, self.decode_options)

    def prepare_image(self, item: ImageInput) -> np.ndarray:
        """Decode and preprocess one image to the visual tower's (3, S, S) float32 input."""
        return self.preprocess(self.decode(item).image)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed (N, 3, S, S) batch -> (N, D) unit rows."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self.session("visual")
        return l2_normalize(session.run({session.input_names[0]: pixels}))

    def embed_images(
        self,
        items: Iterable[ImageInput],
        batch_size: int = 32,
        *,
        on_error: ErrorHandler = "raise",
        workers: int = 2,
    ) -> np.ndarray:
        """Embed paths / PIL images / HWC uint8 arrays -> float32 (N, D), rows L2-normalized.

        Decoding runs on `workers` threads ahead of the model. A bad item raises MediaError
        (on_error="raise"); with "skip" (or a callback `f(index, item, error)`) its row is NaN,
        the failure is logged/reported, and every other item is embedded.
        """
        if batch_size < 1:
            raise InvalidArgumentError("batch_size", batch_size, "an integer >= 1")
        if on_error not in ("raise", "skip") and not callable(on_error):
            raise InvalidArgumentError("on_error", on_error, "'raise', 'skip' or a callable")
        items = list(items)
        out = np.full((len(items), self.dim), np.nan, dtype=np.float32)
        for indices, pixels in self._prepared_batches(items, batch_size, on_error, workers):
            out[indices] = self.embed_pixels(pixels)
        return out

    def _prepared_batches(
        self, items: Sequence[ImageInput], batch_size: int, on_error: ErrorHandler, workers: int
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        def prepare(i: int) -> tuple[int, np.ndarray | MediaError]:
            try:
                return i, self.prepare_image(items[i])
            except MediaError as exc:
                return i, exc

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            indices: list[int] = []
            arrays: list[np.ndarray] = []
            for i, result in bounded_map(pool, prepare, range(len(items)), ahead=2 * batch_size):
                if isinstance(result, MediaError):
                    _handle_error(on_error, i, items[i], result)
                    continue
                indices.append(i)
                arrays.append(result)
                if len(arrays) == batch_size:
                    yield indices, np.stack(arrays)
                    indices, arrays = [], []
            if arrays:
                yield indices, np.stack(arrays)

    # -- text -----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], language: str | None = None) -> TokenBatch:
        """Token ids and attention mask for the textual tower."""
        return self.tokenizer.encode(list(texts), language)

    def text_windows(self, text: str, language: str | None = None, limit: int | None = None) -> TokenBatch:
        """A document's overlapping context-length windows (the first `limit`) with their
        character spans, for `embed_tokens` (long_text="window" embeds the same windows)."""
        return self.tokenizer.encode_windows(text, language, limit)

    def embed_tokens(self, tokens: TokenBatch) -> np.ndarray:
        """Tokenized batch -> (N, D) unit rows."""
        if len(tokens) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self.session("textual")
        return l2_normalize(session.run(self._text_feeds(session, tokens)))

    def _text_feeds(self, session: EncoderSession, tokens: TokenBatch) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for name in session.input_names:
            if name in ("text", "input_ids"):
                feeds[name] = tokens.ids
            elif name == "attention_mask":
                feeds[name] = tokens.attention_mask
            else:
                raise ModelFormatError(
                    self.config.textual_path,
                    f"unexpected input {name!r}; expected 'text' or 'input_ids' + 'attention_mask'",
                )
        return feeds

    def embed_texts(
        self,
        texts: Iterable[str],
        language: str | None = None,
        *,
        batch_size: int = 64,
        long_text: str = "truncate",
    ) -> np.ndarray:
        """Embed texts -> float32 (N, D), rows L2-normalized.

        `language` picks the FLORES-200 code for NLLB models (ISO codes such as "de" are mapped;
        default English). long_text="window" embeds overlapping context-length windows of a long
        text and averages them (re-normalized) instead of truncating.
        """
        if long_text not in LONG_TEXT_MODES:
            raise InvalidArgumentError("long_text", long_text, LONG_TEXT_MODES)
        texts = list(texts)
        if long_text == "window":
            rows = [self.embed_tokens(self.text_windows(t, language)).mean(axis=0) for t in texts]
            return l2_normalize(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)
        parts = [
            self.embed_tokens(self.tokenize(texts[i : i + batch_size], language))
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _file_signature(path: Path, sample: int = 1 << 20) -> bytes:
    """Size plus the first and last MiB: identifies multi-GB weight files in milliseconds."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(sample)
        fp.seek(max(0, size - sample))
        tail = fp.read(sample)
    return str(size).encode() + head + tail


def _handle_error(on_error: ErrorHandler, index: int, item: object, error: MediaError) -> None:
    if on_error == "raise":
        raise error
    if on_error == "skip":
        log.warning("skipped %s", error)
    else:
        on_error(index, item, error)
