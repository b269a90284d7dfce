"""Where xmodal keeps things by default: the library folder and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir


def default_library_dir() -> Path:
    """$XMODAL_LIBRARY, else the platform's user data folder (e.g. ~/.local/share/xmodal/library)."""
    return Path(os.environ.get("XMODAL_LIBRARY") or Path(user_data_dir("xmodal")) / "library").expanduser()


def cache_root() -> Path:
    """$XMODAL_CACHE, else the platform's user cache folder (e.g. ~/.cache/xmodal)."""
    return Path(os.environ.get("XMODAL_CACHE") or user_cache_dir("xmodal")).expanduser()
