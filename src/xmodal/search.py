"""Queries over a library: text, example images and indexed items combined rclip-style, filters,
time-decay re-ranking and a per-model score floor.

A query is a sum of weighted terms, e.g. ``"beach + ./ref.jpg - people"`` or ``"2:sunset + sea"``:
each term is embedded (text by the text tower, an image file by the image tower, ``#ID`` is an
indexed item's stored vector), weighted (``W:term``, default 1; ``-`` negates), summed and
re-normalized — the weighted average of the unit vectors, as rclip does.

Score floor ("no good match"): cosine scores of text against images sit on a scale set by the
model family, so one floor per family decides whether the best hit is a match at all:

* CLIP-style models (OpenAI CLIP, OpenCLIP, M-CLIP, Chinese-CLIP): 0.20. Such models put
  matching caption/photo pairs around 0.25–0.35 and unrelated pairs around 0.10–0.20, so
  below 0.20 the "best" hit is typically noise.
* SigLIP-style models (SigLIP, SigLIP2, NLLB-SigLIP): 0.07. SigLIP is trained with a sigmoid
  ``p = σ(t·cos + b)``; with its published t ≈ 117, b ≈ −12.7, p(match) = 1 % at cos ≈ 0.07.
* Other models (xmodal's own tiny models, unknown folders): no floor.

The floor applies to queries with a text term (image-to-image scores are on another scale);
``min_score`` overrides it for any query.
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

FAMILY_MIN_SCORE: dict[str, float | None] = {
    "clip": 0.20,
    "mclip": 0.20,
    "chinese_clip": 0.20,
    "siglip": 0.07,
    "nllb-siglip": 0.07,
}
MAX_RESULTS = 10_000  # the most hits one search returns (results beyond are of no use to a person)
_OPERATOR = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:(.*)$")


@dataclass(frozen=True)
class QueryTerm:
    """One part of a combined query: kind "text" | "image" (a file) | "item" (an indexed id)."""

    kind: str
    value: str
    weight: float = 1.0


@dataclass(frozen=True)
class Moment:
    """A part of an item that matched: a video's span in seconds, a text's span in characters."""

    start: float
    end: float
    score: float

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 6)}


@dataclass(frozen=True)
class Hit:
    """One search result. `score` is what ranks (after decay); `similarity` the raw cosine;
    `moments` the item's best-matching parts, best first (videos and texts)."""

    rank: int
    item_id: int
    path: str
    type: str
    score: float
    similarity: float
    taken_at: datetime | None
    moments: tuple[Moment, ...] = ()
    offline: bool = False  # the file sits under a root that is offline (unmounted) right now

    @property
    def timestamp(self) -> float | None:
        """For videos: the second to play from (the start of the best moment)."""
        return self.moments[0].start if self.type == "video" and self.moments else None

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
            "moments": [m.to_dict() for m in self.moments],
            "offline": self.offline,
        }


@dataclass
class SearchResults(Sequence[Hit]):
    """Ranked hits; when the floor removed every candidate, `no_good_match` is true and
    `best_score` says how close the best one came."""

    hits: list[Hit] = field(default_factory=list)
    min_score: float | None = None
    best_score: float | None = None
    model: str | None = None

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
        }


def parse_query(text: str) -> list[QueryTerm]:
    """Split ``"2:beach + ./ref.jpg - #17 - people"`` into weighted terms (see module docstring)."""
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
        terms.append(_classify(raw, -weight if sign == "-" else weight))
    return terms


def _classify(raw: str, weight: float) -> QueryTerm:
    if re.fullmatch(r"#\d+", raw):
        return QueryTerm("item", raw[1:], weight)
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


def default_min_score(family: str, terms: Sequence[QueryTerm]) -> float | None:
    """The family's floor for queries with a text term; None (no floor) otherwise."""
    if not any(t.kind == "text" for t in terms):
        return None
    return FAMILY_MIN_SCORE.get(family)


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
