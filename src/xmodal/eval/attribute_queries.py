"""Attribute-query precision: how well a model finds images by what a user types ("a red circle")
rather than by a whole-scene caption, on a dataset whose items carry synth-shapes `shapes` annotations.

For each query form, one query per distinct value of its attributes present in the gallery (e.g.
every colour x kind pair); a hit is right when its image holds a shape with those attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal.datasets.shapes import annotated_scenes, fits, shape_phrase
from xmodal.errors import DatasetFormatError, MediaError
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.eval.embedding import embed_items
from xmodal.models.encoder import Encoder

# Query form -> what it says of the shape besides its kind.
QUERY_FORMS: dict[str, frozenset[str]] = {
    "a {color} {kind}": frozenset({"color"}),
    "a {color} {kind} {position}": frozenset({"color", "position"}),
    "a {size} {color} {kind} {position}": frozenset({"size", "color", "position"}),
}


@dataclass(frozen=True)
class FormPrecision:
    """Mean precision@k of one query form, the best any ranking could reach (some queries fit fewer
    than k images) and chance (the mean share of the gallery a query fits)."""

    form: str
    queries: int
    k: int
    precision: float
    ceiling: float
    chance: float


def attribute_query_precision(encoder: Encoder, dataset: RetrievalDataset, k: int = 3) -> list[FormPrecision]:
    """Mean precision@k of every query form of QUERY_FORMS over the dataset's annotated gallery."""
    scenes = annotated_scenes(dataset)
    if scenes is None:
        raise DatasetFormatError(dataset.name, "attribute queries need a 'shapes' annotation on every image")
    embedded = embed_items(encoder, dataset.items)
    if embedded.failures:  # every annotated image counts: none may be left out
        i, reason = next(iter(embedded.failures.items()))
        raise MediaError(dataset.items[i], reason)
    images = embedded.vectors
    rng = np.random.default_rng(0)  # picks among the ways of saying a position
    results = []
    for form, said in QUERY_FORMS.items():
        queries, relevant = {}, []
        for scene in scenes:
            for shape in scene:
                key = (shape.kind, *(getattr(shape, a) for a in ("color", "size", "cell") if _says(said, a)))
                if key not in queries:
                    queries[key] = shape_phrase(shape, rng, said=said)
                    relevant.append(np.array([fits(s, [(shape, said)]) for s in scenes]))
        scores = encoder.embed_texts(list(queries.values())) @ images.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        hits = np.array([r[t] for r, t in zip(relevant, top, strict=True)])
        fitting = np.array([r.sum() for r in relevant])
        ceiling, chance = np.minimum(fitting, k) / k, fitting / len(scenes)
        results.append(
            FormPrecision(form, len(queries), k, float(hits.mean()), float(ceiling.mean()), float(chance.mean()))
        )
    return results


def _says(said: frozenset[str], attribute: str) -> bool:
    return ("position" if attribute == "cell" else attribute) in said
