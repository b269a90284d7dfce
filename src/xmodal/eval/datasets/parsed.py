"""A cache of parsed dataset splits, so a re-run skips parsing big annotation files.

Karpathy's `dataset_coco.json` is 140 MB for all 123k images; parsing it takes seconds, the test
split it yields is 5,000 items. The split is stored as a small JSON file keyed by the reader, the
annotation file's (absolute) path, size and mtime, the read options and xmodal's version; on load,
items whose files have disappeared since are moved to `missing`. Only single-file formats with
every item present are stored (a split with absent files is parsed again, as they may appear).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import xmodal
from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.base import ReadOptions, RetrievalDataset

log = logging.getLogger(__name__)

SCHEMA = 3  # of the stored split; 2: items' attributes (RetrievalDataset.item_attributes); 3: text ids


def _key(fmt: str, file: Path, options: ReadOptions) -> str:
    stat = file.stat()
    parts = [
        SCHEMA,
        xmodal.__version__,
        fmt,
        str(file),
        stat.st_size,
        stat.st_mtime_ns,
        options.split,
        options.limit,
        str(options.media_root),
        options.strict,
    ]
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()


def load_parsed(folder: Path, fmt: str, file: Path, options: ReadOptions) -> RetrievalDataset | None:
    """The stored split of this file and options, or None (not stored, or unreadable)."""
    path = folder / f"{_key(fmt, file, options)}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    problems = [DatasetFormatError(p["path"], p["reason"], p["line"]) for p in data.pop("problems")]
    dataset = RetrievalDataset(**{**data, "items": [Path(p) for p in data["items"]], "problems": problems})
    gone = [i for i, p in enumerate(dataset.items) if not p.is_file()]
    if gone:
        missing = dataset.missing + [dataset.item_ids[i] for i in gone]
        dataset = dataset.without_items(gone)
        dataset.missing = missing
    log.info("%s: parsed split read from %s", file, path)
    return dataset


def store_parsed(folder: Path, fmt: str, file: Path, options: ReadOptions, dataset: RetrievalDataset) -> None:
    """Store a parsed split (atomically: a killed run leaves no half-written file)."""
    if not all(isinstance(item, Path) for item in dataset.items):
        return
    data = {f.name: getattr(dataset, f.name) for f in fields(dataset)}
    data["items"] = [str(p) for p in dataset.items]
    data["problems"] = [{"path": p.path, "reason": p.reason, "line": p.line} for p in dataset.problems]
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            json.dump(data, fp, ensure_ascii=False)
        os.replace(tmp, folder / f"{_key(fmt, file, options)}.json")
    except OSError as exc:  # a full disk or read-only cache folder: the parse is simply not kept
        log.warning("%s: parsed split not stored (%s)", folder, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
