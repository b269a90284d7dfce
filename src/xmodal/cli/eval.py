"""`xmodal eval` (retrieval benchmark) and `xmodal zeroshot` (zero-shot classification)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from xmodal.cli.console import console, err_console, progress_bar
from xmodal.errors import XmodalError

if TYPE_CHECKING:
    from xmodal.models.encoder import Encoder

log = logging.getLogger(__name__)

# Options both benchmarks take, declared once (Typer reads each default's OptionInfo per command).
PRECISION_OPTION = typer.Option("fp32", help="Model precision: fp32, int8 or bf16.")
NO_CACHE_OPTION = typer.Option(
    False, "--no-cache", help="Embed everything again; do not read or write the embedding cache."
)
CACHE_FILE_OPTION = typer.Option(
    None, "--cache", help="Embedding cache database (default: XMODAL_CACHE/eval/embeddings.sqlite)."
)
BATCH_SIZE_OPTION = typer.Option(32, min=1, help="Images per model call.")
PERCENT_OPTION = typer.Option(
    False, "--percent", help="Show recalls in percent instead of fractions (0-1); JSON always holds fractions."
)
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _out_dir(out: Path | None, prefix: str) -> Path:
    folder = out or Path(f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _cache(no_cache: bool, path: Path | None) -> Iterator:
    """The benchmark embedding cache, or None with --no-cache."""
    if no_cache:
        yield None
        return
    from xmodal.eval.cache import EmbeddingCache

    with EmbeddingCache(path) as cache:
        yield cache


def _error(what: str, exc: XmodalError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(what)}: {escape(str(exc))}", highlight=False, soft_wrap=True)


def _say(text: str) -> None:
    """Plain text to stdout: tables stay copy-pasteable (no markup, no wrapping)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _each_model(models: list[str], precision: str, job: Callable[[Encoder], list]) -> tuple[list, bool]:
    """Run `job` with every model; a model that fails is reported and the others still run."""
    from xmodal import load_model

    results, failed = [], False
    for name in models:
        try:
            results += job(load_model(name, precision=precision))
        except XmodalError as exc:
            _error(name, exc)
            failed = True
    return results, failed


