"""`xmodal embed-dataset` and `xmodal build-index`: collections larger than one machine."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from xmodal.cli.console import flag, progress_bars, say


def embed_dataset(
    source: str = typer.Argument(
        ...,
        help="A folder, a file list (.txt), a captions file (JSONL, CSV or any `xmodal eval` format, "
        "FORMAT:PATH), or webdataset .tar shards (a .tar, a folder of them, or a glob).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Embeddings folder to write (or to resume)."),
    model: str = typer.Option(..., "--model", "-m", help="Model name or folder (every worker loads it)."),
    ray: str = typer.Option(
        "auto", "--ray", help="auto (a running cluster, else a local one), local, off (this process) or ADDRESS."
    ),
    num_workers: int = typer.Option(None, "--num-workers", min=1, help="Model copies (default: one per CPU/GPU)."),
    cpus_per_worker: int = typer.Option(1, "--cpus-per-worker", min=1, help="CPUs (inference threads) per worker."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", help="GPUs per worker (default: 1 if any)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per model call."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Items per output shard (not for .tar sources)."),
    precision: str = typer.Option("fp32", help="fp32 (default), int8 (ONNX Runtime) or bf16 (OpenVINO)."),
    quiet: bool = flag("No progress bars.", "--quiet", "-q"),
    as_json: bool = flag("Print the report as JSON.", "--json"),
) -> None:
    """Embed a collection into sharded float16 embeddings + Parquet metadata, on Ray.

    Resumable: run the same command again after any failure and finished shards are skipped.
    Import the result into a library with `xmodal index --from-embeddings DIR`, or build a
    compressed index over it with `xmodal build-index DIR`.
    """
    from xmodal.scale.dataset import EmbedDatasetOptions
    from xmodal.scale.dataset import embed_dataset as run

    options = EmbedDatasetOptions(
        ray=ray,
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        batch_size=batch_size,
        shard_size=shard_size,
        precision=precision,
    )
    with progress_bars(2, quiet) as (shards, items):
        report = run(source, out, model, options, progress=items, shard_progress=shards)
    for problem in report.problems[:20]:
        say(f"skipped {problem}", err=True)
    say(json.dumps(report.to_dict(), indent=2) if as_json else f"{report.summary()} ({report.runner})")


def build_index(
    folder: Path = typer.Argument(..., help="Embeddings folder written by `xmodal embed-dataset`."),
    max_index_memory: str = typer.Option(
        "4G", "--max-index-memory", help="Memory the served index may use (e.g. 512M, 4G, 32G)."
    ),
    spec: str = typer.Option(None, "--spec", help="A Faiss factory string instead of choosing by memory."),
    target_recall: float = typer.Option(0.9, "--target-recall", help="Recall@10 vs exact search to tune nprobe for."),
    quiet: bool = flag("No progress bars.", "--quiet", "-q"),
) -> None:
    """Build a compressed Faiss index (IVF, PQ/OPQ) over an embeddings folder within a memory budget.

    Trained on a sample, filled shard by shard (never all vectors in memory), tuned for
    --target-recall against exact search, and saved in FOLDER/index; search it with
    `xmodal search "text" --embeddings FOLDER` (memory-mapped: its codes stay on disk).
    """
    from xmodal.scale.index import build_sharded_index

    with progress_bars(1, quiet) as (bar,):
        info = build_sharded_index(
            folder, max_memory=max_index_memory, spec=spec, target_recall=target_recall, progress=bar
        )
    say(
        f"index {info['spec']} ({info['params'] or 'exhaustive'}) of {info['count']:,} vectors: {info['index_bytes'] / 2**20:,.1f} MiB, "
        f"recall@10 {info['recall_at_10']:.3f} vs exact search, built in {info['seconds']:.1f} s -> {info['path']}"
    )
