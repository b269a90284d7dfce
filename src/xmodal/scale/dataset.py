"""`embed_dataset`: embed a source into a sharded embeddings folder, on Ray or in this process.

On Ray, the shards to do become a `ray.data` dataset of one row per shard, mapped by an actor pool
holding one loaded model per worker (a CPU, or a GPU where the cluster has them); each actor runs
`embed_shard` — the ingest embed stage — and writes the shard's files itself, so the output folder
must be one every node sees (a local folder on one machine, a shared file system on a cluster).
Ray Data restarts an actor whose worker died and retries its shard, so a worker killed mid-shard
costs that shard's work only. Finished shards (a valid marker, same model, same items) are
skipped, so running the command again after any failure finishes the job.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xmodal import __version__
from xmodal.errors import InvalidArgumentError, XmodalError
from xmodal.models import load_model
from xmodal.models.embedder import Embedder
from xmodal.progress import NullProgress, Progress
from xmodal.scale.shards import (
    FORMAT,
    MANIFEST,
    EmbeddingsFolderError,
    read_marker,
    remove_temporaries,
    write_json_atomic,
)
from xmodal.scale.sources import ShardSpec, SourcePlan, plan_source
from xmodal.scale.worker import embed_shard
from xmodal.store.ingest.embed import EmbedConfig

log = logging.getLogger(__name__)

RAY_MODES = (
    "auto (a running cluster, else a local one; this process when Ray is not installed), local, "
    "off (this process, no Ray) or a cluster ADDRESS"
)


class RayUnavailableError(XmodalError):
    """Ray is needed for this run but is not installed (or cannot start)."""


@dataclass(frozen=True)
class EmbedDatasetOptions:
    """How to run: where (`ray`), how many workers and their resources, shard and batch sizes."""

    ray: str = "auto"
    num_workers: int | None = None  # default: one per CPU (or GPU) the cluster offers
    cpus_per_worker: int = 1
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs, else 0
    batch_size: int = 32
    shard_size: int = 1000
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("cpus_per_worker", "batch_size", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"--{name.replace('_', '-')}", value, "a whole number >= 1")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
            raise InvalidArgumentError("--num-workers", self.num_workers, "a whole number >= 1")
        if not self.ray:
            raise InvalidArgumentError("--ray", self.ray, RAY_MODES)


@dataclass
class EmbedDatasetReport:
    """What one run did: shards found, skipped as finished, embedded now; item counts over all shards."""

    out: str
    source: str
    model: str
    runner: str  # "in-process", or the Ray cluster and its workers
    shards: int = 0
    skipped: int = 0
    embedded: int = 0
    items: int = 0
    ok: int = 0
    failed: int = 0
    pending: int = 0
    captions: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = f", {self.ok / self.seconds:,.1f} images/s" if self.seconds and self.embedded else ""
        return (
            f"{self.items} items in {self.shards} shards ({self.skipped} already done, {self.embedded} embedded now): "
            f"{self.ok} embedded, {self.failed} failed, {self.pending} pending, {self.captions} captions "
            f"in {self.seconds:.1f} s{rate} -> {self.out}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def embed_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike,
    options: EmbedDatasetOptions | None = None,
    *,
    progress: Progress | None = None,
    shard_progress: Progress | None = None,
) -> EmbedDatasetReport:
    """Embed every item of `source` with `model` into the embeddings folder `out` (see shards.py),
    resuming a previous run into the same folder; writes the manifest once every shard is done."""
    options = options or EmbedDatasetOptions()
    started = time.perf_counter()
    plan = plan_source(source, options.shard_size)
    folder = Path(out).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    removed = remove_temporaries(folder)
    if removed:
        log.info("removed %d temporary files of an interrupted run", removed)
    embedder = load_model(model, precision=options.precision)
    done, todo = _split_finished(folder, plan, embedder.model_key)
    report = EmbedDatasetReport(str(folder), plan.description, embedder.name, "in-process", problems=plan.problems)
    report.shards, report.skipped = len(plan.shards), len(done)
    progress, shard_progress = progress or NullProgress(), shard_progress or NullProgress()
    shard_progress.start("shards", len(plan.shards))
    progress.start("items", plan.count)
    shard_progress.advance(len(done))
    progress.advance(sum(m["items"] for m in done.values()))
    config = EmbedConfig(
        batch_size=options.batch_size,
        workers=max(2, options.cpus_per_worker),
        types=frozenset({"image"}),
        skipped_reason="{type} files are not embedded by embed-dataset, which stores images and captions "
        "(xmodal index embeds them)",
    )
    for marker in _run(todo, embedder, str(model), folder, config, options, report):
        done[marker["shard"]] = marker
        report.embedded += 1
        shard_progress.advance(1)
        progress.advance(marker["items"])
    for key in ("items", "ok", "failed", "pending", "captions"):
        setattr(report, key, sum(m[key] for m in done.values()))
    report.seconds = time.perf_counter() - started
    write_json_atomic(folder / MANIFEST, _manifest(plan, done, embedder, str(model), options, report))
    return report


def _split_finished(folder: Path, plan: SourcePlan, model_key: str) -> tuple[dict[int, dict], list[ShardSpec]]:
    """Finished shards (index -> marker) and those still to do; a folder of another model or
    another source is refused rather than mixed."""
    done, todo = {}, []
    for spec in plan.shards:
        marker = read_marker(folder, spec.index)
        if marker is None:
            todo.append(spec)
            continue
        if marker["model_key"] != model_key:
            raise EmbeddingsFolderError(
                folder, f"holds embeddings of model {marker['model_key']}, not {model_key}; use another --out"
            )
        if marker["fingerprint"] != spec.fingerprint():
            raise EmbeddingsFolderError(
                folder, f"shard {spec.index} was made from other items than the source holds now; use another --out"
            )
        done[spec.index] = marker
    return done, todo


def _run(todo, embedder, model, folder, config, options, report):
    if not todo:
        return
    mode = options.ray
    if mode == "auto" and importlib.util.find_spec("ray") is None:
        log.warning("Ray is not installed (pip install 'xmodal[ray]'): embedding in this process")
        mode = "off"
    if mode == "off":
        for spec in todo:
            yield embed_shard(spec, embedder, folder, config)
        return
    yield from _run_on_ray(todo, model, folder, config, options, report)


def _run_on_ray(todo: list[ShardSpec], model: str, folder: Path, config: EmbedConfig, options, report):
    ray = _connect(options.ray)
    try:
        import ray.data

        resources = ray.cluster_resources()
        gpus = options.gpus_per_worker
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        slots = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / options.cpus_per_worker
        workers = options.num_workers or max(1, int(slots))
        workers = min(workers, len(todo))
        nodes = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]})
        report.runner = (
            f"Ray ({len(nodes)} nodes at {', '.join(nodes)}; {workers} workers x {options.cpus_per_worker} CPU, "
            f"{gpus:g} GPU)"
        )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        rows = ray.data.from_items([{"spec": s.to_json()} for s in todo], override_num_blocks=len(todo))
        mapped = rows.map_batches(
            ShardActor,
            fn_constructor_kwargs={
                "model": model,
                "precision": options.precision,
                "folder": str(folder),
                "config": asdict(config),
                "threads": options.cpus_per_worker,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=options.cpus_per_worker,
            num_gpus=gpus,
        )
        for row in mapped.iter_rows():
            yield json.loads(row["marker"])
    finally:
        ray.shutdown()


def _connect(mode: str):
    """Join the cluster `mode` names (or start a local one); the ray module, initialised."""
    if mode == "auto" and not _cluster_address_known():
        mode = "local"
    if mode == "local":
        # A one-machine runtime stays on the loopback interface (Ray would use the machine's network
        # address); Ray reads this when it is imported, and a local runtime needs no other node.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "Ray is not installed: pip install 'xmodal[ray]' (or run with --ray off, in this process)"
        ) from None
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if mode == "local":
        ray.init(address="local", **quiet)
    elif mode == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            log.info("no running Ray cluster found: starting a local one")
            ray.init(address="local", **quiet)
    else:
        try:
            ray.init(address=mode, **quiet)
        except (ConnectionError, ValueError) as exc:
            raise InvalidArgumentError("--ray", mode, f"{RAY_MODES} ({exc})") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _cluster_address_known() -> bool:
    """Whether `ray.init(address="auto")` would find a cluster: RAY_ADDRESS, or the address file
    `ray start --head` leaves on this machine, naming a head that accepts connections."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        try:
            address = Path(tempfile.gettempdir(), "ray", "ray_current_cluster").read_text().strip()
        except OSError:
            return False
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


