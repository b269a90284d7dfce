"""Readers of captioned-image formats: Karpathy split JSON, COCO captions JSON (COCO 2017's own
`annotations/captions_{split}2017.json` layout and CLIP_benchmark's `coco_{split}_karpathy.json`),
CLIP_benchmark's `flickr30k_{split}_karpathy.txt`, and the generic JSONL / CSV a user writes for
their own photos or videos (the Kaggle Flickr8k `captions.txt` is such a CSV)."""

from __future__ import annotations

import re
from pathlib import Path

from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.base import (
    DatasetBuilder,
    ReadOptions,
    RetrievalDataset,
    csv_rows,
    json_lines,
    load_json,
    require_split_match,
    split_file,
)

# Where the images of each public layout usually sit, relative to the annotation file's folder
# (or its parent, as in COCO's own `annotations/` + `val2014/` layout).
COCO_IMAGE_FOLDERS = ("", "val2014", "train2014", "val2017", "train2017", "images")
FLICKR_IMAGE_FOLDERS = ("", "flickr30k-images", "flickr30k_images", "Images", "images", "Flicker8k_Dataset")
CSV_IMAGE_FOLDERS = ("", "Images", "images")  # Kaggle's Flickr8k: captions.txt beside Images/
CSV_NAMES = ("captions.txt", "captions.csv", "captions.tsv")  # the caption table of a folder given as csv
PATH_COLUMNS = ("path", "image", "file", "filename", "file_name", "video")
COCO_FILES = ("coco_{split}_karpathy.json", "annotations/captions_{split}2017.json", "captions_{split}2017.json")
# The split a file holds, from its published name (a file named otherwise holds "all" its records).
SPLIT_IN_NAME = re.compile(r"^(?:coco|flickr30k|flickr8k)_(\w+?)_karpathy$|^captions_([a-z]+)20\d\d$")


def _roots(file: Path, options: ReadOptions) -> list[Path]:
    if options.media_root is not None:
        return [options.media_root]
    return [file.parent, file.parent.parent]


def split_of(file: Path) -> str | None:
    """The split a published file name says it holds (`coco_test_karpathy.json` -> test,
    `captions_val2017.json` -> val); None when the name does not say."""
    match = SPLIT_IN_NAME.match(file.stem)
    return next((g for g in match.groups() if g), None) if match else None


def _candidates(folders: tuple[str, ...], *relative: str | Path) -> list[Path]:
    return [Path(folder) / rel for rel in relative for folder in folders]


def _caption(value: object) -> str | None:
    """A caption string with surrounding whitespace removed; None when not a non-empty string."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


# Fields every Karpathy record has; any others (e.g. synth-shapes' `shapes`) become the item's attributes.
KARPATHY_FIELDS = frozenset({"filepath", "filename", "imgid", "split", "sentences", "sentids", "cocoid"})


def read_karpathy(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Karpathy's `dataset_coco.json` / `dataset_flickr30k.json`: images[] with split and sentences (and
    any further per-image fields as the item's attributes)."""
    file = path if path.is_file() else _single(path, "dataset_*.json", "Karpathy split JSON")
    data = load_json(file)
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetFormatError(file, "expected an object with an 'images' list (Karpathy split format)")
    builder = DatasetBuilder(str(data.get("dataset") or file.stem), "karpathy", options, source=file, kind="image")
    roots = _roots(file, options)
    seen, matched = set(), 0
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            builder.problem(file, f"images[{n}]: expected an object with a 'filename'")
            continue
        seen.add(str(entry.get("split")))
        if options.split is not None and entry.get("split") != options.split:
            continue
        matched += 1
        rel = Path(entry.get("filepath") or "") / entry["filename"]
        item_id = rel.as_posix()
        extra = {k: v for k, v in entry.items() if k not in KARPATHY_FIELDS}
        builder.add_media(item_id, roots, _candidates(COCO_IMAGE_FOLDERS + FLICKR_IMAGE_FOLDERS[1:], rel), extra)
        for k, sentence in enumerate(entry.get("sentences") or []):
            text = _caption(sentence.get("raw") if isinstance(sentence, dict) else None)
            if text is None:
                builder.problem(file, f"images[{n}].sentences[{k}]: missing or empty 'raw' caption")
                continue
            builder.add_text(text, [item_id], _text_id(sentence.get("sentid")))
        if builder.full:
            break
    require_split_match(file, options.split, seen, matched)
    return builder.build()


def _text_id(value: object) -> str | None:
    """A format's own caption id (an int or a string), as a string; None when absent."""
    return str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def read_coco(path: Path, options: ReadOptions) -> RetrievalDataset:
    """COCO captions JSON (images[] + annotations[]): COCO 2017's `annotations/captions_{split}2017.json`
    with the images in `{split}2017/`, or CLIP_benchmark's `coco_{split}_karpathy.json`; a folder
    holding either picks the file of the split."""
    file = path if path.is_file() else split_file(path, COCO_FILES, options.split, "COCO captions")
    data = load_json(file)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise DatasetFormatError(
            file, "expected an object with 'images' and 'annotations' lists (COCO captions format)"
        )
    builder = DatasetBuilder(_public_name(file), "coco", options, source=file, kind="image")
    builder.split = split_of(file)
    roots = _roots(file, options)
    # the split's own image folder first (COCO 2017: captions_val2017.json -> val2017/)
    folders = (f"{builder.split}2017", *COCO_IMAGE_FOLDERS) if builder.split else COCO_IMAGE_FOLDERS
    ids: dict[object, str] = {}
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            builder.problem(file, f"images[{n}]: expected an object with 'id' and 'file_name'")
            continue
        ids[image["id"]] = image["file_name"]
        builder.add_media(image["file_name"], roots, _candidates(folders, image["file_name"]))
    for n, ann in enumerate(data["annotations"]):
        text = _caption(ann.get("caption")) if isinstance(ann, dict) else None
        if text is None or ann.get("image_id") not in ids:
            reason = (
                "missing or empty 'caption'" if text is None else f"image_id {ann.get('image_id')!r} is not in images[]"
            )
            builder.problem(file, f"annotations[{n}]: {reason}")
            continue
        builder.add_text(text, [ids[ann["image_id"]]], _text_id(ann.get("id")))
    return builder.build()


