"""The training loop: AdamW with warmup + cosine, gradient clipping and accumulation, optional bf16
autocast; validation R@K after every epoch; a checkpoint per epoch from which a run resumes
exactly; a JSON log and a plot; finally an export to the model folder layout.

Exact resume: the data order of epoch e is drawn from a generator seeded by (seed, e), and a
checkpoint holds the model, loss, optimizer and scheduler states, the torch RNG state and the
history, so an interrupted run resumed from its last checkpoint ends with the same weights as a
run that was never interrupted (same thread count).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmodal.errors import DatasetFormatError, InvalidArgumentError, XmodalError
from xmodal.eval.datasets import ReadOptions, read_dataset
from xmodal.eval.metrics import metrics_from_ranks, ranks_from_embeddings
from xmodal.models.export import export_towers
from xmodal.models.tokenizer import TextTokenizer
from xmodal.progress import NullProgress, Progress
from xmodal.train.attributes import AttributeCaption, attribute_caption, batch_positives
from xmodal.train.config import TINY, TrainConfig
from xmodal.train.data import Normalizer, PairData, load_pairs
from xmodal.train.losses import ContrastiveLoss
from xmodal.train.report import write_log

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
EVAL_BATCH = 256


@dataclass
class TrainResult:
    """What a run produced: per-epoch records, the exported model folder and the run folder."""

    history: list[dict[str, Any]]
    model_dir: Path
    run_dir: Path
    resumed_epochs: int  # epochs that were already done when this call started


def build_model(config: TrainConfig, texts: list[str]) -> torch.nn.Module:
    """The model to train: the tiny architecture (tokenizer learned from `texts`) or a checkpoint."""
    tokenizer_dir = Path(config.out) / "tokenizer"
    torch.manual_seed(config.seed)
    if config.model != TINY:
        from xmodal.train.hf import HFDualEncoder

        model = HFDualEncoder(Path(config.model))
        if not (tokenizer_dir / "tokenizer.json").is_file():
            model.save_tokenizer(tokenizer_dir)
        return model
    from tokenizers import Tokenizer

    from xmodal.train.tiny import TinyConfig, TinyDualEncoder, train_bpe_tokenizer

    if not (tokenizer_dir / "tokenizer.json").is_file():
        train_bpe_tokenizer(texts, tokenizer_dir)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    longest = max(len(e.ids) for e in tok.encode_batch(texts))
    cfg = TinyConfig(
        vocab_size=tok.get_vocab_size(),
        context_length=min(77, -(-longest // 8) * 8),
        image_size=config.image_size,
        embed_dim=config.embed_dim,
    )
    return TinyDualEncoder(cfg)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _optimizer(model: torch.nn.Module, loss_fn: ContrastiveLoss, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and kernels only (not on biases, norms, embeddings' scales, temperature)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2] + list(loss_fn.parameters())
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-6)


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, data: PairData, normalizer: Normalizer) -> dict[str, dict[str, float]]:
    """t2i and i2t R@1/5/10, MedR, MnR, MR of the model (fp32, eval mode) on in-memory pairs."""
    was_training = model.training
    model.eval()
    images = torch.cat(
        [model.encode_image(normalizer(data.pixels[i : i + EVAL_BATCH])) for i in range(0, len(data), EVAL_BATCH)]
    ).numpy()
    texts = torch.cat(
        [
            model.encode_text(
                torch.from_numpy(data.ids[i : i + EVAL_BATCH]), torch.from_numpy(data.mask[i : i + EVAL_BATCH])
            )
            for i in range(0, len(data.ids), EVAL_BATCH)
        ]
    ).numpy()
    model.train(was_training)
    return {
        "t2i": metrics_from_ranks(ranks_from_embeddings(texts, images, data.text_items)),
        "i2t": metrics_from_ranks(ranks_from_embeddings(images, texts, data.item_texts)),
    }


@dataclass
class Batch:
    """One step's image indices, caption index of each, and the attribute captions replacing some."""

    images: np.ndarray
    captions: np.ndarray
    partial: list[AttributeCaption | None]


