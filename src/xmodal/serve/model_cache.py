"""Models for the server: loaded on first use, kept while used, dropped after an idle time.

A client names a model (Immich sends e.g. ``ViT-B-32__openai``); only names xmodal knows or the
operator preloaded are served, so no request can make the server open an arbitrary folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from PIL import Image

from xmodal.errors import ModelNotFoundError
from xmodal.models import Embedder, known_models, load_model

log = logging.getLogger(__name__)

TOWERS = ("textual", "visual")
_CLEAN_NAME = str.maketrans(":\\/", "___", ".")


def clean_name(name: str) -> str:
    """A model name as Immich normalises it: the last path segment, ':' '\\' '/' -> '_', dots dropped."""
    return name.split("/")[-1].translate(_CLEAN_NAME)


@dataclass
class ModelState:
    """What the server reports about one cached model."""

    name: str
    source: str
    towers: list[str]
    pinned: bool
    idle_seconds: float
    in_use: int


@dataclass
class _Entry:
    source: str
    pinned: bool = False
    model: Embedder | None = None
    towers: set[str] = field(default_factory=set)
    last_used: float = 0.0
    in_use: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)  # one load at a time per model


class ModelCache:
    """Thread-safe cache of loaded models keyed by how they load (a known name or a folder).

    `use(name, tower)` loads the model and warms the tower on first use; `evict_idle()` drops
    models unused for `ttl` seconds (0 keeps them); preloaded models are pinned and never dropped.
    """

    def __init__(
        self,
        ttl: float,
        *,
        loader: Callable[[str], Embedder] = load_model,
        on_change: Callable[[str, str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl = ttl
        self._loader = loader
        self._on_change = on_change or (lambda model, tower, loaded: None)
        self._clock = clock
        self._aliases: dict[str, str] = {}  # cleaned name -> source, for preloaded models
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # -- names ----------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The source (known name or preloaded folder) a client-given model name refers to."""
        cleaned = clean_name(name)
        if cleaned in self._aliases:
            return self._aliases[cleaned]
        if cleaned in {m.name for m in known_models()}:
            return cleaned
        served = ", ".join(sorted(self._aliases)) or "none preloaded"
        raise ModelNotFoundError(
            f"model {name!r} is not served here (preloaded: {served}; other names must be known to"
            " `xmodal models list`)"
        )

    def add_alias(self, source: str) -> str:
        """Serve `source` (a known name or a model folder) under its cleaned name; returns that name."""
        from xmodal.models.registry import resolve_model

        _, display = resolve_model(source)
        name = clean_name(display)
        self._aliases[name] = source
        return name

    # -- loading --------------------------------------------------------------------------
    def preload(self, source: str, towers: tuple[str, ...] = TOWERS) -> str:
        """Load `source` with `towers` warm now and keep it loaded; returns the name it is served as."""
        name = self.add_alias(source)
        with self._entry(source, pin=True) as entry:
            for tower in towers:
                self._warm(entry, tower)
        return name

    @contextmanager
    def use(self, name: str, tower: str) -> Iterator[Embedder]:
        """The model a client names, loaded with `tower` warm; it is not evicted while in use."""
        with self._entry(self.resolve(name)) as entry:
            self._warm(entry, tower)
            assert entry.model is not None
            yield entry.model

    @contextmanager
    def _entry(self, source: str, *, pin: bool = False) -> Iterator[_Entry]:
        with self._lock:
            entry = self._entries.setdefault(source, _Entry(source))
            entry.pinned = entry.pinned or pin
            entry.in_use += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.in_use -= 1
                entry.last_used = self._clock()

    def _warm(self, entry: _Entry, tower: str) -> None:
        if tower in entry.towers:
            return
        with entry.lock:
            if entry.model is None:
                started = time.perf_counter()
                try:
                    entry.model = self._loader(entry.source)
                except Exception:
                    with self._lock:
                        if self._entries.get(entry.source) is entry and entry.model is None:
                            del self._entries[entry.source]
                    raise
                log.info("loaded model %s in %.2f s", entry.source, time.perf_counter() - started)
            if tower not in entry.towers:
                _open_tower(entry.model, tower)
                entry.towers.add(tower)
                self._on_change(entry.source, tower, True)

    # -- unloading ------------------------------------------------------------------------
    def evict_idle(self) -> list[str]:
        """Drop models idle for longer than the TTL (not pinned, not in use); returns their sources."""
        if self.ttl <= 0:
            return []
        now = self._clock()
        with self._lock:
            idle = [
                entry
                for entry in self._entries.values()
                if not entry.pinned
                and not entry.in_use
                and not entry.lock.locked()
                and now - entry.last_used > self.ttl
            ]
            for entry in idle:
                del self._entries[entry.source]
        for entry in idle:
            self._drop(entry)
            log.info("unloaded model %s after %.0f s idle", entry.source, now - entry.last_used)
        return [entry.source for entry in idle]

    def clear(self) -> None:
        """Drop every model (server shutdown)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        for tower in sorted(entry.towers):
            self._on_change(entry.source, tower, False)
        entry.model = None
        entry.towers.clear()

    def states(self) -> list[ModelState]:
        """Every model currently loaded (or loading)."""
        now = self._clock()
        names = {source: name for name, source in self._aliases.items()}
        with self._lock:
            return [
                ModelState(
                    name=names.get(entry.source, clean_name(entry.source)),
                    source=entry.source,
                    towers=sorted(entry.towers),
                    pinned=entry.pinned,
                    idle_seconds=0.0 if entry.in_use else round(now - entry.last_used, 3),
                    in_use=entry.in_use,
                )
                for entry in self._entries.values()
            ]


def _open_tower(model: Embedder, tower: str) -> None:
    """Open a tower's session now (and let the runtime allocate) by embedding one blank input."""
    if tower == "textual":
        model.embed_texts([""])
    else:
        model.embed_pixels(model.preprocess(Image.new("RGB", (32, 32)))[None])
