"""Image-tower throughput: torch eager vs xmodal's runtimes, side by side in one run.

ViT-B/32 image tower (random init, real geometry: transformers CLIPConfig defaults), exported
by xmodal. For batch sizes 1/16/64 prints images/s, CPU milliseconds per image (all threads), the
ratio to torch eager fp32, the cosine of each output to torch fp32, and the share of the machine's
matmul peak reached — the peak of the fastest BLAS measured here (torch's MKL/oneDNN or numpy's
OpenBLAS: on AMD CPUs OpenBLAS is the faster one). A one-thread torch row shows what one core
does. bf16 rows run only on CPUs with AVX-512 BF16 or AMX (elsewhere torch's bf16 matmul falls
back to a slow path that can take minutes); the script says when it skips them.
Runtimes are measured in interleaved rounds and each reports its best round, so a burst of load
from other jobs on the shared machine hits every runtime alike instead of whichever ran then.

    python benchmarks/encode.py [--batches 1,16,64] [--seconds 2] [--rounds 3] [--json out.json]

Needs the [torch] extra (reference + export); OpenVINO rows appear when `openvino` is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def vit_image_gflop(cfg) -> float:
    """Forward FLOPs (2 x multiply-adds) of a CLIP ViT image tower for one image."""
    v = cfg.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    d, mlp = v.hidden_size, v.intermediate_size
    patch = (v.image_size // v.patch_size) ** 2 * d * 3 * v.patch_size**2
    per_layer = tokens * (4 * d * d + 2 * d * mlp) + 2 * tokens * tokens * d
    return 2 * (patch + v.num_hidden_layers * per_layer + d * cfg.projection_dim) / 1e9


def matmul_peak(dtype, n: int = 2048, seconds: float = 2.0, library: str = "torch") -> float:
    """Measured GFLOP/s of an n x n matmul in `dtype` by torch or numpy (its BLAS) on this machine."""
    import torch

    if library == "numpy":
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        b = a.T.copy()
        run = lambda: a @ b  # noqa: E731
    else:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        run = lambda: torch.matmul(a, b)  # noqa: E731
    run()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def throughput(fn, batch: int, seconds: float) -> tuple[float, float, np.ndarray]:
    """Images/s of fn() over at least `seconds` (after one warm-up call), the CPU milliseconds per
    image it took (the process, all threads), and its last output."""
    out = fn()
    reps, start, cpu = 0, time.perf_counter(), time.process_time()
    while reps < 2 or time.perf_counter() - start < seconds:
        out = fn()
        reps += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return batch * reps / wall, 1000 * cpu / (batch * reps), out


def one_thread(fn):
    """fn run with torch limited to one thread (what one core does)."""
    import torch

    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="per runtime and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 rows as on a CPU without it")
    args = parser.parse_args()

    import torch
    from transformers import CLIPModel

    import xmodal
    from helpers import make_clip_checkpoint
    from xmodal.machine import cpu_info
    from xmodal.models.export import export_hf_checkpoint

    cpu = cpu_info()
    bf16 = (cpu.has("avx512_bf16") or cpu.has("amx_bf16")) and not args.no_bf16
    print(f"CPU: {cpu.describe()}")
    if not bf16:
        reason = "--no-bf16" if args.no_bf16 else "this CPU has neither AVX-512 BF16 nor AMX"
        print(f"bf16 rows skipped: {reason} (torch's bf16 fallback can take minutes per batch)")

    work = Path(tempfile.mkdtemp(prefix="xmodal-bench-"))
    os.environ.setdefault("XMODAL_CACHE", str(work / "cache"))
    checkpoint = make_clip_checkpoint(work / "ckpt", full_geometry=True)
    folder = export_hf_checkpoint(checkpoint, work / "vitb32")
    model = CLIPModel.from_pretrained(checkpoint).eval()
    gflop = vit_image_gflop(model.config)

    def torch_eager(pixels, bf16=False):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
            return torch.nn.functional.normalize(out.float(), dim=-1).numpy()

        return run

    encoders = {
        "xmodal fp32 (onnxruntime)": xmodal.load_model(folder),
        "xmodal int8 (onnxruntime)": xmodal.load_model(folder, precision="int8"),
    }
    try:
        import openvino  # noqa: F401

        encoders["xmodal fp32 (openvino)"] = xmodal.load_model(folder, runtime="openvino")
        if bf16:
            encoders["xmodal bf16 (openvino)"] = xmodal.load_model(folder, precision="bf16")
    except ImportError:
        print("openvino not installed: no OpenVINO rows (pip install 'xmodal[openvino]')")

    blas = {
        "torch": max(matmul_peak(torch.float32) for _ in range(args.rounds)),
        "numpy": max(matmul_peak(torch.float32, library="numpy") for _ in range(args.rounds)),
    }
    peak = {"fp32": max(blas.values())}
    if bf16:
        peak["bf16"] = max(matmul_peak(torch.bfloat16) for _ in range(args.rounds))
    print(
        f"matmul peak fp32: torch {blas['torch']:.0f}, numpy {blas['numpy']:.0f} GFLOP/s -> "
        f"{peak['fp32']:.0f} ({max(blas, key=blas.get)}); bf16 "
        + (f"{peak['bf16']:.0f} GFLOP/s" if bf16 else "not measured")
        + f"; ViT-B/32 image tower {gflop:.2f} GFLOP/image; torch threads {torch.get_num_threads()}"
    )
    rows = []
    rng = np.random.default_rng(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        pixels = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        candidates = {
            "torch eager fp32": torch_eager(pixels),
            "torch eager fp32, 1 thread": one_thread(torch_eager(pixels)),
        }
        if bf16:
            candidates["torch eager bf16 autocast"] = torch_eager(pixels, True)
        for name, enc in encoders.items():
            candidates[name] = lambda e=enc, p=pixels: e.embed_pixels(p)
        runs: dict[str, tuple[float, float, np.ndarray]] = {}
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                ips, cpu_ms, out = throughput(fn, batch, args.seconds)
                if ips > runs.get(name, (0.0, 0.0, None))[0]:
                    runs[name] = (ips, cpu_ms, out)
        base_ips, _, ref = runs["torch eager fp32"]
        for name, (ips, cpu_ms, out) in runs.items():
            kind = "bf16" if "bf16" in name else "fp32"
            row = {
                "batch": batch,
                "runtime": name,
                "images_per_s": ips,
                "cpu_ms_per_image": cpu_ms,
                "vs_torch_fp32": ips / base_ips,
                "cosine_vs_fp32": float(np.min(np.sum(out * ref, axis=1))),
                "gflops": ips * gflop,
                "share_of_peak": ips * gflop / peak[kind],
                "peak_kind": kind,
            }
            rows.append(row)
            print(
                f"batch {batch:3d}  {name:28s} {ips:7.1f} img/s {cpu_ms:6.1f} CPU-ms/img  x{row['vs_torch_fp32']:.2f}  "
                f"cos {row['cosine_vs_fp32']:.6f}  {row['gflops']:6.0f} GFLOP/s = {100 * row['share_of_peak']:4.1f}% of {kind} peak"
            )
    if args.json:
        report = {"cpu": cpu.describe(), "blas_fp32_gflops": blas, "peak_gflops": peak, "gflop_per_image": gflop}
        args.json.write_text(json.dumps({**report, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
