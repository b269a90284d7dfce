"""One settings object for the whole process: `XMODAL_*` environment variables and the command-line
flags that override them, read once and validated.

Library code asks `current()`; the CLI calls `configure(**flags)` once before doing anything. A bad
value is an error naming the variable (or flag) and what it accepts, never silently ignored.

    XMODAL_LIBRARY          library folder (default: the platform's user data folder)
    XMODAL_CACHE            cache folder: int8 graphs, benchmark embeddings (default: user cache folder)
    XMODAL_THREADS          threads per inference session (default: the runtime's own choice)
    XMODAL_OFFLINE          never touch the network (HF_HUB_OFFLINE=1 does the same)
    XMODAL_MAX_IMAGE_BYTES  larger image files are recorded as failed, not read (default 256M)
    XMODAL_MAX_VIDEO_BYTES  the same for videos (default 64G)
    XMODAL_MAX_TEXT_BYTES   text documents: only their first bytes up to this are read (default 16M)
    XMODAL_MAX_TEXT_WINDOWS a document's model windows embedded at most; the rest is not (default 1024)
    XMODAL_VIDEO_FPS        frames sampled per second of video (default 1)
    XMODAL_VIDEO_MAX_FRAMES frames sampled per video at most, spread uniformly over long ones (default 120)
    XMODAL_VIDEO_MERGE      cosine above which consecutive frames merge into one segment (default 0.8)
    XMODAL_HOST / XMODAL_PORT / XMODAL_API_KEY   what `xmodal serve` binds to and the key it asks for
    XMODAL_MODEL_TTL        seconds an unused model stays loaded in `xmodal serve` (default 300; 0 = forever)
    XMODAL_SERVE_THREADS    inference threads of `xmodal serve` (default: one per CPU)
    XMODAL_PRELOAD          models `xmodal serve` loads at start and keeps loaded (comma-separated)
    XMODAL_MAX_UPLOAD_BYTES largest request body `xmodal serve` accepts (default 64M)
    XMODAL_MAX_QUERY_CHARS  longest text query `xmodal serve` accepts (default 1000)
    XMODAL_REQUEST_TIMEOUT  seconds a request may compute before it gets 504 (default 60; 0 = no limit)
    XMODAL_CORS_ORIGINS     origins allowed to call the HTTP API from a browser (default none: CORS off)
    XMODAL_TRUSTED_NETWORKS client networks that need no API key, e.g. 172.16.0.0/12 (default none)
    XMODAL_RKNN_TOOLKIT_PYTHON  a Python that has rknn-toolkit2 (default: xmodal makes one in the cache)
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from xmodal.errors import InvalidArgumentError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
MAX_VIDEO_FRAMES = 100_000  # frames sampled per video at most, whatever the settings say
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidArgumentError(name, text, "1/0, true/false, yes/no or on/off")


def parse_positive_int(text: str, name: str) -> int:
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgumentError(name, text, "a positive whole number")
    return int(value)


def parse_port(text: str, name: str) -> int:
    value = text.strip()
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InvalidArgumentError(name, text, "a port number from 1 to 65535")
    return int(value)


def parse_seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InvalidArgumentError(name, text, "a number of seconds >= 0")
    return value


def parse_size(text: str, name: str) -> int:
    """'512M', '2G', '1.5GiB', '1000' (bytes) -> bytes; binary units (1K = 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise InvalidArgumentError(name, text, "a size such as 800K, 256M, 4G or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_positive_float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InvalidArgumentError(name, text, "a number > 0")
    return value


def parse_cosine(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 2.0
    if not -1 <= value <= 1:
        raise InvalidArgumentError(name, text, "a cosine from -1 to 1")
    return value


def parse_path(text: str, name: str) -> Path:
    if not text.strip():
        raise InvalidArgumentError(name, text, "a folder path")
    return Path(text).expanduser()


def parse_list(text: str, name: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_networks(text: str, name: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks -> their normalized network strings."""
    return _networks(parse_list(text, name), name)


def _networks(items: tuple[str, ...], name: str) -> tuple[str, ...]:
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise InvalidArgumentError(name, item, "an IP address or network such as 172.16.0.0/12") from None
    return tuple(out)


def _origins(items: tuple[str, ...], name: str) -> tuple[str, ...]:
    for item in items:
        if item != "*" and not re.fullmatch(r"https?://[^/\s]+", item):
            raise InvalidArgumentError(name, item, "'*' or an origin such as https://photos.example.org (no path)")
    return items


def _text(text: str, name: str) -> str:
    return text


def _setting(env: str, parse: Callable[[str, str], Any], default: Any, flag: str | None = None) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "flag": flag})


def _default_library() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("xmodal")) / "library"


def _default_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("xmodal"))


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one xmodal process (see the module docstring for the variables)."""

    library: Path | None = _setting("XMODAL_LIBRARY", parse_path, None, "--library")
    cache: Path | None = _setting("XMODAL_CACHE", parse_path, None)
    threads: int | None = _setting("XMODAL_THREADS", parse_positive_int, None, "--threads")
    offline: bool = _setting("XMODAL_OFFLINE", parse_bool, False)
    max_image_bytes: int = _setting("XMODAL_MAX_IMAGE_BYTES", parse_size, 256 << 20)
    max_video_bytes: int = _setting("XMODAL_MAX_VIDEO_BYTES", parse_size, 64 << 30)
    max_text_bytes: int = _setting("XMODAL_MAX_TEXT_BYTES", parse_size, 16 << 20)
    max_text_windows: int = _setting("XMODAL_MAX_TEXT_WINDOWS", parse_positive_int, 1024)
    video_fps: float = _setting("XMODAL_VIDEO_FPS", parse_positive_float, 1.0, "--video-fps")
    video_max_frames: int = _setting("XMODAL_VIDEO_MAX_FRAMES", parse_positive_int, 120, "--video-max-frames")
    video_merge: float = _setting("XMODAL_VIDEO_MERGE", parse_cosine, 0.8, "--video-merge")
    host: str = _setting("XMODAL_HOST", _text, "127.0.0.1", "--host")
    port: int = _setting("XMODAL_PORT", parse_port, 8000, "--port")
    api_key: str | None = _setting("XMODAL_API_KEY", _text, None, "--api-key")
    model_ttl: float = _setting("XMODAL_MODEL_TTL", parse_seconds, 300.0, "--model-ttl")
    serve_threads: int | None = _setting("XMODAL_SERVE_THREADS", parse_positive_int, None)
    preload: tuple[str, ...] = _setting("XMODAL_PRELOAD", parse_list, (), "--preload")
    max_upload_bytes: int = _setting("XMODAL_MAX_UPLOAD_BYTES", parse_size, 64 << 20, "--max-upload")
    max_query_chars: int = _setting("XMODAL_MAX_QUERY_CHARS", parse_positive_int, 1000)
    request_timeout: float = _setting("XMODAL_REQUEST_TIMEOUT", parse_seconds, 60.0, "--request-timeout")
    cors_origins: tuple[str, ...] = _setting("XMODAL_CORS_ORIGINS", parse_list, (), "--cors-origin")
    trusted_networks: tuple[str, ...] = _setting("XMODAL_TRUSTED_NETWORKS", parse_networks, (), "--trusted-network")
    rknn_toolkit_python: Path | None = _setting("XMODAL_RKNN_TOOLKIT_PYTHON", parse_path, None, "--toolkit-python")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `env` (default: os.environ), then `overrides` (None values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(spec.metadata["env"])
            if raw is not None and raw != "":
                values[spec.name] = spec.metadata["parse"](raw, spec.metadata["env"])
        if not values.get("offline") and parse_bool(env.get("HF_HUB_OFFLINE", ""), "HF_HUB_OFFLINE"):
            values["offline"] = True
        return replace(cls(**values), **{k: v for k, v in overrides.items() if v is not None})

    def __post_init__(self) -> None:
        for name in ("preload", "cors_origins", "trusted_networks"):  # flags arrive as lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "trusted_networks", _networks(self.trusted_networks, self._label("trusted_networks")))
        _origins(self.cors_origins, self._label("cors_origins"))
        for name in ("threads", "serve_threads", "max_query_chars", "max_text_windows", "video_max_frames"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(self._label(name), value, "a positive whole number")
        for name in ("max_image_bytes", "max_video_bytes", "max_text_bytes", "max_upload_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidArgumentError(self._label(name), getattr(self, name), "a positive number of bytes")
        if not 1 <= self.port <= 65535:
            raise InvalidArgumentError(self._label("port"), self.port, "a port number from 1 to 65535")
        if self.video_max_frames > MAX_VIDEO_FRAMES:  # each frame can be a moment: the catalog holds ~1M per video
            raise InvalidArgumentError(
                self._label("video_max_frames"), self.video_max_frames, f"a whole number from 1 to {MAX_VIDEO_FRAMES:,}"
            )
        if not (isinstance(self.video_fps, (int, float)) and 0 < self.video_fps < float("inf")):
            raise InvalidArgumentError(self._label("video_fps"), self.video_fps, "a number > 0")
        if not (isinstance(self.video_merge, (int, float)) and -1 <= self.video_merge <= 1):
            raise InvalidArgumentError(self._label("video_merge"), self.video_merge, "a cosine from -1 to 1")
        for name in ("model_ttl", "request_timeout"):
            if not getattr(self, name) >= 0:
                raise InvalidArgumentError(self._label(name), getattr(self, name), "a number of seconds >= 0")

    def _label(self, name: str) -> str:
        spec = next(f for f in fields(self) if f.name == name)
        return spec.metadata["flag"] or spec.metadata["env"]

    @property
    def library_dir(self) -> Path:
        """The library folder: --library / $XMODAL_LIBRARY, else the user data folder."""
        return (self.library or _default_library()).expanduser()

    @property
    def cache_dir(self) -> Path:
        """The cache folder: $XMODAL_CACHE, else the user cache folder."""
        return (self.cache or _default_cache()).expanduser()

    def max_bytes(self, kind: str) -> int:
        """The size limit for files of a media kind ('image', 'video', 'text')."""
        return {"image": self.max_image_bytes, "video": self.max_video_bytes, "text": self.max_text_bytes}[kind]


_current: Settings | None = None
_lock = threading.Lock()


def current() -> Settings:
    """The process's settings: read from the environment on first use, then kept."""
    global _current
    with _lock:
        if _current is None:
            _current = Settings.from_env()
        return _current


def configure(**overrides: Any) -> Settings:
    """Re-read the environment and apply `overrides` (the CLI's flags); returns the new settings."""
    global _current
    settings = Settings.from_env(**overrides)
    with _lock:
        _current = settings
    return settings
