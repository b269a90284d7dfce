"""`xmodal tag` (zero-shot tags for a library's photos) and `xmodal tags list`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from xmodal.cli.console import flag, progress_bar, say
from xmodal.cli.library import LIBRARY_HELP, _existing

app = typer.Typer(help="The zero-shot tags of a library.", no_args_is_help=True)


def tag(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    vocabulary: Path = typer.Option(
        None,
        "--vocabulary",
        help="Labels: a text file (one per line) or JSON (labels, or groups with their own templates); "
        "default: ImageNet's 1,000 classes plus scenes and events.",
    ),
    extend: bool = flag("Add the --vocabulary labels to the default ones.", "--extend"),
    templates: str = typer.Option(
        None, "--templates", help="Prompt templates for every label: imagenet (CLIP's 80), simple, or a JSON file."
    ),
    threshold: str = typer.Option(
        "auto",
        "--threshold",
        help="auto: calibrated on this library; off: the top label of each group; or a cosine for every label.",
    ),
    confidence: float = typer.Option(
        None, "--confidence", help="With auto: how sure a tag must be, 0.5-0.99 (default 0.9)."
    ),
    recalibrate: bool = flag("Calibrate again and tag everything again.", "--recalibrate"),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Photos committed at a time."),
    model: str = typer.Option(None, "--model", "-m", help="Which of the library's models (default: the last used)."),
    no_cache: bool = flag("Embed the prompts again (no embedding cache).", "--no-cache"),
    wait: bool = flag("If another process is writing this library, wait for it.", "--wait"),
    quiet: bool = flag("No progress bar.", "--quiet", "-q"),
) -> None:
    """Zero-shot tags for the photos and videos of a library: labels whose score passes a
    threshold calibrated on the library itself (no tag is better than a wrong one). Run again
    after indexing: only new photos are tagged, unless the model, vocabulary or thresholds changed.
    Exit codes as for index (75 busy, 130 interrupted; the tags committed are kept)."""
    from xmodal.cli.eval import _cache

    if extend and vocabulary is None:
        raise typer.BadParameter("--extend needs --vocabulary")
    with _existing(library) as lib, _cache(no_cache, None) as cache, progress_bar(quiet) as progress:
        report = lib.tag(
            vocabulary,
            model,
            templates=templates,
            extend=extend,
            threshold=threshold,
            confidence=confidence,
            recalibrate=recalibrate,
            batch_size=batch_size,
            cache=cache,
            progress=progress,
            wait=wait,
        )
    left = len(report.left_out)
    if left:
        say(f"{left} labels not in use: their scores do not single out a group of photos (xmodal tags list --json)")
    say(report.summary())
    if report.interrupted:
        from xmodal.cli.library import EXIT_INTERRUPTED, EXIT_TERMINATED, _terminated

        say("interrupted: the tags committed so far are kept; run the same command to finish", err=True)
        raise typer.Exit(EXIT_TERMINATED if _terminated() else EXIT_INTERRUPTED)


@app.command("list")
def list_tags(
    library: Path = typer.Option(None, "--library", "-l", help=LIBRARY_HELP),
    as_json: bool = flag("Print as JSON (with the run's settings).", "--json"),
) -> None:
    """Each tag with the number of items carrying it, most frequent first."""
    with _existing(library) as lib:
        info = lib.tags()
    if as_json:
        say(json.dumps(info, indent=2, ensure_ascii=False))
        return
    run = info["run"]
    if run is None:
        say("no tags yet: xmodal tag")
        return
    state = "finished" if run["finished_at"] else "unfinished (run xmodal tag again)"
    say(
        f"tags by {run['model']} from {run['vocabulary']} ({run['labels_used']} of {run['labels']} labels in use, "
        f"threshold {run['threshold']}, {state}): {info['tagged']} photos tagged, {info['untagged']} waiting"
    )
    width = max((len(c["label"]) for c in info["counts"]), default=5)
    for count in info["counts"]:
        say(f"  {count['label'].ljust(width)}  {count['items']}")
