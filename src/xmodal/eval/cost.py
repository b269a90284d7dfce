"""What a model costs to run on this machine: embeddings per second and CPU time per item (image
and text towers, batch 1 and the run's batch), load time and resident memory (each in a fresh
process), file size per tower, and the exact-search scan rate a library of its vectors would see.

Every timing is taken in rounds that interleave the compared models (the order rotates each round),
so a burst of load from other jobs hits all of them alike; each keeps every round's figure, and
reports the best and the median.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xmodal.errors import MeasurementError
from xmodal.models.encoder import Encoder, l2_normalize
from xmodal.progress import NullProgress, Progress

log = logging.getLogger(__name__)

MIN_CALLS = 2  # calls per timed round, however long each takes
PROBE_TIMEOUT_S = 900  # a fresh process loading a multi-GB model from a cold disk


@dataclass
class Measured:
    """One operation's figure per round (items/s or seconds) with the CPU time it took per item."""

    values: list[float] = field(default_factory=list)
    cpu_ms_per_item: list[float] = field(default_factory=list)

    def best(self, higher_is_better: bool = True) -> float:
        """The best round (NaN when no round succeeded)."""
        if not self.values:
            return math.nan
        return max(self.values) if higher_is_better else min(self.values)

    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def to_dict(self) -> dict:
        return {"rounds": self.values, "cpu_ms_per_item": self.cpu_ms_per_item}


@dataclass
class Workload:
    """What one model is timed on: a preprocessed image batch and a caption batch of the run's size."""

    encoder: Encoder
    pixels: np.ndarray  # (B, 3, S, S) float32, the model's own preprocessing of real images
    texts: list[str]  # B captions
    language: str | None = None

    def operations(self) -> dict[str, tuple[Callable[[], object], int]]:
        """Name -> (call, items per call): each tower at batch 1 and at the run's batch."""
        enc, batch = self.encoder, len(self.texts)
        ops = {}
        for size in dict.fromkeys((1, batch)):
            pixels, texts = self.pixels[:size], self.texts[:size]
            ops[f"image@{size}"] = (lambda p=pixels: enc.embed_pixels(p), size)
            ops[f"text@{size}"] = (lambda t=texts: enc.embed_texts(t, self.language, batch_size=len(t)), size)
        return ops


def time_call(call: Callable[[], object], items: int, seconds: float) -> tuple[float, float]:
    """(items/s, CPU-ms per item) of `call` repeated for `seconds` (at least MIN_CALLS calls) after
    one warm-up call. CPU time is the whole process's, every thread, so a runtime's worker threads count."""
    call()
    calls = 0
    cpu_start, start = time.process_time(), time.perf_counter()
    while calls < MIN_CALLS or time.perf_counter() - start < seconds:
        call()
        calls += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return calls * items / wall, 1000 * cpu / (calls * items)


def rotated(n: int, round_number: int) -> list[int]:
    """0..n-1 starting at round_number mod n: each model takes each position in turn."""
    return [(round_number + i) % n for i in range(n)] if n else []


def measure_speed(
    workloads: Sequence[Workload], *, rounds: int, seconds: float, progress: Progress | None = None
) -> list[dict[str, Measured]]:
    """Per workload, per operation (`image@1`, `image@B`, `text@1`, `text@B`): items/s of every round."""
    progress = progress or NullProgress()
    results: list[dict[str, Measured]] = [{} for _ in workloads]
    progress.start("timing the towers", rounds * len(workloads))
    for r in range(rounds):
        for i in rotated(len(workloads), r):
            for name, (call, items) in workloads[i].operations().items():
                rate, cpu_ms = time_call(call, items, seconds)
                slot = results[i].setdefault(name, Measured())
                slot.values.append(rate)
                slot.cpu_ms_per_item.append(cpu_ms)
            progress.advance()
    return results


