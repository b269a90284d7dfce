"""Shared fixtures: model folders exported from random-init transformers checkpoints."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_chinese_clip_checkpoint, make_clip_checkpoint, make_siglip_checkpoint

# Caches inside the test run, never the user's. Set at import, before test modules import
# huggingface_hub (which reads HF_HOME once, at import time).
_CACHES = Path(tempfile.mkdtemp(prefix="xmodal-test-caches-"))
atexit.register(shutil.rmtree, _CACHES, ignore_errors=True)
os.environ["XMODAL_CACHE"] = str(_CACHES / "xmodal")
os.environ["HF_HOME"] = str(_CACHES / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _export(src: Path, out: Path, **kwargs) -> Path:
    from xmodal.models.export import export_hf_checkpoint

    return export_hf_checkpoint(src, out, **kwargs)


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init transformers CLIPModel with the real OpenAI CLIP tokenizer."""
    return make_clip_checkpoint(tmp_path_factory.mktemp("clip_ckpt"))


@pytest.fixture(scope="session")
def clip_model_dir(clip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That CLIP checkpoint exported to an xmodal/Immich model folder."""
    return _export(clip_checkpoint, tmp_path_factory.mktemp("clip_model") / "tiny-clip")


@pytest.fixture(scope="session")
def siglip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_siglip_checkpoint(tmp_path_factory.mktemp("siglip_ckpt"))


@pytest.fixture(scope="session")
def siglip_model_dir(siglip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(siglip_checkpoint, tmp_path_factory.mktemp("siglip_model") / "tiny-siglip")


@pytest.fixture(scope="session")
def chinese_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chinese_clip_checkpoint(tmp_path_factory.mktemp("cclip_ckpt"))


@pytest.fixture(scope="session")
def chinese_clip_model_dir(chinese_clip_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(chinese_clip_checkpoint, tmp_path_factory.mktemp("cclip_model") / "tiny-chinese-clip")


@pytest.fixture(scope="session")
def vitb32_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-init CLIPModel with the real ViT-B/32 geometry (CLIPConfig defaults)."""
    return make_clip_checkpoint(tmp_path_factory.mktemp("vitb32_ckpt"), full_geometry=True)


@pytest.fixture(scope="session")
def vitb32_model_dir(vitb32_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(vitb32_checkpoint, tmp_path_factory.mktemp("vitb32_model") / "vitb32")


@pytest.fixture(scope="session")
def synth_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Annotations (Karpathy JSON) of 120 synthetic shape images: 96 train, 12 val, 12 test, 5 captions each."""
    from xmodal.datasets import SynthConfig, generate_synth_shapes

    return generate_synth_shapes(tmp_path_factory.mktemp("synth_shapes"), SynthConfig(n=120, seed=5))


@pytest.fixture(scope="session")
def synth_karpathy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 random-noise images x 5 captions in Karpathy format, plus one missing and one broken image."""
    root = tmp_path_factory.mktemp("synth")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(24):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(root / "imgs" / f"{i:02d}.jpg")
        sentences = [{"raw": f"picture {i} seen in way {k}"} for k in range(5)]
        entries.append({"filepath": "imgs", "filename": f"{i:02d}.jpg", "split": "test", "sentences": sentences})
    (root / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    entries.append(
        {"filepath": "imgs", "filename": "broken.jpg", "split": "test", "sentences": [{"raw": "a broken picture"}]}
    )
    entries.append(
        {"filepath": "imgs", "filename": "absent.jpg", "split": "test", "sentences": [{"raw": "an absent picture"}]}
    )
    entries.append({"filepath": "imgs", "filename": "00.jpg", "split": "train", "sentences": [{"raw": "train"}]})
    (root / "dataset_synth.json").write_text(json.dumps({"dataset": "synth", "images": entries}))
    return root / "dataset_synth.json"


# The int8 weight recipe follows the CPU's int8 features. "no VNNI" is what an AVX2-only CPU (or
# AVX-512 without VNNI) reports: it gets 7-bit weights, whose products never saturate, so they
# compute on this CPU what such a CPU computes (test_models_int8 checks that under an emulated
# AVX2 CPU where qemu is installed).
INT8_CPU_FEATURES = {"this CPU": None, "no VNNI": {"AVX2": True, "AVX512BW": False, "AVX512VNNI": False}}


@pytest.fixture(params=list(INT8_CPU_FEATURES))
def int8_cpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The CPU kind xmodal's int8 recipe and check are chosen for: this one, or one without VNNI."""
    from xmodal.models import quantize

    features = INT8_CPU_FEATURES[request.param]
    cpu = quantize.cpu_int8() if features is None else quantize.CpuInt8.from_features("x86_64", features)
    monkeypatch.setattr(quantize, "cpu_int8", lambda: cpu)
    return cpu
