"""MSVD (Chen & Dolan 2011): video clips + `AllVideoDescriptions.txt` + split lists.

Expected folder layout (the public archive plus CLIP4Clip's split lists, 1200/100/670 videos):

    DIR/AllVideoDescriptions.txt     "# ..." comment lines, then `video_id caption words ...`
    DIR/YouTubeClips/<video_id>.avi  (or DIR/videos/, or DIR itself)
    DIR/{train,val,test}_list.txt    one video id per line (an extension is allowed)

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
    find_media,
    split_file,
    text_lines,
)
from xmodal.media.formats import VIDEO_EXTENSIONS

DESCRIPTIONS = "AllVideoDescriptions.txt"
VIDEO_FOLDERS = ("YouTubeClips", "videos", "")
SPLIT_LISTS = ("{split}_list.txt", "{split}.txt")
CLIP_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv")  # the archive has .avi; re-encoded copies often .mp4


def read_msvd(path: Path, options: ReadOptions) -> RetrievalDataset:
    """Read the videos of one split (all videos when split is None) and their captions."""
    folder = path if path.is_dir() else path.parent
    descriptions = folder / DESCRIPTIONS
    if not descriptions.is_file():
        raise DatasetFormatError(folder, f"no {DESCRIPTIONS} (the MSVD caption file) in this folder")
    builder = DatasetBuilder(folder.name or "msvd", "msvd", options, kind="video", language="en")
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
    roots = [folder / sub for sub in VIDEO_FOLDERS]
    for video_id in order:
        if builder.full:
            break
        builder.add_item(video_id, find_media(roots, [video_id + ext for ext in CLIP_EXTENSIONS]))
        for caption in captions.get(video_id, []):
            builder.add_text(caption, [video_id])
    return builder.build()


def _split_ids(folder: Path, split: str) -> list[str]:
    """Video ids of a split list, in file order, extensions (e.g. `.avi`) removed."""
    file = split_file(folder, SPLIT_LISTS, split, "MSVD split list")
    ids = []
    for _, raw in text_lines(file):
        name = raw.strip()
        if name:
            ids.append(name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name)
    return list(dict.fromkeys(ids))
