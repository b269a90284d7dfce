"""Retrieval dataset readers: one per format, all returning a `RetrievalDataset`.

A dataset is named `FORMAT:PATH` (e.g. `karpathy:dataset_coco.json`, `cn-clip:datasets/MUGE`);
`PATH` alone picks the format from the file or folder names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.datasets.base import MediaSource, ReadOptions, RetrievalDataset
from xmodal.eval.datasets.captions import (
    read_coco,
    read_csv,
    read_flickr_txt,
    read_jsonl,
    read_karpathy,
)
from xmodal.eval.datasets.cnclip import read_cn_clip
from xmodal.eval.datasets.msvd import DESCRIPTIONS, read_msvd
from xmodal.eval.datasets.parsed import load_parsed, store_parsed

Reader = Callable[[Path, ReadOptions], RetrievalDataset]
# Formats whose split is determined by one annotation file (its stat keys the parsed-split store).
SINGLE_FILE_FORMATS = frozenset({"karpathy", "coco", "flickr", "jsonl", "csv"})

READERS: dict[str, Reader] = {
    "karpathy": read_karpathy,
    "coco": read_coco,
    "flickr": read_flickr_txt,
    "cn-clip": read_cn_clip,
    "msvd": read_msvd,
    "jsonl": read_jsonl,
    "csv": read_csv,
}

__all__ = [
    "READERS",
    "MediaSource",
    "ReadOptions",
    "RetrievalDataset",
    "detect_format",
    "parse_dataset_spec",
    "read_dataset",
]


def parse_dataset_spec(spec: str) -> tuple[str | None, Path]:
    """`FORMAT:PATH` -> (format, path); a bare PATH -> (None, path). Windows drive letters stay paths."""
    head, sep, tail = spec.partition(":")
    if sep and head.lower() in READERS:
        return head.lower(), Path(tail).expanduser()
    if sep and len(head) > 1 and not os.path.exists(spec):
        raise InvalidArgumentError("dataset format", head, sorted(READERS))
    return None, Path(spec).expanduser()


def detect_format(path: Path) -> str:
    """Guess the format from file and folder names; a clear error when nothing fits."""
    if path.is_dir():
        if (path / DESCRIPTIONS).is_file():
            return "msvd"
        if any(path.glob("*_texts.jsonl")) and any(path.glob("*_imgs.tsv")):
            return "cn-clip"
        if any(path.glob("coco_*_karpathy.json")):
            return "coco"
        if any(path.glob("flickr*_karpathy.txt")):
            return "flickr"
        if len(list(path.glob("dataset_*.json"))) == 1:
            return "karpathy"
    elif path.is_file():
        name, suffix = path.name.lower(), path.suffix.lower()
        if name.startswith("dataset_") and suffix == ".json":
            return "karpathy"
        if suffix == ".json":
            return "coco"
        if name.startswith("flickr") and name.endswith("_karpathy.txt"):
            return "flickr"
        if suffix == ".jsonl":
            return "jsonl"
        if suffix in (".csv", ".tsv"):
            return "csv"
    else:
        raise DatasetFormatError(path, "no such file or folder")
    raise DatasetFormatError(
        path, f"cannot tell the dataset format from its name; write FORMAT:PATH with FORMAT one of {', '.join(READERS)}"
    )


def read_dataset(
    spec: str | os.PathLike, options: ReadOptions | None = None, *, parsed_cache: Path | None = None
) -> RetrievalDataset:
    """Read `FORMAT:PATH` (or a bare path, format guessed) into a RetrievalDataset.

    With `parsed_cache` (a folder), a split parsed before from an unchanged annotation file is
    loaded from there instead of parsing the file again.
    """
    options = options or ReadOptions()
    if options.limit is not None and options.limit < 1:
        raise InvalidArgumentError("limit", options.limit, "an integer >= 1")
    fmt, path = parse_dataset_spec(str(spec))
    if not path.exists():
        raise DatasetFormatError(path, "no such file or folder")
    path = path.absolute()  # items come out absolute, whatever the working directory
    if options.media_root is not None:
        options = replace(options, media_root=options.media_root.expanduser().absolute())
    fmt = fmt or detect_format(path)
    stored = parsed_cache is not None and fmt in SINGLE_FILE_FORMATS and path.is_file()
    dataset = load_parsed(parsed_cache, fmt, path, options) if stored else None
    if dataset is None:
        dataset = READERS[fmt](path, options)
        if stored and not dataset.missing:  # a split with absent files is read again: they may appear
            store_parsed(parsed_cache, fmt, path, options, dataset)
    if not dataset.items:
        raise DatasetFormatError(
            path, f"no usable items ({len(dataset.missing)} missing files, {len(dataset.problems)} malformed records)"
        )
    return dataset
