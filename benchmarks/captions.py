"""Photos found through their captions: text -> photo retrieval in a library where some photos have
a caption file, for each way of combining pixel and caption scores, as `xmodal eval --library
--combine` measures it.

A synthetic shapes library (generated here) of --n photos, a caption file (the photo's first
caption) beside --captioned of them; the queries are every photo's second and third captions
(other words than the caption files'). Rows: pixels only (0), max, caption weights, the caption
alone where there is one (1), and "max, raw" — the higher of the two cosines without carrying the
caption's over to the pixel scale, to show why that step is there.

    python benchmarks/captions.py [--n 600] [--captioned 0.5] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from xmodal.datasets.synth_shapes import SynthConfig, generate_synth_shapes
from xmodal.eval.datasets import read_dataset
from xmodal.eval.library import evaluate_caption_combinations
from xmodal.eval.metrics import rank_metrics
from xmodal.library import Library
from xmodal.machine import cpu_info
from xmodal.search import CaptionCombine

COMBINES = ["0", "max", "0.25", "0.5", "0.75", "1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--captioned", type=float, default=0.5, help="share of photos with a caption file")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--model", default="xmodal-tiny-shapes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = json.loads(generate_synth_shapes(root / "synth", SynthConfig(n=args.n, seed=args.seed)).read_text())
        records = records["images"]
        photos = root / "synth" / "images"  # indexed where they were generated, caption files beside them
        captioned = set(np.random.default_rng(args.seed).permutation(args.n)[: int(args.captioned * args.n)].tolist())
        for i, r in enumerate(records):
            if i in captioned:
                (photos / (Path(r["filename"]).stem + ".txt")).write_text(r["sentences"][0]["raw"])
        queries = root / "queries.jsonl"
        queries.write_text(
            "\n".join(
                json.dumps({"path": str(photos / r["filename"]), "captions": [s["raw"] for s in r["sentences"][1:3]]})
                for r in records
            )
        )
        with Library(root / "lib") as lib:
            started = time.perf_counter()
            lib.index([photos], model=args.model)
            indexed = time.perf_counter() - started
            data = read_dataset(f"jsonl:{queries}")
            result = evaluate_caption_combinations(lib, data, COMBINES)
            raw = _raw_max(lib, data)
    print(f"model {args.model}, CPU: {cpu_info().describe()}, indexed in {indexed:.1f} s")
    print(result.markdown())
    m = raw
    print(f"| max, raw | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | {m['MedR']:g} | {m['MnR']:.2f} |")


def _raw_max(lib: Library, data) -> dict:
    """R@K of "max" on raw cosines (no carrying over), on the same queries and gallery."""
    from xmodal.captions import photo_caption_vectors
    from xmodal.eval.embedding import embed_texts
    from xmodal.eval.library import library_dataset

    gallery = lib.vectors()
    dataset, vectors = library_dataset(data, gallery, lib.folder)
    rows = {r.path: r for r in lib.catalog.items_by_id(gallery.ids.tolist()).values()}
    blocks = [photo_caption_vectors(lib.catalog, gallery.model.key, rows[str(p)]) for p in dataset.items]
    queries = embed_texts(lib.encoder(), dataset.texts).vectors
    pixels = queries @ vectors.T
    captions = np.full(pixels.shape, np.nan)
    for i, block in enumerate(blocks):
        if block is not None:
            captions[:, i] = (queries @ block.T).max(axis=1)
    return rank_metrics(CaptionCombine.parse("max").combine(pixels, captions), dataset.text_positives)


if __name__ == "__main__":
    main()
