"""int8 recipes side by side on this CPU: each tower's lowest cosine to fp32 and its speed.

ViT-B/32 geometry (random init, real geometry: transformers CLIPConfig defaults), exported by
xmodal. Recipes (ONNX Runtime dynamic quantization of the MatMul weights, uint8 activations):
8-bit and 7-bit (reduce_range) per-channel weights — the two xmodal picks between, by whether
this CPU's uint8 x int8 products saturate — the 8-bit graph run with ONNX Runtime's
session.x64quantprecision (uint8 x uint8 kernels where u8s8 would saturate), per-tensor weights,
uint8 weights, only the MLP MatMuls quantized, and static QDQ (activation ranges calibrated
beforehand on other inputs). In every recipe the attention products of two activations stay in
float. Cosine = the lowest over xmodal's probe inputs (8 texts, 4 images) to fp32 on the same CPU; speed = items/s at --batch, interleaved rounds, best
round kept. The header names the CPU and the int8 features its CPUID reports (what ONNX Runtime
dispatches on) and the row xmodal uses here.

    python benchmarks/int8.py [--model DIR] [--work DIR] [--batch 8] [--seconds 2] [--rounds 3] [--json out.json]

Without --model it builds and exports the model (needs the [torch] extra). Quantized graphs are
kept in --work and reused, so an emulated CPU can run the same graphs without quantizing slowly:

    qemu-x86_64 -cpu Haswell python benchmarks/int8.py --model DIR --work DIR --rounds 1 --seconds 0

Under emulation the cosines are the emulated CPU's own (its kernels run instruction by
instruction); the times are the emulator's, useful only as a rough order between recipes.
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

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# name -> (quantize_dynamic options, session config entries)
RECIPES: dict[str, tuple[dict, dict]] = {
    "s8 per-channel": ({"per_channel": True}, {}),
    "s7 per-channel (reduce_range)": ({"per_channel": True, "reduce_range": True}, {}),
    "s8 per-channel + x64quantprecision": ({"per_channel": True}, {"session.x64quantprecision": "1"}),
    "s8 per-tensor": ({"per_channel": False}, {}),
    "s7 per-tensor": ({"per_channel": False, "reduce_range": True}, {}),
    "u8 per-channel": ({"per_channel": True, "weight_type": "QUInt8"}, {}),
    "s8 per-channel MLP-only": ({"per_channel": True, "mlp_only": True}, {}),
    "s7 per-channel MLP-only": ({"per_channel": True, "reduce_range": True, "mlp_only": True}, {}),
    "s8 per-channel QDQ static": ({"per_channel": True, "static": True}, {}),
    "s7 per-channel QDQ static": ({"per_channel": True, "reduce_range": True, "static": True}, {}),
}
# Static (QDQ) recipes fix the activation ranges from these inputs, not the probe's: texts of the
# same kind and the probe images mirrored.
CALIBRATION_TEXTS = (
    "a cat sitting on a windowsill in the sun",
    "a bowl of fruit on a wooden table",
    "a woman riding a bicycle down a city street",
    "a sailboat on a lake at sunset",
    "a birthday cake with lit candles",
    "a train crossing a bridge over a river",
    "a group of friends taking a selfie",
    "a close-up photo of a yellow flower",
)
XMODAL_PICKS = {False: "s8 per-channel", True: "s7 per-channel (reduce_range)"}  # by cpu_int8().saturates


def cpu_header() -> dict:
    """The CPU's name and flags: /proc/cpuinfo's and what CPUID reports to user code (they differ
    under an emulator such as qemu-user, which passes the host's /proc/cpuinfo through)."""
    from xmodal.models.quantize import cpu_int8

    info = {"model_name": platform.processor() or platform.machine(), "cpuinfo_flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model_name"] = value.strip()
        if key.strip() == "flags":
            wanted = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")
            info["cpuinfo_flags"] = [f for f in wanted if f in value.split()]
            break
    cpu = cpu_int8()
    info |= {"cpuid_int8": cpu.kind, "u8s8_saturates": cpu.saturates, "xmodal_int8": XMODAL_PICKS[cpu.saturates]}
    return info


def quantize(src: Path, dst: Path, options: dict, calibration: dict[str, np.ndarray]) -> Path:
    """dst = src quantized with one recipe (made once; kept for later runs). Dynamic recipes
    quantize activations per batch at run time; static ones (QDQ) use ranges fixed on
    `calibration`. Either way only MatMul/Gemm with a weight operand are quantized: the attention
    products of two activations stay in float."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if dst.exists():
        return dst
    options = dict(options)
    graph = onnx.load(str(src), load_external_data=False)
    weights = {i.name for i in graph.graph.initializer}
    mlp_only = options.pop("mlp_only", False)
    nodes = [
        n.name
        for n in graph.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights and (not mlp_only or "/mlp/" in n.name)
    ]
    weight_type = QuantType[options.pop("weight_type", "QInt8")]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.onnx")
    common = {"weight_type": weight_type, "op_types_to_quantize": ["MatMul", "Gemm"], "nodes_to_quantize": nodes}
    if options.pop("static", False):

        class Feeds(CalibrationDataReader):
            def __init__(self) -> None:
                self.rows = iter([calibration])

            def get_next(self):
                return next(self.rows, None)

        quantize_static(
            str(src),
            str(tmp),
            Feeds(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            **common,
            **options,
        )
    else:
        quantize_dynamic(str(src), str(tmp), **common, **options)
    os.replace(tmp, dst)
    return dst


def open_session(path: Path, config: dict):
    """An ONNX Runtime session with xmodal's options plus `config` entries."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def throughput(fn, items: int, seconds: float) -> float:
    """Items/s of fn() over at least `seconds` and 1 call (after one warm-up call)."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < 1 or time.perf_counter() - start < seconds:
        fn()
        reps += 1
    return items * reps / (time.perf_counter() - start)


def report(tower: str, name: str, cosine: float, ips: float | None, fp32_ips: float | None, header: dict) -> dict:
    """Print one result line and return it as a row."""
    row = {
        "tower": tower,
        "recipe": name,
        "min_cosine_vs_fp32": cosine,
        "items_per_s": ips,
        "vs_fp32": ips / fp32_ips if ips and fp32_ips else None,
        "xmodal": name == header["xmodal_int8"],
    }
    timing = f"{ips:8.2f} items/s  x{row['vs_fp32']:.2f}" if ips else "(not timed)"
    mark = "  <- xmodal int8 here" if row["xmodal"] else ""
    print(f"{tower:8s} {name:36s} cos {cosine:.6f}  {timing}{mark}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported model folder (default: build ViT-B/32 geometry)")
    parser.add_argument("--work", type=Path, help="folder for the model and quantized graphs (kept)")
    parser.add_argument("--towers", default="textual,visual")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="per recipe and round")
    parser.add_argument("--rounds", type=int, default=3, help="0: cosines only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import xmodal
    from xmodal.models.quantize import PROBE_TEXTS, probe_images

    work = args.work or Path(tempfile.mkdtemp(prefix="xmodal-int8-bench-"))
    folder = args.model
    if folder is None:
        from helpers import make_clip_checkpoint
        from xmodal.models.export import export_hf_checkpoint

        folder = work / "vitb32"
        if not folder.exists():
            export_hf_checkpoint(make_clip_checkpoint(work / "ckpt", full_geometry=True), folder)
    enc = xmodal.load_model(folder)
    header = cpu_header()
    print(
        f"CPU: {header['model_name']}; /proc/cpuinfo flags: {' '.join(header['cpuinfo_flags']) or '-'}; "
        f"CPUID int8: {header['cpuid_int8']} (u8s8 saturates: {header['u8s8_saturates']}); "
        f"xmodal int8 here: {header['xmodal_int8']}; load {os.getloadavg()[0]:.1f}"
    )
    tokens = enc.tokenize(PROBE_TEXTS)
    probe = {"textual": tokens.ids.astype(np.int32), "visual": enc.preprocess.batch(probe_images())}
    mirrored = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in probe_images()]
    calibration = {
        "textual": enc.tokenize(CALIBRATION_TEXTS).ids.astype(np.int32),
        "visual": enc.preprocess.batch(mirrored),
    }
    names = [n for n in args.recipes.split(",") if n]
    rows = []
    for tower in args.towers.split(","):
        src = enc.config.visual_path if tower == "visual" else enc.config.textual_path
        graphs = {"fp32": (src, {})}
        for name in names:
            options, config = RECIPES[name]
            graph_name = name.replace(" + x64quantprecision", "").replace(" ", "_")
            feeds = {open_session(src, {}).get_inputs()[0].name: calibration[tower]}
            graphs[name] = (quantize(src, work / "graphs" / tower / f"{graph_name}.onnx", options, feeds), config)
        x = probe[tower]
        cosine: dict[str, float] = {}
        sessions = {}
        reference = None  # fp32 comes first
        for name, (path, config) in graphs.items():  # one at a time, printed as it comes (emulation is slow)
            session = open_session(path, config)
            feed_name = session.get_inputs()[0].name
            out = unit_rows(session.run(None, {feed_name: x})[0])
            reference = out if reference is None else reference
            cosine[name] = float(np.min(np.sum(out * reference, axis=1)))
            if args.rounds:
                sessions[name] = session
            else:
                rows.append(report(tower, name, cosine[name], None, None, header))
        speed: dict[str, float] = {}
        batch = {feed_name: np.concatenate([x] * (args.batch // len(x) + 1))[: args.batch]}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                ips = throughput(lambda s=session, f=batch: s.run(None, f), args.batch, args.seconds)
                speed[name] = max(speed.get(name, 0.0), ips)
        for name in sessions:
            rows.append(report(tower, name, cosine[name], speed[name], speed["fp32"], header))
    if args.json:
        args.json.write_text(json.dumps({"cpu": header, "batch": args.batch, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
