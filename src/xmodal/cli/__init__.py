"""The `xmodal` command: one Typer app; each command is a thin wrapper over the Python API."""

from __future__ import annotations

import logging
import os

import typer

from xmodal import settings
from xmodal.cli import datasets as datasets_cli
from xmodal.cli import demo as demo_cli
from xmodal.cli import eval as eval_cli
from xmodal.cli import library as library_cli
from xmodal.cli import models as models_cli
from xmodal.cli import scale as scale_cli
from xmodal.cli import serve as serve_cli
from xmodal.cli import signals
from xmodal.cli import train as train_cli
from xmodal.cli.console import err_console
from xmodal.errors import LibraryBusyError, XmodalError

app = typer.Typer(
    name="xmodal",
    help="Cross-modal retrieval: search photos and videos by text or image, benchmark, train and serve CLIP-family models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models_cli.app, name="models")
app.command("index")(library_cli.index)
app.command("search")(library_cli.search)
app.command("status")(library_cli.status)
app.command("prune")(library_cli.prune)
app.add_typer(datasets_cli.app, name="datasets")
app.command("eval")(eval_cli.evaluate)
app.command("zeroshot")(eval_cli.zeroshot)
app.command("train")(train_cli.train)
app.command("demo")(demo_cli.demo)
app.command("serve")(serve_cli.serve)
app.command("embed-dataset")(scale_cli.embed_dataset)
app.command("build-index")(scale_cli.build_index)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    settings.configure()  # XMODAL_* variables read (and a bad one refused) once, before any work


def main() -> None:
    """Console-script entry point: XmodalError becomes a one-line message and exit code 1."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signals.install()
    try:
        app()
    except XmodalError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(library_cli.EXIT_BUSY if isinstance(exc, LibraryBusyError) else 1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False, highlight=False)
        raise SystemExit(
            library_cli.EXIT_TERMINATED if signals.terminated() else library_cli.EXIT_INTERRUPTED
        ) from None
