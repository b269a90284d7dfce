"""Contrastive losses for dual encoders: CLIP's InfoNCE with a learnable temperature and SigLIP's
sigmoid loss with a learnable bias, plus an optional modal-mean regularizer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from xmodal.errors import InvalidArgumentError

LOSSES = ("infonce", "siglip")
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100


class ContrastiveLoss(nn.Module):
    """Loss of a batch of (image, text) unit embeddings; row i of each is a positive pair, and `positives`
    (images x texts, bool) may mark more: captions that are true of several images of the batch.

    infonce: symmetric cross-entropy over scale * cosine logits (scale = exp(logit_scale) <= 100), the
    target of each row spread evenly over its positives (multi-positive InfoNCE; plain InfoNCE when
    the positives are the diagonal).
    siglip: -mean over images of sum_j log sigmoid(z_ij * (scale * cos_ij + bias)), z = +1 on positives, else -1.
    modal_weight > 0 adds weight * ||mean(images) - mean(texts)||^2 / D, pulling the modalities' centres together.
    """

    def __init__(
        self,
        kind: str = "infonce",
        *,
        logit_scale: float | None = None,
        logit_bias: float | None = None,
        modal_weight: float = 0.0,
    ):
        super().__init__()
        if kind not in LOSSES:
            raise InvalidArgumentError("loss", kind, LOSSES)
        self.kind = kind
        default_scale = math.log(1 / 0.07) if kind == "infonce" else math.log(10.0)
        self.logit_scale = nn.Parameter(torch.tensor(default_scale if logit_scale is None else logit_scale))
        if kind == "siglip":
            self.logit_bias = nn.Parameter(torch.tensor(-10.0 if logit_bias is None else logit_bias))
        self.modal_weight = modal_weight

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.scale * image.float() @ text.float().T
        if positives is None:
            positives = torch.eye(len(image), dtype=torch.bool, device=image.device)
        if self.kind == "infonce":
            targets = positives.float()
            loss = (
                F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
                + F.cross_entropy(logits.T, targets.T / targets.sum(0)[:, None])
            ) / 2
        else:
            signs = 2 * positives.float() - 1
            loss = -F.logsigmoid(signs * (logits + self.logit_bias)).sum() / len(image)
        if self.modal_weight:
            loss = loss + self.modal_weight * F.mse_loss(image.float().mean(0), text.float().mean(0))
        return loss