def evaluate(
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name or folder; repeat to compare models. With --library: its models (default: all of them).",
    ),
    dataset: list[str] = typer.Option(
        None,
        "--dataset",
        "-d",
        help="FORMAT:PATH with FORMAT karpathy, coco, flickr, cn-clip, msvd, jsonl or csv (a bare PATH guesses); repeatable.",
    ),
    library: Path = typer.Option(
        None, "--library", help="Evaluate search in this xmodal library (with --captions) instead of a dataset."
    ),
    captions: str = typer.Option(
        None,
        "--captions",
        help="With --library: JSONL/CSV of path + captions for some of its files; the rest are distractors.",
    ),
    split: str = typer.Option(
        "test", help="Split to evaluate (Karpathy/CLIP_benchmark: test, val; MUGE: valid); 'all' for every record."
    ),
    directions: str = typer.Option(
        None, help="Comma-separated subset of t2i,i2t (images) / t2v,v2t (videos); default both."
    ),
    limit: int = typer.Option(
        None, min=1, help="Use only the first N images/videos of each dataset (with their captions)."
    ),
    images: Path = typer.Option(
        None, help="Folder the dataset's image/video file names are relative to (one dataset only)."
    ),
    out: Path = typer.Option(
        None, help="Folder for results.md/.csv/.json, ranks.npz and plots (default: ./xmodal-eval-DATE-TIME)."
    ),
    precision: str = PRECISION_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    cache_file: Path = CACHE_FILE_OPTION,
    frames: int = typer.Option(12, min=1, help="Frames sampled uniformly per video for --pooling uniform."),
    pooling: str = typer.Option(
        "uniform",
        help="How a video is scored, comma-separated to compare several in one report: uniform (mean of "
        "--frames uniform frames), segments (1 frame/s merged into segments, averaged by duration), "
        "best (a caption scores a video by its best segment).",
    ),
    batch_size: int = BATCH_SIZE_OPTION,
    language: str = typer.Option(None, help="Caption language for multilingual (NLLB) models, e.g. en, zh, deu_Latn."),
    percent: bool = PERCENT_OPTION,
    strict: bool = typer.Option(False, help="Stop at the first malformed dataset line instead of skipping it."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Retrieval benchmark: R@1/5/10, MedR, MnR and MR of each model on each dataset, both directions.

    With --library DIR --captions FILE: the same metrics for search in your own library, your
    captions as queries against every indexed photo, on the embeddings the library stored."""
    from dataclasses import replace

    from xmodal.eval import report
    from xmodal.eval.datasets import ReadOptions, read_dataset
    from xmodal.eval.plots import plot_recall_curves
    from xmodal.eval.retrieval import evaluate_retrieval

    if (library is None) == (not dataset):
        raise typer.BadParameter("give --dataset (one or more), or --library with --captions")
    if (library is None) != (captions is None):
        raise typer.BadParameter("--library and --captions go together")
    if library is None and not model:
        raise typer.BadParameter("give at least one --model")
    if images is not None and len(dataset or [captions]) > 1:
        raise typer.BadParameter(
            "--images applies to one dataset; give each dataset's files relative to its annotation file instead"
        )
    options = ReadOptions(split=None if split == "all" else split, limit=limit, media_root=images, strict=strict)
    wanted = [d.strip() for d in directions.split(",") if d.strip()] if directions else None
    poolings = _poolings(pooling)
    with _cache(no_cache, cache_file) as cache, progress_bar(quiet) as progress:
        if library is not None:
            results, failed = _evaluate_library(library, captions, model, options, language, wanted, cache, progress)
        else:
            failed = False
            datasets = []
            for spec in dataset:
                try:
                    data = read_dataset(spec, options, parsed_cache=cache.parsed_datasets if cache else None)
                except XmodalError as exc:
                    _error(spec, exc)
                    failed = True
                    continue
                datasets.append(replace(data, language=language or data.language))
            results, model_failed = _each_model(
                model,
                precision,
                lambda encoder: [
                    evaluate_retrieval(
                        encoder,
                        data,
                        directions=wanted,
                        cache=cache,
                        progress=progress,
                        frames=frames,
                        pooling=method,
                        batch_size=batch_size,
                    )
                    for data in datasets
                    for method in (poolings if data.kind == "video" else poolings[:1])
                ],
            )
            failed = failed or model_failed
    if results:
        unit = "percent" if percent else "fraction"
        folder = _out_dir(out, "xmodal-eval")
        table = report.markdown_table(results, unit)
        _say(table)
        for line in report.summary_lines(results):
            _say(line)
        (folder / "results.md").write_text(
            table + "\n\n" + "\n".join(f"- {line}" for line in report.summary_lines(results)) + "\n"
        )
        report.write_csv(results, folder / "results.csv", unit)
        report.write_json(results, folder / "results.json")
        report.write_ranks(results, folder / "ranks.npz")
        plot_recall_curves(results, folder)
        _say(f"results written to {folder}/ (results.md, results.csv, results.json, ranks.npz, recall_at_k_*.png)")
    if failed or not results:
        raise typer.Exit(1)


def _poolings(text: str) -> list[str]:
    from xmodal.eval.embedding import POOLINGS

    chosen = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in POOLINGS]
    if unknown or not chosen:
        raise typer.BadParameter(f"{', '.join(unknown) or text!r}: expected one or more of {', '.join(POOLINGS)}")
    return chosen


def _evaluate_library(
    folder: Path, captions: str, models: list[str] | None, options, language: str | None, wanted, cache, progress
):
    """Every asked model (default: all the library's models, each at the precision it indexed
    with) on the library with the captions."""
    from dataclasses import replace

    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.library import evaluate_library
    from xmodal.library import Library

    if not folder.is_dir():
        raise typer.BadParameter(f"{folder}: no such library folder")
    results, failed = [], False
    with Library(folder) as lib:
        data = read_dataset(captions, options)
        data = replace(data, language=language or data.language)
        for name in models or [m.key for m in lib.catalog.models()]:
            try:
                results.append(
                    evaluate_library(lib, data, model=name, directions=wanted, cache=cache, progress=progress)
                )
            except XmodalError as exc:
                _error(name, exc)
                failed = True
    return results, failed


def zeroshot(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model name or folder; repeat to compare models."),
    dataset: Path = typer.Option(
        ..., "--dataset", "-d", help="A folder per class, or a CSV/TSV with path and label columns."
    ),
    templates: str = typer.Option("imagenet", help="Prompt templates: imagenet (CLIP's 80), simple, or a JSON file."),
    classnames: Path = typer.Option(
        None, help="JSON class names: a list (by label index / sorted label order) or {label: name}."
    ),
    limit: int = typer.Option(None, min=1, help="Use only N images, taken round-robin over the classes."),
    out: Path = typer.Option(
        None, help="Folder for results, per-class tables and confusion matrices (default: ./xmodal-zeroshot-DATE-TIME)."
    ),
    precision: str = PRECISION_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    cache_file: Path = CACHE_FILE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    language: str = typer.Option(None, help="Prompt language for multilingual (NLLB) models."),
    percent: bool = PERCENT_OPTION,
    strict: bool = typer.Option(False, help="Stop at the first malformed CSV line instead of skipping it."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Zero-shot classification: top-1, top-5, mean per-class recall, per-class table, confusion matrix."""
    from xmodal.eval import report
    from xmodal.eval.datasets.classification import read_classification
    from xmodal.eval.plots import plot_confusion_matrix, safe_name
    from xmodal.eval.zeroshot import evaluate_zeroshot, load_templates

    prompts = load_templates(templates)
    data = read_classification(dataset, classnames=classnames, limit=limit, strict=strict)
    with _cache(no_cache, cache_file) as cache, progress_bar(quiet) as progress:
        results, failed = _each_model(
            model,
            precision,
            lambda encoder: [
                evaluate_zeroshot(
                    encoder, data, prompts, language=language, cache=cache, progress=progress, batch_size=batch_size
                )
            ],
        )
    if results:
        unit = "percent" if percent else "fraction"
        folder = _out_dir(out, "xmodal-zeroshot")
        summary = report.zeroshot_markdown(results, unit)
        _say(summary)
        sections = [summary]
        for r in results:
            worst = None if len(r.classnames) <= 25 else 10
            title = f"\n{r.model}: per-class" + (
                f" (the {worst} lowest top-1 of {len(r.classnames)}; all in per_class CSV)" if worst else ""
            )
            table = report.per_class_markdown(r, unit, worst)
            _say(title)
            _say(table)
            sections += [title, table]
            stem = safe_name(r.model)
            report.write_per_class_csv(r, folder / f"per_class_{stem}.csv")
            plot_confusion_matrix(
                r.confusion,
                r.classnames,
                folder / f"confusion_{stem}.png",
                f"{r.model} on {r.dataset}: top-1 {r.top1:.3f}",
            )
        skipped = f"{len(data.missing)} missing files, {len(data.problems)} malformed lines"
        _say(f"{data.name}: {len(data.items)} images, {len(data.classnames)} classes; skipped: {skipped}")
        (folder / "results.md").write_text("\n".join(sections) + "\n")
        report.write_zeroshot_json(results, folder / "results.json")
        _say(f"results written to {folder}/")
    if failed or not results:
        raise typer.Exit(1)
