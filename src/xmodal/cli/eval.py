"""`xmodal eval` (retrieval benchmark) and `xmodal zeroshot` (zero-shot classification): argument
handling over xmodal.eval, which evaluates and writes the reports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from xmodal.cli.console import error, flag, progress_bar, say, warn
from xmodal.errors import XmodalError
from xmodal.models.runtime import PRECISIONS

if TYPE_CHECKING:
    from xmodal.models.encoder import Encoder

# Options both benchmarks take, declared once (Typer reads each default's OptionInfo per command).
Precision = Literal[PRECISIONS]  # shown and checked as a choice
PRECISION_OPTION = typer.Option("fp32", help="Model precision.")
NO_CACHE_OPTION = flag("Embed everything again; do not read or write the embedding cache.", "--no-cache")
CACHE_FILE_OPTION = typer.Option(
    None, "--cache", metavar="FILE", help="Embedding cache database (default: $XMODAL_CACHE/eval/embeddings.sqlite)."
)
BATCH_SIZE_OPTION = typer.Option(32, min=1, metavar="N", help="Images per model call.")
PERCENT_OPTION = flag("Show recalls in percent instead of fractions (0-1); JSON always holds fractions.", "--percent")
FORCE_OPTION = flag("Write into --out even if it already holds files (they are overwritten).", "--force")
QUIET_OPTION = flag("No progress bars.", "--quiet", "-q")
RUNTIME_OPTION = typer.Option(
    None,
    "--runtime",
    metavar="NAME",
    help="auto, onnxruntime, openvino, or a model folder's Rockchip NPU graphs: rknn-sim (simulator), rknn (board), "
    "also as rknn-sim:SOC; repeat to compare runtimes in one table.",
)


def _csv_ints(value: str, option: str) -> list[int]:
    """`1,5,10,50` -> [1, 5, 10, 50]; a clear error naming the option otherwise."""
    try:
        ks = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: expected comma-separated whole numbers, e.g. 1,5,10,50", param_hint=option
        ) from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter(f"{value!r}: every K must be at least 1", param_hint=option)
    return ks


def _csv_words(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _out_folder(out: Path | None, prefix: str, force: bool) -> tuple[Path, bool]:
    """The output folder, made now so that a refused one fails before any encoding; and whether
    it was made by this run (then a run that writes nothing removes it again)."""
    from xmodal.eval.report import OutputFolderError, prepare_folder

    folder = out or Path(f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}")
    existed = folder.exists()
    try:
        return prepare_folder(folder, overwrite=force), not existed
    except OutputFolderError as exc:
        raise typer.BadParameter(
            f"{exc.folder} already holds files ({exc.shown}); pass --force to overwrite them, or choose another folder",
            param_hint="--out",
        ) from None


@contextmanager
def _cache(no_cache: bool, path: Path | None) -> Iterator:
    """The benchmark embedding cache; None with --no-cache, or (with a warning) when it cannot be opened."""
    if no_cache:
        yield None
        return
    from xmodal.eval.cache import EmbeddingCache

    try:
        cache = EmbeddingCache(path)
    except XmodalError as exc:
        warn(f"{exc}; running without the cache")
        yield None
        return
    with cache:
        yield cache


def _each_model(
    models: list[str], precision: str, job: Callable[[Encoder], list], runtimes: list[str] | None = None
) -> tuple[list, bool]:
    """Run `job` with every model on every runtime; one that fails is reported and the others still run."""
    from xmodal import load_model

    results, failed = [], False
    for name in models:
        for runtime in runtimes or ["auto"]:
            try:
                results += job(load_model(name, precision=precision, runtime=runtime))
            except XmodalError as exc:
                error(str(exc) if name in str(exc) else f"{name}: {exc}", "--model")
                failed = True
    return results, failed


def _strict_failures(results: list, counts: Callable) -> bool:
    """--strict: report every result whose dataset was partial; True when any was."""
    partial = False
    for r in results:
        lacking = [f"{n} {what}" for n, what in counts(r) if n]
        if lacking:
            error(f"{r.dataset} is partial for {r.model}: {', '.join(lacking)}", "--strict")
            partial = True
    return partial


def evaluate(
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        metavar="NAME",
        help="Model name or folder; repeat to compare models. With --library: its models (default: all of them).",
    ),
    dataset: list[str] = typer.Option(
        None,
        "--dataset",
        "-d",
        metavar="SPEC",
        help="FORMAT:PATH[@IMAGES] with FORMAT karpathy, coco, flickr, flickr8k, flickr30k, cn-clip, msvd, jsonl "
        "or csv; a bare PATH is recognised by its content; @IMAGES: the folder its images/videos are in. Repeatable.",
    ),
    library: Path = typer.Option(
        None,
        "--library",
        "-l",
        metavar="DIR",
        help="Evaluate search in this xmodal library (with --captions) instead of a dataset.",
    ),
    captions: str = typer.Option(
        None,
        "--captions",
        metavar="FILE",
        help="With --library: JSONL/CSV of path + captions for some of its files; the rest are distractors.",
    ),
    combine: list[str] = typer.Option(
        None,
        "--combine",
        help="With --library: also compare ways to combine a photo's pixel and caption scores "
        "(max, or the caption's weight 0-1; repeatable).",
    ),
    split: str = typer.Option(
        "test", metavar="NAME", help="Split to evaluate (test, val, train; MUGE: valid); 'all' for every record."
    ),
    directions: str = typer.Option(
        None, metavar="LIST", help="Comma-separated subset of t2i,i2t (images) or t2v,v2t (videos); default both."
    ),
    recall_k: str = typer.Option(
        "1,5,10", "--recall-k", metavar="LIST", help="The K of the R@K columns, comma-separated."
    ),
    limit: int = typer.Option(
        None, min=1, metavar="N", help="Use only the first N images/videos of each dataset (with their captions)."
    ),
    images: Path = typer.Option(
        None,
        metavar="DIR",
        help="Folder the dataset's image/video files are in (one dataset; per dataset: FORMAT:PATH@IMAGES).",
    ),
    out: Path = typer.Option(
        None,
        metavar="DIR",
        help="Folder for results.md/.csv/.json, ranks.npz and plots (default: ./xmodal-eval-DATE-TIME).",
    ),
    force: bool = FORCE_OPTION,
    predictions: bool = flag(
        "Also write each query's top 10 as Chinese-CLIP's prediction files (predictions_*.jsonl), both directions.",
        "--predictions",
    ),
    precision: Precision = PRECISION_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    cache_file: Path = CACHE_FILE_OPTION,
    frames: int = typer.Option(
        12, min=1, metavar="N", help="Frames sampled uniformly per video for --pooling uniform (their mean)."
    ),
    pooling: str = typer.Option(
        "uniform",
        metavar="LIST",
        help="How a video is scored, comma-separated to compare several in one report: uniform (mean of "
        "--frames uniform frames), segments (1 frame/s merged into segments, averaged by duration), "
        "best (a caption scores a video by its best segment).",
    ),
    batch_size: int = BATCH_SIZE_OPTION,
    language: str = typer.Option(
        None, metavar="LANG", help="Caption language for multilingual (NLLB) models, e.g. en, zh, deu_Latn."
    ),
    percent: bool = PERCENT_OPTION,
    strict: bool = flag(
        "Fail on a partial dataset: a malformed line, a missing or undecodable file, a caption without its image.",
        "--strict",
    ),
    quiet: bool = QUIET_OPTION,
    runtime: list[str] = RUNTIME_OPTION,
) -> None:
    """Retrieval benchmark: R@K, MedR, MnR and MR of each model on each dataset, both directions.

    With --library DIR --captions FILE: the same metrics for search in your own library, your captions as queries against every indexed photo, on the embeddings the library stored."""
    from xmodal.eval.datasets import ReadOptions
    from xmodal.eval.report import partial_counts, results_markdown, write_results
    from xmodal.eval.retrieval import DIRECTIONS

    if (library is None) == (not dataset):
        raise typer.BadParameter("give one or more datasets, or --library with --captions", param_hint="--dataset")
    if (library is None) != (captions is None):
        raise typer.BadParameter("--library and --captions go together", param_hint="--captions")
    if library is None and not model:
        raise typer.BadParameter("give at least one model", param_hint="--model")
    if images is not None and len(dataset or [captions]) > 1:
        raise typer.BadParameter(
            "applies to one dataset; give each its folder as FORMAT:PATH@IMAGES instead", param_hint="--images"
        )
    ks = _csv_ints(recall_k, "--recall-k")
    wanted = _csv_words(directions)
    unknown = [d for d in wanted or [] if d not in DIRECTIONS]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r} is not one of {', '.join(DIRECTIONS)}", param_hint="--directions")
    poolings = _poolings(pooling)
    folder, made = _out_folder(out, "xmodal-eval", force)
    options = ReadOptions(split=None if split == "all" else split, limit=limit, media_root=images, strict=strict)
    settings = {"directions": wanted, "ks": ks, "predictions": 10 if predictions else 0}
    with _cache(no_cache, cache_file) as cache, progress_bar(quiet) as progress:
        settings |= {"cache": cache, "progress": progress}
        if library is not None:
            results, failed = _run_library(library, captions, model, options, language, settings)
            if combine:
                _compare_combinations(library, captions, model, options, language, combine, cache, folder)
        else:
            settings |= {"frames": frames, "batch_size": batch_size, "poolings": poolings}
            results, failed = _run_datasets(dataset, model, options, precision, language, settings, runtime)
    if results:
        unit = "percent" if percent else "fraction"
        paths = write_results(results, folder, unit)
        say(results_markdown(results, unit).rstrip())
        say(f"results written to {folder}/ ({', '.join(p.name for p in paths)})")
    if strict and _strict_failures(results, partial_counts):
        failed = True
    if made and not results and not any(folder.iterdir()):
        folder.rmdir()  # made before the run; nothing came of it
    if failed or not results:
        raise typer.Exit(1)


def _poolings(text: str) -> list[str]:
    from xmodal.eval.embedding import POOLINGS

    chosen = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in POOLINGS]
    if unknown or not chosen:
        raise typer.BadParameter(
            f"{', '.join(unknown) or text!r}: expected one or more of {', '.join(POOLINGS)}", param_hint="--pooling"
        )
    return chosen


def _run_datasets(
    specs: list[str],
    models: list[str],
    options,
    precision: str,
    language: str | None,
    settings: dict,
    runtimes: list[str] | None = None,
) -> tuple[list, bool]:
    """Every model on every dataset that reads; a dataset or model that fails is reported, the rest run."""
    from dataclasses import replace

    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.retrieval import directions_for, evaluate_models

    failed, datasets = False, []
    for spec in specs:
        try:
            data = read_dataset(
                spec, options, parsed_cache=settings["cache"].parsed_datasets if settings["cache"] else None
            )
        except XmodalError as exc:
            error(str(exc), "--dataset")
            failed = True
            continue
        try:
            directions_for(data.kind, settings["directions"])
        except XmodalError as exc:
            error(f"{data.name}: {exc}", "--directions")
            failed = True
            continue
        datasets.append(replace(data, language=language or data.language))

    def model_failed(name: str, exc: XmodalError) -> None:
        nonlocal failed
        error(str(exc) if name in str(exc) else f"{name}: {exc}", "--model")
        failed = True

    results = []
    for runtime in runtimes or ["auto"]:
        results += evaluate_models(
            models, datasets, precision=precision, runtime=runtime, on_error=model_failed, **settings
        )
    return results, failed


def _run_library(
    folder: Path, captions: str, models: list[str] | None, options, language: str | None, settings: dict
) -> tuple[list, bool]:
    """Every asked model (default: all the library's models, each at the precision it indexed
    with) on the library with the captions."""
    from dataclasses import replace

    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.library import evaluate_library
    from xmodal.library import Library

    if not folder.is_dir():
        raise typer.BadParameter(f"{folder}: no such library folder", param_hint="--library")
    results, failed = [], False
    with Library(folder) as lib:
        try:
            data = read_dataset(captions, options)
        except XmodalError as exc:
            raise typer.BadParameter(str(exc), param_hint="--captions") from None
        data = replace(data, language=language or data.language)
        for name in models or [m.key for m in lib.catalog.models()]:
            try:
                results.append(evaluate_library(lib, data, model=name, **settings))
            except XmodalError as exc:
                error(str(exc), "--model")
                failed = True
    return results, failed


def _zeroshot_ensemble(models: list[str], precision, data, prompts, weights, options: dict) -> tuple[list, bool]:
    """Every model's result and the ensemble's (all the models must load)."""
    from xmodal import load_model
    from xmodal.eval.zeroshot import evaluate_ensemble

    encoders = []
    for name in models:
        try:
            encoders.append(load_model(name, precision=precision))
        except XmodalError as exc:
            error(str(exc), "--model")
            return [], True
    try:
        return evaluate_ensemble(encoders, data, prompts, weights, **options), False
    except XmodalError as exc:
        raise typer.BadParameter(str(exc), param_hint="--weights") from None


def _compare_combinations(folder: Path, captions: str, models, options, language, combine, cache, out: Path) -> None:
    """Text -> photo metrics of the library for each --combine, printed and written to OUT/combinations.md."""
    from dataclasses import replace

    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.library import evaluate_caption_combinations
    from xmodal.library import Library

    with Library(folder) as lib:
        data = read_dataset(captions, options)
        data = replace(data, language=language or data.language)
        tables = [
            evaluate_caption_combinations(lib, data, combine, model=name, cache=cache).markdown()
            for name in models or [lib.catalog.models()[0].key]
        ]
    text = "\n\n".join(tables)
    say(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "combinations.md").write_text(text + "\n")


def zeroshot(
    model: list[str] = typer.Option(
        ..., "--model", "-m", metavar="NAME", help="Model name or folder; repeat to compare models."
    ),
    dataset: Path = typer.Option(
        ..., "--dataset", "-d", metavar="PATH", help="A folder per class, or a CSV/TSV with path and label columns."
    ),
    templates: str = typer.Option(
        None,
        metavar="NAME|FILE",
        help="Prompt templates: imagenet (CLIP's 80), cifar (CLIP's 18), simple, or a JSON file; "
        "default: the set CLIP uses with the dataset's classes (imagenet for classes of your own).",
    ),
    classnames: str = typer.Option(
        None,
        metavar="SET|FILE",
        help="imagenet, cifar10 or cifar100 to classify over that whole class set (WordNet-id folders are "
        "recognised by themselves), or a JSON of names: a list (by label number / sorted label order) or {label: name}.",
    ),
    limit: int = typer.Option(None, min=1, metavar="N", help="Use only N images, taken round-robin over the classes."),
    out: Path = typer.Option(
        None,
        metavar="DIR",
        help="Folder for results, per-class tables and confusion matrices (default: ./xmodal-zeroshot-DATE-TIME).",
    ),
    force: bool = FORCE_OPTION,
    ensemble: bool = flag(
        "Also score the models as one: the weighted average of their class probabilities.", "--ensemble"
    ),
    weights: str = typer.Option(
        None, metavar="LIST", help="With --ensemble: one weight per model, comma-separated (default equal)."
    ),
    precision: Precision = PRECISION_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    cache_file: Path = CACHE_FILE_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    language: str = typer.Option(None, metavar="LANG", help="Prompt language for multilingual (NLLB) models."),
    percent: bool = PERCENT_OPTION,
    strict: bool = flag(
        "Fail on a partial dataset: a malformed line, a missing or undecodable file, a class outside the class set.",
        "--strict",
    ),
    quiet: bool = QUIET_OPTION,
    runtime: list[str] = RUNTIME_OPTION,
) -> None:
    """Zero-shot classification: top-1, top-5, mean per-class recall, per-class table, confusion matrix."""
    from xmodal.eval.datasets.classification import read_classification
    from xmodal.eval.report import write_zeroshot_results, zeroshot_report_markdown
    from xmodal.eval.zeroshot import evaluate_zeroshot, load_templates

    if (ensemble or weights) and len(model) < 2:
        raise typer.BadParameter("an ensemble needs two or more models", param_hint="--ensemble")
    if weights and not ensemble:
        raise typer.BadParameter("goes with --ensemble", param_hint="--weights")
    try:
        shares = [float(w) for w in weights.split(",")] if weights else None
    except ValueError:
        raise typer.BadParameter(f"{weights!r}: numbers separated by commas", param_hint="--weights") from None
    try:
        data = read_classification(dataset, classnames=classnames, limit=limit, strict=strict)
    except XmodalError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dataset") from None
    try:
        prompts = load_templates(templates, data)
    except XmodalError as exc:
        raise typer.BadParameter(str(exc), param_hint="--templates") from None
    folder, made = _out_folder(out, "xmodal-zeroshot", force)
    say(data.describe())
    options = {"language": language, "batch_size": batch_size}
    with _cache(no_cache, cache_file) as cache, progress_bar(quiet) as progress:
        options |= {"cache": cache, "progress": progress}
        if ensemble:
            results, failed = _zeroshot_ensemble(model, precision, data, prompts, shares, options)
        else:
            results, failed = _each_model(
                model, precision, lambda encoder: [evaluate_zeroshot(encoder, data, prompts, **options)], runtime
            )
    if results:
        unit = "percent" if percent else "fraction"
        paths = write_zeroshot_results(results, folder, unit)
        say(zeroshot_report_markdown(results, unit).rstrip())
        say(f"results written to {folder}/ ({', '.join(p.name for p in paths)})")
    if strict and _strict_failures(results, lambda r: [(len(r.failed), "undecodable images")]):
        failed = True
    if made and not results and not any(folder.iterdir()):
        folder.rmdir()  # made before the run; nothing came of it
    if failed or not results:
        raise typer.Exit(1)
