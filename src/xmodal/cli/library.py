"""`xmodal index`, `search`, `status`, `prune`: the photo library from the command line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer

from xmodal.cli.console import EXIT_INTERRUPTED, EXIT_TERMINATED, flag, progress_bar, say

LIBRARY_HELP = "Library folder (default: $XMODAL_LIBRARY, else the user data folder)."
PRECISIONS_HELP = "fp32 (default), int8 (ONNX Runtime) or bf16 (OpenVINO)."


def _open(library: Path | None):
    from xmodal.library import Library

    return Library(library)


def _folder(library: Path | None) -> Path:
    from xmodal import settings

    return library.expanduser() if library is not None else settings.current().library_dir


def _existing(library: Path | None):
    """A library that must exist already (searching or reading never creates one)."""
    from xmodal.errors import LibraryNotFoundError

    lib = _open(library)
    if not lib.exists:
        raise LibraryNotFoundError(lib.folder)
    return lib


def index(
    paths: list[Path] = typer.Argument(
        None, help="Folders or files to index; none: every folder this library indexed before."
    ),
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    model: str = typer.Option(None, "--model", "-m", help="Model name or folder (default: the library's last one)."),
    precision: str = typer.Option("fp32", help=PRECISIONS_HELP),
    exclude: list[str] = typer.Option([], "--exclude", help="Glob of paths or names to skip (repeatable)."),
    follow_symlinks: bool = flag("Follow symbolic links (loop-safe).", "--follow-symlinks"),
    hidden: bool = flag("Include hidden files and folders.", "--hidden"),
    text_ext: list[str] = typer.Option(
        [], "--text-ext", help="Extension of text documents to index (repeatable; default .txt, .md, .caption)."
    ),
    no_text: bool = flag("Index no text: no documents, caption files or descriptions in photos.", "--no-text"),
    index_spec: str = typer.Option(
        None,
        "--index",
        help="Vector index: auto (default), exact, exact,fp32, Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32 (any Faiss factory string).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per model call."),
    video_fps: float = typer.Option(
        None, "--video-fps", help="Video frames sampled per second (default 1; $XMODAL_VIDEO_FPS)."
    ),
    video_max_frames: int = typer.Option(
        None,
        "--video-max-frames",
        help="Frames sampled per video at most, spread over long ones (default 120; $XMODAL_VIDEO_MAX_FRAMES).",
    ),
    video_merge: float = typer.Option(
        None,
        "--video-merge",
        help="Cosine above which consecutive frames merge into one moment (default 0.8; $XMODAL_VIDEO_MERGE).",
    ),
    workers: int = typer.Option(None, "--workers", min=1, help="Decode threads (default: one per CPU)."),
    dry_run: bool = flag("Only say what would be added, updated and removed.", "--dry-run"),
    wait: bool = flag("If another process is indexing this library, wait for it.", "--wait"),
    tune: bool = flag("Then pick ANN search parameters for --target-recall.", "--tune"),
    target_recall: float = typer.Option(0.95, "--target-recall", help="Recall@10 vs exact search for --tune."),
    from_embeddings: Path = typer.Option(
        None,
        "--from-embeddings",
        help="Import an `xmodal embed-dataset` folder (items with their stored vectors; no model work).",
    ),
    quiet: bool = flag("No progress bar.", "--quiet", "-q"),
) -> None:
    """Index photos, videos and text documents under PATHS: incremental, resumable, crash-safe.
    Videos are sampled at about --video-fps frames per second (at most --video-max-frames, spread
    over long ones) and cut into moments where the picture changes. A .txt or .caption file named
    like a photo (IMG_1.txt beside IMG_1.jpg) is also that photo's caption, and so is the
    description a photo carries (XMP, IPTC, EXIF).

    Exit codes: 0 when anything was indexed (failed files are listed by `xmodal status --errors`),
    1 when every file failed, 75 when another process is indexing the library (see --wait),
    130 when interrupted and 143 when terminated (what was done is kept in both cases).
    """
    from xmodal import settings
    from xmodal.store.ingest import EmbedConfig

    settings.configure(video_fps=video_fps, video_max_frames=video_max_frames, video_merge=video_merge)
    if no_text and text_ext:
        raise typer.BadParameter("--no-text and --text-ext contradict each other")
    config = EmbedConfig(batch_size=batch_size, workers=workers)
    if from_embeddings is not None and paths:
        raise typer.BadParameter("give PATHS or --from-embeddings DIR, not both")
    text_extensions = [] if no_text else (text_ext or None)
    lib = _open(library)
    with lib:
        report = None
        if from_embeddings is not None:
            with progress_bar(quiet) as progress:
                report = lib.import_embeddings(from_embeddings, model, progress=progress, wait=wait)
            _print_report(report)
        elif paths or not (tune or index_spec):
            with progress_bar(quiet) as progress:
                report = lib.index(
                    [str(p) for p in paths or []],
                    model=model,
                    precision=precision,
                    exclude=exclude,
                    follow_symlinks=follow_symlinks,
                    include_hidden=hidden,
                    text_extensions=text_extensions,
                    index_spec=index_spec,
                    config=config,
                    progress=progress,
                    wait=wait,
                    dry_run=dry_run,
                )
            _print_report(report)
        elif index_spec:
            lib.rebuild_index(model, spec=index_spec, wait=wait)
        if tune and not (report and (report.interrupted or report.dry_run)):
            _print_tune(lib.tune(model, target_recall=target_recall, wait=wait))
    if report is not None:
        if report.interrupted:
            raise typer.Exit(EXIT_TERMINATED if _terminated() else EXIT_INTERRUPTED)
        indexed = report.added + report.updated + report.moved + report.unchanged + report.pending
        if report.failed and indexed == 0:
            raise typer.Exit(1)


def _terminated() -> bool:
    from xmodal.cli.signals import terminated

    return terminated()


def _print_report(report) -> None:
    from xmodal.store.catalog import display_path

    for path, reason in report.failed[:20]:
        say(f"failed {display_path(path)}: {reason}", err=True)
    if len(report.failed) > 20:
        say(f"... and {len(report.failed) - 20} more (xmodal status --errors)", err=True)
    for root, reason in report.offline.items():
        say(
            f"offline {display_path(root)}: {reason}; its items are kept (xmodal prune --offline forgets them)",
            err=True,
        )
    if report.interrupted:
        say("interrupted: the work done so far is saved; run the same command to finish", err=True)
    say(report.summary())


def _print_tune(report) -> None:
    if not report.chosen:
        say(f"index {report.spec}: exact search, nothing to tune")
        return
    recall = {s.params: s for s in report.settings}[report.chosen]
    verdict = "meets" if report.met else "best reachable, below"
    say(
        f"index {report.spec}: {report.chosen} -> recall@{report.k} {recall.recall:.3f} ({verdict} the target "
        f"{report.target_recall}), {recall.qps:,.0f} queries/s vs exact {report.exact_qps:,.0f}"
    )


def search(
    query: str = typer.Argument(
        None, help='Text, or terms combined: "beach + ./ref.jpg - people", "2:sunset + #17" (an item id).'
    ),
    image: Path = typer.Option(None, "--image", "-i", help="Example image file (added to the text, if any)."),
    item: int = typer.Option(None, "--item", help="An indexed item's id as the example (added to the rest)."),
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    k: int = typer.Option(10, "-k", "--top", help="Number of results (at most 10,000)."),
    type: list[str] = typer.Option(None, "--type", help="Only items of this type: image, video or text (repeatable)."),
    after: str = typer.Option(None, "--after", help="Taken at or after this date (2024, 2024-06, 2024-06-30)."),
    before: str = typer.Option(None, "--before", help="Taken before this date."),
    path_glob: str = typer.Option(None, "--path", help="Only paths matching this glob (e.g. '*/2023/*')."),
    tag: list[str] = typer.Option(
        [], "--tag", help="Only items carrying this zero-shot tag (repeatable: all of them)."
    ),
    decay_days: float = typer.Option(
        None, "--decay-days", help="Favour recent items: each score times exp(-age in days / DAYS)."
    ),
    min_score: str = typer.Option(
        None,
        "--min-score",
        help="Cosine floor below which nothing counts as a match: one number, or per type (text=0.6,image=0.2); "
        "default: per model and pair of modalities.",
    ),
    combine: str = typer.Option(
        "0.5",
        "--combine",
        help="A photo's score from its pixels and its captions: the caption's weight 0-1 (default 0.5), or max.",
    ),
    model: str = typer.Option(None, "--model", "-m", help="Which of the library's models (default: the last used)."),
    moments: int = typer.Option(
        1, "--moments", min=0, help="Best-matching moments per video / windows per document shown (0: none)."
    ),
    output: str = typer.Option(
        None, "--format", help="table (default on a terminal), paths (default in a pipe), tsv or json."
    ),
    as_json: bool = flag("Same as --format json.", "--json"),
    only_paths: bool = flag("Same as --format paths: one path per line.", "--paths", "-f"),
    null: bool = flag("With paths: end each with a NUL byte (for xargs -0).", "--null", "-0"),
    local: bool = flag("Search in this process even when `xmodal serve` holds the library open.", "--local"),
    embeddings: Path = typer.Option(
        None, "--embeddings", help="Search an embeddings folder's built index (xmodal build-index) instead."
    ),
) -> None:
    """Search the library by text, example image, indexed item, or a combination: photos, videos
    and documents (--type to choose), photos also through their captions.

    When `xmodal serve` holds this library open, it answers (same results, in milliseconds);
    otherwise, or with --local, this process opens the model and the index itself."""
    from xmodal.cli import output as out
    from xmodal.search import SearchResults, parse_min_score

    if not query and image is None and item is None:
        raise typer.BadParameter("give a query text, --image FILE or --item ID")
    chosen = "json" if as_json else "paths" if only_paths else output
    if chosen is not None and chosen not in out.FORMATS:
        raise typer.BadParameter(f"{chosen!r} is not one of {', '.join(out.FORMATS)}", param_hint="--format")
    chosen = chosen or ("table" if sys.stdout.isatty() else "paths")
    params = dict(
        k=k,
        type=type or None,
        after=after,
        before=before,
        item=item,
        path_glob=path_glob,
        tags=tag,
        min_score=parse_min_score(min_score),
        decay_days=decay_days,
        model=model,
        moments=moments,
        combine=combine,
    )
    answered = None
    if embeddings is not None:
        filters = (type, after, before, path_glob, tag)
        results = _search_embeddings(embeddings, query, image, item, model, k, params["min_score"], filters)
    else:
        if not local and image is None:
            from xmodal.cli.resident import names_local_files, resident_search

            if not names_local_files(query):
                answered = resident_search(_folder(library), {"text": query, **params})
        if answered is not None:
            results = SearchResults.from_dict(answered)
        else:
            with _existing(library) as lib:
                results = lib.search(query, image=image, **params)
    _print_results(results, chosen, null)


def _search_embeddings(folder: Path, query, image, item, model, k, min_score, filters):
    from xmodal.scale.index import ShardedIndex, query_model, search_embeddings

    if item is not None or any(filters):
        raise typer.BadParameter(
            "--item, --type, --after, --before, --path and --tag search libraries, not --embeddings"
        )
    index = ShardedIndex(folder)
    return search_embeddings(index, query_model(index, model), query, image, k, min_score=min_score)


def _print_results(results, chosen: str, null: bool) -> None:
    from xmodal.cli import output as out

    if chosen == "json":
        say(out.as_json(results))
        return
    if results.no_good_match or not results:
        reason = (
            f"no good match: the best score {results.best_score:.3f} is below the floor {results.min_score:.3f}"
            if results.no_good_match
            else "no results"
        )
        say(reason, err=chosen == "paths")
        return
    if chosen == "paths":
        sys.stdout.flush()
        sys.stdout.buffer.write(out.paths(results, raw=not sys.stdout.isatty(), separator=b"\0" if null else b"\n"))
        sys.stdout.buffer.flush()
    elif chosen == "tsv":
        say(out.tsv(results))
    else:
        say(out.table(results, shutil.get_terminal_size((100, 24)).columns))


def status(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    as_json: bool = flag("Print the status as JSON.", "--json"),
    errors: bool = flag("List every failed file with its reason.", "--errors"),
    verify: bool = flag("Check every block of every saved vector index against its checksum.", "--verify"),
) -> None:
    """Items per type, failures, models and their vector indexes, folders, and who is indexing.

    With --verify, exit code 1 when a saved index is damaged (searches then rebuild it from the
    catalog in memory until the next index run rewrites it)."""
    from xmodal.store.catalog import display_path

    with _existing(library) as lib:
        info = lib.status(verify=verify)
        failures = lib.errors() if errors else []
    if as_json:
        if errors:
            info["errors"] = [{"path": display_path(p), "reason": r} for p, r in failures]
        say(json.dumps(info, indent=2, ensure_ascii=False))
        _exit_if_damaged(info)
        return
    items = ", ".join(f"{n} {t}s" for t, n in info["items"].items())
    pending = sum(info["pending"].values())
    say(f"library {info['library']}: {items}; {info['failed']} failed" + (f"; {pending} pending" if pending else ""))
    if info["writer"]:
        say(f"  being indexed by {info['writer']}")
    for root in info["roots"]:
        state = "" if root["state"] == "online" else f" — OFFLINE: {root['reason']}"
        say(f"  folder {display_path(root['path'])}: {root['items']} items{state}")
    for m in info["models"]:
        idx = info["index"][m["key"]]
        state = "up to date" if idx["up_to_date"] else "searches catch up in memory until the next index run"
        say(
            f"  model {m['name']} ({m['precision']}, dim {m['dim']}): {m['embeddings']} embeddings; "
            f"index {idx['spec'] or idx['setting']} of {idx['size']} ({state})"
            + (f", {idx['search_params']}" if idx["search_params"] else "")
            + ("" if "verified" not in idx else "; verified" if idx["verified"] else f"; DAMAGED: {idx['problem']}")
        )
    tags = info.get("tags")
    if tags:
        state = "" if tags["finished"] and not tags["untagged"] else f"; {tags['untagged']} not tagged yet (xmodal tag)"
        say(
            f"  tags: {tags['tags']} on {tags['tagged']} photos, {tags['labels_given']} labels ({tags['threshold']}){state}"
        )
    if errors and not failures:
        say("no failed files")
    for path, reason in failures:
        say(f"{display_path(path)}: {reason}")
    _exit_if_damaged(info)


def _exit_if_damaged(info: dict) -> None:
    if any(idx.get("verified") is False for idx in info["index"].values()):
        raise typer.Exit(1)


def prune(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    offline: bool = flag("Also forget the items of offline folders.", "--offline"),
    wait: bool = flag("If another process is indexing this library, wait for it.", "--wait"),
) -> None:
    """Drop stored embeddings no file uses any more (kept so moved or re-added files cost no model
    work); with --offline, also forget folders that are offline (unmounted) and their items."""
    with _existing(library) as lib:
        done = lib.prune(offline=offline, wait=wait)
    say(f"forgot {done['items']} items of offline folders; dropped {done['embeddings']} unused embeddings")
