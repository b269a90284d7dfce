"""The language of synth-shapes: what a scene holds (coloured shapes in a 3x3 grid) and how captions say it.

Kept apart from the image generator so that training, evaluation and the demo can phrase and check
descriptions ("a small red circle at the top left") without rendering anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from xmodal.errors import DatasetFormatError

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


def tag_vocabulary() -> dict:
    """A zero-shot tag vocabulary (the JSON `xmodal tag --vocabulary` reads) of the colours and the
    shapes, each group with templates that say what kind of word it is."""
    return {
        "groups": [
            {
                "name": "colours",
                "labels": list(COLORS),
                "templates": ["a {} shape", "a picture of a {} shape", "there is a {} shape"],
            },
            {"name": "shapes", "labels": list(SHAPES), "templates": ["a {}", "a picture of a {}", "there is a {}"]},
        ]
    }


class AnnotatedItems(Protocol):
    """What `annotated_scenes` reads of a dataset: its name, item ids and per-item attributes."""

    name: str
    item_ids: Sequence[str]
    item_attributes: Sequence[dict] | None


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


def annotated_scenes(dataset: AnnotatedItems) -> list[list[Shape]] | None:
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
