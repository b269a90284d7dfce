"""Model folder configuration: the files of the Immich layout read into frozen dataclasses.

Models are data: everything an encoder does differently (image size, resize mode, mean/std,
context length, text cleaning, input names) comes from the folder's own files, never from its
name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xmodal.errors import ModelFormatError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")
RESIZE_MODES = ("shortest", "squash", "longest")
CLEAN_MODES = ("whitespace", "canonicalize", "lower", "none")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessCfg:
    """How an image becomes the visual tower's input (open_clip's preprocess_cfg.json)."""

    size: int = 224
    mode: str = "RGB"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "preprocess_cfg") -> PreprocessCfg:
        """Build from a JSON dict: unknown keys and nulls dropped, every value validated."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        size = values.get("size", cls.size)
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or size[0] != size[1]:
                raise ModelFormatError(source, f"size {size!r}: only square inputs are supported")
            size = size[0]
        values["size"] = _positive_int(size, "size", source)
        for key in ("mean", "std"):
            if key in values:
                values[key] = _triple(values[key], key, source)
        if any(s <= 0 for s in values.get("std", cls.std)):
            raise ModelFormatError(source, "std values must be > 0")
        _choice(values, "interpolation", INTERPOLATIONS, source)
        _choice(values, "resize_mode", RESIZE_MODES, source)
        if values.get("mode", "RGB") != "RGB":
            raise ModelFormatError(source, f"mode {values['mode']!r}: only 'RGB' is supported")
        fill = values.get("fill_color", 0)
        values["fill_color"] = int(fill[0] if isinstance(fill, (list, tuple)) else fill)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": [self.size, self.size],
            "mode": self.mode,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }


@dataclass(frozen=True)
class TextCfg:
    """How text becomes token ids: cleaning, context length and padding."""

    context_length: int = 77
    clean: str = "whitespace"
    pad_token: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Everything the loader knows about a model folder."""

    folder: Path
    embed_dim: int
    preprocess: PreprocessCfg
    text: TextCfg
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def visual_path(self) -> Path:
        return self.folder / "visual" / "model.onnx"

    @property
    def textual_path(self) -> Path:
        return self.folder / "textual" / "model.onnx"

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / "textual" / "tokenizer.json"


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising ModelFormatError naming the file on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(path, "missing file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(path, f"unreadable: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(path, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelFormatError(path, "expected a JSON object")
    return data


def load_model_config(folder: Path) -> ModelConfig:
    """Read config.json, visual/preprocess_cfg.json and the tokenizer config of a model folder."""
    folder = Path(folder)
    raw = read_json(folder / "config.json")
    embed_dim = raw.get("embed_dim")
    if not isinstance(embed_dim, int) or embed_dim <= 0:
        raise ModelFormatError(folder / "config.json", f"embed_dim {embed_dim!r} is not a positive int")
    vision = raw.get("vision_cfg") or {}
    pre_path = folder / "visual" / "preprocess_cfg.json"
    pre_data = read_json(pre_path) if pre_path.exists() else {"size": vision.get("image_size", 224)}
    preprocess = PreprocessCfg.from_dict(pre_data, pre_path)
    return ModelConfig(folder, embed_dim, preprocess, _text_cfg(folder, raw), raw)


def _text_cfg(folder: Path, raw: dict[str, Any]) -> TextCfg:
    text = raw.get("text_cfg") or {}
    source = folder / "config.json"
    context_length = _positive_int(text.get("context_length", 77), "text_cfg.context_length", source)
    kwargs = text.get("tokenizer_kwargs") or {}
    clean = kwargs.get("clean") or "whitespace"
    if clean not in CLEAN_MODES:
        raise ModelFormatError(source, f"text_cfg.tokenizer_kwargs.clean {clean!r}; expected one of {CLEAN_MODES}")
    pad_token = None
    tok_cfg_path = folder / "textual" / "tokenizer_config.json"
    if tok_cfg_path.exists():
        pad_token = _token_text(read_json(tok_cfg_path).get("pad_token"))
    if pad_token is None:
        special = folder / "textual" / "special_tokens_map.json"
        if special.exists():
            pad_token = _token_text(read_json(special).get("pad_token"))
    return TextCfg(context_length=context_length, clean=clean, pad_token=pad_token)


def _token_text(value: Any) -> str | None:
    """Tokenizer configs store special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _positive_int(value: Any, name: str, source: str | Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelFormatError(source, f"{name} {value!r} is not a positive integer")
    return value


def _triple(value: Any, name: str, source: str | Path) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ModelFormatError(source, f"{name} {value!r} must be 3 numbers")
    return (float(value[0]), float(value[1]), float(value[2]))


def _choice(values: dict[str, Any], key: str, valid: tuple[str, ...], source: str | Path) -> None:
    if key in values and values[key] not in valid:
        raise ModelFormatError(source, f"{key} {values[key]!r}; expected one of {', '.join(valid)}")