def read_flickr_txt(path: Path, options: ReadOptions) -> RetrievalDataset:
    """CLIP_benchmark's `flickr30k_{split}_karpathy.txt`: a header, then `image,caption` rows."""
    file = path
    if path.is_dir():
        patterns = ["flickr30k_{split}_karpathy.txt", "flickr8k_{split}_karpathy.txt"]
        file = split_file(path, patterns, options.split, "CLIP_benchmark Flickr")
    return _read_table(file, options, "flickr", FLICKR_IMAGE_FOLDERS)


def read_csv(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Generic CSV/TSV with a header: a path column and one or more caption columns (the Kaggle
    Flickr8k `captions.txt`, `image,caption`, finds its `Images/` or `images/` folder beside it); a
    folder is read through its `captions.txt` (or `.csv`, `.tsv`)."""
    if path.is_dir():
        path = next((path / n for n in CSV_NAMES if (path / n).is_file()), None) or _single(path, "*.csv", "CSV")
    return _read_table(path, options, "csv", CSV_IMAGE_FOLDERS)


def _read_table(file: Path, options: ReadOptions, fmt: str, folders: tuple[str, ...]) -> RetrievalDataset:
    """One row per item or per caption; rows naming the same path are merged; extra unquoted commas
    belong to the last caption (captions with commas are often written without quotes)."""
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    builder = DatasetBuilder(_public_name(file), fmt, options, source=file)
    rows = csv_rows(file, builder.problem, delimiter)
    header = [h.strip().lower() for h in next(rows, (1, []))[1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    caption_cols = [i for i, h in enumerate(header) if h.startswith(("caption", "text", "description", "sentence"))]
    if path_col is None or not caption_cols:
        raise DatasetFormatError(
            file,
            f"header {header!r} needs a path column ({'/'.join(PATH_COLUMNS)}) and a caption column (caption...)",
            1,
        )
    split_col = header.index("split") if "split" in header else None
    if split_col is None:
        builder.split = split_of(file)
    roots = _roots(file, options)
    seen, matched = set(), 0
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            builder.problem(file, f"{len(row)} fields, header has {len(header)}", line)
            continue
        if len(row) > len(header) and caption_cols[-1] == len(header) - 1:
            row = row[: len(header) - 1] + [delimiter.join(row[len(header) - 1 :])]
        rel = row[path_col].strip()
        if not rel:
            builder.problem(file, "empty path", line)
            continue
        if split_col is not None:
            seen.add(row[split_col].strip())
            if options.split is not None and row[split_col].strip() != options.split:
                continue
        matched += 1
        if not builder.has_item(rel) and builder.full:
            continue
        builder.add_media(rel, roots, _candidates(folders, rel))
        for col in caption_cols:
            text = _caption(row[col])
            if text is not None:
                builder.add_text(text, [rel])
    require_split_match(file, options.split, seen, matched)
    return builder.build()


def read_jsonl(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Generic JSONL: one object per line with `path` and `caption` (string) or `captions` (list)."""
    builder = DatasetBuilder(path.stem, "jsonl", options, source=path)
    builder.split = None
    roots = _roots(path, options)
    seen, matched = set(), 0
    for line, record in json_lines(path, builder):
        rel = record.get("path") if isinstance(record, dict) else None
        if not isinstance(rel, str) or not rel.strip():
            builder.problem(path, "expected an object with a 'path' string", line)
            continue
        captions = record.get("captions", [record["caption"]] if "caption" in record else None)
        if not isinstance(captions, list):
            builder.problem(path, "expected 'caption' (a string) or 'captions' (a list of strings)", line)
            continue
        if "split" in record:
            builder.split = options.split
            seen.add(str(record["split"]))
            if options.split is not None and record["split"] != options.split:
                continue
        matched += 1
        if not builder.has_item(rel) and builder.full:
            continue
        builder.add_media(rel, roots, [rel])
        for k, caption in enumerate(captions):
            text = _caption(caption)
            if text is None:
                builder.problem(path, f"captions[{k}] is not a non-empty string", line)
                continue
            builder.add_text(text, [rel])
    require_split_match(path, options.split, seen, matched)
    return builder.build()


def _public_name(file: Path) -> str:
    """Dataset name from a file name: CLIP_benchmark's `coco_test_karpathy.json` -> `coco`."""
    return re.sub(r"_(train|val|test|restval)_karpathy$", "", file.stem)


def _single(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        listing = ", ".join(p.name for p in found) or "none"
        raise DatasetFormatError(
            folder, f"expected one {what} file matching {pattern} (found: {listing}); pass the file itself"
        )
    return found[0]
