"""A small dual encoder trained from scratch: a CNN image tower and a pre-LN transformer text tower
over a byte-pair vocabulary learned (with `tokenizers`) from the training captions.

Sized for CPU training in minutes: the CNN keeps a coarse spatial grid before its head (captions
name positions), the text tower pools over non-pad tokens. Both towers return unit embeddings and
export to ONNX with a dynamic batch (the textual graph takes only "text" ids; pads are id 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xmodal.models.config import PreprocessCfg, TextCfg
from xmodal.models.export import ExportSpec

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


@dataclass(frozen=True)
class TinyConfig:
    """Geometry of the from-scratch model."""

    vocab_size: int
    context_length: int = 48
    image_size: int = 64
    embed_dim: int = 128
    patch: int = 4  # the CNN's stem is a patch-size-strided convolution
    widths: tuple[int, ...] = (64, 128)
    head_grid: int = 4  # the CNN's last feature map is pooled to head_grid x head_grid before the head
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4

    @classmethod
    def from_dict(cls, data: dict) -> TinyConfig:
        return cls(**{**data, "widths": tuple(data["widths"])})

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImageTower(nn.Module):
    """Patch stem, then conv stages (the first keeps the size, later ones halve it; one more conv each)
    -> coarse grid -> MLP -> unit embedding."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(3, cfg.widths[0], cfg.patch, cfg.patch, bias=False), nn.BatchNorm2d(cfg.widths[0]), nn.ReLU()
        )
        layers, cin = [stem, _conv(cfg.widths[0], cfg.widths[0], 1)], cfg.widths[0]
        for width in cfg.widths[1:]:
            layers += [_conv(cin, width, 2), _conv(width, width, 1)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(cfg.head_grid)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * cfg.head_grid**2, 2 * cfg.embed_dim),
            nn.GELU(),
            nn.Linear(2 * cfg.embed_dim, cfg.embed_dim),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return _unit(self.head(self.pool(self.features(image))))


class Block(nn.Module):
    """Pre-LN transformer block with explicit attention (exports to plain ONNX ops)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads) + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
        x = x + self.proj(attended)
        return x + self.mlp(self.ln2(x))


class TextTower(nn.Module):
    """Token + position embeddings -> transformer blocks -> mean over non-pad tokens -> unit embedding."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positions = nn.Parameter(torch.randn(cfg.context_length, cfg.text_width) * 0.01)
        self.blocks = nn.ModuleList(Block(cfg.text_width, cfg.text_heads) for _ in range(cfg.text_layers))
        self.ln = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        ids = text.long()
        keep = (ids != 0).float()  # pad id is 0
        x = self.tokens(ids) + self.positions[: ids.shape[1]]
        bias = ((1.0 - keep) * -1e4)[:, None, None, :]
        for block in self.blocks:
            x = block(x, bias)
        pooled = (self.ln(x) * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return _unit(self.proj(pooled))


class TinyDualEncoder(nn.Module):
    """The from-scratch model: image and text towers plus the configs an export needs."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = ImageTower(cfg)
        self.textual = TextTower(cfg)
        self.preprocess = PreprocessCfg(size=cfg.image_size, interpolation="bilinear", resize_mode="squash")
        self.text_cfg = TextCfg(context_length=cfg.context_length, clean="whitespace", pad_token=PAD)
        self.text_inputs = "text"

    def initial_logits(self) -> tuple[float | None, float | None]:
        return None, None

    def towers(self) -> tuple[nn.Module, nn.Module]:
        return self.visual, self.textual

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            embed_dim=self.cfg.embed_dim,
            preprocess=self.preprocess,
            context_length=self.cfg.context_length,
            clean=self.text_cfg.clean,
            text_inputs="text",
            metadata={"architecture": "xmodal-tiny", "tiny": self.cfg.to_dict()},
        )

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.textual(ids)


def train_bpe_tokenizer(captions: Iterable[str], folder: Path, vocab_size: int = 1000) -> Path:
    """Learn a lower-casing BPE vocabulary from captions; write tokenizer.json, tokenizer_config.json
    and special_tokens_map.json (pad id 0, texts wrapped in <s> ... </s>) to folder."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, BOS, EOS], show_progress=False)
    tok.train_from_iterator(captions, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))]
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    special = {"pad_token": PAD, "unk_token": UNK, "bos_token": BOS, "eos_token": EOS}
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder / "tokenizer.json"
