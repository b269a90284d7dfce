"""Zero-shot classification datasets: a folder per class, or a CSV/TSV of `path,label`.

Class names come from the folder names or labels, optionally renamed by a JSON file (a list in
class order, or an object `{label: name}`); ImageNet WordNet-id folders (`n01440764`) get their
class name from the shipped table where it is known.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.datasets.base import load_json, text_lines
from xmodal.eval.datasets.captions import PATH_COLUMNS
from xmodal.media.formats import image_extensions

LABEL_COLUMNS = ("label", "class_name", "classname", "class", "category")
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class ClassificationDataset:
    """Images with integer labels into `classnames` (the text prompts use) and `class_ids` (the data's own labels)."""

    name: str
    items: list[Path]
    labels: np.ndarray
    class_ids: list[str]
    classnames: list[str]
    missing: list[str] = field(default_factory=list)
    problems: list[DatasetFormatError] = field(default_factory=list)


@lru_cache(maxsize=1)
def imagenet_classnames() -> dict[str, str]:
    """WordNet id -> class name for the ImageNet classes shipped with xmodal (250 of the 1000)."""
    data = json.loads(resources.files("xmodal.data").joinpath("imagenet_classes.json").read_text())
    return {c["wnid"]: c["name"] for c in data["classes"]}


def read_classification(
    path: Path, *, classnames: Path | None = None, limit: int | None = None, strict: bool = False
) -> ClassificationDataset:
    """Read a folder-per-class tree or a `path,label` CSV/TSV; `limit` keeps a class-balanced subset."""
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
    class_ids, names = _classes({label for _, label in pairs}, classnames)
    index = {c: i for i, c in enumerate(class_ids)}
    pairs = _balanced(pairs, limit) if limit is not None else pairs
    return ClassificationDataset(
        name=path.parent.name if path.is_file() else path.name,  # imagenet/labels.tsv -> "imagenet"
        items=[p for p, _ in pairs],
        labels=np.array([index[label] for _, label in pairs], dtype=np.int64),
        class_ids=class_ids,
        classnames=names,
        missing=missing,
        problems=problems,
    )


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
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    reader = csv.reader((line for _, line in text_lines(file)), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader, [])]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise DatasetFormatError(
            file, f"header {header!r} needs a path column and a label column ({'/'.join(LABEL_COLUMNS)})", 1
        )
    pairs = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(path_col, label_col) or not row[path_col].strip() or not row[label_col].strip():
            error = DatasetFormatError(file, "expected a path and a label", reader.line_num)
            if strict:
                raise error
            problems.append(error)
            continue
        media = _resolve(file.parent, row[path_col].strip())
        if media is None:
            missing.append(row[path_col].strip())
            continue
        pairs.append((media, row[label_col].strip()))
    return pairs


def _resolve(root: Path, rel: str) -> Path | None:
    """The image a table row names: relative to the table's folder (or its `images/` folder)."""
    for candidate in (root / rel, root / "images" / rel):
        if candidate.is_file():
            return candidate
    return None


def _classes(labels: set[str], classnames: Path | None) -> tuple[list[str], list[str]]:
    """(class ids, prompt names). Without a JSON: the sorted labels, named by ImageNet's table for
    WordNet ids, else the label with underscores as spaces (`golden_retriever` -> `golden retriever`).
    A JSON list names classes by index (integer labels) or in sorted label order; a JSON object maps
    label -> name and defines the class set (classes without images still compete)."""
    ids = sorted(labels, key=_natural)
    if classnames is None:
        known = imagenet_classnames()
        return ids, [known.get(c, c) if _WNID.match(c) else c.replace("_", " ") for c in ids]
    mapping = load_json(classnames)
    if isinstance(mapping, dict):
        unknown = [c for c in ids if c not in mapping]
        if unknown:
            raise DatasetFormatError(classnames, f"no name for {len(unknown)} labels, e.g. {unknown[0]!r}")
        return list(mapping), [str(n) for n in mapping.values()]
    if not isinstance(mapping, list):
        raise InvalidArgumentError("classnames", str(classnames), "a JSON list of names or an object {label: name}")
    if all(c.isdigit() for c in ids):
        if int(ids[-1]) >= len(mapping):
            raise DatasetFormatError(classnames, f"{len(mapping)} names, but there is a label {ids[-1]}")
        return [str(i) for i in range(len(mapping))], [str(n) for n in mapping]
    if len(mapping) != len(ids):
        raise DatasetFormatError(
            classnames, f"{len(mapping)} names for {len(ids)} classes (given in sorted label order)"
        )
    return ids, [str(n) for n in mapping]


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
