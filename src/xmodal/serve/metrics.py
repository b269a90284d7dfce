"""Prometheus metrics of one server (its own registry, so several apps in one process stay apart).

Rates are left to Prometheus: embeddings per second is `rate(xmodal_embeddings_total[1m])`,
searches per second `rate(xmodal_searches_total[1m])`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INDEX_STATES = ("idle", "running", "done", "failed", "cancelled")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "xmodal_http_request_duration_seconds",
            "Time from request to the end of the response, per route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "xmodal_http_requests",
            "Requests answered, per route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.embeddings = Counter(
            "xmodal_embeddings",
            "Embeddings computed for requests (rate() gives embeddings per second)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "xmodal_inference_duration_seconds",
            "Time to decode and embed one request input",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "xmodal_model_loaded",
            "1 while a model tower is loaded, 0 after it was unloaded",
            ["model", "tower"],
            registry=self.registry,
        )
        self.model_loads = Counter(
            "xmodal_model_loads",
            "Model towers loaded (again after an idle unload)",
            ["model", "tower"],
            registry=self.registry,
        )

        self.searches = Counter(
            "xmodal_searches",
            "Library searches answered, by what they searched with: text, image, item or combined"
            " (rate() gives searches per second)",
            ["kind"],
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "xmodal_search_duration_seconds",
            "Time to answer one library search (query embedding, index search, results)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_state = Enum(
            "xmodal_index_run_state",
            "State of the index run started over HTTP (idle until the first one)",
            states=list(INDEX_STATES),
            registry=self.registry,
        )
        self.index_files = Gauge(
            "xmodal_index_run_files",
            "Files the current (or last) index run has done, and the total it plans",
            ["count"],
            registry=self.registry,
        )

    def watch_library(self, counts: Callable[[], dict[str, dict[str, int]]]) -> None:
        """Report the library's items per type and status at every scrape (`counts`: Catalog.counts)."""
        self.registry.register(_LibraryItems(counts))

    def index_changed(self, state: str, done: int, total: int | None) -> None:
        self.index_state.state(state)
        self.index_files.labels("done").set(done)
        self.index_files.labels("total").set(total or 0)

    def observe_search(self, kind: str, seconds: float) -> None:
        self.searches.labels(kind).inc()
        self.search_seconds.labels(kind).observe(seconds)

    def model_changed(self, model: str, tower: str, loaded: bool) -> None:
        """ModelCache callback: a tower was loaded or unloaded."""
        self.model_loaded.labels(model, tower).set(1 if loaded else 0)
        if loaded:
            self.model_loads.labels(model, tower).inc()

    def observe_embedding(self, model: str, kind: str, seconds: float) -> None:
        self.embeddings.labels(model, kind).inc()
        self.inference_seconds.labels(model, kind).observe(seconds)


class _LibraryItems(Collector):
    """xmodal_library_items{type, status}, read from the catalog when scraped."""

    def __init__(self, counts: Callable[[], dict[str, dict[str, int]]]):
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "xmodal_library_items",
            "Items in the library by type and status (ok, failed, pending)",
            labels=["type", "status"],
        )
        for status, by_type in self.counts().items():
            for kind, n in by_type.items():
                family.add_metric([kind, status], n)
        yield family

    def describe(self) -> list:
        return []  # nothing to read at registration: the catalog is read at each scrape


class MetricsMiddleware:
    """Times every HTTP request and labels it with its route template (not the raw path, whose
    values would make one series per item id)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.request_seconds.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, route, str(status)).inc()
