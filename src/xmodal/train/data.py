"""Training data in memory: every image decoded and resized once (uint8), every caption tokenized once.

Images go through the same decode and resize as `Encoder.embed_images` (`decode_image`,
`resize_for_model`) and are normalized in torch with the same mean/std, so the model trains on
exactly what it will see after export. Items that fail to decode are logged and left out.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from xmodal.datasets.shapes import Shape, annotated_scenes
from xmodal.errors import DatasetFormatError, MediaError
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.media.image import DecodeOptions, decode_image
from xmodal.models.config import PreprocessCfg
from xmodal.models.preprocess import resize_for_model
from xmodal.models.tokenizer import TextTokenizer
from xmodal.parallel import bounded_map
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)


@dataclass
class PairData:
    """Images (N, S, S, 3) uint8, token ids/masks (T, L), and which captions describe which image."""

    name: str
    pixels: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    item_texts: list[list[int]]  # image index -> its caption indices (non-empty)
    text_items: list[list[int]]  # caption index -> its image indices
    scenes: list[list[Shape]] | None = None  # image index -> its shapes, when the dataset annotates them

    def __len__(self) -> int:
        return len(self.pixels)


def _resized(item: object, cfg: PreprocessCfg) -> np.ndarray | MediaError:
    try:
        img = decode_image(item, DecodeOptions(draft_size=2 * cfg.size)).image
    except MediaError as exc:
        return exc
    return np.asarray(resize_for_model(img, cfg), dtype=np.uint8)


def load_pairs(
    dataset: RetrievalDataset, cfg: PreprocessCfg, tokenizer: TextTokenizer, progress: Progress | None = None
) -> PairData:
    """Decode, resize and tokenize a dataset; images without a caption and undecodable ones are dropped."""
    if dataset.kind != "image":
        raise DatasetFormatError(dataset.name, f"training takes image datasets, not {dataset.kind}")
    progress = progress or NullProgress()
    progress.start(f"loading {dataset.name}", len(dataset.items))
    arrays: list[np.ndarray | None] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in bounded_map(pool, lambda item: _resized(item, cfg), dataset.items, ahead=64):
            if isinstance(result, MediaError):
                log.warning("skipped %s", result)
                result = None
            arrays.append(result)
            progress.advance()
    captioned = dataset.item_positives
    drop = {i for i, a in enumerate(arrays) if a is None or not captioned[i]}
    kept = dataset.without_items(drop)
    if not kept.items:
        raise DatasetFormatError(dataset.name, "no decodable captioned images to train on")
    tokens = tokenizer.encode(kept.texts)
    return PairData(
        name=dataset.name,
        pixels=np.stack([a for i, a in enumerate(arrays) if i not in drop]),
        ids=tokens.ids,
        mask=tokens.attention_mask,
        item_texts=kept.item_positives,
        text_items=kept.text_positives,
        scenes=annotated_scenes(kept),
    )


class Normalizer:
    """uint8 (N, S, S, 3) -> normalized float32 (N, 3, S, S), as ImagePreprocessor computes it."""

    def __init__(self, cfg: PreprocessCfg):
        std = np.asarray(cfg.std, dtype=np.float32)
        self.scale = torch.from_numpy((1.0 / (255.0 * std)).astype(np.float32))
        self.offset = torch.from_numpy((np.asarray(cfg.mean, dtype=np.float32) / std).astype(np.float32))

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).float()
        return (x * self.scale - self.offset).permute(0, 3, 1, 2).contiguous()
