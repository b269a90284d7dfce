"""Training: losses against their formulas, a short from-scratch run that really learns (CLI), exact
resume after an interruption, fine-tuning a transformers CLIP with export parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import xmodal
from xmodal.cli import app
from xmodal.errors import XmodalError
from xmodal.eval import ReadOptions, evaluate_retrieval, read_dataset
from xmodal.train import TrainConfig, train
from xmodal.train.losses import ContrastiveLoss

runner = CliRunner()


def _unit_rows(seed: int, n: int = 4, d: int = 8) -> torch.Tensor:
    return F.normalize(torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d))).float(), dim=-1)


@torch.no_grad()
def test_infonce_and_siglip_match_their_formulas():
    image, text = _unit_rows(0), _unit_rows(1)
    cos = (image @ text.T).double()
    infonce = ContrastiveLoss("infonce", logit_scale=math.log(20.0))
    logits = 20.0 * cos
    by_rows = -torch.diagonal(logits.log_softmax(1)).mean()
    by_cols = -torch.diagonal(logits.log_softmax(0)).mean()
    assert float(infonce(image, text)) == pytest.approx(float((by_rows + by_cols) / 2), rel=1e-5)
    siglip = ContrastiveLoss("siglip", logit_scale=math.log(10.0), logit_bias=-2.0)
    z = 2 * torch.eye(4, dtype=torch.float64) - 1
    expected = -torch.log(torch.sigmoid(z * (10.0 * cos - 2.0))).sum() / 4
    assert float(siglip(image, text)) == pytest.approx(float(expected), rel=1e-5)
    modal = ContrastiveLoss("infonce", logit_scale=math.log(20.0), modal_weight=0.5)
    gap = float(((image.mean(0) - text.mean(0)) ** 2).mean())
    assert float(modal(image, text)) == pytest.approx(float(infonce(image, text)) + 0.5 * gap, rel=1e-5)
    # temperature is learnable and clamped at 100 like CLIP's
    assert ContrastiveLoss("infonce", logit_scale=math.log(500.0)).scale.item() == pytest.approx(100.0)
    assert sum(p.numel() for p in siglip.parameters()) == 2


@torch.no_grad()
def test_multi_positive_infonce_spreads_targets_over_every_matching_image():
    image, text = _unit_rows(2, n=3), _unit_rows(3, n=3)
    loss = ContrastiveLoss("infonce", logit_scale=math.log(10.0))
    # each caption fits only its own image: exactly plain InfoNCE
    diagonal = torch.eye(3, dtype=torch.bool)
    assert float(loss(image, text, diagonal)) == float(loss(image, text))
    # caption 0 ("a red circle") also fits image 1: images 0 and 1 share it as a positive
    positives = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = 10.0 * (image @ text.T).double()
    rows, cols = logits.log_softmax(1), logits.log_softmax(0)  # image->text, text->image
    i2t = -(rows[0, 0] + (rows[1, 0] + rows[1, 1]) / 2 + rows[2, 2]) / 3
    t2i = -((cols[0, 0] + cols[1, 0]) / 2 + cols[1, 1] + cols[2, 2]) / 3
    assert float(loss(image, text, positives)) == pytest.approx(float((i2t + t2i) / 2), rel=1e-6)
    # hand-made case with known logits: identical embeddings, so every logit is the scale
    same = F.normalize(torch.ones(2, 4), dim=-1)
    both = torch.tensor([[1, 1], [0, 1]], dtype=torch.bool)
    # rows: image 0 targets (1/2, 1/2) -> log 2, image 1 -> log 2; cols: text 0 -> log 2, text 1 (1/2, 1/2) -> log 2
    assert float(loss(same, same, both)) == pytest.approx(math.log(2), rel=1e-6)
    siglip = ContrastiveLoss("siglip", logit_scale=math.log(10.0), logit_bias=-2.0)
    z = 2 * positives.double() - 1
    expected = -torch.log(torch.sigmoid(z * (logits - 2.0))).sum() / 3
    assert float(siglip(image, text, positives)) == pytest.approx(float(expected), rel=1e-5)


def test_short_training_run_learns_far_above_chance(tmp_path):
    """A real learning check: from scratch on 800 training images, then validation recall vs chance."""
    data = tmp_path / "data"
    made = runner.invoke(app, ["datasets", "synth-shapes", "--out", str(data), "--n", "1000", "--seed", "1", "-q"])
    assert made.exit_code == 0, made.output
    args = ["train", f"karpathy:{data / 'dataset_synth_shapes.json'}", "--out", str(tmp_path / "run")]
    args += ["--epochs", "3", "--batch-size", "64", "--image-size", "32", "--embed-dim", "64", "--threads", "2", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("epoch ") == 3 and "t2i R@1" in result.output
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3] and (tmp_path / "run" / "training.png").stat().st_size > 0
    assert log["epochs"][-1]["loss"] < log["epochs"][0]["loss"]
    val = log["epochs"][-1]["val"]  # 100 validation images: chance R@1 = 0.01, R@10 = 0.1
    assert val["t2i"]["R@1"] > 0.1 and val["t2i"]["R@10"] > 0.5 and val["i2t"]["R@10"] > 0.4, val
    # the exported folder gives the same validation recall through ONNX Runtime as torch did
    encoder = xmodal.load_model(tmp_path / "run" / "model")
    assert encoder.dim == 64 and encoder.image_size == 32
    dataset = read_dataset(f"karpathy:{data / 'dataset_synth_shapes.json'}", ReadOptions(split="val"))
    exported = evaluate_retrieval(encoder, dataset).directions[0]
    assert exported.direction == "t2i" and exported.metrics["R@1"] == pytest.approx(val["t2i"]["R@1"], abs=0.02)


def _tiny_config(tmp_path, dataset, **kwargs) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, image_size=32, embed_dim=32, threads=1, val_limit=12)
    return TrainConfig(dataset=f"karpathy:{dataset}", out=tmp_path / "run", **{**base, **kwargs})


class _InterruptAt:
    """A Progress that raises KeyboardInterrupt at a step of one epoch, as a user's Ctrl-C would."""

    def __init__(self, epoch: int, step: int):
        self.task, self.step = f"epoch {epoch}/", step
        self.left: int | None = None

    def start(self, description: str, total: int | None) -> None:
        self.left = self.step if description.startswith(self.task) else None

    def advance(self, n: int = 1) -> None:
        if self.left is not None:
            self.left -= n
            if self.left == 0:
                raise KeyboardInterrupt


