"""The common shape every retrieval dataset reader returns, and the pieces readers share.

A reader turns one public or user format into a `RetrievalDataset`: gallery items (image or video
files, or in-memory image bytes), captions, and which items each caption describes. Malformed
lines are collected as DatasetFormatError (file:line and reason) and skipped, unless the reader
is strict; files that are absent are reported and skipped; the rest of the data is still used.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xmodal.errors import DatasetFormatError
from xmodal.media.formats import is_video_path

log = logging.getLogger(__name__)

MediaSource = Path | bytes
SHOWN_PROBLEMS = 5  # malformed records logged one by one; the rest are counted (all are in the results)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a dataset: which split, how many gallery items, where the media files are."""

    split: str | None = "test"  # None: every record, whatever its split
    limit: int | None = None  # at most this many gallery items (first ones, in file order)
    media_root: Path | None = None  # folder the file names are relative to (default: per format)
    strict: bool = False  # raise on the first malformed line, and on missing files or orphan captions


@dataclass
class RetrievalDataset:
    """Gallery items + captions with positives in both directions (indices into each other)."""

    name: str
    format: str
    split: str | None  # None: the file has no splits, every record was read ("all")
    kind: str  # "image" or "video"
    items: list[MediaSource]
    item_ids: list[str]
    texts: list[str]
    text_positives: list[list[int]]  # text index -> indices of the items it describes
    text_ids: list[str] = field(default_factory=list)  # the format's caption ids (else "item#k"), one per text
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
        texts, positives, text_ids = [], [], []
        for text, items, text_id in zip(self.texts, self.text_positives, self.text_ids, strict=True):
            kept = [new_index[i] for i in items if i in new_index]
            if kept:
                texts.append(text)
                positives.append(kept)
                text_ids.append(text_id)
        keep = sorted(new_index)
        return replace(
            self,
            items=[self.items[i] for i in keep],
            item_ids=[self.item_ids[i] for i in keep],
            texts=texts,
            text_positives=positives,
            text_ids=text_ids,
            texts_dropped=self.texts_dropped + len(self.texts) - len(texts),
            item_attributes=None if self.item_attributes is None else [self.item_attributes[i] for i in keep],
        )


