"""What one server holds while it runs: settings, models, metrics, the inference thread pool, and
when it serves a library: the library, its thumbnails and its index runs (or an embeddings folder)."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import HTTPException

from xmodal.library import Library
from xmodal.models.embedder import Embedder
from xmodal.scale.index import ShardedIndex
from xmodal.serve.indexing import IndexRuns, IndexRunState
from xmodal.serve.metrics import Metrics
from xmodal.serve.model_cache import ModelCache
from xmodal.serve.thumbnails import FOLDER as THUMBNAILS_FOLDER
from xmodal.serve.thumbnails import ThumbnailCache
from xmodal.settings import Settings

T = TypeVar("T")


class RequestTimeoutError(HTTPException):
    """A request computed for longer than XMODAL_REQUEST_TIMEOUT."""

    def __init__(self, seconds: float):
        super().__init__(504, f"the request took longer than {seconds:g} s (XMODAL_REQUEST_TIMEOUT)")


@dataclass(frozen=True)
class ServedEmbeddings:
    """An embeddings folder's index, opened memory-mapped, and the model that embeds its queries."""

    index: ShardedIndex
    encoder: Embedder


@dataclass
class ServeState:
    """Kept in `app.state.xmodal`; the thread pool exists between the app's start and stop."""

    settings: Settings
    library: Library | None
    embeddings: ServedEmbeddings | None = None
    metrics: Metrics = field(default_factory=Metrics)
    models: ModelCache = field(init=False)
    thumbnails: ThumbnailCache | None = field(init=False, default=None)
    index_runs: IndexRuns | None = field(init=False, default=None)
    pool: ThreadPoolExecutor | None = None
    # Set when the server begins to shut down: long answers (event streams) end so it can.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.models = ModelCache(self.settings.model_ttl, on_change=self.metrics.model_changed)
        if self.library is not None:
            self.thumbnails = ThumbnailCache(self.library.folder / THUMBNAILS_FOLDER)
            self.index_runs = IndexRuns(self.library, self.settings, on_change=self._index_changed)
            self.metrics.watch_library(lambda: self.library.catalog.counts())
            self._index_changed(self.index_runs.state)

    def _index_changed(self, run: IndexRunState) -> None:
        self.metrics.index_changed(run.state, run.done, run.total)

    @property
    def threads(self) -> int:
        return self.settings.serve_threads or os.cpu_count() or 1

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="xmodal-serve")

    def stop(self) -> None:
        if self.index_runs is not None:
            self.index_runs.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.models.clear()

    async def wait_closing(self, seconds: float) -> None:
        """Sleep up to `seconds`, less if the server begins to shut down meanwhile."""
        try:
            await asyncio.wait_for(self.closing.wait(), seconds)
        except TimeoutError:
            pass

    async def run(self, fn: Callable[..., T], *args: Any, timeout: bool = True) -> T:
        """Run blocking work (decoding, inference, catalog reads) on the pool, never on the event
        loop; past the request timeout the client gets 504 (work already started finishes unseen)."""
        if self.pool is None:
            raise RuntimeError("the server has not started")
        future = asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))
        limit = self.settings.request_timeout
        if not timeout or not limit:
            return await future
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise RequestTimeoutError(limit) from None
