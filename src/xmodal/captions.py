"""Photos and the words about them, for search: a photo's captions are its caption files (IMG_1.txt
or IMG_1.caption beside IMG_1.jpg, linked by `media.formats.caption_key`) and the description it
carries (stored as its segments). The links are read from paths at search time, so they follow
the files as they are now (a caption added, renamed or deleted) without being stored anywhere.

`scored_candidates` turns the entries an index search found into one candidate per item, scored
exactly against every vector of the item: a document or a video by its best part; a photo by its
pixels and its best caption, combined as `search.CaptionCombine` says (captions carried over to
the pixel scale by the query's scores of a `LibrarySample`). A caption file found by the index also
brings its photo in, so text finds photos through their captions as well as their pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from xmodal.media.formats import CAPTION_EXTENSIONS, extension
from xmodal.search import CaptionCombine, CaptionMatch, Moment, ScoreScales
from xmodal.store.catalog import Catalog, ItemRecord, entry_items


@dataclass
class Candidate:
    """An item a query met, scored: `similarity` ranks it; a photo keeps its pixels' score and its
    best caption apart; `parts` are the best segments of a document (windows) or video (moments)."""

    row: ItemRecord
    similarity: float
    parts: tuple[Moment, ...] = ()
    pixel_score: float | None = None
    caption: CaptionMatch | None = None

    def floor_margin(self, floors: dict[str, float | None]) -> float:
        """How far above its floor the candidate is (>= 0: kept); a photo passes by its pixels or
        its caption, each against its own modality's floor."""
        if self.row.type != "image" or self.pixel_score is None:
            return _margin(self.similarity, floors.get(self.row.type))
        margins = [_margin(self.pixel_score, floors.get("image"))]
        if self.caption is not None:
            margins.append(_margin(self.caption.score, floors.get("text")))
        return max(margins)


def _margin(score: float, floor: float | None) -> float:
    return np.inf if floor is None else score - floor


SAMPLE = 1000  # photos and captions whose scores give a query's two scales


@dataclass(frozen=True)
class LibrarySample:
    """Vectors of up to SAMPLE photos (pixels) and SAMPLE captions (caption files, descriptions
    in photos), spread evenly over the library: where a query's two score scales are read."""

    pixels: np.ndarray
    captions: np.ndarray

    def scales(self, query: np.ndarray) -> ScoreScales | None:
        if len(self.pixels) < 2 or len(self.captions) < 2:
            return None  # too few to tell a spread
        return ScoreScales.of(self.pixels @ query, self.captions @ query)


def library_sample(catalog: Catalog, model_key: str, limit: int = SAMPLE) -> LibrarySample:
    """The sample of a library for one model (call inside `catalog.read()`)."""
    photos = _spread(catalog.filtered_ids(type="image", model_key=model_key), limit)
    files = _spread(catalog.caption_file_ids(), limit)
    _, pixels = catalog.vectors(model_key, photos)
    _, captions = catalog.vectors(model_key, files)
    described = catalog.description_vectors(model_key, limit)
    parts = [v for v in (captions, described) if len(v)]
    return LibrarySample(pixels, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))


def _spread(ids: np.ndarray, limit: int) -> np.ndarray:
    return ids if len(ids) <= limit else ids[np.linspace(0, len(ids) - 1, limit).astype(np.int64)]


def is_caption_file(row: ItemRecord) -> bool:
    """A text item named like a caption file (whether a photo goes with it is `caption_group`'s)."""
    return row.type == "text" and extension(row.path) in CAPTION_EXTENSIONS


