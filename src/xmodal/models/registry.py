"""Model names: shipped models, known Immich hub models, and folders; resolving and pulling them.

A name resolves, in order: an existing folder; a model shipped inside the package; a name of the
Immich catalogue (hub repo `immich-app/<name>`) or an explicit `org/repo`, fetched with
huggingface_hub into its standard cache.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from xmodal import settings
from xmodal.errors import ModelNotFoundError

# Only the files the loader reads: Immich repos also hold ARM NN / RKNN variants we never use.
MODEL_FILE_PATTERNS = [
    "config.json",
    "visual/model.onnx",
    "visual/model.onnx_data",
    "visual/*.onnx.data",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/model.onnx_data",
    "textual/*.onnx.data",
    "textual/*.json",
    "textual/*.txt",
]


@dataclass(frozen=True)
class KnownModel:
    """A catalogue entry: what a model is before it is downloaded."""

    name: str
    repo_id: str
    dim: int
    image_size: int
    family: str
    multilingual: bool
    shipped: bool = False


@lru_cache(maxsize=1)
def _catalogue() -> dict:
    return json.loads(resources.files("xmodal.data").joinpath("models.json").read_text())


def shipped_root() -> Path:
    """Folder holding the models shipped inside the package."""
    return Path(str(resources.files("xmodal"))) / "shipped"


def shipped_models() -> dict[str, Path]:
    """Shipped model name -> folder."""
    root = shipped_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def known_models() -> list[KnownModel]:
    """Every model xmodal knows by name: shipped ones first, then the Immich catalogue."""
    entries = []
    for name, folder in shipped_models().items():
        cfg = json.loads((folder / "config.json").read_text())
        size = (cfg.get("vision_cfg") or {}).get("image_size", 0)
        entries.append(KnownModel(name, "", cfg["embed_dim"], size, "xmodal", False, shipped=True))
    org = _catalogue()["hub_org"]
    for name, info in _catalogue()["models"].items():
        entries.append(
            KnownModel(name, f"{org}/{name}", info["dim"], info["image_size"], info["family"], info["multilingual"])
        )
    return entries


def repo_id_for(name: str) -> str:
    """Hub repo of a model name: `org/repo` as given, else the Immich organisation's repo."""
    return name if "/" in name else f"{_catalogue()['hub_org']}/{name}"


def hub_offline(offline: bool | None) -> bool:
    """Offline when asked, or when the settings say so (XMODAL_OFFLINE / HF_HUB_OFFLINE)."""
    return settings.current().offline if offline is None else offline


def resolve_model(name_or_path: str | os.PathLike, *, offline: bool | None = None) -> tuple[Path, str]:
    """Find (folder, display name) for a folder, a shipped model, a known name or a hub repo."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path, path.resolve().name
    if text in shipped_models():
        return shipped_models()[text], text
    if path.exists() or text.startswith((".", "/", "~")) or ("/" in text and not _looks_like_repo(text)):
        raise ModelNotFoundError(f"model folder {text!r} does not exist")
    known = {m.name for m in known_models()}
    if text not in known and "/" not in text:
        close = difflib.get_close_matches(text, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `xmodal models list` shows the known names"
        raise ModelNotFoundError(f"unknown model {text!r}{hint} (or pass a model folder, or an org/repo on the hub)")
    return pull_model(text, offline=offline), text


def _looks_like_repo(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith("/")


def pull_model(name: str, *, offline: bool | None = None, cache_dir: str | None = None) -> Path:
    """Download (or find in the hub cache) the files of a hub model; return its folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = repo_id_for(name)
    local_only = hub_offline(offline)
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=MODEL_FILE_PATTERNS, local_files_only=local_only, cache_dir=cache_dir
        )
    except LocalEntryNotFoundError:
        how = "offline mode is on" if local_only else "the Hugging Face hub cannot be reached"
        folder_note = " (and there is no folder of that name)" if "/" in name else ""
        raise ModelNotFoundError(
            f"model {name!r} ({repo_id}) is not in the local Hugging Face cache{folder_note} and {how}; "
            f"run `xmodal models pull {name}` where there is network (then copy the cache), "
            "or pass a model folder"
        ) from None
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"model {name!r} ({repo_id}) could not be fetched: {exc}") from None
    return Path(folder)


def cached_folder(name: str) -> Path | None:
    """Folder of a hub model already in the local cache, or None (never touches the network)."""
    try:
        return pull_model(name, offline=True)
    except ModelNotFoundError:
        return None
