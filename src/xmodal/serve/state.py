"""What one server holds while it runs: settings, models, metrics, the inference thread pool."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import HTTPException

from xmodal.serve.metrics import Metrics
from xmodal.serve.model_cache import ModelCache
from xmodal.settings import Settings

T = TypeVar("T")


class RequestTimeoutError(HTTPException):
    """A request computed for longer than XMODAL_REQUEST_TIMEOUT."""

    def __init__(self, seconds: float):
        super().__init__(504, f"the request took longer than {seconds:g} s (XMODAL_REQUEST_TIMEOUT)")


@dataclass
class ServeState:
    """Kept in `app.state.xmodal`; the thread pool exists between the app's start and stop."""

    settings: Settings
    library: Any | None
    metrics: Metrics = field(default_factory=Metrics)
    models: ModelCache = field(init=False)
    pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self.models = ModelCache(self.settings.model_ttl, on_change=self.metrics.model_changed)

    @property
    def threads(self) -> int:
        return self.settings.serve_threads or os.cpu_count() or 1

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="xmodal-serve")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.models.clear()

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
