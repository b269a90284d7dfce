"""How images are decoded (pixel limit, background, JPEG draft target): a plain value that models
and settings hold without importing Pillow, which only decoding needs."""

from __future__ import annotations

from dataclasses import dataclass

# Pillow raises DecompressionBombError itself above twice its MAX_IMAGE_PIXELS; using the same
# number keeps our limit and Pillow's in agreement by default while allowing a lower one.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode: pixel limit, background for transparency, JPEG draft target."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] = WHITE
    # JPEG only: let libjpeg scale down in the DCT domain while both sides stay >= this many
    # pixels (a 12 MP photo decodes ~6x faster). None decodes at full resolution.
    draft_size: int | None = None


__all__ = ["DEFAULT_MAX_PIXELS", "WHITE", "DecodeOptions"]
