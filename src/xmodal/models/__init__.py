"""Models: folder loader, preprocessing, tokenizers, runtimes, registry of names, export."""

from __future__ import annotations

import os
from pathlib import Path

from xmodal import settings
from xmodal.errors import InvalidArgumentError
from xmodal.media.image import DecodeOptions
from xmodal.models.config import ModelConfig, PreprocessCfg, TextCfg, load_model_config
from xmodal.models.embedder import Embedder
from xmodal.models.encoder import Encoder, l2_normalize
from xmodal.models.registry import known_models, pull_model, resolve_model
from xmodal.models.runtime import NPU_RUNTIMES

__all__ = [
    "Embedder",
    "Encoder",
    "ModelConfig",
    "PreprocessCfg",
    "TextCfg",
    "known_models",
    "l2_normalize",
    "load_model",
    "pull_model",
]


def load_model(
    name_or_path: str | os.PathLike,
    *,
    precision: str = "fp32",
    runtime: str = "auto",
    offline: bool | None = None,
    threads: int | None = None,
    decode: DecodeOptions | None = None,
) -> Encoder:
    """Load a model by folder, shipped name (``xmodal-tiny-shapes``), Immich name
    (``ViT-B-32__openai``) or hub ``org/repo``.

    precision: "fp32", "int8" (ONNX Runtime dynamic quantization, cached; each tower is checked
    against fp32 on this CPU kind when first used and refused below cosine 0.99 with
    PrecisionTooLowError) or "bf16" (OpenVINO).
    runtime: "auto", "onnxruntime", "openvino", or the folder's Rockchip NPU graphs (made by
    `xmodal models rknn`): "rknn-sim" in Rockchip's simulator, "rknn" on a board's NPU, each also as
    "rknn-sim:rk3566" to pick a SoC; their precision is the one they were converted with.
    offline: never touch the network (default: $HF_HUB_OFFLINE / $XMODAL_OFFLINE).
    """
    folder, name = resolve_model(name_or_path, offline=offline)
    config = load_model_config(folder)
    # A known name is kept as given (it resolves again after an upgrade or a cache move); a folder
    # is remembered by its absolute path.
    named = not Path(name_or_path).expanduser().is_dir()
    if runtime.partition(":")[0] in NPU_RUNTIMES:
        name, precision, runtime = _npu_model(folder, name, precision, runtime)
    return Encoder(
        config,
        name,
        precision=precision,
        runtime=runtime,
        threads=threads if threads is not None else settings.current().threads,
        decode=decode,
        source=str(name_or_path) if named else str(folder.resolve()),
    )


def _npu_model(folder: Path, name: str, precision: str, runtime: str) -> tuple[str, str, str]:
    """(display name, precision label, KIND:SOC) of a model run on its RKNN graphs."""
    from xmodal.models.rknn import npu_precision, resolve_npu_runtime

    if precision != "fp32":
        raise InvalidArgumentError(
            "precision",
            precision,
            "the default with an RKNN runtime (the graphs keep the precision they were converted with)",
        )
    kind, soc = resolve_npu_runtime(folder, runtime)
    label = npu_precision(folder, soc)
    return f"{name}@{kind}:{soc} ({label})", label, f"{kind}:{soc}"
