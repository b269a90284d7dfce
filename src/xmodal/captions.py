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

from xmodal.media.formats import CAPTION_EXTENSIONS, caption_key, extension
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
    """What a search reads of the whole library, once per catalog revision: vectors of up to
    SAMPLE photos (pixels) and SAMPLE captions (caption files, descriptions in photos), spread
    evenly over the library, where a query's two score scales are read; and every caption file by
    its caption key."""

    pixels: np.ndarray
    captions: np.ndarray
    caption_files: dict[str, list[ItemRecord]]

    def scales(self, query: np.ndarray) -> ScoreScales | None:
        if len(self.pixels) < 2 or len(self.captions) < 2:
            return None  # too few to tell a spread
        return ScoreScales.of(self.pixels @ query, self.captions @ query)

    def files_of(self, photo: ItemRecord) -> list[ItemRecord]:
        """The caption files beside a photo."""
        key = caption_key(photo.path)
        return self.caption_files.get(key, []) if key is not None else []

    @property
    def caption_file_ids(self) -> np.ndarray:
        return np.sort(np.asarray([r.id for rows in self.caption_files.values() for r in rows], dtype=np.int64))


def library_sample(catalog: Catalog, model_key: str, limit: int = SAMPLE) -> LibrarySample:
    """The sample of a library for one model (call inside `catalog.read()`)."""
    files: dict[str, list[ItemRecord]] = {}
    for row in catalog.caption_files():
        files.setdefault(caption_key(row.path) or "", []).append(row)
    photos = _spread(catalog.filtered_ids(type="image", model_key=model_key), limit)
    _, pixels = catalog.vectors(model_key, photos)
    file_ids = np.sort(np.asarray([r.id for rows in files.values() for r in rows], dtype=np.int64))
    _, captions = catalog.vectors(model_key, _spread(file_ids, limit))
    described = catalog.description_vectors(model_key, limit)
    parts = [v for v in (captions, described) if len(v)]
    return LibrarySample(pixels, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32), files)


def _spread(ids: np.ndarray, limit: int) -> np.ndarray:
    return ids if len(ids) <= limit else ids[np.linspace(0, len(ids) - 1, limit).astype(np.int64)]


def is_caption_file(row: ItemRecord) -> bool:
    """A text item named like a caption file (whether a photo goes with it is `caption_group`'s)."""
    return row.type == "text" and extension(row.path) in CAPTION_EXTENSIONS


class _Vectors:
    """Own vectors and segments of a set of contents, read in two queries."""

    def __init__(self, catalog: Catalog, model_key: str, hashes: set[str]):
        self.own = catalog.embeddings.get_many(model_key, sorted(hashes))
        self.segments = catalog.segments_of(model_key, sorted(hashes))

    def best_parts(self, digest: str | None, query: np.ndarray, n: int) -> tuple[Moment, ...]:
        segments = self.segments.get(digest or "", [])
        if not segments or n < 1:
            return ()
        scores = np.stack([s.vector for s in segments]) @ query
        top = np.argsort(-scores, kind="stable")[:n]
        return tuple(Moment(segments[i].start, segments[i].end, float(scores[i]), segments[i].text) for i in top)

    def scored(self, row: ItemRecord, query: np.ndarray, n: int) -> Candidate | None:
        """A document or video by the best of its own vector and its segments."""
        own = self.own.get(row.content_hash or "")
        if own is None:
            return None
        parts = self.best_parts(row.content_hash, query, max(n, 1))
        best = max([float(own @ query)] + [p.score for p in parts[:1]])
        return Candidate(row, best, parts[:n])

    def best_caption(self, photo: ItemRecord, files: list[ItemRecord], query: np.ndarray) -> CaptionMatch | None:
        """The photo's best-scoring caption: its own description or one of its caption files."""
        matches = []
        described = self.best_parts(photo.content_hash, query, 1)
        if described:
            matches.append(CaptionMatch(None, None, described[0].score, described[0]))
        for row in files:
            scored = self.scored(row, query, 1)
            if scored is not None:
                matches.append(
                    CaptionMatch(row.id, row.path, scored.similarity, scored.parts[0] if scored.parts else None)
                )
        return max(matches, key=lambda m: m.score) if matches else None


def scored_candidates(
    catalog: Catalog,
    model_key: str,
    query: np.ndarray,
    entries: np.ndarray,
    visible: set[int] | None,
    combine: CaptionCombine,
    moments: int,
    sample: LibrarySample,
) -> list[Candidate]:
    """One candidate per visible item the entries name, or whose caption file they name (call
    inside `catalog.read()`); `visible` None lets every item through; `sample` gives the caption
    files and the scales caption scores are carried over with."""
    query = np.asarray(query, dtype=np.float32)
    found = catalog.items_by_id(np.unique(entry_items(entries)).tolist())
    shown = [r for r in found.values() if visible is None or r.id in visible]
    photos = {r.id: r for r in shown if r.type == "image"}
    for row in found.values():
        if is_caption_file(row):
            for photo in catalog.caption_group(row.path):
                if photo.type == "image" and (visible is None or photo.id in visible):
                    photos.setdefault(photo.id, photo)
    files = {p.id: [f for f in sample.files_of(p) if f.content_hash] for p in photos.values()}
    others = [r for r in shown if r.type != "image" and r.content_hash]
    hashes = {r.content_hash for r in [*photos.values(), *others, *(f for fs in files.values() for f in fs)]}
    vectors = _Vectors(catalog, model_key, {h for h in hashes if h})
    out = _scored_photos(vectors, query, list(photos.values()), files, combine, sample.scales(query))
    return out + [c for c in (vectors.scored(row, query, moments) for row in others) if c is not None]


def _scored_photos(
    vectors: _Vectors,
    query: np.ndarray,
    photos: list[ItemRecord],
    files: dict[int, list[ItemRecord]],
    combine: CaptionCombine,
    scales: ScoreScales | None,
) -> list[Candidate]:
    photos = [p for p in photos if p.content_hash in vectors.own]
    if not photos:
        return []
    pixels = np.asarray([float(vectors.own[p.content_hash] @ query) for p in photos])
    captions = [vectors.best_caption(p, files[p.id], query) for p in photos]
    caption_scores = np.asarray([np.nan if c is None else c.score for c in captions])
    scores = combine.combine(pixels, caption_scores, scales)
    scaled = scales.to_pixels(caption_scores) if scales is not None else caption_scores
    return [
        Candidate(photo, float(score), (), float(pixel), caption and replace(caption, scaled=float(carried)))
        for photo, score, pixel, caption, carried in zip(photos, scores, pixels, captions, scaled, strict=True)
    ]


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
