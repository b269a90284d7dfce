"""Export dual encoders to the model folder layout (Immich's: visual/ and textual/ ONNX graphs), with dynamic batch.

`export_towers` writes any pair of torch modules (image -> unit embedding, tokens -> unit
embedding) plus tokenizer files and configs, checks the ONNX graphs against torch, and moves the
folder into place atomically. `export_hf_checkpoint` builds those towers from a transformers
CLIPModel / SiglipModel / ChineseCLIPModel folder. Needs the `[torch]` extra.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xmodal.errors import InvalidArgumentError, ModelFormatError, XmodalError
from xmodal.models.config import PreprocessCfg

log = logging.getLogger(__name__)

OPSET = 17
TextInputs = Literal["text", "input_ids+attention_mask"]
# Family defaults, overridden by what the checkpoint itself says (open_clip's layering).
_FAMILY = {
    "clip": {"clean": "whitespace", "text_inputs": "text", "context_length": None},
    "siglip": {"clean": "canonicalize", "text_inputs": "text", "context_length": None},
    # Chinese-CLIP's own training and eval scripts use 52 tokens.
    "chinese_clip": {"clean": "whitespace", "text_inputs": "input_ids+attention_mask", "context_length": 52},
}
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
VERIFY_MIN_COSINE = 0.9999


@dataclass
class ExportSpec:
    """What the folder's config files say about the towers being exported."""

    embed_dim: int
    preprocess: PreprocessCfg
    context_length: int
    clean: str = "whitespace"
    text_inputs: TextInputs = "text"
    metadata: dict[str, Any] = field(default_factory=dict)


def export_towers(
    visual: Any,
    textual: Any,
    spec: ExportSpec,
    save_tokenizer: Any,
    out: Path,
    *,
    int8: bool = False,
    fp16: bool = False,
    overwrite: bool = False,
    sample_texts: list[str] | None = None,
) -> Path:
    """Write `out/` with visual/ and textual/ ONNX graphs, tokenizer files and configs.

    visual(image float32 (N,3,S,S)) and textual(ids int32 (N,L)[, mask int32 (N,L)]) must return
    L2-normalized embeddings. save_tokenizer(folder) writes tokenizer.json + tokenizer_config.json.
    """
    if int8 and fp16:
        raise InvalidArgumentError("precision", "int8+fp16", "at most one of --int8 / --fp16")
    out = Path(out)
    if out.exists() and not overwrite:
        raise XmodalError(f"{out} already exists; choose another folder or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        folder = Path(tmp) / "model"
        (folder / "visual").mkdir(parents=True)
        (folder / "textual").mkdir()
        save_tokenizer(folder / "textual")
        _write_configs(folder, spec, precision="int8" if int8 else "fp16" if fp16 else "fp32")
        _export_visual(visual, spec, folder / "visual" / "model.onnx")
        _export_textual(textual, spec, folder / "textual" / "model.onnx")
        verify_export(folder, visual, textual, sample_texts or ["a photo of a dog", "two cats on a red sofa"])
        for tower in ("visual", "textual"):
            graph = folder / tower / "model.onnx"
            if int8:
                from xmodal.models.quantize import quantize_model

                quantize_model(graph, graph)
            elif fp16:
                _to_fp16(graph)
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    log.info("exported %s", out)
    return out


def _write_configs(folder: Path, spec: ExportSpec, precision: str) -> None:
    config = {
        "embed_dim": spec.embed_dim,
        "vision_cfg": {"image_size": spec.preprocess.size},
        "text_cfg": {
            "context_length": spec.context_length,
            "tokenizer_kwargs": {"clean": spec.clean},
        },
        "xmodal": {**spec.metadata, "precision": precision, "text_inputs": spec.text_inputs},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps(spec.preprocess.to_dict(), indent=2))


def _export_visual(visual: Any, spec: ExportSpec, path: Path) -> None:
    import torch

    size = spec.preprocess.size
    dummy = torch.randn(2, 3, size, size)
    _onnx_export(visual, (dummy,), path, ["image"], {"image": {0: "batch"}})


def _export_textual(textual: Any, spec: ExportSpec, path: Path) -> None:
    import torch

    ids = torch.ones(2, spec.context_length, dtype=torch.int32)
    if spec.text_inputs == "text":
        _onnx_export(textual, (ids,), path, ["text"], {"text": {0: "batch"}})
    else:
        mask = torch.ones(2, spec.context_length, dtype=torch.int32)
        axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}
        _onnx_export(textual, (ids, mask), path, ["input_ids", "attention_mask"], axes)


