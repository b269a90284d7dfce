"""The `xmodal` command: one Typer app; each command is a thin wrapper over the Python API."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import typer

import xmodal
from xmodal import settings
from xmodal.cli import compare as compare_cli
from xmodal.cli import datasets as datasets_cli
from xmodal.cli import demo as demo_cli
from xmodal.cli import eval as eval_cli
from xmodal.cli import library as library_cli
from xmodal.cli import models as models_cli
from xmodal.cli import scale as scale_cli
from xmodal.cli import serve as serve_cli
from xmodal.cli import signals
from xmodal.cli import tags as tags_cli
from xmodal.cli import train as train_cli
from xmodal.cli.console import error, flag
from xmodal.errors import LibraryBusyError, XmodalError

app = typer.Typer(
    name="xmodal",
    help="Cross-modal retrieval: search photos, videos and documents by text or image, tag photos, benchmark, train and serve CLIP-family models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags as flags, values with their metavar, text wrapped to the terminal
)
app.add_typer(models_cli.app, name="models")
app.command("index")(library_cli.index)
app.command("search")(library_cli.search)
app.command("status")(library_cli.status)
app.command("prune")(library_cli.prune)
app.command("tag")(tags_cli.tag)
app.add_typer(tags_cli.app, name="tags")
app.add_typer(datasets_cli.app, name="datasets")
app.command("eval")(eval_cli.evaluate)
app.command("zeroshot")(eval_cli.zeroshot)
app.command("compare")(compare_cli.compare)
app.command("train")(train_cli.train)
app.command("demo")(demo_cli.demo)
app.command("serve")(serve_cli.serve)
app.command("embed-dataset")(scale_cli.embed_dataset)
app.command("build-index")(scale_cli.build_index)


class _MessageFormatter(logging.Formatter):
    """`warning: message` (the level in lower case, no module names): the CLI's one message style."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (not the one at setup)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_MessageFormatter())

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _version(show: bool) -> None:
    if show:
        typer.echo(f"xmodal {xmodal.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = flag("Log progress details to stderr.", "--verbose", "-v"),
    version: bool = flag("Print the version and exit.", "--version", callback=_version, is_eager=True),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[_StderrHandler()], force=True)
    settings.configure()  # XMODAL_* variables read (and a bad one refused) once, before any work


def _usage_message(exc: typer.TyperException) -> tuple[str, str | None]:
    """(message, option at fault) of a command-line mistake, in xmodal's own words."""
    if isinstance(exc, typer.BadParameter):
        hint = exc.param_hint if isinstance(exc.param_hint, str) else None
        if hint is None and exc.param is not None:
            hint = exc.param.opts[0] if exc.param.param_type_name == "option" else exc.param.human_readable_name
        message = exc.message.removeprefix("Value error, ") or "is required"  # MissingParameter has none
        return message, hint
    return exc.format_message(), None


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point. Every error is one `error: ...` line on stderr (naming the
    option when one is at fault); exit codes: 0 done, 1 failed, 2 command-line mistake, 130 Ctrl-C."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signals.install()
    try:
        code = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except typer.TyperException as exc:  # a command-line mistake (typer's UsageError family)
        message, option = _usage_message(exc)
        ctx = getattr(exc, "ctx", None)
        if option is None and ctx is not None:
            message += f" (see {ctx.command_path} --help)"
        error(message, option)
        return exc.exit_code
    except typer.Abort:
        error("interrupted")
        return library_cli.EXIT_TERMINATED if signals.terminated() else library_cli.EXIT_INTERRUPTED
    except XmodalError as exc:
        error(str(exc))
        return library_cli.EXIT_BUSY if isinstance(exc, LibraryBusyError) else 1
    except KeyboardInterrupt:
        error("interrupted")
        return library_cli.EXIT_TERMINATED if signals.terminated() else library_cli.EXIT_INTERRUPTED
    return code if isinstance(code, int) else 0
