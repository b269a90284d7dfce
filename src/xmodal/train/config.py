"""What a training run does: one frozen config, saved in the run folder and checked on resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from xmodal.errors import InvalidArgumentError
from xmodal.train.losses import LOSSES

PRECISIONS = ("fp32", "bf16")
TINY = "tiny"
# Fields that do not change the trained weights: a run may be resumed with other values.
RESUMABLE_CHANGES = frozenset({"out", "export", "name", "threads"})


@dataclass(frozen=True)
class TrainConfig:
    """A training run. `model` is "tiny" (from scratch) or a transformers checkpoint folder to fine-tune."""

    dataset: str  # FORMAT:PATH of a captioned image dataset with train (and val) splits
    out: Path  # run folder: checkpoints, log.json, training.png, tokenizer/
    model: str = TINY
    loss: str = "infonce"
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None  # default: 2e-3 from scratch, 1e-5 fine-tuning
    weight_decay: float = 0.1
    warmup: float = 0.05  # share of all optimizer steps spent warming the learning rate up
    grad_clip: float = 1.0
    accum: int = 1  # micro-batches per optimizer step (negatives come from each micro-batch)
    precision: str = "fp32"  # "bf16": autocast matmuls/convolutions to bfloat16 (fast on AMX CPUs)
    modal_weight: float = 0.0
    attribute_captions: float = 0.0  # share of captions replaced by partial descriptions (needs `shapes` annotations)
    seed: int = 0
    train_split: str = "train"
    val_split: str | None = "val"
    limit: int | None = None  # at most this many training images
    val_limit: int | None = 1000
    image_size: int = 64  # from scratch only
    embed_dim: int = 128  # from scratch only
    export: Path | None = None  # model folder to write at the end (default: OUT/model)
    name: str | None = None  # recorded in the exported config.json
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InvalidArgumentError("loss", self.loss, LOSSES)
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError("precision", self.precision, PRECISIONS)
        for name in ("epochs", "batch_size", "accum", "image_size", "embed_dim"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(name, getattr(self, name), "an integer >= 1")
        if self.batch_size < 2 * self.accum:
            raise InvalidArgumentError(
                "batch_size", self.batch_size, f">= 2 per micro-batch ({self.accum} micro-batches)"
            )
        if not 0 <= self.attribute_captions <= 1:
            raise InvalidArgumentError("attribute_captions", self.attribute_captions, "a share in [0, 1]")
        if not 0 <= self.warmup < 1:
            raise InvalidArgumentError("warmup", self.warmup, "a share of the steps in [0, 1)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-3 if self.model == TINY else 1e-5)

    @property
    def export_dir(self) -> Path:
        return Path(self.export) if self.export is not None else Path(self.out) / "model"

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """Fields (that affect the weights) whose values differ from a saved run's config."""
        mine = self.to_dict()
        return [
            f.name
            for f in fields(self)
            if f.name not in RESUMABLE_CHANGES and saved.get(f.name, f.default) != mine[f.name]
        ]
