"""Retrieval benchmark of a user's own library: their captions as queries against everything the
library holds (the rest of the photos act as distractors), scored on the stored embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xmodal.errors import DatasetFormatError
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.eval.metrics import DEFAULT_KS
from xmodal.eval.retrieval import RetrievalResult, evaluate_embedded
from xmodal.library import Library, LibraryVectors
from xmodal.progress import Progress


def library_dataset(
    captions: RetrievalDataset, gallery: LibraryVectors, folder: Path
) -> tuple[RetrievalDataset, np.ndarray]:
    """The captions re-pointed at the library's items of the captions' kind, and those items'
    vectors: the gallery is every such item, positives are the captioned files the library holds;
    the others count as missing."""
    members = [n for n, kind in enumerate(gallery.types) if kind == captions.kind]
    position = {gallery.paths[n]: i for i, n in enumerate(members)}
    target = [position.get(os.path.abspath(str(item))) for item in captions.items]
    not_indexed = [captions.item_ids[i] for i, t in enumerate(target) if t is None]
    texts, positives, text_ids = [], [], []
    for text, items, text_id in zip(captions.texts, captions.text_positives, captions.text_ids, strict=True):
        kept = sorted({target[i] for i in items if target[i] is not None})
        if kept:
            texts.append(text)
            positives.append(kept)
            text_ids.append(text_id)
    if not texts:
        raise DatasetFormatError(
            Path(captions.name), f"none of its {len(captions.items)} captioned files is indexed in the library {folder}"
        )
    dataset = RetrievalDataset(
        name=f"{captions.name} in {folder.name or folder}",
        format="library",
        split=captions.split,
        kind=captions.kind,
        items=[Path(gallery.paths[n]) for n in members],
        item_ids=[gallery.paths[n] for n in members],
        texts=texts,
        text_positives=positives,
        text_ids=text_ids,
        missing=list(captions.missing) + not_indexed,
        problems=captions.problems,
        texts_dropped=captions.texts_dropped + len(captions.texts) - len(texts),
        language=captions.language,
    )
    whole = len(members) == len(gallery.types)  # one media type: no copy of the vectors
    return dataset, gallery.vectors if whole else gallery.vectors[np.asarray(members, dtype=np.int64)]


def evaluate_library(
    library: Library,
    captions: RetrievalDataset,
    *,
    model: str | os.PathLike | None = None,
    directions: Sequence[str] | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    predictions: int = 0,
) -> RetrievalResult:
    """R@K, MedR, MnR, MR of search in `library` with the user's captions (JSONL/CSV read by
    `read_dataset`): captions are embedded by the library's model, images come from the catalog."""
    gallery = library.vectors(model)
    dataset, vectors = library_dataset(captions, gallery, library.folder)
    return evaluate_embedded(
        library.encoder(gallery.model.key),
        dataset,
        vectors,
        directions=directions,
        cache=cache,
        progress=progress,
        ks=ks,
        predictions=predictions,
    )
