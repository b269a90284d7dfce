"""Model names resolve to folders: hub cache (offline), clear errors when missing, CLI listing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import xmodal
from xmodal.errors import ModelNotFoundError
from xmodal.models.registry import known_models, repo_id_for


def _put_in_hub_cache(model_dir, name: str) -> None:
    """Lay a model folder out as huggingface_hub's cache does after a download."""
    hub = os.path.join(os.environ["HF_HOME"], "hub", f"models--immich-app--{name}")
    revision = "0123456789abcdef0123456789abcdef01234567"
    os.makedirs(os.path.join(hub, "refs"), exist_ok=True)
    with open(os.path.join(hub, "refs", "main"), "w") as fp:
        fp.write(revision)
    shutil.copytree(model_dir, os.path.join(hub, "snapshots", revision), dirs_exist_ok=True)


def test_known_names_map_to_immich_repos():
    names = {m.name: m for m in known_models()}
    for name in [
        "ViT-B-32__openai",
        "ViT-SO400M-16-SigLIP2-384__webli",
        "nllb-clip-large-siglip__v1",
        "XLM-Roberta-Large-Vit-B-16Plus",
    ]:
        assert name in names
    assert names["ViT-B-32__openai"].dim == 512
    assert names["ViT-SO400M-16-SigLIP2-384__webli"].dim == 1152
    assert repo_id_for("ViT-B-32__openai") == "immich-app/ViT-B-32__openai"
    assert repo_id_for("me/my-model") == "me/my-model"


def test_name_resolves_from_hub_cache_offline(clip_model_dir):
    _put_in_hub_cache(clip_model_dir, "ViT-B-16__openai")
    enc = xmodal.load_model("ViT-B-16__openai", offline=True)
    assert enc.name == "ViT-B-16__openai"
    assert enc.embed_texts(["a dog"]).shape == (1, enc.dim)
    assert np.isfinite(enc.embed_images([np.zeros((9, 9, 3), np.uint8)])).all()


def test_missing_model_offline_fails_fast_with_one_line():
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as info:
        xmodal.load_model("ViT-L-14__openai", offline=True)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert "'ViT-L-14__openai'" in message and "offline mode is on" in message
    assert "xmodal models pull ViT-L-14__openai" in message and "pass a model folder" in message


def test_missing_model_without_network_fails_fast():
    """Not offline, but the hub is unreachable (as on CI machines): an error within seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "3"}
    code = "import xmodal\ntry:\n    xmodal.load_model('ViT-L-14-336__openai')\nexcept xmodal.XmodalError as e:\n    print(e)\n"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert "cannot be reached" in out.stdout or "could not be fetched" in out.stdout, out.stdout + out.stderr


def test_cli_models_list_and_export(clip_checkpoint, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "xmodal", "models", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "ViT-B-32__openai" in out.stdout and "512" in out.stdout
    dest = tmp_path / "exported"
    subprocess.run(
        [sys.executable, "-m", "xmodal", "models", "export", str(clip_checkpoint), str(dest), "--int8"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert (dest / "visual" / "model.onnx").is_file() and (dest / "textual" / "tokenizer.json").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "xmodal", "models", "export", str(clip_checkpoint), str(dest)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
