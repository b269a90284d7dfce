"""`xmodal demo`: generate a small photo library, index it with the shipped model, search it."""

from __future__ import annotations

from pathlib import Path

import typer

from xmodal.cli.console import flag, progress_bar, say


def demo(
    out: Path = typer.Option(Path("xmodal-demo"), "--out", help="Folder for the generated photos and the library."),
    n: int = typer.Option(200, "--n", min=10, help="Number of photos to generate."),
    k: int = typer.Option(3, "-k", min=1, help="Results per search."),
    quiet: bool = flag("No progress bars.", "--quiet", "-q"),
) -> None:
    """Offline tour in under a minute: photos of coloured shapes, indexed with the shipped model
    xmodal-tiny-shapes and searched by text; the photos' annotations say which hits are right."""
    from xmodal.demo import DEMO_MODEL, run_demo
    from xmodal.store.catalog import display_path

    with progress_bar(quiet) as progress:
        report = run_demo(out, n=n, k=k, progress=progress)
    say(f"library {report.library}: {report.photos} photos indexed with {DEMO_MODEL}; {report.index.summary()}")
    for search in report.searches:
        say(f"\nsearch: {search.query}  ({search.relevant} photos of the library fit it)")
        for hit, right in zip(search.results, search.correct, strict=True):
            say(f"  {hit.rank:>2}  {hit.score:.3f}  {'right' if right else 'wrong':5}  {display_path(hit.path)}")
    right = sum(sum(s.correct) for s in report.searches)
    total = sum(len(s.correct) for s in report.searches)
    say(f"\n{right} of {total} hits are right by the photos' own annotations.")
    say(f'Try your own: xmodal search "a black cross at the bottom right" --library {report.library}')
    say(f"Search by example: xmodal search --image {report.searches[0].results[0].path} --library {report.library}")
    say("Index your photos: xmodal index ~/Pictures --model ViT-B-32__openai  (model weights: xmodal models pull)")
