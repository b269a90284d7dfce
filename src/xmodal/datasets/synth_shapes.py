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
import itertools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.parallel import bounded_map
from xmodal.progress import NullProgress, Progress

if TYPE_CHECKING:
    from xmodal.eval.datasets.base import RetrievalDataset

log = logging.getLogger(__name__)

ANNOTATIONS = "dataset_synth_shapes.json"
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (240, 215, 20),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 50, 185),
    "pink": (245, 125, 195),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = {"small": 0.16, "large": 0.3}  # side of the shape's box as a fraction of the image side
# Grid cell (row, column) -> ways of saying where a shape is.
POSITIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("at the top left", "in the upper left corner", "in the top left corner"),
    (0, 1): ("at the top", "at the top centre", "in the upper middle"),
    (0, 2): ("at the top right", "in the upper right corner", "in the top right corner"),
    (1, 0): ("on the left", "at the centre left", "in the middle of the left side"),
    (1, 1): ("in the centre", "in the middle", "at the centre"),
    (1, 2): ("on the right", "at the centre right", "in the middle of the right side"),
    (2, 0): ("at the bottom left", "in the lower left corner", "in the bottom left corner"),
    (2, 1): ("at the bottom", "at the bottom centre", "in the lower middle"),
    (2, 2): ("at the bottom right", "in the lower right corner", "in the bottom right corner"),
}
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


@dataclass(frozen=True)
class Shape:
    """One shape of a scene: what it is and which grid cell it sits in."""

    color: str
    kind: str
    size: str
    cell: tuple[int, int]


def random_shape(rng: np.random.Generator, cell: tuple[int, int]) -> Shape:
    """A shape of random colour, kind and size in the given cell."""
    return Shape(
        str(rng.choice(list(COLORS))),
        str(rng.choice(SHAPES)),
        str(rng.choice(list(SIZES))),
        (int(cell[0]), int(cell[1])),
    )


def random_scene(rng: np.random.Generator) -> list[Shape]:
    """1-3 shapes in distinct grid cells."""
    count = int(rng.integers(1, 4))
    cells = rng.choice(9, size=count, replace=False)
    return [random_shape(rng, divmod(int(c), 3)) for c in cells]


# Terse names of the grid cells, for list-like captions ("red circle, upper left").
TERSE_POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "upper left",
    (0, 1): "top",
    (0, 2): "upper right",
    (1, 0): "left",
    (1, 1): "centre",
    (1, 2): "right",
    (2, 0): "lower left",
    (2, 1): "bottom",
    (2, 2): "lower right",
}


SAID = frozenset({"size", "color", "position"})  # attributes a phrase may name; a shape's kind is always named


def shape_phrase(
    shape: Shape, rng: np.random.Generator, *, terse: bool = False, said: frozenset[str] | None = None
) -> str:
    """'a small red circle at the top left' (or tersely 'small red circle, upper left').

    `said`: which of size/color/position to name; by default colour and position always, size mostly."""
    if said is None:
        said = SAID if rng.random() < 0.8 else SAID - {"size"}
    name = " ".join([shape.size] * ("size" in said) + [shape.color] * ("color" in said) + [shape.kind])
    if terse:
        return f"{name}, {TERSE_POSITIONS[shape.cell]}" if "position" in said else name
    article = "an" if name[0] in "aeiou" else "a"
    return f"{article} {name} {rng.choice(POSITIONS[shape.cell])}" if "position" in said else f"{article} {name}"


def describe(
    scene: list[Shape], rng: np.random.Generator, said: list[frozenset[str]] | None = None, *, whole: bool = True
) -> str:
    """One caption naming every shape of `scene` (said[i]: what to name of scene[i]), shapes in a random order.

    `whole=False`: the shapes are only some of the picture's, so the caption does not count them."""
    order = rng.permutation(len(scene))
    style = int(rng.integers(0, 5))
    says = [None if said is None else said[i] for i in order]
    if style == 4:
        return "; ".join(shape_phrase(scene[i], rng, terse=True, said=s) for i, s in zip(order, says, strict=True))
    phrases = [shape_phrase(scene[i], rng, said=s) for i, s in zip(order, says, strict=True)]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if style == 1:
        return f"there is {body}"
    if style == 2 and whole:
        count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(scene)]
        return f"{count}: {body}"
    if style == 3:
        return f"a picture of {body}"
    return body


def agrees(shape: Shape, wanted: Shape, said: frozenset[str]) -> bool:
    """Whether `shape` is of `wanted`'s kind and agrees with it on the attributes in `said`."""
    return (
        shape.kind == wanted.kind
        and ("color" not in said or shape.color == wanted.color)
        and ("size" not in said or shape.size == wanted.size)
        and ("position" not in said or shape.cell == wanted.cell)
    )


def fits(scene: list[Shape], wanted: list[tuple[Shape, frozenset[str]]]) -> bool:
    """Whether a description naming `wanted` (shape, what is said of it) is true of the scene: each
    wanted shape agrees with a shape of its own in the scene."""
    return any(
        all(agrees(scene[i], shape, said) for i, (shape, said) in zip(chosen, wanted, strict=True))
        for chosen in itertools.permutations(range(len(scene)), len(wanted))
    )


def annotated_scenes(dataset: RetrievalDataset) -> list[list[Shape]] | None:
    """Every item's shapes from its `shapes` attribute (as synth-shapes' JSON records them); None
    unless every item has one."""
    attributes = dataset.item_attributes
    if attributes is None or any("shapes" not in a for a in attributes):
        return None
    scenes = []
    for item_id, a in zip(dataset.item_ids, attributes, strict=True):
        try:
            scenes.append(
                [
                    Shape(str(s["color"]), str(s["shape"]), str(s["size"]), (int(s["cell"][0]), int(s["cell"][1])))
                    for s in a["shapes"]
                ]
            )
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise DatasetFormatError(dataset.name, f"{item_id}: malformed 'shapes' annotation ({exc!r})") from None
    return scenes


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
