"""`xmodal demo`: the product end to end, offline, in seconds — generate a small photo library of
coloured shapes, index it with the shipped model, and search it by text.

The generated library knows its answers (every photo's shapes are in its annotation file), so the
demo asks for shapes that are in it and says which hits are right: a real retrieval check, not a
show of arbitrary scores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.datasets import ANNOTATIONS, SynthConfig, generate_synth_shapes
from xmodal.datasets.shapes import Shape, annotated_scenes, fits, shape_phrase
from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.library import Library
from xmodal.progress import Progress
from xmodal.search import SearchResults
from xmodal.store.ingest import IndexReport

DEMO_MODEL = "xmodal-tiny-shapes"
# What each demo query says of its shape besides the kind: mostly what people type first.
DEMO_FORMS = (
    frozenset({"color"}),
    frozenset({"color"}),
    frozenset({"color"}),
    frozenset({"size", "color"}),
    frozenset({"color", "position"}),
)


@dataclass
class DemoSearch:
    """One search of the demo, with whether each hit is right by the library's own annotations."""

    query: str
    results: SearchResults
    correct: list[bool]
    relevant: int  # photos in the library the query fits


@dataclass
class DemoReport:
    folder: Path
    library: Path
    photos: int
    index: IndexReport
    searches: list[DemoSearch]


def run_demo(
    folder: str | Path, *, n: int = 200, seed: int = 7, k: int = 3, progress: Progress | None = None
) -> DemoReport:
    """Generate `n` annotated shape photos under `folder`/photos (once), index them into the
    library `folder`/library with the shipped model, and search for shapes the photos hold."""
    folder = Path(folder).expanduser().absolute()
    annotations = folder / "photos" / ANNOTATIONS
    if not annotations.is_file():
        generate_synth_shapes(folder / "photos", SynthConfig(n=n, seed=seed), progress)
    dataset = read_dataset(f"karpathy:{annotations}", ReadOptions(split=None))
    scenes = annotated_scenes(dataset)
    if scenes is None:
        raise DatasetFormatError(annotations, "photos without a 'shapes' annotation; delete the folder to regenerate")
    scene_of = {str(path): scene for path, scene in zip(dataset.items, scenes, strict=True)}
    with Library(folder / "library") as lib:
        report = lib.index([folder / "photos" / "images"], model=DEMO_MODEL, progress=progress)
        searches = []
        for text, wanted in demo_queries(scenes):
            results = lib.search(text=text, k=k)
            correct = [fits(scene_of.get(hit.path, []), wanted) for hit in results]
            searches.append(DemoSearch(text, results, correct, sum(fits(s, wanted) for s in scenes)))
    return DemoReport(folder, folder / "library", len(scenes), report, searches)


def demo_queries(scenes: list[list[Shape]]) -> list[tuple[str, list[tuple[Shape, frozenset[str]]]]]:
    """One query per DEMO_FORMS entry, each for the most frequent shape description of its form
    not asked yet (so that the library holds several right answers), phrased like the captions."""
    rng = np.random.default_rng(0)
    queries, asked = [], set()
    for said in DEMO_FORMS:
        counts = Counter(_description(shape, said) for scene in scenes for shape in set(scene))
        for description, _ in sorted(counts.items(), key=lambda c: (-c[1], c[0])):
            if description not in asked:
                asked.add(description)
                shape = next(s for scene in scenes for s in scene if _description(s, said) == description)
                queries.append((shape_phrase(shape, rng, said=said), [(shape, said)]))
                break
    return queries


def _description(shape: Shape, said: frozenset[str]) -> tuple:
    """What a query of form `said` says about `shape` (equal descriptions = the same query)."""
    return (
        shape.kind,
        shape.color if "color" in said else None,
        shape.size if "size" in said else None,
        shape.cell if "position" in said else None,
    )