class _Run:
    """State of one training run between epochs."""

    def __init__(self, config: TrainConfig, progress: Progress):
        self.config = config
        self.progress = progress
        self.out = Path(config.out)
        train_set = read_dataset(config.dataset, ReadOptions(split=config.train_split, limit=config.limit))
        self.model = build_model(config, train_set.texts)
        self.samples = train_set.texts[:4]  # captions for the export's ONNX-vs-torch check
        self.tokenizer = TextTokenizer(self.out / "tokenizer" / "tokenizer.json", self.model.text_cfg)
        self.normalizer = Normalizer(self.model.preprocess)
        self.train_data = load_pairs(train_set, self.model.preprocess, self.tokenizer, progress)
        if config.attribute_captions and self.train_data.scenes is None:
            raise DatasetFormatError(
                config.dataset, "attribute captions need a 'shapes' annotation on every image (as synth-shapes writes)"
            )
        self.val_data = None
        if config.val_split:
            val_set = read_dataset(config.dataset, ReadOptions(split=config.val_split, limit=config.val_limit))
            self.val_data = load_pairs(val_set, self.model.preprocess, self.tokenizer, progress)
        scale, bias = self.model.initial_logits()
        self.loss_fn = ContrastiveLoss(
            config.loss, logit_scale=scale, logit_bias=bias, modal_weight=config.modal_weight
        )
        self.optimizer = _optimizer(self.model, self.loss_fn, config)
        self.steps_per_epoch = max(1, len(self.train_data) // config.batch_size)
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, total, warmup))
        self.history: list[dict[str, Any]] = []
        self.epoch = 0

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }

    def save_checkpoint(self) -> Path:
        folder = self.out / CHECKPOINTS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch-{self.epoch:04d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)  # a crash leaves the previous checkpoint intact
        for old in sorted(folder.glob("epoch-*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink()
        return path

    def resume(self) -> int:
        """Load the latest checkpoint, if any; return the number of epochs it had done."""
        checkpoints = sorted((self.out / CHECKPOINTS).glob("epoch-*.pt"))
        if not checkpoints:
            return 0
        state = torch.load(checkpoints[-1], weights_only=False)
        changed = self.config.differences(state["config"])
        if changed:
            raise XmodalError(
                f"{self.out} holds a run with other settings ({', '.join(changed)}); "
                "resume it with the same settings, or train into a new folder"
            )
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.history, self.epoch = state["history"], state["epoch"]
        log.info("resumed %s after epoch %d", self.out, self.epoch)
        return self.epoch

    # -- epochs -----------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[Batch]:
        """Every step's images and captions: a permutation of the images, one random caption of each
        (a share of them replaced by attribute captions), drawn from a generator seeded by (seed, epoch)."""
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(self.train_data))
        texts = self.train_data.item_texts
        captions = np.array([texts[i][rng.integers(len(texts[i]))] for i in order])
        partial: list[AttributeCaption | None] = [None] * len(order)
        if self.config.attribute_captions:
            scenes = self.train_data.scenes
            for n in np.flatnonzero(rng.random(len(order)) < self.config.attribute_captions):
                if scenes[order[n]]:
                    partial[n] = attribute_caption(scenes[order[n]], rng)
        size = self.config.batch_size
        return [
            Batch(
                order[s * size : (s + 1) * size],
                captions[s * size : (s + 1) * size],
                partial[s * size : (s + 1) * size],
            )
            for s in range(self.steps_per_epoch)
        ]

    def step(self, batch: Batch) -> float:
        """One optimizer step over `accum` micro-batches; returns the mean loss."""
        data, total = self.train_data, 0.0
        bf16 = self.config.precision == "bf16"
        for part in np.array_split(np.arange(len(batch.images)), self.config.accum):
            images, partial = batch.images[part], [batch.partial[n] for n in part]
            ids, mask = data.ids[batch.captions[part]], data.mask[batch.captions[part]]
            positives = None
            if any(partial):
                replaced = [n for n, c in enumerate(partial) if c is not None]
                tokens = self.tokenizer.encode([partial[n].text for n in replaced])
                ids[replaced], mask[replaced] = tokens.ids, tokens.attention_mask
                positives = torch.from_numpy(batch_positives([data.scenes[i] for i in images], partial))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                image = self.model.encode_image(self.normalizer(data.pixels[images]))
                text = self.model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = self.loss_fn(image, text, positives) / self.config.accum
            loss.backward()
            total += float(loss.detach())
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def run_epoch(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.model.train()
        self.progress.start(f"epoch {self.epoch + 1}/{self.config.epochs}", self.steps_per_epoch)
        losses = []
        for batch in self.batches(self.epoch):
            losses.append(self.step(batch))
            self.progress.advance()
        self.epoch += 1
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "loss": float(np.mean(losses)),
            "lr": self.scheduler.get_last_lr()[0],
            "logit_scale": float(self.loss_fn.scale.detach()),
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        if self.val_data is not None:
            record["val"] = evaluate_pairs(self.model, self.val_data, self.normalizer)
        self.history.append(record)
        return record

    def export(self) -> Path:
        model = self.model.eval()
        visual, textual = model.towers()
        spec = model.export_spec()
        spec.metadata.update(
            {
                "name": self.config.name,
                "trained": {
                    "loss": self.config.loss,
                    "epochs": self.config.epochs,
                    "attribute_captions": self.config.attribute_captions,
                },
            }
        )
        if self.history and "val" in self.history[-1]:
            spec.metadata["trained"]["val"] = self.history[-1]["val"]

        def save_tokenizer(folder: Path) -> None:
            for file in (self.out / "tokenizer").iterdir():
                shutil.copy2(file, folder / file.name)

        with torch.no_grad():
            return export_towers(
                visual, textual, spec, save_tokenizer, self.config.export_dir, overwrite=True, sample_texts=self.samples
            )


def train(
    config: TrainConfig,
    progress: Progress | None = None,
    *,
    resume: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run in config.out, validate every epoch, export the model at the end."""
    out = Path(config.out)
    if not resume or not any((out / CHECKPOINTS).glob("epoch-*.pt")):
        # a fresh start learns its tokenizer again: an old one may come from other captions
        for stale in (out / CHECKPOINTS, out / "tokenizer"):
            shutil.rmtree(stale, ignore_errors=True)
    if config.threads is not None:
        if config.threads < 1:
            raise InvalidArgumentError("threads", config.threads, "an integer >= 1")
        torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(config, progress or NullProgress())
    done = run.resume() if resume else 0
    while run.epoch < config.epochs:
        record = run.run_epoch()
        run.save_checkpoint()
        write_log(out, config.to_dict(), run.history)
        log.info("epoch %d: %s", record["epoch"], record)
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(run.history, run.export(), out, done)
