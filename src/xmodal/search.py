"""Queries over a library: text, example images and indexed items combined rclip-style, filters,
time-decay re-ranking and a per-model score floor.

A query is a sum of weighted terms, e.g. ``"beach + ./ref.jpg - people"`` or ``"2:sunset + sea"``:
each term is embedded (text by the text tower, an image file by the image tower, ``#ID`` is an
indexed item's stored vector), weighted (``W:term``, default 1; ``-`` negates), summed and
re-normalized — the weighted average of the unit vectors, as rclip does.

Score floors ("no good match"): cosine scores live on scales set by the model and by the pair of
modalities compared (a text query against photos, against documents, a photo against photos), so
each pair has its own floor, below which a hit is dropped as noise; videos count as images (their
vectors are their frames'), unless a floor was measured for videos themselves. The query's modality is text when it has a text term (or an indexed
document as its example), else image. Floors by model family, for text <-> image (either way:
the cosine is symmetric, so image -> text queries meet the same scale):

* CLIP-style models (OpenAI CLIP, OpenCLIP, M-CLIP, Chinese-CLIP): 0.20. Such models put
  matching caption/photo pairs around 0.25-0.35 and unrelated pairs around 0.10-0.20, so
  below 0.20 the "best" hit is typically noise.
* SigLIP-style models (SigLIP, SigLIP2, NLLB-SigLIP): 0.07. SigLIP is trained with a sigmoid
  ``p = sigma(t*cos + b)``; with its published t = 117, b = -12.7, p(match) = 1 % at cos = 0.07.
* text <-> text has no family floor: the text towers of these families put unrelated sentences
  anywhere from 0.3 to 0.8, and no floor has been measured for them here.
* image <-> image has none at all: "more like this" ranks every photo (a floor measured on
  near-duplicates would hide the merely similar ones).
* Models whose floors were measured (benchmarks/score_floors.py, recorded in BENCHMARKS.md: the
  unrelated pairs' 99th percentile, so about one unrelated pair in a hundred passes) use their
  own: the shipped xmodal-tiny-shapes has floors for text -> image, image -> text, text -> text
  and text -> video (its captions of motion, "a red circle moves up", score 0.05 against their
  own videos where "a red circle" scores 0.38: it learnt from photos).
* Other models (xmodal's own trained models, unknown folders): no floor.

``min_score`` overrides the floors: one number for every pair, or per item modality
(``{"text": 0.6}``, on the command line ``text=0.6,image=0.25``).

Photos and their words: a caption file (IMG_1.txt beside IMG_1.jpg) and the description a photo
carries are the photo's captions. A query scores captions on the text <-> text scale, far above
where it scores pixels (the shipped model: matching pairs at 0.98 against 0.37), so a caption's
score is first carried over to the pixel scale: the query's scores of the library's photos and of
its captions are matched in mean and spread (over a sample of up to 1,000 of each), and a caption
scoring z spreads above the captions' mean counts as a photo scoring z spreads above the photos'
mean. A photo's score then combines its pixels' score with its best caption's (`CaptionCombine`):
a weight w in [0, 1] takes w * caption + (1 - w) * pixels for photos with a caption (w = 0: pixels
only, w = 1: the caption alone), pixels alone for the others; "max" takes the higher of the two.
The default is w = 0.5 (DEFAULT_COMBINE): measured on synthetic shapes whose captions only repeat
what the pixels show, "max" cost 10 points of text -> photo R@1 (0.863 against 0.960 for pixels
alone) and 0.5 cost 3 (0.930), while 0.5 still lifts a photo that only its caption matches (a
name, an event) above the photos that match neither. Scores stay on the text -> image scale, so photos
with and without captions rank fairly against each other. `xmodal eval --library --combine`
measures which combination is better on one's own captions.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from xmodal.errors import InvalidArgumentError
from xmodal.media.formats import image_extensions
from xmodal.media.image import decode_image
from xmodal.models.embedder import Embedder
from xmodal.models.encoder import l2_normalize
from xmodal.store.catalog import display_path

_CLIP_FLOORS = {("text", "image"): 0.20, ("image", "text"): 0.20}
_SIGLIP_FLOORS = {("text", "image"): 0.07, ("image", "text"): 0.07}
# (query modality, item modality) -> floor, by family; then measured ones by model name.
FAMILY_MIN_SCORES: dict[str, dict[tuple[str, str], float]] = {
    "clip": _CLIP_FLOORS,
    "mclip": _CLIP_FLOORS,
    "chinese_clip": _CLIP_FLOORS,
    "siglip": _SIGLIP_FLOORS,
    "nllb-siglip": _SIGLIP_FLOORS,
}
MODEL_MIN_SCORES: dict[str, dict[tuple[str, str], float]] = {
    "xmodal-tiny-shapes": {  # measured on 400 synthetic shapes photos and 128 videos (BENCHMARKS.md)
        ("text", "image"): 0.20,
        ("image", "text"): 0.20,
        ("text", "text"): 0.68,
        ("text", "video"): 0.07,  # captions of motion score far lower against videos than against photos
    },
}
MODALITIES = {"image": "image", "video": "image", "text": "text"}  # item type -> modality
MAX_RESULTS = 10_000  # the most hits one search returns (results beyond are of no use to a person)
_OPERATOR = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:(.*)$")


@dataclass(frozen=True)
class QueryTerm:
    """One part of a combined query: kind "text" | "image" (a file, or an encoded image's bytes) |
    "item" (an indexed id)."""

    kind: str
    value: str | bytes
    weight: float = 1.0


@dataclass(frozen=True)
class Moment:
    """A part of an item that matched: a video's span in seconds, a text's span in characters."""

    start: float
    end: float
    score: float
    text: str | None = None  # a text window's words

    def to_dict(self) -> dict:
        out = {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 6)}
        return out | ({"snippet": self.text} if self.text is not None else {})


@dataclass(frozen=True)
class CaptionMatch:
    """The caption a photo was scored by: a caption file's item id (None: the description in the
    photo itself), its cosine score, that score carried over to the pixel scale (what the photo's
    score combines), and its best window."""

    item_id: int | None
    path: str | None
    score: float
    moment: Moment | None
    scaled: float | None = None

    def to_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "path": display_path(self.path) if self.path is not None else None,
            "score": round(self.score, 6),
            "scaled_score": round(self.scaled, 6) if self.scaled is not None else None,
            "snippet": self.moment.text if self.moment else None,
        }


@dataclass(frozen=True)
class Hit:
    """One search result. `score` is what ranks (after decay); `similarity` the raw cosine;
    `moments` the item's best-matching parts, best first (videos and texts): the best one always,
    the others only when they pass the item's score floor too; `duration` a video's length."""

    rank: int
    item_id: int
    path: str
    type: str
    score: float
    similarity: float
    taken_at: datetime | None
    moments: tuple[Moment, ...] = ()
    offline: bool = False  # the file sits under a root that is offline (unmounted) right now
    pixel_score: float | None = None  # a photo's own (pixels') similarity, when captions took part
    caption: CaptionMatch | None = None  # a photo's best caption, when it has one
    tags: tuple[str, ...] = ()
    duration: float | None = None

    @property
    def timestamp(self) -> float | None:
        """For videos: the second to play from (the start of the best moment)."""
        return self.moments[0].start if self.type == "video" and self.moments else None

    @property
    def snippet(self) -> str | None:
        """For documents: the words of the best-matching window."""
        return self.moments[0].text if self.type == "text" and self.moments else None

    def to_dict(self) -> dict:
        """The one JSON form of a hit (CLI --json and HTTP). `path` is for display (control
        characters and undecodable bytes escaped); `path_bytes` is the exact name, base64 of the
        file system's bytes, to open the file with."""
        return {
            "rank": self.rank,
            "item_id": self.item_id,
            "type": self.type,
            "path": display_path(self.path),
            "path_bytes": base64.b64encode(os.fsencode(self.path)).decode("ascii"),
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 6),
            "taken_at": self.taken_at.isoformat(timespec="seconds") if self.taken_at else None,
            "timestamp": self.timestamp,
            "duration": round(self.duration, 3) if self.duration is not None else None,
            "moments": [m.to_dict() for m in self.moments],
            "offline": self.offline,
            "snippet": self.snippet,
            "pixel_score": round(self.pixel_score, 6) if self.pixel_score is not None else None,
            "caption": self.caption.to_dict() if self.caption else None,
            "tags": list(self.tags),
        }


