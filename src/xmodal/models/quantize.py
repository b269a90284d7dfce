"""int8 weights through ONNX Runtime's dynamic quantization, cached per source graph.

Only MatMul/Gemm weights are quantized (per output channel): they hold nearly all of a ViT's or
text transformer's FLOPs, while int8 Conv (ConvInteger) is slower than fp32 on CPU and the patch
embedding is a single small layer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from xmodal import settings

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["MatMul", "Gemm"]


def quantize_model(src: Path, dst: Path) -> Path:
    """Write an int8 (dynamic, per-channel) copy of the ONNX graph `src` to `dst` atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        out = Path(tmp) / dst.name
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=QUANTIZED_OPS,
        )
        os.replace(out, dst)
    return dst


def quantized_copy(src: Path) -> Path:
    """Path of a cached int8 copy of `src`, made on first use (keyed by path, size and mtime)."""
    stat = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    dst = settings.current().cache_dir / "int8" / key / "model.onnx"
    if not dst.exists():
        log.info("quantizing %s to int8 (once; cached in %s)", src, dst.parent)
        quantize_model(src, dst)
    return dst
