"""int8 weights through ONNX Runtime's dynamic quantization: the weight range this CPU computes
exactly, a cached copy per source graph, and the record of how close that copy came to fp32.

Only MatMul/Gemm weights are quantized (per output channel): they hold nearly all of a ViT's or
text transformer's FLOPs, while int8 Conv (ConvInteger) is slower than fp32 on CPU and the patch
embedding is a single small layer. Activations are quantized to uint8 per batch at run time;
products of two activations (attention scores) stay in float.

Why the weight range depends on the CPU: x86 CPUs without VNNI (AVX2, AVX-512 without VNNI)
multiply uint8 activations by int8 weights with vpmaddubsw, which adds each pair of products in
int16 and saturates. With 8-bit weights a CLIP text tower fell to cosine 0.972 vs fp32 there.
7-bit weights (ONNX Runtime's reduce_range) keep every pair inside int16 (2 x 255 x 64 < 32767),
so they compute the same numbers on every CPU at full int8 speed; CPUs whose int8 instructions
accumulate in int32 (AVX-512 VNNI, AMX, Arm) keep the more accurate 8-bit weights. ONNX Runtime's
other remedy (session option session.x64quantprecision: uint8 x uint8 kernels) is exact too but
runs at fp32 speed there, so int8 would gain nothing (benchmarks/int8.py, BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from xmodal import settings

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["MatMul", "Gemm"]
CHECKS_FILE = "checks.json"

# Captions of the kinds people search with; the int8 text tower is checked on these.
PROBE_TEXTS = (
    "a dog running on the beach",
    "two cats sleeping on a red sofa",
    "a plate of pasta with tomato sauce and basil",
    "an old man reading a newspaper in the park",
    "snow covered mountains under a clear blue sky",
    "a red double-decker bus on a busy street at night",
    "children playing football in 2019",
    "a screenshot of a spreadsheet with numbers",
)


@dataclass(frozen=True)
class CpuInt8:
    """How this CPU multiplies int8 matrices, as its CPUID reports it (ONNX Runtime reads the same)."""

    machine: str
    features: tuple[str, ...]  # the int8-relevant x86 features present
    saturates: bool  # uint8 x int8 pairs are summed in int16 (vpmaddubsw) and can clip

    @property
    def kind(self) -> str:
        """A short name of this CPU kind for records and messages, e.g. 'x86_64 AVX2'."""
        return " ".join((self.machine, *self.features))

    @classmethod
    def from_features(cls, machine: str, features: Mapping[str, bool]) -> CpuInt8:
        """The int8 kind of a CPU with these CPUID features (names as numpy reports them, e.g.
        "AVX512VNNI"): only x86 without AVX-512 VNNI sums uint8 x int8 pairs in int16."""
        machine = machine.lower() or "unknown"
        if machine not in _X86:
            return cls(machine, (), saturates=False)
        present = tuple(f for f in _INT8_FEATURES if features.get(f))
        vnni = bool(features.get("AVX512VNNI")) and bool(features.get("AVX512BW"))
        return cls(machine, present, saturates=not vnni)


_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_INT8_FEATURES = ("AVX2", "AVX512BW", "AVX512VNNI")


@lru_cache(maxsize=1)
def cpu_int8() -> CpuInt8:
    """This CPU's int8 kind. The features come from numpy's runtime CPUID probe rather than
    /proc/cpuinfo, which can list features user code does not get (e.g. under an emulator).
    AVX-VNNI without AVX-512 is not reported by numpy and so counts as saturating: such CPUs get
    the 7-bit weights, exact everywhere, at a little less accuracy than they could have."""
    machine = platform.machine()
    return CpuInt8.from_features(machine, _cpu_features() if machine.lower() in _X86 else {})


def _cpu_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return dict(__cpu_features__)


def quantize_model(src: Path, dst: Path, *, reduce_range: bool = True) -> Path:
    """Write an int8 (dynamic, per-channel) copy of the ONNX graph `src` to `dst` atomically.

    reduce_range=True (7-bit weights) is exact on every CPU: the choice for graphs that travel
    (exported model folders); quantized_copy() uses 8-bit weights where this CPU allows them.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        out = Path(tmp) / dst.name
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            op_types_to_quantize=QUANTIZED_OPS,
        )
        os.replace(out, dst)
    return dst


def quantized_copy(src: Path, *, reduce_range: bool) -> Path:
    """Path of a cached int8 copy of `src`, made on first use (keyed by path, size, mtime and
    weight range)."""
    stat = src.stat()
    ident = f"{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{'s7' if reduce_range else 's8'}"
    dst = settings.current().cache_dir / "int8" / hashlib.sha256(ident.encode()).hexdigest()[:20] / "model.onnx"
    if not dst.exists():
        log.info("quantizing %s to int8 (once; cached in %s)", src, dst.parent)
        quantize_model(src, dst, reduce_range=reduce_range)
    return dst


def checked_cosine(copy: Path, probe_digest: str, measure: Callable[[], float], cpu: CpuInt8) -> float:
    """The lowest int8-vs-fp32 cosine of the cached graph `copy` on a probe, as recorded beside it
    for the CPU kind `cpu` and this ONNX Runtime version; measure() is called (and recorded) when
    there is no record, so a cache made on another CPU kind is checked again."""
    import onnxruntime

    key = f"{cpu.kind} | onnxruntime {onnxruntime.__version__} | probe {probe_digest}"
    path = copy.parent / CHECKS_FILE
    records = _read_checks(path)
    if key in records:
        return float(records[key]["min_cosine"])
    cosine = float(measure())
    log.info("int8 %s on %s: lowest cosine %.6f vs fp32 on the probe", copy, cpu.kind, cosine)
    records = _read_checks(path)  # another process may have added its own CPU kind meanwhile
    records[key] = {"min_cosine": cosine, "cpu": cpu.kind, "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(path, json.dumps(records, indent=2, sort_keys=True))
    return cosine


def _read_checks(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # a damaged record only costs a new check
        log.warning("ignoring unreadable %s (%s); checking again", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fp:
            fp.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_images() -> list[Image.Image]:
    """Four deterministic RGB images the int8 image tower is checked on: smooth colour fields,
    shapes with hard edges on a gradient, and fine noise, at several sizes and aspect ratios."""
    rng = np.random.default_rng(20261201)

    def smooth(width: int, height: int, cells: int) -> Image.Image:
        base = rng.integers(0, 256, (cells, cells * width // height + 1, 3), dtype=np.uint8)
        return Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)

    shapes = smooth(320, 240, 2)
    draw = ImageDraw.Draw(shapes)
    for _ in range(6):
        x, y = rng.integers(0, 280), rng.integers(0, 200)
        w, h = rng.integers(20, 120, size=2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=fill)
    noise = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    return [smooth(224, 224, 6), shapes, smooth(180, 300, 12), noise]