@dataclass
class SearchResults(Sequence[Hit]):
    """Ranked hits; when the floor removed every candidate, `no_good_match` is true and
    `best_score` says how close the best one came."""

    hits: list[Hit] = field(default_factory=list)
    min_score: float | None = None  # the floor of the best candidate's modality
    best_score: float | None = None
    model: str | None = None
    min_scores: dict[str, float | None] = field(default_factory=dict)  # per item type

    @property
    def no_good_match(self) -> bool:
        return not self.hits and self.best_score is not None

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index):  # type: ignore[override]
        return self.hits[index]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def to_dict(self) -> dict:
        """The one JSON form of results, used by `xmodal search --json` and the HTTP API."""
        return {
            "hits": [hit.to_dict() for hit in self.hits],
            "model": self.model,
            "min_score": self.min_score,
            "no_good_match": self.no_good_match,
            "best_score": self.best_score,
            "min_scores": dict(self.min_scores),
        }


def parse_query(text: str, path_terms: bool = True) -> list[QueryTerm]:
    """Split ``"2:beach + ./ref.jpg - #17 - people"`` into weighted terms (see module docstring).
    With `path_terms` False a term is never taken for an image file (queries from the network must
    not open files by name): it is text, or ``#ID``."""
    parts = _OPERATOR.split(f" + {text.strip()}")[1:]
    terms = []
    for sign, raw in zip(parts[::2], parts[1::2], strict=True):
        weight = 1.0
        if match := _WEIGHT.match(raw):
            weight, raw = float(match.group(1)), match.group(2)
        raw = raw.strip().strip("\"'").strip()
        if not raw:
            raise InvalidArgumentError(
                "query", text, 'terms joined by " + " / " - ", e.g. "beach + ./ref.jpg - people"'
            )
        terms.append(_classify(raw, -weight if sign == "-" else weight, path_terms))
    return terms