def _onnx_export(module: Any, args: tuple, path: Path, names: list[str], axes: dict) -> None:
    import torch

    module.eval()
    axes = {**axes, "embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is the one that handles these models' control flow with
        # stable output names; its deprecation and tracer warnings are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def verify_export(folder: Path, visual: Any, textual: Any, texts: list[str]) -> dict[str, float]:
    """Compare the exported graphs with the torch towers; raise if cosine < 0.9999."""
    import torch

    from xmodal.models.config import load_model_config
    from xmodal.models.encoder import Encoder

    encoder = Encoder(load_model_config(folder), folder.name)
    rng = np.random.default_rng(0)
    size = encoder.image_size
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    tokens = encoder.tokenize(texts)
    with torch.no_grad():
        ref_img = visual(torch.from_numpy(pixels)).numpy()
        ids = torch.from_numpy(tokens.ids.astype(np.int32))
        mask = torch.from_numpy(tokens.attention_mask.astype(np.int32))
        spec_inputs = encoder.config.raw.get("xmodal", {}).get("text_inputs", "text")
        ref_txt = (textual(ids) if spec_inputs == "text" else textual(ids, mask)).numpy()
    cos = {
        "visual": float(np.min(np.sum(encoder.embed_pixels(pixels) * ref_img, axis=1))),
        "textual": float(np.min(np.sum(encoder.embed_tokens(tokens) * ref_txt, axis=1))),
    }
    for tower, value in cos.items():
        if not value >= VERIFY_MIN_COSINE:
            raise XmodalError(f"export check failed: {tower} ONNX vs torch cosine {value:.6f} < {VERIFY_MIN_COSINE}")
    log.info("export verified: cosine visual %.7f, textual %.7f", cos["visual"], cos["textual"])
    return cos


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


# -- transformers checkpoints ---------------------------------------------------------------


def export_hf_checkpoint(
    src: Path,
    out: Path,
    *,
    int8: bool = False,
    fp16: bool = False,
    context_length: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a transformers CLIPModel / SiglipModel / ChineseCLIPModel folder to `out/`."""
    import torch

    model, tokenizer = load_hf_checkpoint(src)
    spec = hf_export_spec(src, model, context_length)
    visual, textual = hf_towers(model, spec.text_inputs)
    with torch.no_grad():
        return export_towers(
            visual, textual, spec, hf_tokenizer_saver(tokenizer, src), out, int8=int8, fp16=fp16, overwrite=overwrite
        )


def load_hf_checkpoint(src: Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a transformers CLIP / SigLIP / ChineseCLIP checkpoint folder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    src = Path(src)
    if not (src / "config.json").is_file():
        raise ModelFormatError(src / "config.json", "missing file (not a transformers checkpoint folder)")
    model_type = AutoConfig.from_pretrained(src).model_type
    if model_type not in _FAMILY:
        raise InvalidArgumentError("model_type", model_type, sorted(_FAMILY))
    model = AutoModel.from_pretrained(src, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(src)


def hf_export_spec(src: Path, model: Any, context_length: int | None = None) -> ExportSpec:
    """The ExportSpec of a transformers dual encoder loaded from checkpoint folder `src`."""
    model_type = model.config.model_type
    if model_type not in _FAMILY:
        raise InvalidArgumentError("model_type", model_type, sorted(_FAMILY))
    family = _FAMILY[model_type]
    text_cfg = model.config.text_config
    length = context_length or family["context_length"] or text_cfg.max_position_embeddings
    return ExportSpec(
        embed_dim=int(model.config.projection_dim if hasattr(model.config, "projection_dim") else text_cfg.hidden_size),
        preprocess=hf_preprocess_cfg(Path(src), model_type),
        context_length=min(length, text_cfg.max_position_embeddings),
        clean=family["clean"],
        text_inputs=family["text_inputs"],
        metadata={"source": str(src), "model_type": model_type},
    )


def hf_tokenizer_saver(tokenizer: Any, src: Path) -> Any:
    """save_tokenizer for export_towers: the transformers tokenizer's files, tokenizer.json required."""

    def save_tokenizer(folder: Path) -> None:
        tokenizer.save_pretrained(str(folder))
        if not (folder / "tokenizer.json").is_file():
            raise ModelFormatError(src, "its tokenizer has no fast (tokenizers) version to save as tokenizer.json")

    return save_tokenizer


def _features(output: Any) -> Any:
    """transformers >= 5 returns a ModelOutput whose pooler_output is the projected feature."""
    return output if hasattr(output, "dim") else output.pooler_output


def _unit(x: Any) -> Any:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def hf_towers(model: Any, text_inputs: str) -> tuple[Any, Any]:
    """(visual, textual) torch modules of a transformers dual encoder, each returning unit embeddings:
    visual(image), textual(ids) or textual(ids, mask) when text_inputs is "input_ids+attention_mask"."""
    visual_cls, textual_cls = _make_wrappers()
    return visual_cls(model), textual_cls(model, text_inputs)


def _make_wrappers() -> tuple[type, type]:
    """torch.nn.Module wrappers around a transformers model (defined lazily: torch is optional)."""
    import torch

    class HFVisual(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, image: Any) -> Any:
            return _unit(_features(self.model.get_image_features(pixel_values=image)))

    class HFTextual(torch.nn.Module):
        def __init__(self, model: Any, text_inputs: str):
            super().__init__()
            self.model = model
            self.with_mask = text_inputs != "text"

        def forward(self, ids: Any, mask: Any = None) -> Any:
            if self.with_mask:
                out = self.model.get_text_features(input_ids=ids.long(), attention_mask=mask.long())
            else:
                out = self.model.get_text_features(input_ids=ids.long())
            return _unit(_features(out))

    return HFVisual, HFTextual


def hf_preprocess_cfg(src: Path, model_type: str) -> PreprocessCfg:
    """PreprocessCfg from the checkpoint's preprocessor_config.json over the family's defaults."""
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import ChineseCLIPImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    defaults = {
        "clip": CLIPImageProcessorPil,
        "siglip": SiglipImageProcessorPil,
        "chinese_clip": ChineseCLIPImageProcessorPil,
    }
    path = src / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    base = defaults[model_type]
    get = lambda key: cfg.get(key, getattr(base, key, None))  # noqa: E731
    size = dict(get("size") or {})
    if "shortest_edge" in size:
        crop = dict(get("crop_size") or {})
        if (
            get("do_center_crop")
            and crop
            and (crop.get("height") != size["shortest_edge"] or crop.get("width") != size["shortest_edge"])
        ):
            raise ModelFormatError(
                path, f"resize to {size} then crop {crop} is not expressible; crop must equal the short side"
            )
        mode, edge = "shortest", size["shortest_edge"]
    elif size.get("height") == size.get("width") and size.get("height"):
        mode, edge = "squash", size["height"]
    else:
        raise ModelFormatError(path, f"size {size!r}: only square or shortest-edge resizing is supported")
    resample = get("resample")
    return PreprocessCfg(
        size=int(edge),
        mean=tuple(get("image_mean")),
        std=tuple(get("image_std")),
        interpolation=_PIL_RESAMPLE.get(int(resample), "bicubic"),
        resize_mode=mode,
    )
