"""Video sampling and embedding: seeking vs decoding every frame, decode vs encode time, segments.

1. A 10-minute 1080p30 H.264 file (a 20 s libx264 "veryfast" encode - CABAC, B-frames, a keyframe
   every 2 s - repeated by copying packets, so it is made in a few minutes): frames sampled per
   second of wall time by xmodal's default policy (seeking by keyframe, non-reference frames not
   decoded) for the default 120-frame cap and for one frame per second, against decoding every
   frame. Variants run in interleaved rounds (order alternating); each keeps its best round.
2. The synth-shapes videos (and the real MSVD clips when ../shared/realdata is there) through
   embed_video with the shipped model and, with --vit, a ViT-B/32-geometry model: videos/s and the
   share of the time spent decoding (probe + decode + preprocess, on a background thread) vs in the
   image encoder.
3. The segment merge threshold: for the synth-shapes videos (a quarter have a scene cut at 2 s),
   cosines of consecutive frames inside a scene and across the cut, and for each threshold the
   share of cuts found and the segments per scene.
4. The synth-shapes videos indexed into a fresh library (`Library.index`: hashing, decoding on the
   decode threads, commits, the vector index) beside the same videos through embed_video one
   after another, in interleaved rounds: videos/s of each and what the library adds.

    python benchmarks/video.py [--minutes 10] [--rounds 2] [--videos 40] [--vit] [--model NAME] [--work DIR]
                               [--parts sampling,embedding,threshold,library]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WIDTH, HEIGHT, FPS, GOP = 1920, 1080, 30, 60
PIECE_SECONDS = 20
THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_long_video(path: Path, minutes: float) -> Path:
    """The long test file: a 20 s encode, its packets repeated to `minutes`. The picture is a grainy
    texture panning one way under a smooth one panning the other, so motion compensation leaves real
    residuals: P-frames of ~1/10 of a keyframe's size at ~9 Mbit/s, like camera footage (a plain pan
    would make P-frames nearly free and keyframes all the cost)."""
    if path.exists():
        return path
    piece = path.with_name("piece.mp4")
    rng = np.random.default_rng(0)
    grain = np.add.outer(np.arange(2 * HEIGHT), np.arange(2 * WIDTH)) % 256 // 4
    grain = (grain + rng.integers(0, 24, grain.shape)).astype(np.uint8)
    coarse = rng.integers(0, 40, (2 * HEIGHT // 64 + 1, 2 * WIDTH // 64 + 1)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((2 * WIDTH, 2 * HEIGHT), Image.Resampling.BICUBIC))
    smooth = smooth.clip(0, 40).astype(np.uint8)
    chroma = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)
    with av.open(str(piece), "w") as out:
        options = {"preset": "veryfast", "crf": "23", "g": str(GOP), "threads": "2"}
        stream = out.add_stream("libx264", rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(PIECE_SECONDS * FPS):
            x, y, u, v = (7 * i) % WIDTH, (3 * i) % HEIGHT, WIDTH - (4 * i) % WIDTH, HEIGHT - (2 * i) % HEIGHT
            luma = grain[y : y + HEIGHT, x : x + WIDTH] + smooth[v : v + HEIGHT, u : u + WIDTH]
            frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), "yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    repeats = max(1, round(minutes * 60 / PIECE_SECONDS))
    with av.open(str(piece)) as source, av.open(str(path), "w") as out:
        src = source.streams.video[0]
        dst = out.add_stream_from_template(src)
        span = round(PIECE_SECONDS / src.time_base)
        packets = [(p, p.pts, p.dts) for p in source.demux(src) if p.size]
        for k in range(repeats):
            for packet, pts, dts in packets:
                packet.pts, packet.dts, packet.stream = pts + k * span, dts + k * span, dst
                out.mux(packet)
    piece.unlink()
    return path


def sampling_rates(path: Path, rounds: int) -> None:
    from xmodal.media.video import FramePolicy, open_video

    video = open_video(path)
    info = video.info
    print(f"\n## Sampling a {info.duration_s / 60:.0f}-minute {info.width}x{info.height} {info.codec} file")
    print(f"{path.stat().st_size / 1e6:.0f} MB, {info.fps:g} fps, keyframe every {info.keyframe_interval_s:.1f} s\n")
    variants = {
        "120 frames (the default cap): keyframe seeks, non-reference frames skipped": FramePolicy(),
        "1 frame per second (600): the same": FramePolicy(max_frames=100_000),
        "every frame decoded (exact, 600 taken)": FramePolicy(max_frames=100_000, exact=True),
    }
    best: dict[str, tuple[float, float, int, int, int]] = {}
    for k in range(rounds):
        for name in list(variants)[:: 1 if k % 2 == 0 else -1]:  # alternate the order between rounds
            video.stats.decoded = video.stats.seeks = 0
            start = time.perf_counter()
            sampled = sum(1 for _ in video.frames(variants[name]))
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, sampled / seconds, sampled, video.stats.decoded, video.stats.seeks)
    # Decoding every frame costs the same whatever is taken from it: the baseline for both rows.
    baseline = best["every frame decoded (exact, 600 taken)"][0]
    print("| policy | sampled | decoded | seeks | wall s | sampled frames / s of wall time | x faster |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (seconds, rate, sampled, decoded, seeks) in best.items():
        print(f"| {name} | {sampled} | {decoded} | {seeks} | {seconds:.1f} | {rate:.1f} | {baseline / seconds:.1f} |")


def ensure_vit(work: Path) -> Path:
    folder = work / "vitb32"
    if not (folder / "config.json").exists():
        from helpers import make_clip_checkpoint
        from xmodal.models.export import export_hf_checkpoint

        export_hf_checkpoint(make_clip_checkpoint(work / "ckpt", full_geometry=True), folder, overwrite=True)
    return folder


def embedding_shares(videos: list[Path], models: dict[str, object], label: str) -> None:
    from xmodal.models.video import embed_video

    print(f"\n## embed_video on {label}: {len(videos)} videos\n")
    print("| model | videos/s | frames/s | decode share | encode share | wall / (decode + encode) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, encoder in models.items():
        embed_video(encoder, videos[0])  # warm-up: sessions, swscale
        totals = dict.fromkeys(("probe_s", "decode_s", "preprocess_s", "embed_s", "wall_s"), 0.0)
        frames = 0
        start = time.perf_counter()
        for path in videos:
            result = embed_video(encoder, path)
            frames += len(result.frame_times) + result.blank_frames
            for key in totals:
                totals[key] += result.timings[key]
        wall = time.perf_counter() - start
        decode = totals["probe_s"] + totals["decode_s"] + totals["preprocess_s"]
        work = decode + totals["embed_s"]
        print(
            f"| {name} | {len(videos) / wall:.1f} | {frames / wall:.1f} | {decode / work:.0%} "
            f"| {totals['embed_s'] / work:.0%} | {wall / work:.2f} |"
        )


def threshold_table(encoder, root: Path) -> None:
    from xmodal.models.video import MERGE_THRESHOLD, embed_video

    records = [json.loads(line) for line in (root / "videos.jsonl").read_text().splitlines()]
    within, across = [], []
    for record in records:
        video = embed_video(encoder, root / record["path"], merge_threshold=1.0)
        times, vectors = np.array(video.frame_times), video.frame_vectors
        cut = record["scenes"][1]["start"] if len(record["scenes"]) > 1 else None
        for k in range(len(times) - 1):
            cosine = float(vectors[k] @ vectors[k + 1])
            (across if cut is not None and times[k] < cut <= times[k + 1] else within).append(cosine)
    cuts = sum(len(r["scenes"]) > 1 for r in records)
    print(
        f"\n## Segment merge threshold ({encoder.name}): {len(records)} synth-shapes videos, {cuts} with a cut, 1 frame/s\n"
    )
    print(
        f"consecutive-frame cosine inside a scene: min {min(within):.3f}, 5th percentile "
        f"{np.percentile(within, 5):.3f}, median {np.median(within):.3f}; across a cut: median "
        f"{np.median(across):.3f}, max {max(across):.3f}\n"
    )
    print("| threshold | cuts found | segments straddling a cut | segments per scene |")
    print("|---:|---:|---:|---:|")
    for threshold in THRESHOLDS:
        found = straddling = segments = scenes = 0
        for record in records:
            video = embed_video(encoder, root / record["path"], merge_threshold=threshold)
            scenes += len(record["scenes"])
            segments += len(video.segments)
            if len(record["scenes"]) > 1:
                cut = record["scenes"][1]["start"]
                found += any(abs(s.start - cut) < 1e-6 for s in video.segments)
                straddling += any(s.start < cut - 1e-6 and s.end > cut + 1e-6 for s in video.segments)
        mark = " (default)" if threshold == MERGE_THRESHOLD else ""
        print(f"| {threshold}{mark} | {found}/{cuts} | {straddling} | {segments / scenes:.2f} |")


def library_rates(folder: Path, models: dict[str, object], rounds: int, work: Path) -> None:
    """Videos/s indexed into a fresh library vs the same videos through embed_video alone."""
    import shutil

    from xmodal.library import Library
    from xmodal.models.video import embed_video

    videos = sorted(folder.glob("*.mp4"))
    print(f"\n## the library: {len(videos)} videos indexed into a fresh library vs embed_video alone\n")
    print("| model | embed_video alone, videos/s | Library.index, videos/s | library / alone |")
    print("|---|---:|---:|---:|")
    for name, encoder in models.items():
        embed_video(encoder, videos[0])  # warm-up
        best = {"alone": float("inf"), "library": float("inf")}
        for round_ in range(rounds):
            for variant in ("alone", "library") if round_ % 2 == 0 else ("library", "alone"):
                start = time.perf_counter()
                if variant == "alone":
                    for path in videos:
                        embed_video(encoder, path)
                else:
                    target = work / "bench-library"
                    shutil.rmtree(target, ignore_errors=True)
                    with Library(target) as lib:
                        report = lib.index([folder], model=encoder)
                    assert report.encoded == len(videos) and not report.failed, report.summary()
                best[variant] = min(best[variant], time.perf_counter() - start)
        alone, library = len(videos) / best["alone"], len(videos) / best["library"]
        print(f"| {name} | {alone:.1f} | {library:.1f} | {library / alone:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--vit", action="store_true", help="also a ViT-B/32-geometry model (needs torch)")
    parser.add_argument("--model", default="xmodal-tiny-shapes", help="the model the merge threshold is measured with")
    parser.add_argument("--work", type=Path, help="keep the generated files here between runs")
    parser.add_argument("--parts", default="sampling,embedding,threshold,library", help="which parts to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import xmodal
    from helpers import REALDATA
    from xmodal.datasets import SynthConfig, generate_synth_shapes

    work = args.work or Path(tempfile.mkdtemp(prefix="xmodal-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XMODAL_CACHE", str(work / "cache"))
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, PyAV {av.__version__}")
    started = time.perf_counter()
    if "sampling" in parts:
        long_video = make_long_video(work / f"long_{args.minutes:g}min_{HEIGHT}p.mp4", args.minutes)
        print(f"(long file ready in {time.perf_counter() - started:.0f} s)")
        sampling_rates(long_video, args.rounds)

    synth = work / f"synth_{args.videos}"
    if not (synth / "videos.jsonl").exists():
        generate_synth_shapes(synth, SynthConfig(n=1, seed=11, videos=args.videos))
    models = {"xmodal-tiny-shapes (shipped, 64 px)": xmodal.load_model("xmodal-tiny-shapes")}
    if args.vit:
        models["ViT-B/32 geometry (random init), fp32"] = xmodal.load_model(ensure_vit(work))
    synth_videos = sorted((synth / "videos").glob("*.mp4"))
    if "embedding" in parts:
        embedding_shares(synth_videos, models, "synth-shapes (128x128, 12 fps, 2 s; a quarter 4 s with a cut)")
        msvd = REALDATA / "msvd" / "videos"
        if msvd.is_dir():
            embedding_shares(sorted(msvd.iterdir()), models, "the real MSVD clips (320x240 to 1280x720, 4-14 s)")
    if "threshold" in parts:
        threshold_table(xmodal.load_model(args.model), synth)
    if "library" in parts:
        library_rates(synth / "videos", models, max(args.rounds, 2), work)
    print(f"\nload {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
