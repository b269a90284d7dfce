"""Chinese-CLIP's retrieval format (Flickr30K-CN, COCO-CN, MUGE): `{split}_texts.jsonl` lines
`{"text_id", "text", "image_ids": [...]}` and `{split}_imgs.tsv` lines `image_id<TAB>base64 image`.

Images stay in memory as their encoded bytes (a few hundred MB for a 30k-image split); use
`limit` for a quick subset, which also stops reading the TSV early.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.base import (
    DatasetBuilder,
    ReadOptions,
    RetrievalDataset,
    json_lines,
    split_file,
    text_lines,
)


def read_cn_clip(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Read one split of a Chinese-CLIP dataset folder (e.g. `valid` for MUGE, `test` for the others)."""
    if not path.is_dir():
        raise DatasetFormatError(path, "expected the dataset folder holding {split}_texts.jsonl and {split}_imgs.tsv")
    texts_file = split_file(path, ["{split}_texts.jsonl"], options.split, "Chinese-CLIP texts")
    images_file = split_file(path, ["{split}_imgs.tsv"], options.split, "Chinese-CLIP images")
    builder = DatasetBuilder(path.name, "cn-clip", options, source=path, kind="image", language="zh")
    complete = _read_images(images_file, builder)
    for line, record in json_lines(texts_file, builder):
        text = record.get("text") if isinstance(record, dict) else None
        image_ids = record.get("image_ids") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            builder.problem(texts_file, "expected an object with a non-empty 'text'", line)
            continue
        if not isinstance(image_ids, list) or not image_ids:
            builder.problem(
                texts_file, "expected 'image_ids', a non-empty list (test splits without labels cannot be scored)", line
            )
            continue
        ids = [str(i) for i in image_ids]
        if complete:  # every image of the split was read: an unknown id is a missing image
            for image_id in ids:
                if not builder.has_item(image_id):
                    builder.missing_item(image_id)
        text_id = record.get("text_id")
        builder.add_text(text.strip(), ids, None if text_id is None else str(text_id))
    return builder.build()


def _read_images(file: Path, builder: DatasetBuilder) -> bool:
    """Add the TSV's images as encoded bytes; False when the limit stopped the read early."""
    for line, raw in text_lines(file):
        if not raw.strip():
            continue
        if builder.full:
            return False
        image_id, sep, data = raw.partition("\t")
        if not sep or not image_id.strip() or not data.strip():
            builder.problem(file, "expected image_id<TAB>base64 image", line)
            continue
        try:
            encoded = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            builder.problem(file, f"invalid base64 image data ({exc})", line)
            continue
        builder.add_item(image_id.strip(), encoded)
    return True
