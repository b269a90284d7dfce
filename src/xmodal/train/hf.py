"""Fine-tuning a transformers CLIPModel / SiglipModel / ChineseCLIPModel checkpoint folder.

The towers are the same modules the exporter traces (`xmodal.models.export.hf_towers`), and the
preprocessing and text settings come from the checkpoint exactly as `xmodal models export` reads
them, so what is trained is what gets exported.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xmodal.models.config import TextCfg
from xmodal.models.export import ExportSpec, hf_export_spec, hf_tokenizer_saver, hf_towers, load_hf_checkpoint


class HFDualEncoder(nn.Module):
    """A transformers dual encoder in training mode, with its export spec and tokenizer saver."""

    def __init__(self, src: Path, context_length: int | None = None):
        super().__init__()
        self.model, tokenizer = load_hf_checkpoint(src)
        self.spec = hf_export_spec(src, self.model, context_length)
        self._towers = hf_towers(self.model, self.spec.text_inputs)  # a tuple: not registered twice
        self.save_tokenizer = hf_tokenizer_saver(tokenizer, src)
        self.preprocess = self.spec.preprocess
        self.text_cfg = TextCfg(self.spec.context_length, self.spec.clean, pad_token=tokenizer.pad_token)
        self.text_inputs = self.spec.text_inputs

    def initial_logits(self) -> tuple[float | None, float | None]:
        """The checkpoint's own (logit_scale, logit_bias), where it has them."""
        scale, bias = (getattr(self.model, name, None) for name in ("logit_scale", "logit_bias"))
        return tuple(None if p is None else float(p.detach()) for p in (scale, bias))

    def towers(self) -> tuple[nn.Module, nn.Module]:
        return self._towers

    def export_spec(self) -> ExportSpec:
        return self.spec

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._towers[0](pixels)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.text_inputs == "text":
            return self._towers[1](ids)
        return self._towers[1](ids, mask)