def _weights(run_dir):
    (last,) = sorted((run_dir / "checkpoints").glob("epoch-*.pt"))[-1:]
    return torch.load(last, weights_only=False)


@pytest.mark.parametrize(("loss", "attributes"), [("infonce", 0.0), ("siglip", 0.0), ("infonce", 0.5)])
def test_resume_after_interruption_is_exact(tmp_path, synth_shapes, loss, attributes):
    straight = train(_tiny_config(tmp_path / "a", synth_shapes, loss=loss, attribute_captions=attributes))
    config = _tiny_config(tmp_path / "b", synth_shapes, loss=loss, attribute_captions=attributes)
    with pytest.raises(KeyboardInterrupt):
        train(config, _InterruptAt(epoch=2, step=3))  # 6 steps per epoch
    assert sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir()) == ["epoch-0001.pt"]
    resumed = train(config)
    assert resumed.resumed_epochs == 1 and straight.resumed_epochs == 0
    a, b = _weights(tmp_path / "a" / "run"), _weights(tmp_path / "b" / "run")
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert [e["loss"] for e in straight.history] == [e["loss"] for e in resumed.history]
    assert straight.history[1]["val"] == resumed.history[1]["val"]
    with pytest.raises(XmodalError, match="other settings \\(lr\\)"):
        train(_tiny_config(tmp_path / "b", synth_shapes, loss=loss, attribute_captions=attributes, lr=0.1))


def test_finetune_transformers_clip_loss_falls_and_export_matches_torch(tmp_path, synth_shapes, clip_checkpoint):
    config = TrainConfig(
        dataset=f"karpathy:{synth_shapes}",
        out=tmp_path / "run",
        model=str(clip_checkpoint),
        epochs=2,
        batch_size=16,
        limit=64,
        val_limit=8,
        lr=5e-4,
        threads=2,
        precision="bf16",
        accum=2,
    )
    result = train(config)
    losses = [e["loss"] for e in result.history]
    assert losses[-1] < losses[0], losses
    encoder = xmodal.load_model(result.model_dir)
    assert encoder.dim == 32 and encoder.image_size == 64
    # the exported graphs compute what the fine-tuned torch weights compute, on real images and captions
    from xmodal.train.data import Normalizer
    from xmodal.train.hf import HFDualEncoder

    torch_model = HFDualEncoder(clip_checkpoint)
    torch_model.load_state_dict(_weights(tmp_path / "run")["model"])
    torch_model.eval()
    dataset = read_dataset(f"karpathy:{synth_shapes}", ReadOptions(split="val"))
    pixels = np.stack([_resized(p, encoder) for p in dataset.items[:4]])
    with torch.no_grad():
        ref_images = torch_model.encode_image(Normalizer(encoder.config.preprocess)(pixels)).numpy()
        tokens = encoder.tokenize(dataset.texts[:4])
        ref_texts = torch_model.encode_text(
            torch.from_numpy(tokens.ids), torch.from_numpy(tokens.attention_mask)
        ).numpy()
    assert np.min(np.sum(encoder.embed_images(dataset.items[:4]) * ref_images, axis=1)) > 0.9999
    assert np.min(np.sum(encoder.embed_texts(dataset.texts[:4]) * ref_texts, axis=1)) > 0.9999


def _resized(path, encoder) -> np.ndarray:
    from xmodal.models.preprocess import resize_for_model

    return np.asarray(resize_for_model(encoder.decode(path).image, encoder.config.preprocess), dtype=np.uint8)


@pytest.mark.parametrize(
    ("checkpoint", "loss"), [("siglip_checkpoint", "siglip"), ("chinese_clip_checkpoint", "infonce")]
)
def test_finetune_siglip_and_chinese_clip_export_loads(tmp_path, synth_shapes, checkpoint, loss, request):
    """One short epoch each: SigLIP starts from its own logit scale and bias; ChineseCLIP's textual
    graph takes input_ids + attention_mask; both export and embed into unit vectors."""
    src = request.getfixturevalue(checkpoint)
    config = TrainConfig(
        dataset=f"karpathy:{synth_shapes}",
        out=tmp_path / "run",
        model=str(src),
        loss=loss,
        epochs=1,
        batch_size=16,
        limit=32,
        val_split=None,
        threads=2,
    )
    result = train(config)
    assert len(result.history) == 1 and "val" not in result.history[0]
    state = _weights(tmp_path / "run")
    if loss == "siglip":
        assert set(state["loss"]) == {"logit_scale", "logit_bias"}
    encoder = xmodal.load_model(result.model_dir)
    vectors = encoder.embed_texts(["a small red circle at the top left"])
    assert vectors.shape == (1, encoder.dim) and abs(float(np.linalg.norm(vectors)) - 1) < 1e-5
