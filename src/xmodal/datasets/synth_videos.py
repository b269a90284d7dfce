"""Short synthetic videos of one shape moving or changing, with captions ("a blue square moves to the right").

Every fourth video has a scene cut halfway: one shape moves on one background for two seconds, then
another shape (other colour, other kind) on another background ("a red circle moves up, then a blue
square shrinks"), so a search can be checked to place each description in the right half.

Encoded with PyAV as H.264 MP4 (libx264, single-threaded so the same seed gives the same bytes) and
listed in `videos.jsonl` (path, captions, split, and `scenes`: start and end seconds, shape, motion
and captions of each scene), the generic format every reader takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import ImageDraw

from xmodal.datasets.shapes import COLORS, SHAPES, SIZES, Shape
from xmodal.datasets.synth_shapes import (
    SynthConfig,
    draw_shape,
    random_background,
    split_of,
)
from xmodal.progress import Progress

VIDEO_LIST = "videos.jsonl"
VIDEO_SIZE = 128
FRAMES = 24  # per scene
FPS = 12
CUT_EVERY = 4  # videos 3, 7, 11, ... have two scenes
# motion -> (start (x, y), end (x, y)) in fractions of the frame, and the ways of saying it
MOTIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[str, ...]]] = {
    "right": ((0.2, 0.5), (0.8, 0.5), ("moves to the right", "slides right", "moving from left to right")),
    "left": ((0.8, 0.5), (0.2, 0.5), ("moves to the left", "slides left", "moving from right to left")),
    "up": ((0.5, 0.8), (0.5, 0.2), ("moves up", "rises to the top", "moving upwards")),
    "down": ((0.5, 0.2), (0.5, 0.8), ("moves down", "falls to the bottom", "moving downwards")),
    "grow": ((0.5, 0.5), (0.5, 0.5), ("grows", "gets bigger", "growing larger")),
    "shrink": ((0.5, 0.5), (0.5, 0.5), ("shrinks", "gets smaller", "becoming smaller")),
}


def _frames(shape: Shape, motion: str, rng: np.random.Generator) -> list[np.ndarray]:
    background = random_background(rng, VIDEO_SIZE)
    (x0, y0), (x1, y1), _ = MOTIONS[motion]
    side = SIZES[shape.size] * VIDEO_SIZE
    frames = []
    for t in np.linspace(0, 1, FRAMES):
        img = background.copy()
        scale = {"grow": 0.6 + 1.2 * t, "shrink": 1.8 - 1.2 * t}.get(motion, 1.0)
        center = ((x0 + (x1 - x0) * t) * VIDEO_SIZE, (y0 + (y1 - y0) * t) * VIDEO_SIZE)
        draw_shape(ImageDraw.Draw(img), shape, center, side * scale)
        frames.append(np.asarray(img))
    return frames


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """Encode RGB frames as H.264 MP4 (yuv420p) with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"threads": "1", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = VIDEO_SIZE, VIDEO_SIZE, "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _scene(rng: np.random.Generator, start: float, avoid: Shape | None = None) -> tuple[dict, list[np.ndarray]]:
    """One scene's record and frames: a shape (unlike `avoid` in colour and kind) and its motion."""
    colors = [c for c in COLORS if avoid is None or c != avoid.color]
    kinds = [k for k in SHAPES if avoid is None or k != avoid.kind]
    shape = Shape(str(rng.choice(colors)), str(rng.choice(kinds)), "small", (1, 1))
    motion = str(rng.choice(list(MOTIONS)))
    record = {
        "start": start,
        "end": start + FRAMES / FPS,
        "color": shape.color,
        "shape": shape.kind,
        "motion": motion,
        "captions": [f"a {shape.color} {shape.kind} {phrase}" for phrase in MOTIONS[motion][2]],
    }
    return record, _frames(shape, motion, rng)


def _video_record(index: int, config: SynthConfig, out_dir: Path) -> dict:
    rng = np.random.default_rng([config.seed, 1 << 20, index])
    scene, frames = _scene(rng, 0.0)
    scenes = [scene]
    if index % CUT_EVERY == CUT_EVERY - 1:
        avoid = Shape(scene["color"], scene["shape"], "small", (1, 1))
        second, more = _scene(rng, scene["end"], avoid)
        scenes.append(second)
        frames += more
    name = f"videos/{index:05d}.mp4"
    write_video(out_dir / name, frames)
    captions = [", then ".join(parts) for parts in zip(*(s["captions"] for s in scenes), strict=True)]
    record = {"path": name, "captions": captions, "split": split_of(index, config.videos)}
    if len(scenes) == 1:
        record["motion"] = scene["motion"]
    return {**record, "scenes": scenes}


def generate_synth_videos(out_dir: Path, config: SynthConfig, progress: Progress) -> Path:
    """Write videos/*.mp4 and videos.jsonl under out_dir; return the JSONL path."""
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    progress.start("generating videos", config.videos)
    records = []
    for index in range(config.videos):
        records.append(_video_record(index, config, out_dir))
        progress.advance()
    path = out_dir / VIDEO_LIST
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
