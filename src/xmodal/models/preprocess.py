"""Image preprocessing for the visual tower, driven by PreprocessCfg.

Reproduces open_clip / transformers' CLIPImageProcessor and SiglipImageProcessor: resize with
Pillow on uint8 pixels (shortest side -> centre crop, squash, or longest side -> pad), then /255,
(x - mean) / std, HWC -> CHW. Parity is tested against transformers' PIL backend.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from xmodal.models.config import PreprocessCfg

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resize_for_model(img: Image.Image, cfg: PreprocessCfg) -> Image.Image:
    """Resize (and crop or pad) an RGB image to cfg.size x cfg.size following cfg.resize_mode."""
    size, resample = cfg.size, _RESAMPLE[cfg.interpolation]
    width, height = img.size
    if cfg.resize_mode == "squash":
        return img if img.size == (size, size) else img.resize((size, size), resample)
    if cfg.resize_mode == "shortest":
        # transformers' get_resize_output_image_size: the long side is truncated, not rounded.
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if width <= height else (new_long, size)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return img.crop((left, top, left + size, top + size))
    # "longest": open_clip's ResizeKeepRatio(longest=1) then CenterCropOrPad with fill_color.
    ratio = max(width, height) / size
    new_w, new_h = max(1, round(width / ratio)), max(1, round(height / ratio))
    img = img.resize((new_w, new_h), resample)
    canvas = Image.new("RGB", (size, size), (cfg.fill_color,) * 3)
    canvas.paste(img, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


class ImagePreprocessor:
    """Callable turning RGB images into normalized float32 CHW arrays for one PreprocessCfg."""

    def __init__(self, cfg: PreprocessCfg):
        self.cfg = cfg
        std = np.asarray(cfg.std, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (np.asarray(cfg.mean, dtype=np.float32) / std).astype(np.float32)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """One RGB image -> (3, size, size) float32."""
        return self.normalize(np.asarray(resize_for_model(img, self.cfg)))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Resized uint8 RGB (..., S, S, 3) -> normalized float32 (..., 3, S, S)."""
        x = np.asarray(pixels, dtype=np.float32) * self._scale - self._offset
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def pixels(self, x: np.ndarray) -> np.ndarray:
        """The inverse of normalize: (..., 3, S, S) float32 -> the uint8 RGB (..., S, S, 3) it came from."""
        values = (np.moveaxis(np.asarray(x, dtype=np.float32), -3, -1) + self._offset) / self._scale
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        """Several RGB images -> (N, 3, size, size) float32."""
        out = np.empty((len(images), 3, self.cfg.size, self.cfg.size), dtype=np.float32)
        for i, img in enumerate(images):
            out[i] = self(img)
        return out