class ShardActor:
    """A Ray Data actor: loads the model once, then embeds one shard per call."""

    def __init__(self, model: str, precision: str, folder: str, config: dict, threads: int):
        self.embedder: Embedder = load_model(model, precision=precision, threads=threads)
        self.folder = Path(folder)
        self.config = EmbedConfig(**config)

    def __call__(self, batch: dict) -> dict:
        markers = []
        for text in batch["spec"]:
            marker = embed_shard(ShardSpec.from_json(str(text)), self.embedder, self.folder, self.config)
            markers.append(json.dumps(marker))
        return {"marker": markers}


def _manifest(
    plan: SourcePlan, done: dict[int, dict], embedder: Embedder, model: str, options, report: EmbedDatasetReport
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "xmodal": __version__,
        "model": {
            "key": embedder.model_key,
            "name": embedder.name,
            "source": model,
            "precision": embedder.precision,
            "family": embedder.family,
            "dim": embedder.dim,
        },
        "source": {"description": plan.description, "kind": plan.kind, "problems": plan.problems[:100]},
        "settings": {
            "batch_size": options.batch_size,
            "shard_size": options.shard_size,
            "dtype": "float16",
            "runner": report.runner,
        },
        "counts": {k: getattr(report, k) for k in ("items", "ok", "failed", "pending", "captions")}
        | {"shards": len(plan.shards)},
        "shards": [
            {k: done[i][k] for k in ("shard", "items", "ok", "failed", "pending", "captions", "files", "fingerprint")}
            for i in sorted(done)
        ],
        "updated_at": time.time(),
    }