def _classify(raw: str, weight: float, path_terms: bool) -> QueryTerm:
    if re.fullmatch(r"#\d+", raw):
        return QueryTerm("item", raw[1:], weight)
    if not path_terms:
        return QueryTerm("text", raw, weight)
    path = Path(raw).expanduser()
    looks_like_path = (
        raw.startswith(("./", "../", "/", "~")) or os.sep in raw or path.suffix.lower() in image_extensions()
    )
    if looks_like_path and path.is_file():
        return QueryTerm("image", str(path), weight)
    if raw.startswith(("./", "../", "/", "~")):
        raise InvalidArgumentError("query image", raw, "an existing image file")
    return QueryTerm("text", raw, weight)


def query_vector(
    terms: Sequence[QueryTerm], encoder: Embedder, item_vector: Callable[[int], np.ndarray], language: str | None = None
) -> np.ndarray:
    """The weighted sum of the terms' unit vectors, re-normalized: (D,) float32."""
    if not terms:
        raise InvalidArgumentError("query", "", "at least one text, image or item term")
    total = np.zeros(encoder.dim, dtype=np.float64)
    texts = [t for t in terms if t.kind == "text"]
    if texts:
        total += (
            np.asarray([t.weight for t in texts])[:, None] * encoder.embed_texts([t.value for t in texts], language)
        ).sum(0)
    images = [t for t in terms if t.kind == "image"]
    if images:
        pixels = np.stack([encoder.preprocess(decode_image(t.value, encoder.decode_options).image) for t in images])
        total += (np.asarray([t.weight for t in images])[:, None] * encoder.embed_pixels(pixels)).sum(0)
    for term in terms:
        if term.kind == "item":
            total += term.weight * item_vector(int(term.value))
    if not np.linalg.norm(total) > 1e-9:
        raise InvalidArgumentError("query", terms, "terms that do not cancel out")
    return l2_normalize(total[None, :])[0]


def pair_floor(model: str, family: str, query: str, item: str) -> float | None:
    """The floor of a (query modality, item type) pair: measured for the model, else its family's,
    else None (no floor); an item type without a floor of its own takes its modality's."""
    floors = MODEL_MIN_SCORES.get(model) or FAMILY_MIN_SCORES.get(family) or {}
    return floors.get((query, item), floors.get((query, MODALITIES.get(item, item))))


def query_modality(terms: Sequence[QueryTerm], item_types: dict[int, str] | None = None) -> str:
    """'text' when a term is text (or an indexed document), else 'image'."""
    types = item_types or {}
    textual = any(t.kind == "text" or (t.kind == "item" and types.get(int(t.value)) == "text") for t in terms)
    return "text" if textual else "image"


MinScore = float | dict[str, float] | None


def floors_for(model: str, family: str, query: str, given: MinScore = None) -> dict[str, float | None]:
    """Floor per item type: `given` (a number for all, or per type) over the measured/family ones."""
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        return {t: float(given) for t in MODALITIES}
    floors = {t: pair_floor(model, family, query, t) for t in MODALITIES}
    for kind, value in (given or {}).items():
        if kind not in MODALITIES:
            raise InvalidArgumentError("--min-score type", kind, tuple(MODALITIES))
        floors[kind] = float(value)
    return floors


def parse_min_score(text: str | None) -> MinScore:
    """'0.25' (every type) or 'text=0.6,image=0.2' (per item type) -> a floor or floors."""
    if text is None or not text.strip():
        return None
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for part in text.split(","):
            kind, _, value = part.partition("=")
            out[kind.strip()] = float(value)
    except ValueError:
        raise InvalidArgumentError(
            "--min-score", text, "a cosine such as 0.25, or per type: text=0.6,image=0.2"
        ) from None
    for kind in out:
        if kind not in MODALITIES:
            raise InvalidArgumentError("--min-score type", kind, tuple(MODALITIES))
    return out


