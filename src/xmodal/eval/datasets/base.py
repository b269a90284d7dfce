"""The common shape every retrieval dataset reader returns, and the pieces readers share.

A reader turns one public or user format into a `RetrievalDataset`: gallery items (image or video
files, or in-memory image bytes), captions, and which items each caption describes. Malformed
lines are collected as DatasetFormatError (file:line and reason) and skipped, unless the reader
is strict; files that are absent are reported and skipped; the rest of the data is still used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xmodal.errors import DatasetFormatError
from xmodal.media.formats import is_video_path

log = logging.getLogger(__name__)

MediaSource = Path | bytes


@dataclass(frozen=True)
class ReadOptions:
    """How to read a dataset: which split, how many gallery items, where the media files are."""

    split: str | None = "test"  # None: every record, whatever its split
    limit: int | None = None  # at most this many gallery items (first ones, in file order)
    media_root: Path | None = None  # folder the file names are relative to (default: per format)
    strict: bool = False  # raise on the first malformed line instead of skipping it


@dataclass
class RetrievalDataset:
    """Gallery items + captions with positives in both directions (indices into each other)."""

    name: str
    format: str
    split: str | None
    kind: str  # "image" or "video"
    items: list[MediaSource]
    item_ids: list[str]
    texts: list[str]
    text_positives: list[list[int]]  # text index -> indices of the items it describes
    missing: list[str] = field(default_factory=list)  # item ids whose files were not found
    problems: list[DatasetFormatError] = field(default_factory=list)  # malformed lines skipped
    texts_dropped: int = 0  # captions left without any present item
    language: str | None = None  # caption language, when the format says (e.g. "zh")
    # item index -> structured annotation beyond captions (e.g. synth-shapes' {"shapes": [...]}); None: no item has one
    item_attributes: list[dict[str, Any]] | None = None

    @property
    def item_positives(self) -> list[list[int]]:
        """Item index -> indices of its captions (empty for items that only act as distractors).

        Derived from text_positives on every access: keep the result when using it repeatedly."""
        out: list[list[int]] = [[] for _ in self.items]
        for t, items in enumerate(self.text_positives):
            for i in items:
                out[i].append(t)
        return out

    def without_items(self, drop: Iterable[int]) -> RetrievalDataset:
        """The same dataset minus some items (e.g. ones that failed to decode), re-indexed."""
        drop = set(drop)
        if not drop:
            return self
        new_index = {}
        for i in range(len(self.items)):
            if i not in drop:
                new_index[i] = len(new_index)
        texts, positives = [], []
        for text, items in zip(self.texts, self.text_positives, strict=True):
            kept = [new_index[i] for i in items if i in new_index]
            if kept:
                texts.append(text)
                positives.append(kept)
        keep = sorted(new_index)
        return replace(
            self,
            items=[self.items[i] for i in keep],
            item_ids=[self.item_ids[i] for i in keep],
            texts=texts,
            text_positives=positives,
            texts_dropped=self.texts_dropped + len(self.texts) - len(texts),
            item_attributes=None if self.item_attributes is None else [self.item_attributes[i] for i in keep],
        )


class DatasetBuilder:
    """Collects items and captions while a reader parses, then checks files and applies the limit."""

    def __init__(
        self, name: str, fmt: str, options: ReadOptions, *, kind: str | None = None, language: str | None = None
    ):
        self.name = name
        self.format = fmt
        self.options = options
        self.kind = kind
        self.language = language
        self.problems: list[DatasetFormatError] = []
        self._items: dict[str, MediaSource] = {}
        self._missing: dict[str, None] = {}  # ordered set of absent item ids
        self._texts: list[tuple[str, list[str]]] = []
        self._attributes: dict[str, dict[str, Any]] = {}

    def problem(self, path: Path, reason: str, line: int | None = None) -> None:
        """A malformed record: raise when strict, else remember it and go on."""
        error = DatasetFormatError(path, reason, line)
        if self.options.strict:
            raise error
        log.warning("skipped %s", error)
        self.problems.append(error)

    def add_item(self, item_id: str, source: MediaSource, attributes: dict[str, Any] | None = None) -> None:
        """A gallery item (with its structured annotation, if the format has one); a file that does not
        exist is reported as missing, and items past the limit are ignored (the first source given for an id wins)."""
        if item_id in self._items or item_id in self._missing:
            return
        if isinstance(source, Path) and not source.is_file():
            self._missing[item_id] = None
        elif not self.full:
            self._items[item_id] = source
            if attributes:
                self._attributes[item_id] = attributes

    def has_item(self, item_id: str) -> bool:
        """Whether the id was added as a present item."""
        return item_id in self._items

    def add_text(self, text: str, item_ids: Sequence[str]) -> None:
        """A caption describing the given items (add the items too; order does not matter)."""
        self._texts.append((text, list(item_ids)))

    @property
    def full(self) -> bool:
        """Whether the item limit is reached (readers of huge files may stop early)."""
        return self.options.limit is not None and len(self._items) >= self.options.limit

    def build(self) -> RetrievalDataset:
        """The dataset of present items and the captions that describe at least one of them."""
        index = {item_id: i for i, item_id in enumerate(self._items)}
        missing = list(self._missing)
        if missing:
            log.warning("%s: %d files not found, skipped (first: %s)", self.name, len(missing), missing[0])
        texts, positives, dropped = [], [], 0
        for text, ids in self._texts:
            kept = sorted({index[i] for i in ids if i in index})
            if kept:
                texts.append(text)
                positives.append(kept)
            elif any(i in self._missing for i in ids):
                dropped += 1
        items = list(self._items.values())
        return RetrievalDataset(
            name=self.name,
            format=self.format,
            split=self.options.split,
            kind=self.kind or _kind_of(items),
            items=items,
            item_ids=list(self._items),
            texts=texts,
            text_positives=positives,
            missing=missing,
            problems=self.problems,
            texts_dropped=dropped,
            language=self.language,
            item_attributes=[self._attributes.get(i, {}) for i in self._items] if self._attributes else None,
        )

    def missing_item(self, item_id: str) -> None:
        """An item the captions name but the format's media file does not hold."""
        self._missing.setdefault(item_id, None)


