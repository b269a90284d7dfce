"""Retrieval dataset readers: one per format, all returning a `RetrievalDataset`.

A dataset is named `FORMAT:PATH` (e.g. `karpathy:dataset_coco.json`, `cn-clip:datasets/MUGE`);
`PATH` alone picks the format from the folder's file names or the file's content. `@DIR` at the
end names the folder its image/video files are in (`csv:captions.txt@images/`).
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
from xmodal.eval.datasets.detect import FORMATS, detect_format
from xmodal.eval.datasets.flickr import read_flickr8k, read_flickr30k_json
from xmodal.eval.datasets.msvd import read_msvd
from xmodal.eval.datasets.parsed import load_parsed, store_parsed

Reader = Callable[[Path, ReadOptions], RetrievalDataset]
# Formats whose split is determined by one annotation file (its stat keys the parsed-split store).
SINGLE_FILE_FORMATS = frozenset({"karpathy", "coco", "flickr", "flickr30k", "jsonl", "csv"})

READERS: dict[str, Reader] = {
    "karpathy": read_karpathy,
    "coco": read_coco,
    "flickr": read_flickr_txt,
    "flickr8k": read_flickr8k,
    "flickr30k": read_flickr30k_json,
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
    "FORMATS",
    "detect_format",
    "parse_dataset_spec",
    "read_dataset",
]


def parse_dataset_spec(spec: str) -> tuple[str | None, Path, Path | None]:
    """`FORMAT:PATH[@DIR]` -> (format, path, media folder); a bare PATH -> (None, path, None).

    Windows drive letters stay paths; `@DIR` is split off only when the whole string is no existing path."""
    head, sep, tail = spec.partition(":")
    fmt = head.lower() if sep and head.lower() in READERS else None
    if sep and fmt is None and len(head) > 1 and not os.path.exists(spec):
        raise InvalidArgumentError("dataset format", head, sorted(READERS))
    rest = tail if fmt is not None else spec
    media = None
    if "@" in rest and not os.path.exists(rest):
        rest, _, folder = rest.rpartition("@")
        media = Path(folder).expanduser()
    return fmt, Path(rest).expanduser(), media


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
    fmt, path, media = parse_dataset_spec(str(spec))
    if not path.exists():
        raise DatasetFormatError(path, "no such file or folder")
    path = path.absolute()  # items come out absolute, whatever the working directory
    media = media or options.media_root
    if media is not None:
        if not media.expanduser().is_dir():
            raise DatasetFormatError(media, "no such folder (given for the dataset's image/video files)")
        options = replace(options, media_root=media.expanduser().absolute())
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
