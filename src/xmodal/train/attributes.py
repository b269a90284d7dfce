"""Attribute captions: partial descriptions of a training image drawn from its `shapes` annotation.

A user types "a red circle", not a whole scene. With attribute captions on, a share of each batch's
captions is replaced by a description of some of the image's shapes naming some of their attributes
(the synth-shapes phrase generators word it), and since such a caption is true of other images of
the batch too, the loss takes every image it fits as a positive (exactly, from the annotations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.datasets.shapes import Shape, describe, fits

# What a partial description says of each shape besides its kind (always said).
SAYINGS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"color"}),
    frozenset({"size", "color"}),
    frozenset({"position"}),
    frozenset({"color", "position"}),
    frozenset({"size", "color", "position"}),
)
ONE_SHAPE = 0.7  # share of attribute captions that describe a single shape

Wanted = list[tuple[Shape, frozenset[str]]]


@dataclass(frozen=True)
class AttributeCaption:
    """A partial description of an image and what it asks for."""

    text: str
    wanted: Wanted


def attribute_caption(scene: list[Shape], rng: np.random.Generator) -> AttributeCaption:
    """Some of the scene's shapes (mostly one), each with a random choice of its attributes, in words."""
    count = 1 if len(scene) == 1 or rng.random() < ONE_SHAPE else int(rng.integers(2, len(scene) + 1))
    chosen = [scene[i] for i in rng.choice(len(scene), size=count, replace=False)]
    said = [SAYINGS[int(rng.integers(len(SAYINGS)))] for _ in chosen]
    return AttributeCaption(describe(chosen, rng, said, whole=False), list(zip(chosen, said, strict=True)))


def batch_positives(scenes: Sequence[list[Shape]], captions: Sequence[AttributeCaption | None]) -> np.ndarray:
    """(images x captions) bool: caption j is image j's own, and an attribute caption also fits every
    other image of the batch whose scene it is true of."""
    positives = np.eye(len(scenes), dtype=bool)
    for j, caption in enumerate(captions):
        if caption is not None:
            positives[:, j] = [fits(scene, caption.wanted) for scene in scenes]
    return positives
