"""What format a dataset path is in: from the folder's file names, else from a file's content
(its first 64 KiB), so a bare path reads without FORMAT: whatever the file is called."""

from __future__ import annotations

import json
import re
from pathlib import Path

from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.captions import CSV_NAMES, PATH_COLUMNS
from xmodal.eval.datasets.msvd import DESCRIPTIONS, is_label_json

# Each format and what it expects, for the error when nothing fits.
FORMATS = {
    "karpathy": 'Karpathy split JSON (dataset_coco.json): {"images": [{"filename", "split", "sentences"}]}',
    "coco": "COCO captions JSON (images[] + annotations[]), or a COCO 2017 folder with "
    "annotations/captions_{split}2017.json and {split}2017/",
    "flickr": "CLIP_benchmark's flickr30k_{split}_karpathy.txt: a header, then image,caption rows",
    "flickr8k": "Flickr8k's release: Flickr8k.token.txt (image.jpg#k<TAB>caption), Flickr_8k.*Images.txt "
    "split lists and Flicker8k_Dataset/",
    "flickr30k": 'Flickr30k JSON {"id.jpg": [captions..., "path/id.jpg"]}, with train/val/test.txt id lists',
    "cn-clip": "a Chinese-CLIP folder with {split}_texts.jsonl and {split}_imgs.tsv",
    "msvd": "an MSVD folder: AllVideoDescriptions.txt + {split}_list.txt + YouTubeClips/, "
    "or {training,testing}_label.json + the clips",
    "jsonl": 'JSON lines {"path": "a.jpg", "captions": ["..."]}',
    "csv": "CSV/TSV with a header: a path (or image/file) column and caption column(s)",
}
_HEAD = 1 << 16
_FLICKR30K = re.compile(r'^\{\s*"[^"]+\.(?:jpe?g|png)"\s*:\s*\[', re.IGNORECASE)
_FLICKR8K = re.compile(r"^[^\t#]+#\d+\t\S")
_CAPTION_HEADER = ("caption", "text", "description", "sentence")


def detect_format(path: Path) -> str:
    """The format of a dataset file or folder; an error listing every format when nothing fits."""
    if not path.exists():
        raise DatasetFormatError(path, "no such file or folder")
    fmt = _folder_format(path) if path.is_dir() else _file_format(path)
    if fmt is None:
        listing = "; ".join(f"{name}: {what}" for name, what in FORMATS.items())
        raise DatasetFormatError(
            path,
            f"cannot tell the dataset format from its names or content; write FORMAT:PATH, FORMAT one of {listing}",
        )
    return fmt


def _folder_format(folder: Path) -> str | None:
    names = {p.name for p in folder.iterdir()}
    if "Flickr8k.token.txt" in names:
        return "flickr8k"
    if DESCRIPTIONS in names or is_label_json(folder):
        return "msvd"
    if any(folder.glob("*_texts.jsonl")) and any(folder.glob("*_imgs.tsv")):
        return "cn-clip"
    if any(folder.glob("coco_*_karpathy.json")) or any(folder.glob("annotations/captions_*.json")):
        return "coco"
    if any(folder.glob("flickr*_karpathy.txt")):
        return "flickr"
    if len(list(folder.glob("dataset_*.json"))) == 1:
        return "karpathy"
    for name in ("test.json", "val.json", "validation.json", "train.json"):
        if name in names and _file_format(folder / name) == "flickr30k":
            return "flickr30k"
    for name in CSV_NAMES:  # Kaggle's Flickr8k: captions.txt beside Images/
        if name in names and _file_format(folder / name) == "csv":
            return "csv"
    return None


def _file_format(file: Path) -> str | None:
    with open(file, "rb") as fp:
        head = fp.read(_HEAD).decode("utf-8-sig", errors="replace").lstrip()
    name = file.name.lower()
    if head.startswith("{") and "\n" in head and _json_line(head.partition("\n")[0]):
        return "jsonl"
    if head.startswith("["):
        return "msvd" if re.search(r'"caption"\s*:\s*\[', head[:4096]) else None
    if head.startswith("{"):
        if _FLICKR30K.match(head):
            return "flickr30k"
        if '"sentences"' in head and '"filename"' in head:
            return "karpathy"
        if '"annotations"' in head or '"file_name"' in head:
            return "coco"
        return "jsonl" if _json_line(head.partition("\n")[0]) else None
    first = head.partition("\n")[0].rstrip("\r")
    if _FLICKR8K.match(first):
        return "flickr8k"
    header = [h.strip().strip('"').lower() for h in re.split(r"[,\t]", first)]
    if any(h in PATH_COLUMNS for h in header) and any(h.startswith(_CAPTION_HEADER) for h in header):
        return "flickr" if name.startswith("flickr") and name.endswith("_karpathy.txt") else "csv"
    # content undecided: a table or JSON-lines name still says which reader explains what is wrong
    return {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl"}.get(file.suffix.lower())


def _json_line(line: str) -> bool:
    """Whether one line is a whole JSON object with a `path` (a JSONL record)."""
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "path" in value