def scored_candidates(
    catalog: Catalog,
    model_key: str,
    query: np.ndarray,
    entries: np.ndarray,
    visible: set[int] | None,
    combine: CaptionCombine,
    moments: int,
    sample: LibrarySample | None = None,
) -> list[Candidate]:
    """One candidate per visible item the entries name, or whose caption file they name (call
    inside `catalog.read()`); `visible` None lets every item through; `sample` gives the scales
    caption scores are carried over with (none: raw caption scores)."""
    query = np.asarray(query, dtype=np.float32)
    found = catalog.items_by_id(np.unique(entry_items(entries)).tolist())
    shown = [r for r in found.values() if visible is None or r.id in visible]
    photos = {r.id: r for r in shown if r.type == "image"}
    for row in found.values():
        if is_caption_file(row):
            for photo in catalog.caption_group(row.path):
                if photo.type == "image" and (visible is None or photo.id in visible):
                    photos.setdefault(photo.id, photo)
    scales = sample.scales(query) if sample is not None else None
    out = [_scored_photos(catalog, model_key, query, list(photos.values()), combine, scales)]
    others = [r for r in shown if r.type != "image" and r.content_hash]
    out.append([_scored_item(catalog, model_key, query, row, moments) for row in others])
    return [c for group in out for c in group if c is not None]


def _scored_item(catalog: Catalog, model_key: str, query: np.ndarray, row: ItemRecord, n: int) -> Candidate | None:
    """A document or video by the best of its own vector and its segments."""
    own = catalog.embeddings.get_many(model_key, [row.content_hash]).get(row.content_hash)
    if own is None:
        return None
    parts = _best_parts(catalog, model_key, row, query, max(n, 1))
    best = max([float(own @ query)] + [p.score for p in parts[:1]])
    return Candidate(row, best, parts[:n])


def _best_parts(catalog: Catalog, model_key: str, row: ItemRecord, query: np.ndarray, n: int) -> tuple[Moment, ...]:
    segments = catalog.segments(model_key, row.content_hash) if row.content_hash else []
    if not segments:
        return ()
    scores = np.stack([s.vector for s in segments]) @ query
    top = np.argsort(-scores, kind="stable")[:n]
    return tuple(Moment(segments[i].start, segments[i].end, float(scores[i]), segments[i].text) for i in top)


def _scored_photos(
    catalog: Catalog,
    model_key: str,
    query: np.ndarray,
    photos: list[ItemRecord],
    combine: CaptionCombine,
    scales: ScoreScales | None,
) -> list[Candidate]:
    own = catalog.embeddings.get_many(model_key, [p.content_hash for p in photos if p.content_hash])
    photos = [p for p in photos if p.content_hash in own]
    if not photos:
        return []
    pixels = np.asarray([float(own[p.content_hash] @ query) for p in photos])
    captions = [best_caption(catalog, model_key, p, query) for p in photos]
    caption_scores = np.asarray([np.nan if c is None else c.score for c in captions])
    scores = combine.combine(pixels, caption_scores, scales)
    scaled = scales.to_pixels(caption_scores) if scales is not None else caption_scores
    return [
        Candidate(photo, float(score), (), float(pixel), caption and replace(caption, scaled=float(carried)))
        for photo, score, pixel, caption, carried in zip(photos, scores, pixels, captions, scaled, strict=True)
    ]


def best_caption(catalog: Catalog, model_key: str, photo: ItemRecord, query: np.ndarray) -> CaptionMatch | None:
    """The photo's best-scoring caption for the query: its own description or a caption file."""
    matches = []
    described = _best_parts(catalog, model_key, photo, query, 1)
    if described:
        matches.append(CaptionMatch(None, None, described[0].score, described[0]))
    for row in catalog.caption_group(photo.path):
        if not is_caption_file(row) or not row.content_hash:
            continue
        scored = _scored_item(catalog, model_key, query, row, 1)
        if scored is not None:
            matches.append(CaptionMatch(row.id, row.path, scored.similarity, scored.parts[0] if scored.parts else None))
    return max(matches, key=lambda m: m.score) if matches else None


def photo_caption_vectors(catalog: Catalog, model_key: str, photo: ItemRecord) -> np.ndarray | None:
    """Every caption vector of a photo (its description's windows, its caption files' own vectors
    and windows), (M, D); None when it has none."""
    vectors = [s.vector for s in catalog.segments(model_key, photo.content_hash)] if photo.content_hash else []
    for row in catalog.caption_group(photo.path):
        if is_caption_file(row) and row.content_hash:
            own = catalog.embeddings.get_many(model_key, [row.content_hash]).get(row.content_hash)
            if own is not None:
                vectors.append(own)
            vectors += [s.vector for s in catalog.segments(model_key, row.content_hash)]
    return np.stack(vectors) if vectors else None
