"""`xmodal compare`: quality and cost of models x precisions on this machine, one report."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import typer
from rich.markup import escape

from xmodal.cli.console import console, err_console, progress_bar
from xmodal.cli.eval import BATCH_SIZE_OPTION, CACHE_FILE_OPTION, NO_CACHE_OPTION, QUIET_OPTION


def compare(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model name or folder; repeat to compare models."),
    precision: list[str] = typer.Option(
        ["fp32"], "--precision", "-p", help="fp32, int8 or bf16; repeat to compare precisions of every model."
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Retrieval dataset FORMAT:PATH (karpathy, coco, flickr, cn-clip, msvd, jsonl, csv; a bare PATH guesses).",
    ),
    classify: Path = typer.Option(
        None, "--classify", help="Zero-shot classification dataset too: a folder per class, or a path,label CSV."
    ),
    templates: str = typer.Option("imagenet", help="With --classify: imagenet (CLIP's 80), simple, or a JSON file."),
    classnames: Path = typer.Option(None, help="With --classify: JSON class names (a list or {label: name})."),
    split: str = typer.Option("test", help="Split of the retrieval dataset; 'all' for every record."),
    limit: int = typer.Option(None, min=1, help="Use only the first N images/videos (and N classified images)."),
    images: Path = typer.Option(None, help="Folder the retrieval dataset's file names are relative to."),
    quality: str = typer.Option(
        None,
        help="Metric the front and recommendation rank by: R@1, R@5, R@10, MR (text->image; "
        "or DIRECTION:METRIC, e.g. i2t:R@10), acc1, acc5. Default: R@10, or acc1 when only classifying.",
    ),
    tolerance: float = typer.Option(0.01, min=0, help="Quality within this of the best counts as as good."),
    rounds: int = typer.Option(3, min=1, help="Timing rounds, interleaved across models; best and median kept."),
    seconds: float = typer.Option(1.0, min=0.01, help="Seconds per timed operation and round."),
    library_size: list[int] = typer.Option(
        [100_000, 1_000_000], "--library-size", "-n", min=1, help="Library sizes to size for; repeatable."
    ),
    scan_mib: int = typer.Option(256, min=1, help="MiB of float16 vectors the exact-search scan is timed on."),
    out: Path = typer.Option(None, help="Report folder (default: ./xmodal-compare-DATE-TIME)."),
    no_cache: bool = NO_CACHE_OPTION,
    cache_file: Path = CACHE_FILE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    frames: int = typer.Option(8, min=1, help="Frames sampled per video."),
    language: str = typer.Option(None, help="Caption language for multilingual (NLLB) models, e.g. en, zh."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Choose a model: R@K, MedR, MnR (and zero-shot accuracy) of every model x precision beside its
    speed, CPU time, memory, file sizes, load time and vector size measured here, a Pareto plot of
    quality against images/s, a recommendation computed from the numbers, and library sizing."""
    from xmodal.eval.cache import EmbeddingCache
    from xmodal.eval.compare import CompareOptions, compare_models
    from xmodal.eval.compare_report import markdown_report, write_comparison
    from xmodal.eval.datasets import ReadOptions, read_dataset
    from xmodal.eval.datasets.classification import read_classification
    from xmodal.eval.zeroshot import load_templates

    if dataset is None and classify is None:
        raise typer.BadParameter("give --dataset, --classify, or both")
    options = CompareOptions(
        batch_size=batch_size,
        rounds=rounds,
        seconds=seconds,
        library_sizes=tuple(library_size),
        scan_mib=scan_mib,
        quality=quality,
        tolerance=tolerance,
        frames=frames,
    )
    read = ReadOptions(split=None if split == "all" else split, limit=limit, media_root=images)
    with nullcontext() if no_cache else EmbeddingCache(cache_file) as cache, progress_bar(quiet) as progress:
        data = None
        if dataset is not None:
            data = read_dataset(dataset, read, parsed_cache=cache.parsed_datasets if cache else None)
        classes = read_classification(classify, classnames=classnames, limit=limit) if classify else None
        comparison = compare_models(
            model,
            precision,
            dataset=data,
            classification=classes,
            templates=load_templates(templates) if classify else None,
            language=language,
            options=options,
            cache=cache,
            progress=progress,
        )
    folder = out or Path(f"xmodal-compare-{datetime.now():%Y%m%d-%H%M%S}")
    paths = write_comparison(comparison, folder)
    console.print(markdown_report(comparison), markup=False, highlight=False, soft_wrap=True)
    for name, reason in comparison.failed.items():
        err_console.print(f"[bold red]error:[/] {escape(name)}: {escape(reason)}", highlight=False, soft_wrap=True)
    console.print(f"report written to {folder}/ ({', '.join(p.name for p in paths)})", markup=False, soft_wrap=True)
    if comparison.failed:
        raise typer.Exit(1)