@dataclass(frozen=True)
class ScoreScales:
    """A query's score distributions over the library's photos (pixels) and captions: mean and
    standard deviation of each (per query when arrays: one value per row)."""

    pixel_mean: np.ndarray | float
    pixel_sd: np.ndarray | float
    caption_mean: np.ndarray | float
    caption_sd: np.ndarray | float

    @classmethod
    def of(cls, pixel_scores: np.ndarray, caption_scores: np.ndarray) -> ScoreScales | None:
        """From a query's (or each row's) scores of photos and of captions; None when there are
        too few of either to tell a spread (two at least)."""
        pixel_scores, caption_scores = np.asarray(pixel_scores), np.asarray(caption_scores)
        if pixel_scores.shape[-1] < 2 or caption_scores.shape[-1] < 2:
            return None
        return cls(
            pixel_scores.mean(axis=-1),
            pixel_scores.std(axis=-1),
            caption_scores.mean(axis=-1),
            np.maximum(caption_scores.std(axis=-1), 1e-6),
        )

    def to_pixels(self, captions: np.ndarray) -> np.ndarray:
        """Caption scores (rows of queries when the scales are per query) on the pixel scale."""
        shape = (-1, 1) if np.ndim(self.pixel_mean) else ()
        mean_p, sd_p = np.reshape(self.pixel_mean, shape), np.reshape(self.pixel_sd, shape)
        mean_c, sd_c = np.reshape(self.caption_mean, shape), np.reshape(self.caption_sd, shape)
        return mean_p + sd_p * (np.asarray(captions, dtype=np.float64) - mean_c) / sd_c


DEFAULT_COMBINE = "0.5"  # how photos and their captions combine unless told (module docstring)


@dataclass(frozen=True)
class CaptionCombine:
    """How a photo's pixel score and its best caption's score make its score (module docstring):
    `weight` None is "max", else w * caption + (1 - w) * pixels."""

    weight: float | None = None

    @classmethod
    def parse(cls, value: str | float | CaptionCombine | None) -> CaptionCombine:
        if isinstance(value, CaptionCombine):
            return value
        if value is None or (isinstance(value, str) and value.strip().lower() == "max"):
            return cls()
        try:
            weight = float(value)
        except (TypeError, ValueError):
            weight = -1.0
        if not 0.0 <= weight <= 1.0:
            raise InvalidArgumentError("--combine", value, "max, or a caption weight from 0 (pixels only) to 1")
        return cls(weight)

    def __str__(self) -> str:
        return "max" if self.weight is None else f"{self.weight:g}"

    def combine(self, pixels: np.ndarray, captions: np.ndarray, scales: ScoreScales | None = None) -> np.ndarray:
        """Scores from pixel scores and caption scores (NaN where a photo has no caption), the
        captions carried over to the pixel scale by `scales` first (module docstring)."""
        pixels = np.asarray(pixels, dtype=np.float64)
        captions = np.asarray(captions, dtype=np.float64)
        if scales is not None:
            captions = scales.to_pixels(captions)
        has = ~np.isnan(captions)
        if self.weight is None:
            mixed = np.maximum(pixels, np.where(has, captions, -np.inf))
        else:
            mixed = self.weight * np.where(has, captions, 0.0) + (1 - self.weight) * pixels
        return np.where(has, mixed, pixels)


def decay_factors(taken_at: np.ndarray, decay_days: float, now: float) -> np.ndarray:
    """Time decay exp(−α·t), t = age in days, α = 1 / decay_days (ages < 0 count as 0); items without
    a date are not decayed."""
    if not decay_days > 0:
        raise InvalidArgumentError("decay_days", decay_days, "a positive number of days")
    age_days = np.maximum(0.0, (now - taken_at) / 86400.0)
    return np.where(np.isnan(age_days), 1.0, np.exp(-age_days / decay_days))


def candidates_for(k: int, decay: bool) -> int:
    """How many neighbours to fetch before re-ranking by age: 3k, at least 50."""
    return max(3 * k, 50) if decay else k


def check_k(k: object) -> int:
    """k as a whole number from 1 to MAX_RESULTS (the search itself also stops at the library's size)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_RESULTS:
        raise InvalidArgumentError("-k", k, f"a whole number from 1 to {MAX_RESULTS:,}")
    return int(k)


def parse_date(value: str | datetime | None, name: str) -> float | None:
    """'2024', '2024-06', '2024-06-30' or an ISO datetime (local time) -> epoch seconds."""
    if value is None or isinstance(value, float | int):
        return value
    if isinstance(value, datetime):
        return value.timestamp()
    text = value.strip()
    for fmt in ("%Y", "%Y-%m", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).timestamp()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidArgumentError(name, value, "a date like 2024, 2024-06, 2024-06-30 or an ISO datetime") from None
