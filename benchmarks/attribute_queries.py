"""Precision@k of partial queries ("a red circle", "a small red circle at the top left") against a
synth-shapes gallery, the way a user searches a photo library, for one model.

    python benchmarks/attribute_queries.py [--model xmodal-tiny-shapes] [--n 2000 --seed 777] [--k 3]

Generates the set (seed the shipped model never saw) in a temporary folder, takes its test split as
the gallery and prints, per query form, the number of queries, mean precision@k, the ceiling (queries
that fit fewer than k photos cannot reach 1) and chance (mean share of the gallery each query fits).
"""

from __future__ import annotations

import argparse
import tempfile

import xmodal
from xmodal.datasets import SynthConfig, generate_synth_shapes
from xmodal.eval import ReadOptions, read_dataset
from xmodal.eval.attribute_queries import attribute_query_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="xmodal-tiny-shapes")
    parser.add_argument("--n", type=int, default=2000, help="images generated (the test split is a tenth)")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = generate_synth_shapes(folder, SynthConfig(n=args.n, seed=args.seed))
        dataset = read_dataset(f"karpathy:{path}", ReadOptions(split=args.split))
        results = attribute_query_precision(xmodal.load_model(args.model), dataset, k=args.k)
    print(f"{args.model} on seed {args.seed}, {args.split} split: {len(dataset.items)} images")
    print(f"| query form | queries | precision@{args.k} | ceiling | chance |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| `{r.form}` | {r.queries} | **{r.precision:.3f}** | {r.ceiling:.3f} | {r.chance:.3f} |")


if __name__ == "__main__":
    main()
