"""Retrieval benchmark of a user's own library: their captions as queries against everything the
library holds (the rest of the photos act as distractors), scored on the stored embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.captions import is_caption_file, photo_caption_vectors
from xmodal.errors import DatasetFormatError
from xmodal.eval.cache import EmbeddingCache
from xmodal.eval.datasets.base import RetrievalDataset
from xmodal.eval.embedding import embed_texts
from xmodal.eval.metrics import DEFAULT_KS, rank_metrics
from xmodal.eval.retrieval import RetrievalResult, evaluate_embedded
from xmodal.library import Library, LibraryVectors
from xmodal.progress import Progress
from xmodal.search import CaptionCombine, ScoreScales


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


@dataclass
class CombinationResult:
    """Text -> photo retrieval in a library for each way of combining a photo's pixel and caption
    scores: metrics per combination, on the queries that are not their photo's caption words."""

    model: str
    queries: int
    photos: int
    captioned: int  # photos with a caption (a caption file or an embedded description)
    left_out: int  # queries with the very words of their photo's caption (trivial for captions)
    rows: list[tuple[str, dict[str, float]]]

    def markdown(self) -> str:
        lines = [
            f"{self.model}: {self.queries} queries over {self.photos} photos ({self.captioned} with a caption)",
            "",
            "| combine | R@1 | R@5 | R@10 | MedR | MnR |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in self.rows:
            lines.append(
                f"| {name} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | {m['MedR']:g} | {m['MnR']:.2f} |"
            )
        if self.left_out:
            lines.append(f"\n{self.left_out} queries left out: the same words as their photo's caption")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "queries": self.queries,
            "photos": self.photos,
            "captioned": self.captioned,
            "left_out": self.left_out,
            "combinations": [{"combine": name, **metrics} for name, metrics in self.rows],
        }


def evaluate_caption_combinations(
    library: Library,
    captions: RetrievalDataset,
    combines: Sequence[str | float],
    *,
    model: str | os.PathLike | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> CombinationResult:
    """Which way of combining pixel and caption scores (`search.CaptionCombine`: "max", or a
    caption weight 0-1) finds the user's photos best from their captions, as `Library.search`
    scores them: a photo's caption score is its best caption vector (caption files' and embedded
    descriptions' windows), carried over to the pixel scale by the query's scores of every photo
    and every caption of the gallery."""
    gallery = library.vectors(model)
    dataset, vectors = library_dataset(captions, gallery, library.folder)
    encoder = library.encoder(gallery.model.key)
    catalog = library.catalog
    with catalog.read():
        rows = {r.path: r for r in catalog.items_by_id(gallery.ids.tolist()).values()}
        photos = [rows[str(p)] for p in dataset.items]
        caption_vectors = [photo_caption_vectors(catalog, gallery.model.key, p) for p in photos]
        words = [_caption_words(catalog, gallery.model.key, p) for p in photos]
    keep = [
        q
        for q, (text, items) in enumerate(zip(dataset.texts, dataset.text_positives, strict=True))
        if not any(" ".join(text.split()) in words[i] for i in items)
    ]
    if not keep:
        raise DatasetFormatError(Path(captions.name), "every caption is the very words of its photo's caption")
    texts = [dataset.texts[q] for q in keep]
    positives = [dataset.text_positives[q] for q in keep]
    queries = embed_texts(encoder, texts, language=dataset.language, cache=cache, progress=progress).vectors
    pixels = queries @ vectors.T
    caption_scores = np.full(pixels.shape, np.nan)
    for i, block in enumerate(caption_vectors):
        if block is not None:
            caption_scores[:, i] = (queries @ block.T).max(axis=1)
    every_caption = [b for b in caption_vectors if b is not None]
    scales = ScoreScales.of(pixels, queries @ np.concatenate(every_caption).T) if every_caption else None
    results = []
    for spec in combines:
        combine = CaptionCombine.parse(spec)
        results.append((str(combine), rank_metrics(combine.combine(pixels, caption_scores, scales), positives, ks)))
    return CombinationResult(
        gallery.model.name,
        len(keep),
        len(photos),
        sum(v is not None for v in caption_vectors),
        len(dataset.texts) - len(keep),
        results,
    )


def _caption_words(catalog, model_key: str, photo) -> set[str]:
    """The words of a photo's captions as stored (each window's), whitespace collapsed."""
    out = set()
    for row in [photo, *catalog.caption_group(photo.path)]:
        if row.id == photo.id or is_caption_file(row):
            out.update(" ".join((s.text or "").split()) for s in catalog.segments(model_key, row.content_hash or ""))
    out.discard("")
    return out