@dataclass
class ProcessCost:
    """Load time and resident memory of one model, each round in a fresh process."""

    load_s: Measured
    model_rss_bytes: int | None  # highest over the rounds: a high-water mark is what a host must provide
    peak_rss_bytes: int | None
    baseline_rss_bytes: int | None
    rounds: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def probe_model(encoder: Encoder, texts: Sequence[str], batch_size: int, language: str | None = None) -> dict:
    """One fresh process: load `encoder`'s model at its precision, embed a batch of each kind,
    report load time and memory (see xmodal.eval.model_probe)."""
    request = {
        "folder": str(encoder.config.folder),
        "precision": encoder.precision,
        "runtime": encoder.runtime,
        "threads": encoder.threads,
        "batch_size": batch_size,
        "texts": list(texts),
        "language": language,
    }
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the xmodal this process runs, in the child too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "xmodal.eval.model_probe", json.dumps(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise MeasurementError(
            f"{encoder.name} ({encoder.precision}): measuring process still loading after {PROBE_TIMEOUT_S} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise MeasurementError(f"{encoder.name} ({encoder.precision}): measuring process failed: {tail}")
    return json.loads(lines[-1])


def measure_processes(
    workloads: Sequence[Workload], *, rounds: int, progress: Progress | None = None
) -> list[ProcessCost]:
    """Load time and memory of every workload's model, fresh processes interleaved in rounds."""
    progress = progress or NullProgress()
    runs: list[list[dict]] = [[] for _ in workloads]
    progress.start("loading each model in a fresh process", rounds * len(workloads))
    for r in range(rounds):
        for i in rotated(len(workloads), r):
            w = workloads[i]
            try:
                runs[i].append(probe_model(w.encoder, w.texts, len(w.texts), w.language))
            except MeasurementError as exc:  # one failed round leaves the others (and the other models) standing
                log.warning("%s", exc)
                runs[i].append({"error": str(exc)})
            progress.advance()
    return [_process_cost(rs) for rs in runs]


def _process_cost(runs: list[dict]) -> ProcessCost:
    def highest(key: str) -> int | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return max(values) if values else None

    return ProcessCost(
        load_s=Measured([r["load_s"] for r in runs if "load_s" in r]),
        model_rss_bytes=highest("model_rss_bytes"),
        peak_rss_bytes=highest("peak_rss_bytes"),
        baseline_rss_bytes=highest("baseline_rss_bytes"),
        rounds=runs,
    )


def graph_file_bytes(path: Path) -> int:
    """Bytes of an ONNX graph with its external-data files (siblings named after it, e.g. model.onnx_data)."""
    total = path.stat().st_size
    for sibling in path.parent.iterdir():
        if sibling != path and sibling.is_file() and sibling.name.startswith(path.stem) and sibling.suffix != ".json":
            total += sibling.stat().st_size
    return total


@dataclass
class ScanRate:
    """Exact-search time of one query over a sample of `rows` stored vectors of one dimension."""

    dim: int
    rows: int
    seconds: Measured  # per query, every round
    index_bytes_per_vector: float  # the exact index's own accounting: float16 codes + int64 id

    def seconds_per_query(self, items: int, best: bool = True) -> float:
        """Expected time of one exact query over `items` vectors: the scan is linear in the rows."""
        per_row = (self.seconds.best(higher_is_better=False) if best else self.seconds.median()) / self.rows
        return per_row * items

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "rows": self.rows,
            "seconds_per_query": self.seconds.values,
            "index_bytes_per_vector": self.index_bytes_per_vector,
        }


def measure_scan_rates(
    dims: Sequence[int],
    *,
    sample_bytes: int,
    rounds: int,
    seconds: float,
    k: int = 10,
    progress: Progress | None = None,
) -> dict[int, ScanRate]:
    """Time one top-k query on xmodal's exact index (the library's default up to a million items)
    over random unit vectors of each dimension, `sample_bytes` of float16 codes per index: far more
    than the CPU caches hold, so the measured rate is the memory-bound rate a large library sees."""
    from xmodal.store.vector_index import create_index

    progress = progress or NullProgress()
    dims = list(dict.fromkeys(dims))
    rng = np.random.default_rng(0)
    indexes, queries = {}, {}
    for dim in dims:
        index = create_index("exact", dim)
        rows = max(1, sample_bytes // (2 * dim))
        for start in range(0, rows, 65_536):
            n = min(65_536, rows - start)
            index.add(np.arange(start, start + n), l2_normalize(rng.standard_normal((n, dim), dtype=np.float32)))
        indexes[dim] = index
        queries[dim] = l2_normalize(rng.standard_normal((1, dim), dtype=np.float32))
    timings = {dim: Measured() for dim in dims}
    progress.start("timing exact search", rounds * len(dims))
    for r in range(rounds):
        for i in rotated(len(dims), r):
            dim = dims[i]
            rate, _ = time_call(lambda d=dim: indexes[d].search(queries[d], k), 1, seconds)
            timings[dim].values.append(1.0 / rate)
            progress.advance()
    return {
        dim: ScanRate(dim, len(indexes[dim]), timings[dim], indexes[dim].memory_bytes() / len(indexes[dim]))
        for dim in dims
    }
