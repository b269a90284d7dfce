"""`xmodal index`, `xmodal search`, `xmodal status`: the photo library from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from xmodal.cli.console import console, err_console, progress_bar

LIBRARY_HELP = "Library folder (default: $XMODAL_LIBRARY, else the user data folder)."
PRECISIONS_HELP = "fp32 (default), int8 (ONNX Runtime) or bf16 (OpenVINO)."


def _open(library: Path | None):
    from xmodal.library import Library

    return Library(library)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def index(
    paths: list[Path] = typer.Argument(None, help="Folders or files to index (not needed with --tune)."),
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    model: str = typer.Option(None, "--model", "-m", help="Model name or folder (default: the library's last one)."),
    precision: str = typer.Option("fp32", help=PRECISIONS_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of paths or names to skip (repeatable)."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Follow symbolic links (loop-safe)."),
    hidden: bool = typer.Option(False, "--hidden", help="Include hidden files and folders."),
    index_spec: str = typer.Option(
        None,
        "--index",
        help="Vector index: auto (default), exact, exact,fp32, Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32 (any Faiss factory string).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per encoder call."),
    workers: int = typer.Option(None, "--workers", help="Decode threads (default: one per CPU)."),
    tune: bool = typer.Option(False, "--tune", help="Then pick ANN search parameters for --target-recall."),
    target_recall: float = typer.Option(0.95, "--target-recall", help="Recall@10 vs exact search for --tune."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Index photos (and record videos) under PATHS: incremental, resumable, crash-safe.

    Exits 0 when anything was indexed (failed files are listed by `xmodal status --errors`),
    1 when every file failed, 130 when interrupted (what was done is kept).
    """
    from xmodal.store.ingest import IngestConfig

    with _open(library) as lib:
        report = None
        if paths:
            config = IngestConfig(batch_size=batch_size, workers=workers)
            with progress_bar(quiet) as progress:
                report = lib.index(
                    [str(p) for p in paths],
                    model=model,
                    precision=precision,
                    exclude=exclude,
                    follow_symlinks=follow_symlinks,
                    include_hidden=hidden,
                    index_spec=index_spec,
                    config=config,
                    progress=progress,
                )
            _print_report(report)
        elif index_spec:
            lib.rebuild_index(model, spec=index_spec)
        elif not tune:
            raise typer.BadParameter("give PATHS to index, or --tune / --index to work on the index only")
        if tune and not (report and report.interrupted):
            _print_tune(lib.tune(model, target_recall=target_recall))
    if report is not None:
        if report.interrupted:
            raise typer.Exit(130)
        indexed = report.added + report.updated + report.unchanged + report.pending
        if report.failed and indexed == 0:
            raise typer.Exit(1)


def _print_report(report) -> None:
    from xmodal.store.catalog import display_path

    for path, reason in report.failed[:20]:
        err_console.print(f"[red]failed[/] {escape(display_path(path))}: {escape(reason)}", highlight=False)
    if len(report.failed) > 20:
        err_console.print(f"... and {len(report.failed) - 20} more (xmodal status --errors)", highlight=False)
    if report.interrupted:
        err_console.print("[yellow]interrupted[/]: the work done so far is saved; run the same command to finish")
    _say(report.summary())


def _print_tune(report) -> None:
    if not report.chosen:
        _say(f"index {report.spec}: exact search, nothing to tune")
        return
    recall = {s.params: s for s in report.settings}[report.chosen]
    verdict = "meets" if report.met else "best reachable, below"
    _say(
        f"index {report.spec}: {report.chosen} -> recall@{report.k} {recall.recall:.3f} ({verdict} the target "
        f"{report.target_recall}), {recall.qps:,.0f} queries/s vs exact {report.exact_qps:,.0f}"
    )


def search(
    query: str = typer.Argument(
        None, help='Text, or terms combined rclip-style: "beach + ./ref.jpg - people", "2:sunset + #17" (item id).'
    ),
    image: Path = typer.Option(None, "--image", "-i", help="Example image file (added to the text, if any)."),
    item: int = typer.Option(None, "--item", help="An indexed item's id as the example (added to the rest)."),
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    k: int = typer.Option(10, "-k", "--top", help="Number of results."),
    type: str = typer.Option(None, "--type", help="Only image or video items."),
    after: str = typer.Option(None, "--after", help="Taken at or after this date (2024, 2024-06, 2024-06-30)."),
    before: str = typer.Option(None, "--before", help="Taken before this date."),
    path_glob: str = typer.Option(None, "--path", help="Only paths matching this glob (e.g. '*/2023/*')."),
    decay_days: float = typer.Option(
        None, "--decay-days", help="Favour recent items: score x exp(-age/DAYS) (seed 002's time decay)."
    ),
    min_score: float = typer.Option(
        None, "--min-score", help="Cosine floor below which nothing counts as a match (default per model family)."
    ),
    model: str = typer.Option(None, "--model", "-m", help="Which of the library's models (default: the last used)."),
    as_json: bool = typer.Option(False, "--json", help="JSON: path, score, rank, item id, type, taken-at."),
) -> None:
    """Search the library by text, example image, indexed item, or a combination."""
    if not query and image is None and item is None:
        raise typer.BadParameter("give a query text, --image FILE or --item ID")
    with _open(library) as lib:
        results = lib.search(
            query,
            image=image,
            k=k,
            type=type,
            after=after,
            before=before,
            item=item,
            path_glob=path_glob,
            min_score=min_score,
            decay_days=decay_days,
            model=model,
        )
    if as_json:
        payload = {
            "hits": [hit.to_dict() for hit in results],
            "min_score": results.min_score,
            "no_good_match": results.no_good_match,
            "best_score": results.best_score,
        }
        _say(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if results.no_good_match:
        _say(f"no good match: the best score {results.best_score:.3f} is below the floor {results.min_score:.3f}")
        return
    if not results:
        _say("no results")
        return
    table = Table("rank", "score", "id", "type", "taken at")
    table.add_column("path", overflow="fold")  # never cut: a path is what the user came for
    for hit in results:
        row = hit.to_dict()
        table.add_row(str(hit.rank), f"{hit.score:.4f}", str(hit.item_id), hit.type, row["taken_at"] or "", row["path"])
    console.print(table)


def status(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    errors: bool = typer.Option(False, "--errors", help="List every failed file with its reason."),
) -> None:
    """Items per type, failures, models and their vector indexes."""
    from xmodal.store.catalog import display_path

    with _open(library) as lib:
        info = lib.status()
        failures = lib.errors() if errors else []
    if as_json:
        if errors:
            info["errors"] = [{"path": display_path(p), "reason": r} for p, r in failures]
        _say(json.dumps(info, indent=2, ensure_ascii=False))
        return
    items = ", ".join(f"{n} {t}s" for t, n in info["items"].items())
    pending = sum(info["pending"].values())
    _say(f"library {info['library']}: {items}; {info['failed']} failed" + (f"; {pending} pending" if pending else ""))
    for m in info["models"]:
        idx = info["index"][m["key"]]
        state = "up to date" if idx["up_to_date"] else "will catch up on next search"
        _say(
            f"  model {m['name']} ({m['precision']}, dim {m['dim']}): {m['embeddings']} embeddings; "
            f"index {idx['spec']} of {idx['size']} ({state})"
            + (f", {idx['search_params']}" if idx["search_params"] else "")
        )
    for path, reason in failures:
        _say(f"{display_path(path)}: {reason}")