class DatasetBuilder:
    """Collects items and captions while a reader parses, then checks files and applies the limit."""

    def __init__(
        self,
        name: str,
        fmt: str,
        options: ReadOptions,
        *,
        source: Path,
        kind: str | None = None,
        language: str | None = None,
    ):
        self.name = name
        self.format = fmt
        self.options = options
        self.source = source  # the annotation file or folder, named in errors about the whole dataset
        self.split = options.split  # readers of files without splits set None ("all")
        self.kind = kind
        self.language = language
        self.problems: list[DatasetFormatError] = []
        self._items: dict[str, MediaSource] = {}
        self._missing: dict[str, None] = {}  # ordered set of absent item ids
        self._texts: list[tuple[str, list[str], str]] = []
        self._captions_per_item: dict[str, int] = {}
        self._attributes: dict[str, dict[str, Any]] = {}
        self.searched: list[Path] = []  # where the first missing file was looked for

    def problem(self, path: Path, reason: str, line: int | None = None) -> None:
        """A malformed record: raise when strict, else remember it and go on."""
        error = DatasetFormatError(path, reason, line)
        if self.options.strict:
            raise error
        if len(self.problems) < SHOWN_PROBLEMS:
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

    def add_media(
        self, item_id: str, roots: Sequence[Path], relative: Sequence[str | Path], attributes: dict | None = None
    ) -> None:
        """A gallery item stored as a file: the first roots[i] / relative[j] that exists (see add_item);
        for the first one found nowhere, the folders looked in are kept for the error message."""
        found = find_media(roots, relative)
        if not found.is_file() and not self.searched:
            self.searched = list(dict.fromkeys((root / rel).parent for root in roots for rel in relative))
        self.add_item(item_id, found, attributes)

    def has_item(self, item_id: str) -> bool:
        """Whether the id was added as a present item."""
        return item_id in self._items

    def add_text(self, text: str, item_ids: Sequence[str], text_id: str | None = None) -> None:
        """A caption describing the given items (add the items too; order does not matter). Without
        the format's own caption id it is numbered per item: `a.jpg#0`, `a.jpg#1`, ..."""
        if text_id is None:
            first = item_ids[0] if item_ids else ""
            k = self._captions_per_item.get(first, 0)
            self._captions_per_item[first] = k + 1
            text_id = f"{first}#{k}"
        self._texts.append((text, list(item_ids), str(text_id)))

    @property
    def full(self) -> bool:
        """Whether the item limit is reached (readers of huge files may stop early)."""
        return self.options.limit is not None and len(self._items) >= self.options.limit

    def build(self) -> RetrievalDataset:
        """The dataset of present items and the captions that describe at least one of them."""
        index = {item_id: i for i, item_id in enumerate(self._items)}
        missing = list(self._missing)
        texts, positives, text_ids, dropped = [], [], [], 0
        for text, ids, text_id in self._texts:
            kept = sorted({index[i] for i in ids if i in index})
            if kept:
                texts.append(text)
                positives.append(kept)
                text_ids.append(text_id)
            elif any(i in self._missing for i in ids):
                dropped += 1
        if missing and not self._items and self.searched:
            where = ", ".join(str(p) for p in self.searched[:3]) + (", ..." if len(self.searched) > 3 else "")
            raise DatasetFormatError(
                self.source,
                f"none of its {len(missing)} {self.kind or 'media'} files was found (looked for {missing[0]} in {where}); "
                "point at their folder with --images DIR, or FORMAT:PATH@DIR for this dataset",
            )
        if len(self.problems) > SHOWN_PROBLEMS:
            log.warning("%s: %d more malformed records skipped", self.name, len(self.problems) - SHOWN_PROBLEMS)
        if missing or dropped:
            partial = f"{len(missing)} files not found (first: {missing[0]})" if missing else ""
            partial += ("; " if partial else "") + (f"{dropped} captions without a present item" if dropped else "")
            if self.options.strict:
                raise DatasetFormatError(self.source, f"partial dataset: {partial}")
            log.warning("%s: %s; skipped", self.name, partial)
        items = list(self._items.values())
        return RetrievalDataset(
            name=self.name,
            format=self.format,
            split=self.split,
            kind=self.kind or _kind_of(items),
            items=items,
            item_ids=list(self._items),
            texts=texts,
            text_positives=positives,
            text_ids=text_ids,
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


def csv_rows(
    path: Path, problem: Callable[[Path, str, int], None], delimiter: str | None = None
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each record of a CSV/TSV file (`,`, or TAB for .tsv), one record per
    line as caption files have them. A quote left open at the end of its line is reported at the
    line where it opened and that line is skipped, instead of swallowing the lines after it."""
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    for number, line in text_lines(path):
        try:
            row = next(csv.reader([line], delimiter=delimiter, strict=True), [])
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                problem(path, 'unbalanced quote: a field opened with " on this line is not closed', number)
                continue
            row = next(csv.reader([line], delimiter=delimiter), [])  # e.g. `"a" b`: read leniently
        yield number, row


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
    """The file of a split in a dataset folder, e.g. `coco_{split}_karpathy.json`; when absent, an
    error naming the files expected and the splits the folder does have."""
    names = [p.format(split=split or "test") for p in patterns]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    present = sorted({s for p in patterns for s in splits_present(folder, p)})
    hint = f"; splits present: {', '.join(present)} (pick one with --split)" if present else ""
    raise DatasetFormatError(folder, f"no {what} file for split {split!r}; expected {' or '.join(names)}{hint}")


def splits_present(folder: Path, pattern: str) -> list[str]:
    """The splits a folder holds files of, for a file-name pattern such as `{split}_texts.jsonl`."""
    head, _, tail = pattern.partition("{split}")
    found = folder.glob(pattern.replace("{split}", "*"))
    return sorted(str(p.relative_to(folder).as_posix())[len(head) : -len(tail) or None] for p in found)


def require_split_match(path: Path, split: str | None, seen: set[str], matched: int) -> None:
    """Error when a split filter matched nothing, naming the splits the file does have."""
    if split is not None and matched == 0 and seen:
        raise DatasetFormatError(
            path, f"no records in split {split!r}; splits present: {', '.join(sorted(seen))} (or use --split all)"
        )
