"""`xmodal demo`: the product end to end, offline, in well under a minute — generate a small photo
library of coloured shapes, index it with the shipped model, and search it by text and by example.

The generated library knows its answers (every photo's shapes are in its annotation file), so the
demo also says which hits are right: a real retrieval check, not a show of arbitrary scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from xmodal.datasets import ANNOTATIONS, SynthConfig, generate_synth_shapes
from xmodal.library import Library
from xmodal.progress import Progress
from xmodal.search import SearchResults
from xmodal.store.ingest import IndexReport

log = logging.getLogger(__name__)

DEMO_MODEL = "xmodal-tiny-shapes"


@dataclass(frozen=True)
class DemoQuery:
    """A text query and what a right answer contains: a shape of this colour and kind (and size)."""

    text: str
    color: str
    kind: str
    size: str | None = None


DEMO_QUERIES = (
    DemoQuery("a red circle", "red", "circle"),
    DemoQuery("a large blue square", "blue", "square", "large"),
    DemoQuery("green triangle", "green", "triangle"),
    DemoQuery("a small yellow star", "yellow", "star", "small"),
    DemoQuery("a purple diamond", "purple", "diamond"),
)


@dataclass
class DemoSearch:
    """One search of the demo, with whether each hit is right by the library's own annotations."""

    query: str
    results: SearchResults
    correct: list[bool]


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
    """Generate `n` captioned shape photos under `folder`/photos (once), index them into the
    library `folder`/library with the shipped model, and run the demo searches."""
    folder = Path(folder).expanduser().absolute()
    photos = folder / "photos"
    annotations = photos / ANNOTATIONS
    if not annotations.is_file():
        generate_synth_shapes(photos, SynthConfig(n=n, seed=seed), progress)
    shapes = _shapes_by_path(annotations)
    with Library(folder / "library") as lib:
        report = lib.index([photos / "images"], model=DEMO_MODEL, progress=progress)
        searches = [_text_search(lib, q, k, shapes) for q in DEMO_QUERIES]
        example = sorted(shapes)[0]
        searches.append(_example_search(lib, example, k, shapes))
    return DemoReport(folder, folder / "library", len(shapes), report, searches)


def _shapes_by_path(annotations: Path) -> dict[str, list[dict]]:
    data = json.loads(annotations.read_text())
    root = annotations.parent
    return {str(root / i["filepath"] / i["filename"]): i["shapes"] for i in data["images"]}


def _text_search(lib: Library, query: DemoQuery, k: int, shapes: dict[str, list[dict]]) -> DemoSearch:
    results = lib.search(text=query.text, k=k)

    def right(path: str) -> bool:
        return any(
            s["color"] == query.color and s["shape"] == query.kind and query.size in (None, s["size"])
            for s in shapes.get(path, [])
        )

    return DemoSearch(query.text, results, [right(hit.path) for hit in results])


def _example_search(lib: Library, example: str, k: int, shapes: dict[str, list[dict]]) -> DemoSearch:
    """Photos like `example`: right when they share one of its (colour, kind) shapes."""
    results = lib.search(image=example, k=k + 1)
    wanted = {(s["color"], s["shape"]) for s in shapes[example]}
    hits = [h for h in results if h.path != example][:k]
    correct = [bool(wanted & {(s["color"], s["shape"]) for s in shapes.get(h.path, [])}) for h in hits]
    return DemoSearch(
        f"photos like {Path(example).name}", SearchResults(hits, results.min_score, results.best_score), correct
    )
