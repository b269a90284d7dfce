"""Zero-shot tag quality on synthetic shapes: precision and recall of the colour and shape tags
against the photos' own annotations, at the calibrated thresholds and with the threshold off.

A library of --n synthetic shapes photos (generated here) is tagged with the shipped model and a
vocabulary of the 8 colours ("a {} shape", ...) and 6 shapes ("a {}", ...), each its own group:

  auto, confidence C   thresholds calibrated on the library itself (the default: 0.9)
  off                  every photo gets the top label of each group (a zero-shot classifier's answer)
  cosine T             one fixed cosine for every label

A tag is right when the photo holds a shape of that colour / kind. Precision = right tags / tags
given; recall = right tags / (photo, label) pairs the annotations hold.

    python benchmarks/tags.py [--n 600] [--seed 21]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from xmodal.datasets.shapes import tag_vocabulary
from xmodal.datasets.synth_shapes import SynthConfig, generate_synth_shapes
from xmodal.library import Library
from xmodal.machine import cpu_info

VOCABULARY = tag_vocabulary()
RUNS = [("auto", 0.8), ("auto", 0.9), ("auto", 0.95), ("off", None), ("0.2", None), ("0.3", None)]


def truth_of(records: list[dict], photos: Path) -> dict[str, set[str]]:
    """Photo path -> the labels its annotation holds."""
    return {
        str(photos / r["filename"]): {s["color"] for s in r["shapes"]} | {s["shape"] for s in r["shapes"]}
        for r in records
    }


def quality(lib: Library, truth: dict[str, set[str]]) -> dict[str, float]:
    catalog = lib.catalog
    rows = catalog.items_by_id(catalog.filtered_ids(type="image").tolist()).values()
    given = catalog.tags.of(r.content_hash for r in rows)
    right = tags = 0
    for row in rows:
        labels = {t.label for t in given.get(row.content_hash, [])}
        right += len(labels & truth[row.path])
        tags += len(labels)
    pairs = sum(len(v) for v in truth.values())
    return {"precision": right / tags if tags else float("nan"), "recall": right / pairs, "tags": tags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--model", default="xmodal-tiny-shapes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = json.loads(generate_synth_shapes(root / "synth", SynthConfig(n=args.n, seed=args.seed)).read_text())
        records = records["images"]
        photos = root / "synth" / "images"  # indexed where they were generated
        vocabulary = root / "shapes.json"
        vocabulary.write_text(json.dumps(VOCABULARY))
        truth = truth_of(records, photos)
        print(f"model {args.model}, {args.n} photos (seed {args.seed}), CPU: {cpu_info().describe()}")
        print("| threshold | labels in use | tags | precision | recall | seconds |")
        print("|---|---|---|---|---|---|")
        with Library(root / "lib") as lib:
            lib.index([photos], model=args.model)
            for threshold, confidence in RUNS:
                started = time.perf_counter()
                report = lib.tag(vocabulary, threshold=threshold, confidence=confidence)
                seconds = time.perf_counter() - started
                q = quality(lib, truth)
                name = f"auto, confidence {confidence}" if threshold == "auto" else threshold
                name = "off (top label per group)" if threshold == "off" else name
                name = f"cosine {threshold}" if threshold not in ("auto", "off") else name
                print(
                    f"| {name} | {report.labels_used} of {report.labels} | {q['tags']} | {q['precision']:.3f} | "
                    f"{q['recall']:.3f} | {seconds:.2f} |"
                )


if __name__ == "__main__":
    main()
