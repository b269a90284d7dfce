"""Score floors per pair of query and item modality, measured: how high unrelated pairs score.

On a synthetic shapes set (generated here, or --data DIR from `xmodal datasets synth-shapes`),
for each pair of modalities:

  text -> image   a caption of a photo vs that photo (related) and photos sharing no (colour,
                  shape) with it (unrelated)
  text -> text    one caption of a photo vs another caption of the same photo (related) and the
                  captions of unrelated photos
  image -> image  a photo vs a re-encoded, slightly cropped copy (related) and unrelated photos
  text -> video   a synthetic video's caption (each scene's, for videos with a cut) vs that video
                  (related) and videos sharing no (colour, shape) with it (unrelated); a video
                  scores as the library scores it: the best of its clip vector and its moments

It prints the related scores' median and 5th percentile, the unrelated scores' 99th and 99.9th
percentiles, and the floor xmodal uses for this model (search.MODEL_MIN_SCORES) with the share of
related and unrelated pairs at or above it. The floor is chosen as the unrelated 99th percentile
rounded up to 0.01: about one unrelated pair in a hundred passes (a stricter floor starts to drop
short or partial queries that do match). image -> image is shown for reference only: similar-photo
search has no floor (the related pairs here are near-duplicates, not merely similar photos).

    python benchmarks/score_floors.py [--model xmodal-tiny-shapes] [--n 400] [--videos 128] [--data DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import xmodal
from xmodal.datasets.synth_shapes import SynthConfig, generate_synth_shapes
from xmodal.machine import cpu_info
from xmodal.search import pair_floor


def shapes_of(record: dict) -> set[tuple[str, str]]:
    return {(s["color"], s["shape"]) for s in record["shapes"]}


def unrelated_mask(records: list[dict]) -> np.ndarray:
    """(N, N) True where two photos share no coloured shape."""
    sets = [shapes_of(r) for r in records]
    return np.array([[not (a & b) for b in sets] for a in sets])


def cropped_copy(path: Path) -> Image.Image:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    buffer = io.BytesIO()
    img.crop((2, 2, w - 2, h - 2)).resize((w, h)).save(buffer, "JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def row(name: str, related: np.ndarray, unrelated: np.ndarray, floor: float | None) -> str:
    suggested = np.ceil(np.percentile(unrelated, 99) * 100) / 100
    at = "no floor" if floor is None else f"{floor:.2f}"
    kept = "" if floor is None else f"{(related >= floor).mean():.3f} | {(unrelated >= floor).mean():.4f}"
    return (
        f"| {name} | {np.median(related):.3f} | {np.percentile(related, 5):.3f} | "
        f"{np.percentile(unrelated, 99):.3f} | {np.percentile(unrelated, 99.9):.3f} | {suggested:.2f} | {at} | {kept} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="xmodal-tiny-shapes")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--videos", type=int, default=128, help="synthetic videos for text -> video (0: none)")
    parser.add_argument("--data", type=Path, help="a synth-shapes folder (default: generate one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or Path(tmp)
        if args.data is None:
            generate_synth_shapes(folder, SynthConfig(n=args.n, seed=args.seed, videos=args.videos))
        records = json.loads((folder / "dataset_synth_shapes.json").read_text())["images"][: args.n]
        paths = [folder / r["filepath"] / r["filename"] for r in records]
        encoder = xmodal.load_model(args.model)
        images = encoder.embed_images(paths)
        copies = encoder.embed_images([cropped_copy(p) for p in paths])
        first = encoder.embed_texts([r["sentences"][0]["raw"] for r in records])
        second = encoder.embed_texts([r["sentences"][1]["raw"] for r in records])
        videos = video_scores(encoder, folder) if (folder / "videos.jsonl").exists() else None
    unrelated = unrelated_mask(records)
    t2i, t2t, i2i = first @ images.T, first @ second.T, copies @ images.T
    print(f"model {encoder.name} (family {encoder.family}), {len(records)} photos, CPU: {cpu_info().describe()}")
    print(
        "| pair | related median | related p5 | unrelated p99 | unrelated p99.9 | suggested | floor | related kept "
        "| unrelated kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, scores, pair in (
        ("text -> image", t2i, ("text", "image")),
        ("text -> text", t2t, ("text", "text")),
        ("image -> image", i2i, ("image", "image")),
    ):
        floor = pair_floor(encoder.name, encoder.family, *pair)
        print(row(name, np.diag(scores), scores[unrelated], floor))
    if videos is not None:
        print(row("text -> video", *videos, pair_floor(encoder.name, encoder.family, "text", "video")))


def video_scores(encoder, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Related and unrelated text -> video scores: each scene's first caption against every video,
    a video scored by the best of its clip vector and its moments (as the library's search does)."""
    from xmodal.models.video import configured_policy, embed_video

    records = [json.loads(line) for line in (folder / "videos.jsonl").read_text().splitlines()]
    embedded = [embed_video(encoder, folder / r["path"], configured_policy()) for r in records]
    scenes = [(i, s) for i, r in enumerate(records) for s in r["scenes"]]
    queries = encoder.embed_texts([s["captions"][0] for _, s in scenes])
    related, unrelated = [], []
    for (owner, scene), query in zip(scenes, queries, strict=True):
        for j, (record, video) in enumerate(zip(records, embedded, strict=True)):
            parts = np.stack([video.clip_vector, *(s.vector for s in video.segments)]) @ query
            if j == owner:
                related.append(parts.max())
            elif (scene["color"], scene["shape"]) not in {(s["color"], s["shape"]) for s in record["scenes"]}:
                unrelated.append(parts.max())
    return np.asarray(related), np.asarray(unrelated)


if __name__ == "__main__":
    main()
