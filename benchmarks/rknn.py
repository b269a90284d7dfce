"""What Rockchip's NPU costs a ViT-B/32 in accuracy, measured in the RKNN simulator before any board.

A random-init transformers CLIPModel with the real ViT-B/32 geometry (CLIPConfig defaults) is
exported by xmodal, then converted by `xmodal.models.rknn` for one SoC in fp16 and in int8 (the
visual tower calibrated on real photos from ../shared/realdata/coco_mini when present, else on
synthetic images; the textual tower once more in int8 on the photos' captions). Prints, per tower
and precision, the lowest and mean cosine to ONNX Runtime over the probes, whether the graph was
written, the operators left to the CPU, and the build time.

    PYTHONPATH=src python benchmarks/rknn.py [--soc rk3588] [--count 64] [--model DIR] [--json out.json]

Needs the [torch] extra (for the export) and the RKNN toolkit environment (made on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "coco_mini"


def vitb32_folder(work: Path) -> Path:
    """Export a random-init ViT-B/32 CLIPModel (real geometry) to an xmodal model folder."""
    from helpers import make_clip_checkpoint
    from xmodal.models.export import export_hf_checkpoint

    checkpoint = make_clip_checkpoint(work / "checkpoint", full_geometry=True)
    return export_hf_checkpoint(checkpoint, work / "vitb32")


def calibration_set(count: int):
    """Real photos (and their captions) when the shared sample is there, else synthetic images."""
    from xmodal.models.rknn import PROBE_CAPTIONS, CalibrationSet, synthetic_images

    annotations = REALDATA / "annotations" / "captions_val2017.json"
    if annotations.is_file():
        data = json.loads(annotations.read_text())
        captions: dict[int, str] = {}
        for a in data["annotations"]:
            captions.setdefault(a["image_id"], a["caption"].strip())
        images = [i for i in sorted(data["images"], key=lambda i: i["file_name"]) if i["id"] in captions][:count]
        paths = [p for i in images if (p := REALDATA / "val2017" / i["file_name"]).is_file()]
        texts = [captions[i["id"]] for i in images]
        if paths:
            return CalibrationSet(images=paths, texts=texts, source=f"{len(paths)} COCO val2017 photos")
    return CalibrationSet(
        images=list(synthetic_images(count, 224, seed=1)), texts=list(PROBE_CAPTIONS), source="synthetic"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soc", default="rk3588")
    parser.add_argument("--count", type=int, default=64, help="calibration images (16 held out to check on)")
    parser.add_argument("--model", type=Path, help="an exported model folder to use instead of a fresh ViT-B/32")
    parser.add_argument("--json", type=Path, help="write the reports here")
    args = parser.parse_args()

    from xmodal.models.rknn import RknnOptions, convert_to_rknn

    with tempfile.TemporaryDirectory(prefix="xmodal-rknn-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        folder = args.model or vitb32_folder(work)
        print(f"model: {folder} (export {time.perf_counter() - started:.0f} s)")
        calibration = calibration_set(args.count)
        print(f"calibration: {calibration.source}, {len(calibration.texts)} captions")
        runs = [
            ("fp16", RknnOptions(socs=(args.soc,))),
            ("int8", RknnOptions(socs=(args.soc,), int8=True, int8_text=True)),
        ]
        rows, reports = [], []
        for label, options in runs:
            out = work / f"rknn-{label}"
            start = time.perf_counter()
            result = convert_to_rknn(folder, options, out=out, calibration=calibration if options.int8 else None)
            print(f"{label}: converted in {time.perf_counter() - start:.0f} s")
            for r in result.reports:
                cpu = Counter(op.type for op in r.cpu_operators)
                cos = f"{r.cosine_min:.6f} | {r.cosine_mean:.6f}" if r.cosine_min is not None else "- | -"
                rows.append(
                    f"| {r.tower} | {r.precision} | {cos} | {r.probes} | "
                    f"{r.status} | {', '.join(f'{t} x{n}' for t, n in cpu.items()) or '-'} | {r.seconds:.0f} |"
                )
                reports.append(r.to_dict())
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| tower | precision | cosine min | cosine mean | probes | status | on the CPU | build s |")
    print("|---|---|---:|---:|---:|---|---|---:|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
