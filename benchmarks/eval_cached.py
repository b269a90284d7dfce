"""The whole `xmodal eval` at COCO 5k size on cached embeddings: how long a re-run takes.

Builds once (in --workdir, reused by later runs):
  - 5,000 JPEGs of 640x480 (COCO's size class, ~100-200 KB each),
  - a Karpathy-format `dataset_coco.json` of COCO's full size (123,287 images x 5 captions with
    tokens, 5,000 in the test split): the real file is ~140 MB and is parsed on every run,
  - a model folder with 512-d embeddings (ViT-B/32's width; tiny random towers so the first,
    uncached run is quick), exported by xmodal.
Then runs `xmodal eval -m MODEL -d karpathy:dataset_coco.json` once to fill the cache and
`--repeats` more times as separate processes (Python start-up and imports included), and prints
the median wall time with a breakdown measured in-process: dataset parse (or the stored parsed
split), content hashing (or the hash memo), cache lookup, ranking both directions, reports and plots.

    python benchmarks/eval_cached.py [--workdir DIR] [--repeats 3]

Needs the [torch] extra (to export the model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

N_TEST, N_TOTAL, PER_IMAGE = 5000, 123_287, 5
WORDS = [
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "red",
    "blue",
    "small",
    "large",
    "sitting",
    "standing",
    "on",
    "in",
    "with",
    "near",
    "the",
    "of",
    "and",
    "plate",
    "street",
    "table",
]


def make_images(folder: Path, rng: np.random.Generator) -> None:
    """Smooth random 640x480 photos (low-frequency colour fields plus grain), JPEG quality 90."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_TEST):
        path = folder / f"COCO_val2014_{i:012d}.jpg"
        if path.exists():
            continue
        base = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize((640, 480), Image.BICUBIC)
        pixels = np.asarray(base, dtype=np.int16) + rng.integers(-24, 24, (480, 640, 3), dtype=np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_annotations(path: Path, rng: np.random.Generator) -> None:
    """Karpathy JSON of COCO's full size; the first 5,000 images are the test split."""
    images = []
    for i in range(N_TOTAL):
        split = "test" if i < N_TEST else ("val" if i < 2 * N_TEST else ("restval" if i < 35_000 else "train"))
        sentences = []
        for k in range(PER_IMAGE):
            tokens = [WORDS[j] for j in rng.integers(0, len(WORDS), 10)]
            sentences.append(
                {"tokens": tokens, "raw": " ".join(tokens).capitalize() + ".", "imgid": i, "sentid": PER_IMAGE * i + k}
            )
        images.append(
            {
                "filepath": "val2014",
                "sentids": list(range(PER_IMAGE * i, PER_IMAGE * i + PER_IMAGE)),
                "filename": f"COCO_val2014_{i:012d}.jpg",
                "imgid": i,
                "split": split,
                "sentences": sentences,
                "cocoid": i,
            }
        )
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))


def make_model(folder: Path) -> None:
    """Tiny random CLIP towers projecting to 512-d, exported to an xmodal model folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from helpers import clip_tokenizer, tiny_vision
    from xmodal.models.export import export_hf_checkpoint

    checkpoint = folder.parent / "checkpoint"
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
        vision_config=tiny_vision(),
        projection_dim=512,
    )
    CLIPModel(config).eval().save_pretrained(str(checkpoint))
    clip_tokenizer(checkpoint / "_vocab").save_pretrained(str(checkpoint))
    CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(
        str(checkpoint)
    )
    export_hf_checkpoint(checkpoint, folder)


def run_cli(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "xmodal", "eval", "-q", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def breakdown(model: Path, annotations: Path, cache_file: Path, out: Path) -> dict[str, float]:
    """The same run in-process, timed per stage."""
    import xmodal
    from xmodal.eval import report
    from xmodal.eval.cache import EmbeddingCache
    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.embedding import _item_keys
    from xmodal.eval.retrieval import evaluate_retrieval

    times = {}
    start = time.perf_counter()
    dataset = read_dataset(f"karpathy:{annotations}")
    times["parse the 123k-image JSON, stat 5k files (--no-cache)"] = time.perf_counter() - start
    start = time.perf_counter()
    stored = read_dataset(f"karpathy:{annotations}", parsed_cache=cache_file.parent / "datasets")
    times["load the parsed test split instead, stat 5k files"] = time.perf_counter() - start
    assert stored.texts == dataset.texts and stored.items == dataset.items
    start = time.perf_counter()
    _item_keys(dataset.items, "image", 0)
    times["content hashes of 5k images, no hash memo (--no-cache)"] = time.perf_counter() - start
    encoder = xmodal.load_model(model)
    with EmbeddingCache(cache_file) as cache:
        start = time.perf_counter()
        _item_keys(dataset.items, "image", 0, cache)
        times["content hashes from the memo (size + mtime unchanged)"] = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate_retrieval(encoder, dataset, cache=cache)
        times["evaluate_retrieval (hash, cache lookup, rank both ways)"] = time.perf_counter() - start
    times["  of which ranking both directions"] = result.timings["ranking_s"]
    start = time.perf_counter()
    report.write_results([result], report.prepare_folder(out, overwrite=True))
    times["reports and plot"] = time.perf_counter() - start
    assert result.cached == {"items": N_TEST, "texts": N_TEST * PER_IMAGE}, result.cached
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "xmodal-bench-eval")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    make_images(work / "val2014", rng)
    annotations = work / "dataset_coco.json"
    if not annotations.exists():
        make_annotations(annotations, rng)
    model = work / "model"
    if not model.exists():
        make_model(model)
    size = sum(p.stat().st_size for p in (work / "val2014").iterdir())
    print(
        f"data ready in {time.perf_counter() - start:.0f} s: {N_TEST} JPEGs ({size / 1e6:.0f} MB), "
        f"{annotations.stat().st_size / 1e6:.0f} MB annotations, 512-d model"
    )

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cache_file = work / "cache.sqlite"
    args_cli = [
        "-m",
        str(model),
        "-d",
        f"karpathy:{annotations}",
        "--cache",
        str(cache_file),
        "--out",
        str(work / "out"),
    ]
    first = run_cli(args_cli, env)
    print(f"first run (fills the cache if empty): {first:.1f} s")
    runs = [run_cli(args_cli, env) for _ in range(args.repeats)]
    print(
        f"`xmodal eval` on cached embeddings, whole command: median {statistics.median(runs):.2f} s "
        f"(runs: {', '.join(f'{r:.2f}' for r in runs)})"
    )
    for stage, seconds in breakdown(model, annotations, cache_file, work / "out-inproc").items():
        print(f"  {stage:<58} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
