"""Zero-shot classification datasets: a folder per class, or a CSV/TSV of `path,label`.

Labels that belong to a class set xmodal ships (ImageNet WordNet ids such as `n01440764`, found by
themselves; CIFAR-10/100 label names when every class is there, or any subset with `classnames`
naming the set) are classified over the whole set with CLIP's names, however few of its classes
the data holds. Other labels are their own classes, named by the folder name or label (or a JSON
file: a list in class order, or an object `{label: name}`). A label no name is known for is a
warning naming it, never a silent raw id.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.datasets.base import csv_rows, load_json
from xmodal.eval.datasets.captions import PATH_COLUMNS
from xmodal.eval.datasets.class_sets import ClassSet, class_set, class_sets
from xmodal.media.formats import image_extensions

log = logging.getLogger(__name__)

# label columns, best first: an ImageNet table has file, class_index, wnid, class_name
LABEL_COLUMNS = ("wnid", "label", "class_index", "class_id", "class_name", "classname", "class", "category")
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class ClassificationDataset:
    """Images with integer labels into `classnames` (the text prompts use) and `class_ids` (the data's
    own labels). With a shipped `class_set` the classes are the whole set, present in the data or not."""

    name: str
    items: list[Path]
    labels: np.ndarray
    class_ids: list[str]
    classnames: list[str]
    missing: list[str] = field(default_factory=list)
    problems: list[DatasetFormatError] = field(default_factory=list)
    class_set: ClassSet | None = None
    unknown: dict[str, int] = field(default_factory=dict)  # label -> images left out: no class of the set

    @property
    def present(self) -> int:
        """How many classes have at least one image."""
        return int(np.unique(self.labels).size)

    def describe(self) -> str:
        """One line: images, classes present, and what they were classified over."""
        line = f"{self.name}: {len(self.items)} images of {self.present} classes"
        if self.class_set is not None:
            line += f"; classified over all {len(self.classnames):,} {self.class_set.title} classes"
        return line


def read_classification(
    path: Path,
    *,
    classnames: str | Path | None = None,
    limit: int | None = None,
    strict: bool = False,
) -> ClassificationDataset:
    """Read a folder-per-class tree or a `path,label` CSV/TSV; `limit` keeps a class-balanced subset.

    `classnames`: a shipped class set (imagenet, cifar10, cifar100) or a JSON file of names. With
    `strict`, a malformed line, a missing file or a label outside the class set is an error."""
    path = Path(path).expanduser()
    problems: list[DatasetFormatError] = []
    missing: list[str] = []
    if path.is_dir():
        pairs = _folder_pairs(path)
    elif path.is_file():
        pairs = _table_pairs(path, problems, missing, strict)
    else:
        raise DatasetFormatError(path, "no such file or folder")
    if not pairs:
        raise DatasetFormatError(path, "no labelled images found")
    if strict and missing:
        raise DatasetFormatError(path, f"partial dataset: {len(missing)} files not found (first: {missing[0]})")
    labels = sorted({label for _, label in pairs}, key=_natural)
    known = _shipped_set(labels, classnames)
    if known is not None:
        class_ids, names = list(known.ids), list(known.names)
        index, unknown = _set_index(known, pairs, path, strict)
    else:
        class_ids, names = _classes(labels, classnames, path)
        index, unknown = {c: i for i, c in enumerate(class_ids)}, {}
    pairs = [(p, label) for p, label in pairs if label in index]
    if not pairs:
        raise DatasetFormatError(path, f"no image has a label of the {known.title} classes")
    pairs = _balanced(pairs, limit) if limit is not None else pairs
    return ClassificationDataset(
        name=path.parent.name if path.is_file() else path.name,  # imagenet/labels.tsv -> "imagenet"
        items=[p for p, _ in pairs],
        labels=np.array([index[label] for _, label in pairs], dtype=np.int64),
        class_ids=class_ids,
        classnames=names,
        missing=missing,
        problems=problems,
        class_set=known,
        unknown=unknown,
    )


def _shipped_set(labels: list[str], classnames: str | Path | None) -> ClassSet | None:
    """The shipped set the labels belong to: the one `classnames` names, else ImageNet when most
    labels are its WordNet ids, else a CIFAR set whose every class is present."""
    if classnames is not None:
        return class_set(str(classnames)) if str(classnames) in class_sets() else None
    imagenet = class_set("imagenet")
    if sum(label in imagenet.index for label in labels if _WNID.match(label)) * 2 >= len(labels):
        return imagenet
    for key in ("cifar10", "cifar100"):
        candidate = class_set(key)
        if set(labels) == set(candidate.ids):
            return candidate
    return None


def _set_index(known: ClassSet, pairs: list, path: Path, strict: bool) -> tuple[dict[str, int], dict[str, int]]:
    """Data label -> class index in the set; labels outside it are warned about (with their image
    counts) and their images left out, or an error when strict."""
    index, unknown = {}, Counter()
    for _, label in pairs:
        found = known.lookup(label)
        if found is None:
            unknown[label] += 1
        else:
            index[label] = found
    if unknown:
        listing = ", ".join(f"{label} ({n} images)" for label, n in sorted(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        message = f"not {known.title} classes, left out: {listing}{more}"
        if strict:
            raise DatasetFormatError(path, message)
        log.warning("%s: %s", path, message)
    return index, dict(unknown)


def _folder_pairs(root: Path) -> list[tuple[Path, str]]:
    """(image, class folder name) for every image under each class folder (recursively)."""
    exts = image_extensions()
    pairs = []
    for folder in sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural(p.name)
    ):
        files = sorted(
            f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in exts and not f.name.startswith(".")
        )
        pairs += [(f, folder.name) for f in files]
    return pairs


def _table_pairs(file: Path, problems: list, missing: list, strict: bool) -> list[tuple[Path, str]]:
    def problem(path: Path, reason: str, line: int) -> None:
        error = DatasetFormatError(path, reason, line)
        if strict:
            raise error
        log.warning("skipped %s", error)
        problems.append(error)

    rows = csv_rows(file, problem)
    header = [h.strip().lower() for h in next(rows, (1, []))[1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise DatasetFormatError(
            file, f"header {header!r} needs a path column and a label column ({'/'.join(LABEL_COLUMNS)})", 1
        )
    pairs = []
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(path_col, label_col) or not row[path_col].strip() or not row[label_col].strip():
            problem(file, "expected a path and a label", line)
            continue
        media = _resolve(file.parent, row[path_col].strip())
        if media is None:
            missing.append(row[path_col].strip())
            continue
        pairs.append((media, row[label_col].strip()))
    if missing:
        log.warning("%s: %d files not found, skipped (first: %s)", file, len(missing), missing[0])
    return pairs


def _resolve(root: Path, rel: str) -> Path | None:
    """The image a table row names: relative to the table's folder (or its `images/` folder)."""
    for candidate in (root / rel, root / "images" / rel):
        if candidate.is_file():
            return candidate
    return None


