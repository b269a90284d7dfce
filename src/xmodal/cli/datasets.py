"""`xmodal datasets synth-shapes`: generate datasets with known answers."""

from __future__ import annotations

from pathlib import Path

import typer

from xmodal.cli.console import console, flag, progress_bar
from xmodal.datasets import SynthConfig, generate_synth_shapes

app = typer.Typer(help="Generate datasets with known answers (for tests, demos and training).", no_args_is_help=True)


@app.command("synth-shapes")
def synth_shapes(
    out: Path = typer.Option(..., "--out", help="Folder to write images/, dataset_synth_shapes.json (and videos/)."),
    n: int = typer.Option(1000, "--n", help="Number of images (split 80/10/10 into train/val/test)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    videos: int = typer.Option(
        0,
        "--videos",
        help="Also write this many short H.264 videos (videos.jsonl); every fourth has a scene cut halfway.",
    ),
    image_size: int = typer.Option(128, "--image-size", help="Side of the square images in pixels."),
    quiet: bool = flag("No progress bar.", "--quiet", "-q"),
) -> None:
    """Captioned images of coloured shapes ("a small red circle at the top left"), Karpathy split JSON."""
    config = SynthConfig(n=n, seed=seed, videos=videos, image_size=image_size)
    with progress_bar(quiet) as progress:
        path = generate_synth_shapes(out, config, progress)
    console.print(f"wrote {n} images{f' and {videos} videos' if videos else ''}: karpathy:{path}", soft_wrap=True)
