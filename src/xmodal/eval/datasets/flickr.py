"""Flickr8k and Flickr30k as their publishers release them.

Flickr8k (Hodosh et al. 2013), `Flickr8k_text.zip` and `Flickr8k_Dataset.zip` unzipped into one folder:

    DIR/Flickr8k.token.txt                 `image.jpg#k<TAB>caption`, 5 per image (8,091 images)
    DIR/Flickr_8k.{train,dev,test}Images.txt   one image file name per line (6,000 / 1,000 / 1,000)
    DIR/Flicker8k_Dataset/*.jpg            the images (the archive's own spelling; Flickr8k_Dataset/ too)

Flickr30k captions as JSON, `{"1000092795.jpg": [caption, ..., "flickr30k-images/1000092795.jpg"]}`
(each list ends with the image's path), one file per split or one for all with the
Flickr30k-Entities id lists `{train,val,test}.txt` (one image id per line) beside it.
"""

from __future__ import annotations

from pathlib import Path

from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.base import (
    DatasetBuilder,
    ReadOptions,
    RetrievalDataset,
    load_json,
    text_lines,
)

TOKENS = "Flickr8k.token.txt"
FLICKR8K_SPLITS = {"train": "train", "val": "dev", "dev": "dev", "test": "test"}
FLICKR8K_IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images", "")
FLICKR30K_IMAGE_FOLDERS = ("", "flickr30k-images", "flickr30k_images", "Images", "images")
# split name -> file stems of that split (Flickr30k-Entities: val.txt; some copies: validation)
SPLIT_STEMS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _roots(folder: Path, options: ReadOptions) -> list[Path]:
    return [options.media_root] if options.media_root is not None else [folder, folder.parent]


def read_flickr8k(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Flickr8k's original release: the token file (or its folder), the split's image list, the images."""
    file = path / TOKENS if path.is_dir() else path
    if not file.is_file():
        raise DatasetFormatError(path, f"no {TOKENS} (the Flickr8k caption file) in this folder")
    folder = file.parent
    builder = DatasetBuilder("flickr8k", "flickr8k", options, source=file, kind="image")
    captions: dict[str, list[tuple[str, str]]] = {}
    for line, raw in text_lines(file):
        if not raw.strip():
            continue
        key, tab, caption = raw.partition("\t")
        image, hash_, _ = key.strip().rpartition("#")
        if not tab or not hash_ or not image or not caption.strip():
            builder.problem(file, "expected `image.jpg#k<TAB>caption`", line)
            continue
        captions.setdefault(image, []).append((key.strip(), caption.strip()))
    order = list(captions) if options.split is None else _split_list(folder, options.split, captions, builder)
    roots = _roots(folder, options)
    relative = [Path(f) for f in FLICKR8K_IMAGE_FOLDERS]
    for image in order:
        if builder.full:
            break
        builder.add_media(image, roots, [f / image for f in relative])
        for text_id, caption in captions[image]:
            builder.add_text(caption, [image], text_id)
    return builder.build()


def _split_list(folder: Path, split: str, captions: dict, builder: DatasetBuilder) -> list[str]:
    """The images of a Flickr_8k.{split}Images.txt list that the token file captions; the others
    are reported (file:line) and skipped."""
    if split not in FLICKR8K_SPLITS:
        raise DatasetFormatError(folder, f"no Flickr8k split {split!r}; the release has train, dev (or val), test")
    file = folder / f"Flickr_8k.{FLICKR8K_SPLITS[split]}Images.txt"
    if not file.is_file():
        raise DatasetFormatError(folder, f"no {file.name} (the Flickr8k {split} split list) beside {TOKENS}")
    out = []
    for line, raw in text_lines(file):
        name = raw.strip()
        if not name:
            continue
        if name not in captions:
            builder.problem(file, f"{name} has no captions in {TOKENS}", line)
            continue
        out.append(name)
    return list(dict.fromkeys(out))


def read_flickr30k_json(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Flickr30k captions JSON: the split's own file (test.json), or one file filtered by the
    split's id list; a file given itself is its split when its name says so (else every record)."""
    file, split, wanted = _flickr30k_file(path, options.split)
    data = load_json(file)
    if not isinstance(data, dict):
        raise DatasetFormatError(file, 'expected an object {"image.jpg": [captions..., "path/image.jpg"]}')
    builder = DatasetBuilder("flickr30k", "flickr30k", options, source=file, kind="image")
    builder.split = split
    roots = _roots(file.parent, options)
    for key, value in data.items():
        if wanted is not None and Path(key).stem not in wanted:
            continue
        if builder.full:
            break
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            builder.problem(file, f"{key}: expected a list of caption strings (the last may be the image's path)")
            continue
        *captions, last = value or [""]
        if not last.lower().endswith(IMAGE_SUFFIXES):  # no path at the end: every element is a caption
            captions, last = value, key
        builder.add_media(key, roots, [last, *(Path(f) / key for f in FLICKR30K_IMAGE_FOLDERS)])
        for k, caption in enumerate(c.strip() for c in captions):
            if not caption:
                builder.problem(file, f"{key}: caption {k} is empty")
                continue
            builder.add_text(caption, [key], f"{key}#{k}")
    if wanted is not None:
        absent = sorted(set(wanted) - {Path(k).stem for k in data})
        for image_id in absent[:20]:
            builder.problem(file, f"image id {image_id} of the {split} list is not in this file")
    return builder.build()


def _flickr30k_file(path: Path, split: str | None) -> tuple[Path, str | None, set[str] | None]:
    """(JSON file, split it is reported as, image ids to keep or None for all)."""
    if path.is_file():
        named = next((s for s, stems in SPLIT_STEMS.items() if path.stem in stems), None)
        if named is not None:
            return path, named, None
        ids = _id_list(path.parent, split) if split is not None else None
        return path, split if ids is not None else None, ids
    if split is None:
        raise DatasetFormatError(path, "a Flickr30k folder is read one split at a time; pass the JSON file for all")
    for stem in SPLIT_STEMS.get(split, (split,)):
        if (path / f"{stem}.json").is_file():
            return path / f"{stem}.json", split, None
    files = sorted(path.glob("*.json"))
    ids = _id_list(path, split)
    if len(files) == 1 and ids is not None:
        return files[0], split, ids
    stems = ", ".join(f"{s}.json" for s in SPLIT_STEMS.get(split, (split,)))
    raise DatasetFormatError(
        path,
        f"no Flickr30k captions for split {split!r}; expected {stems}, or one JSON "
        f"file with a {split}.txt id list beside it",
    )


def _id_list(folder: Path, split: str) -> set[str] | None:
    """The image ids of a Flickr30k-Entities split list (`test.txt`), or None when there is none."""
    for stem in SPLIT_STEMS.get(split, (split,)):
        file = folder / f"{stem}.txt"
        if file.is_file():
            return {Path(raw.strip()).stem for _, raw in text_lines(file) if raw.strip()}
    return None
