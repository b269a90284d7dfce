"""The `Embedder` protocol: what the library, the ingest pipeline and the benchmarks need of a model.

Images go in as `preprocess` (decode threads) then `embed_pixels` (batches); documents likewise as
`text_windows` (decode threads) then `embed_tokens` (batches of windows of many documents).

`Encoder` (ONNX Runtime / OpenVINO graphs of a model folder) is the implementation users have;
anything else that offers these members (a remote model, a deterministic test model) can index and
search a library the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from xmodal.media.options import DecodeOptions

if TYPE_CHECKING:
    from PIL import Image

if TYPE_CHECKING:
    from xmodal.models.tokenizer import TokenBatch


@runtime_checkable
class Embedder(Protocol):
    """Images (decoded, preprocessed) and texts into one space of unit vectors."""

    model_key: str  # names the embedding space: caches and indexes are keyed by it
    name: str
    dim: int
    precision: str
    family: str  # "clip", "siglip", ... (decides default score floors)
    source: str  # how to load it again: a known model name or a folder
    decode_options: DecodeOptions

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """A decoded RGB image -> the image tower's (3, S, S) float32 input."""
        ...

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed (N, 3, S, S) batch -> (N, D) float32 unit rows."""
        ...

    def embed_texts(self, texts: Sequence[str], language: str | None = None) -> np.ndarray:
        """Texts -> (N, D) float32 unit rows."""
        ...

    def text_windows(self, text: str, language: str | None = None, limit: int | None = None) -> TokenBatch:
        """A document -> the text tower's input for its overlapping context-length windows (the
        first `limit`), each with its character span in `text`."""
        ...

    def embed_tokens(self, tokens: TokenBatch) -> np.ndarray:
        """Windows from `text_windows` (of one or several documents) -> (N, D) float32 unit rows."""
        ...


def same_model(key: str, other: str) -> bool:
    """Whether two model keys name the same files at the same precision (a model folder that was
    moved or renamed keeps its files' digest: ``name@precision:digest``)."""
    return key == other or key.partition("@")[2] == other.partition("@")[2]
