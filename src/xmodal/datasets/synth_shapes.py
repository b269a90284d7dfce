"""A synthetic captioned image set: 1-3 coloured shapes on varied backgrounds, with paraphrased captions.

Every caption names each shape's colour, kind and grid position (and mostly its size), so a caption
identifies its image as far as the scene allows; captions of one image word things differently and
list the shapes in different orders. Images are real JPEG/PNG files and the annotations are a
Karpathy split JSON (`dataset_synth_shapes.json`), so every reader and command treats the set like
COCO. The same seed gives byte-identical files: each image draws from its own generator seeded by
(seed, index), whatever the thread that renders it.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from xmodal.datasets.shapes import COLORS, SIZES, Shape, describe, random_scene
from xmodal.errors import InvalidArgumentError
from xmodal.parallel import bounded_map
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

ANNOTATIONS = "dataset_synth_shapes.json"
CAPTIONS_PER_IMAGE = 5
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: how many images (and videos), from which seed, at what size."""

    n: int = 1000
    seed: int = 0
    videos: int = 0
    image_size: int = 128
    png_share: float = 0.1  # this share of images is written as PNG, the rest as JPEG


def random_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A pale, low-saturation backdrop: flat, a gradient, or grain, so shapes always stand out."""
    base = rng.uniform(185, 245) + rng.uniform(-20, 20, size=3)
    kind = int(rng.integers(0, 3))
    pixels = np.broadcast_to(base, (size, size, 3)).copy()
    if kind == 1:
        ramp = np.linspace(-1, 1, size)[:, None] if rng.random() < 0.5 else np.linspace(-1, 1, size)[None, :]
        pixels += (ramp * rng.uniform(10, 30))[..., None]
    elif kind == 2:
        pixels += rng.normal(0, 8, size=(size, size, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        radii = np.full(3, r)
    elif kind == "diamond":
        angles = np.deg2rad([-90, 0, 90, 180])
        radii = np.array([r, 0.7 * r, r, 0.7 * r])
    else:  # star
        angles = np.deg2rad(np.arange(10) * 36 - 90)
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    return [(cx + rad * np.cos(a), cy + rad * np.sin(a)) for a, rad in zip(angles, radii, strict=True)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, center: tuple[float, float], side: float) -> None:
    """Draw one filled shape of box side `side` centred at `center`."""
    cx, cy = center
    r = side / 2
    color = COLORS[shape.color]
    if shape.kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape.kind == "square":
        s = 0.85 * r
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=color)
    elif shape.kind == "cross":
        w = 0.33 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=color)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=color)
    else:
        draw.polygon(_polygon(shape.kind, cx, cy, r), fill=color)


def cell_center(cell: tuple[int, int], size: int, jitter: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """Pixel centre of a grid cell, moved by `jitter` (fractions of a cell)."""
    step = size / 3
    row, col = cell
    return ((col + 0.5 + jitter[1]) * step, (row + 0.5 + jitter[0]) * step)


def render_scene(scene: list[Shape], rng: np.random.Generator, size: int) -> Image.Image:
    """The scene drawn on a random background; shapes jittered inside their cells."""
    img = random_background(rng, size)
    draw = ImageDraw.Draw(img)
    for shape in scene:
        side = SIZES[shape.size] * size * rng.uniform(0.9, 1.1)
        slack = max(0.0, (size / 3 - side) / 2) / (size / 3)
        jitter = tuple(rng.uniform(-slack, slack, size=2))
        draw_shape(draw, shape, cell_center(shape.cell, size, jitter), side)
    return img


def split_of(index: int, n: int) -> str:
    start = 0.0
    for name, share in SPLITS:
        start += share
        if index < round(start * n):
            return name
    return SPLITS[-1][0]


def _make_image(config: SynthConfig, out_dir: Path, index: int) -> dict:
    rng = np.random.default_rng([config.seed, index])
    scene = random_scene(rng)
    img = render_scene(scene, rng, config.image_size)
    captions = [describe(scene, rng) for _ in range(CAPTIONS_PER_IMAGE)]
    png = rng.random() < config.png_share
    name = f"{index:06d}.{'png' if png else 'jpg'}"
    buffer = io.BytesIO()
    img.save(buffer, format="PNG" if png else "JPEG", quality=92)
    (out_dir / "images" / name).write_bytes(buffer.getvalue())
    return {
        "filepath": "images",
        "filename": name,
        "imgid": index,
        "split": split_of(index, config.n),
        "sentences": [
            {"raw": c, "imgid": index, "sentid": index * CAPTIONS_PER_IMAGE + k} for k, c in enumerate(captions)
        ],
        "shapes": [{"color": s.color, "shape": s.kind, "size": s.size, "cell": list(s.cell)} for s in scene],
    }


def generate_synth_shapes(
    out_dir: str | Path, config: SynthConfig | None = None, progress: Progress | None = None
) -> Path:
    """Write images/, dataset_synth_shapes.json (and videos/ + videos.jsonl) under out_dir; return the JSON path."""
    config = config or SynthConfig()
    if config.n < 1:
        raise InvalidArgumentError("n", config.n, "an integer >= 1")
    if config.videos < 0:
        raise InvalidArgumentError("videos", config.videos, "an integer >= 0")
    if not 32 <= config.image_size <= 1024:
        raise InvalidArgumentError("image_size", config.image_size, "an integer in [32, 1024]")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    progress = progress or NullProgress()
    progress.start("generating images", config.n)
    images = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for record in bounded_map(pool, lambda i: _make_image(config, out_dir, i), range(config.n), ahead=64):
            images.append(record)
            progress.advance()
    path = out_dir / ANNOTATIONS
    data = {"dataset": "synth_shapes", "seed": config.seed, "images": images}
    path.write_text(json.dumps(data, indent=1))
    if config.videos:
        from xmodal.datasets.synth_videos import generate_synth_videos

        generate_synth_videos(out_dir, config, progress)
    log.info("wrote %d images to %s", config.n, out_dir)
    return path
