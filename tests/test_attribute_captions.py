"""Attribute captions: partial descriptions drawn from synth-shapes annotations, which images of a
batch they are true of, and the annotations travelling from the Karpathy JSON to training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from xmodal.datasets.shapes import Shape, fits, random_scene
from xmodal.errors import DatasetFormatError
from xmodal.eval import ReadOptions, read_dataset
from xmodal.train import TrainConfig, train
from xmodal.train.attributes import AttributeCaption, attribute_caption, batch_positives

RED_CIRCLE = Shape("red", "circle", "large", (0, 0))
BLUE_CIRCLE = Shape("blue", "circle", "small", (1, 1))
RED_SQUARE = Shape("red", "square", "small", (2, 2))
COLOR, POSITION = frozenset({"color"}), frozenset({"position"})


def test_a_description_fits_a_scene_only_with_a_distinct_shape_for_each_named_one():
    assert fits([RED_CIRCLE, RED_SQUARE], [(RED_CIRCLE, COLOR)])
    assert not fits([BLUE_CIRCLE, RED_SQUARE], [(RED_CIRCLE, COLOR)])
    assert fits([BLUE_CIRCLE], [(RED_CIRCLE, frozenset())])  # "a circle"
    assert fits([Shape("red", "circle", "small", (0, 0))], [(RED_CIRCLE, COLOR | POSITION)])  # size not said
    assert not fits([Shape("red", "circle", "small", (0, 0))], [(RED_CIRCLE, COLOR | {"size"})])
    # "a circle and a red circle" needs two circles
    assert not fits([RED_CIRCLE], [(BLUE_CIRCLE, frozenset()), (RED_CIRCLE, COLOR)])
    assert fits([BLUE_CIRCLE, RED_CIRCLE], [(BLUE_CIRCLE, frozenset()), (RED_CIRCLE, COLOR)])


def test_attribute_captions_are_true_of_their_image_and_name_what_they_ask_for():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = random_scene(rng)
        caption = attribute_caption(scene, rng)
        assert fits(scene, caption.wanted) and 1 <= len(caption.wanted) <= len(scene)
        assert all(shape.kind in caption.text for shape, _ in caption.wanted)
        if len(caption.wanted) == 1:
            ((shape, said),) = caption.wanted
            assert (shape.color in caption.text) == ("color" in said), caption
        assert not caption.text.startswith(("one shape", "two shapes", "three shapes"))


def test_batch_positives_mark_every_image_a_caption_fits():
    scenes = [[RED_CIRCLE], [BLUE_CIRCLE, RED_SQUARE], [Shape("red", "circle", "small", (2, 1))]]
    red_circle = AttributeCaption("a red circle", [(RED_CIRCLE, COLOR)])
    circle_top_left = AttributeCaption("a circle at the top left", [(RED_CIRCLE, POSITION)])
    assert batch_positives(scenes, [None, None, None]).tolist() == np.eye(3, dtype=bool).tolist()
    assert batch_positives(scenes, [None, None, red_circle]).tolist() == [
        [True, False, True],
        [False, True, False],
        [False, False, True],
    ]
    assert batch_positives(scenes, [circle_top_left, None, None])[:, 0].tolist() == [True, False, False]


def test_karpathy_items_carry_their_shapes_and_training_needs_them(tmp_path, synth_shapes):
    dataset = read_dataset(f"karpathy:{synth_shapes}", ReadOptions(split="val"))
    records = [r for r in json.loads(synth_shapes.read_text())["images"] if r["split"] == "val"]
    assert dataset.item_attributes == [{"shapes": r["shapes"]} for r in records]
    assert dataset.without_items([0]).item_attributes == dataset.item_attributes[1:]
    # the same set without the annotation: no attributes, and attribute captions are refused by name
    bare = tmp_path / "bare" / synth_shapes.name
    shutil.copytree(synth_shapes.parent, bare.parent)
    data = json.loads(synth_shapes.read_text())
    for record in data["images"]:
        del record["shapes"]
    bare.write_text(json.dumps(data))
    assert read_dataset(f"karpathy:{bare}", ReadOptions(split="val")).item_attributes is None
    config = TrainConfig(dataset=f"karpathy:{bare}", out=tmp_path / "run", attribute_captions=0.5, epochs=1)
    with pytest.raises(DatasetFormatError, match="attribute captions need a 'shapes' annotation"):
        train(config)