def _classes(labels: list[str], classnames: str | Path | None, source: Path) -> tuple[list[str], list[str]]:
    """(class ids, prompt names) of data whose labels are their own classes. Without a JSON: the
    sorted labels, underscores as spaces (`golden_retriever` -> `golden retriever`), a known
    ImageNet WordNet id by its CLIP name. A JSON list names classes by index (integer labels) or in
    sorted label order; a JSON object maps label -> name and defines the class set (classes without
    images still compete). Labels no name is known for are warned about."""
    if classnames is None:
        if all(c.isdigit() for c in labels):
            raise DatasetFormatError(
                source,
                f"labels are class numbers ({labels[0]}..{labels[-1]}) without names; name them with "
                f"--classnames {'|'.join(class_sets())} or a JSON list of names",
            )
        imagenet = class_set("imagenet")
        names = [imagenet.names[imagenet.index[c]] if c in imagenet.index else c.replace("_", " ") for c in labels]
        raw = [c for c in labels if _WNID.match(c) and c not in imagenet.index]
        if raw:
            log.warning(
                "%s: %s look%s like WordNet ids of no ImageNet class; the prompts name %s by the id",
                source,
                ", ".join(raw[:10]),
                "s" if len(raw) == 1 else "",
                "it" if len(raw) == 1 else "them",
            )
        return labels, names
    mapping = load_json(Path(classnames))
    if isinstance(mapping, dict):
        unknown = [c for c in labels if c not in mapping]
        if unknown:
            raise DatasetFormatError(classnames, f"no name for {len(unknown)} labels, e.g. {unknown[0]!r}")
        return list(mapping), [str(n) for n in mapping.values()]
    if not isinstance(mapping, list):
        raise InvalidArgumentError("classnames", str(classnames), "a JSON list of names or an object {label: name}")
    if all(c.isdigit() for c in labels):
        if int(labels[-1]) >= len(mapping):
            raise DatasetFormatError(classnames, f"{len(mapping)} names, but there is a label {labels[-1]}")
        return [str(i) for i in range(len(mapping))], [str(n) for n in mapping]
    if len(mapping) != len(labels):
        raise DatasetFormatError(
            classnames, f"{len(mapping)} names for {len(labels)} classes (given in sorted label order)"
        )
    return labels, [str(n) for n in mapping]


def _balanced(pairs: list[tuple[Path, str]], limit: int) -> list[tuple[Path, str]]:
    """The first `limit` items taken round-robin over classes, so a subset keeps every class."""
    by_class: dict[str, list] = defaultdict(list)
    for pair in pairs:
        by_class[pair[1]].append(pair)
    out: list[tuple[Path, str]] = []
    depth = 0
    while len(out) < limit and any(depth < len(v) for v in by_class.values()):
        out += [v[depth] for v in by_class.values() if depth < len(v)][: limit - len(out)]
        depth += 1
    return out


def _natural(text: str) -> tuple:
    """Sort key putting `class2` before `class10`."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))
