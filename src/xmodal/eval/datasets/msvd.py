"""MSVD (Chen & Dolan 2011) in either of its two published shapes.

The public archive plus CLIP4Clip's split lists (1200/100/670 videos):

    DIR/AllVideoDescriptions.txt     "# ..." comment lines, then `video_id caption words ...`
    DIR/YouTubeClips/<video_id>.avi  (or DIR/videos/, or DIR itself)
    DIR/{train,val,test}_list.txt    one video id per line (an extension is allowed)

The caption JSON files widely shared with course and captioning code (e.g. a 1450/100 split):

    DIR/{training,testing}_label.json   [{"caption": [...], "id": "<youtube>_<start>_<end>.avi"}, ...]
    DIR/{training,testing}_data/video/  the clips (or DIR/videos/, DIR/YouTubeClips/, DIR itself)

MSVD convention: every caption of a split's videos is a text query (~27k for test); a video's
captions are its positives for video->text.
"""

from __future__ import annotations

from pathlib import Path

from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets.base import (
    DatasetBuilder,
    ReadOptions,
    RetrievalDataset,
    load_json,
    split_file,
    text_lines,
)
from xmodal.media.formats import VIDEO_EXTENSIONS

DESCRIPTIONS = "AllVideoDescriptions.txt"
VIDEO_FOLDERS = ("YouTubeClips", "videos", "")
SPLIT_LISTS = ("{split}_list.txt", "{split}.txt")
CLIP_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv")  # the archive has .avi; re-encoded copies often .mp4
# {split}: the label file's name for each split name xmodal accepts
LABEL_FILES = {
    "test": ("testing_label.json", "test_label.json"),
    "train": ("training_label.json", "train_label.json"),
    "val": ("validation_label.json", "val_label.json"),
}


def is_label_json(path: Path) -> bool:
    """Whether a file or folder is in the `*_label.json` shape (and not the archive's)."""
    if path.is_file():
        return path.name.endswith("_label.json")
    return not (path / DESCRIPTIONS).is_file() and any(path.glob("*_label.json"))


def read_msvd(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Read the videos of one split (all videos when split is None) and their captions."""
    if is_label_json(path):
        return read_msvd_labels(path, options)
    folder = path if path.is_dir() else path.parent
    descriptions = folder / DESCRIPTIONS
    if not descriptions.is_file():
        raise DatasetFormatError(folder, f"no {DESCRIPTIONS} nor *_label.json (MSVD caption files) in this folder")
    builder = DatasetBuilder(folder.name or "msvd", "msvd", options, source=descriptions, kind="video", language="en")
    wanted = None if options.split is None else _split_ids(folder, options.split)
    wanted_set = None if wanted is None else set(wanted)
    captions: dict[str, list[str]] = {}
    for line, raw in text_lines(descriptions):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        video_id, _, caption = raw.strip().partition(" ")
        if not caption.strip():
            builder.problem(descriptions, "expected `video_id caption`", line)
            continue
        if wanted_set is None or video_id in wanted_set:
            captions.setdefault(video_id, []).append(caption.strip())
    order = wanted if wanted is not None else list(captions)
    roots = [options.media_root] if options.media_root else [folder / sub for sub in VIDEO_FOLDERS]
    for video_id in order:
        if builder.full:
            break
        builder.add_media(video_id, roots, [video_id + ext for ext in CLIP_EXTENSIONS])
        for caption in captions.get(video_id, []):
            builder.add_text(caption, [video_id])
    return builder.build()


def read_msvd_labels(path: Path, options: ReadOptions) -> RetrievalDataset:
    """`{training,testing}_label.json`: a list of {"caption": [...], "id": "clip.avi"}; the file of
    the split (a file given itself is read whole), videos in `{training,testing}_data/video/`."""
    if path.is_file():
        file, split = path, _label_split(path.name)
    else:
        names = LABEL_FILES.get(options.split or "test", (f"{options.split}_label.json",))
        file = next((path / n for n in names if (path / n).is_file()), None)
        if file is None:
            present = ", ".join(sorted(p.name for p in path.glob("*_label.json")))
            raise DatasetFormatError(
                path,
                f"no MSVD caption file for split {options.split!r}; expected "
                f"{' or '.join(names)} (found: {present}; pick one with --split)",
            )
        split = options.split
    folder = file.parent
    builder = DatasetBuilder(folder.name or "msvd", "msvd", options, source=file, kind="video", language="en")
    builder.split = split
    data = load_json(file)
    if not isinstance(data, list):
        raise DatasetFormatError(file, 'expected a list of {"caption": [...], "id": "video.avi"} objects')
    stem = file.name.removesuffix("_label.json")
    roots = (
        [options.media_root]
        if options.media_root
        else [
            folder / f"{stem}_data" / "video",
            *(folder / sub for sub in VIDEO_FOLDERS),
        ]
    )
    for n, record in enumerate(data):
        name = record.get("id") if isinstance(record, dict) else None
        captions = record.get("caption") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name.strip() or not isinstance(captions, list):
            builder.problem(file, f"[{n}]: expected an object with an 'id' string and a 'caption' list")
            continue
        if builder.full:
            break
        video_id = Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name
        builder.add_media(video_id, roots, list(dict.fromkeys([name, *(video_id + ext for ext in CLIP_EXTENSIONS)])))
        for k, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                builder.problem(file, f"[{n}].caption[{k}]: not a non-empty string")
                continue
            builder.add_text(caption.strip(), [video_id])
    return builder.build()


def _label_split(name: str) -> str | None:
    """testing_label.json -> test; a name outside LABEL_FILES -> None (all)."""
    return next((split for split, names in LABEL_FILES.items() if name in names), None)


def _split_ids(folder: Path, split: str) -> list[str]:
    """Video ids of a split list, in file order, extensions (e.g. `.avi`) removed."""
    file = split_file(folder, SPLIT_LISTS, split, "MSVD split list")
    ids = []
    for _, raw in text_lines(file):
        name = raw.strip()
        if name:
            ids.append(name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name)
    return list(dict.fromkeys(ids))