def _kind_of(items: Sequence[MediaSource]) -> str:
    paths = [s for s in items if isinstance(s, Path)]
    videos = sum(is_video_path(p) for p in paths)
    if videos and videos < len(items):
        raise DatasetFormatError(paths[0].parent, "mixes images and videos; put them in two dataset files")
    return "video" if videos else "image"


def load_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes DatasetFormatError with its line."""
    try:
        with open(path, encoding="utf-8-sig") as fp:
            return json.load(fp)
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, f"invalid JSON: {exc.msg}", exc.lineno) from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a UTF-8 text file; errors name the line."""
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    with open(path, "rb") as fp:
        for number, raw in enumerate(fp, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", number) from None
            yield number, line.rstrip("\r\n")


def json_lines(path: Path, builder: DatasetBuilder) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of a JSONL file; blank lines skipped, invalid JSON reported."""
    for line, raw in text_lines(path):
        if not raw.strip():
            continue
        try:
            yield line, json.loads(raw)
        except json.JSONDecodeError as exc:
            builder.problem(path, f"invalid JSON: {exc.msg}", line)


def find_media(roots: Sequence[Path], relative: Sequence[str | Path]) -> Path:
    """The first existing roots[i] / relative[j]; the first candidate if none exists (reported later)."""
    for root in roots:
        for rel in relative:
            candidate = root / rel
            if candidate.is_file():
                return candidate
    return roots[0] / relative[0]


def split_file(folder: Path, patterns: Sequence[str], split: str | None, what: str) -> Path:
    """The file of a split in a dataset folder, e.g. `coco_{split}_karpathy.json`; clear error if absent."""
    names = [p.format(split=split or "test") for p in patterns]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DatasetFormatError(folder, f"no {what} file for split {split!r}; expected {' or '.join(names)}")


def require_split_match(path: Path, split: str | None, seen: set[str], matched: int) -> None:
    """Error when a split filter matched nothing, naming the splits the file does have."""
    if split is not None and matched == 0 and seen:
        raise DatasetFormatError(
            path, f"no records in split {split!r}; splits present: {', '.join(sorted(seen))} (or use --split all)"
        )
