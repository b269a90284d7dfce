"""The `xmodal` command: one Typer app; each command is a thin wrapper over the Python API."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

import click
import typer
from typer.core import TyperGroup

import xmodal
from xmodal import settings
from xmodal.cli import signals
from xmodal.cli.console import EXIT_BUSY, EXIT_INTERRUPTED, EXIT_TERMINATED, error, flag
from xmodal.errors import LibraryBusyError, XmodalError

# Each command's module is imported only when that command runs (or --help lists them all): a
# search must not pay for the imports of eval, training or the server.
COMMANDS = {
    "models": "xmodal.cli.models:app",
    "index": "xmodal.cli.library:index",
    "search": "xmodal.cli.library:search",
    "status": "xmodal.cli.library:status",
    "prune": "xmodal.cli.library:prune",
    "tag": "xmodal.cli.tags:tag",
    "tags": "xmodal.cli.tags:app",
    "datasets": "xmodal.cli.datasets:app",
    "eval": "xmodal.cli.eval:evaluate",
    "zeroshot": "xmodal.cli.eval:zeroshot",
    "compare": "xmodal.cli.compare:compare",
    "train": "xmodal.cli.train:train",
    "demo": "xmodal.cli.demo:demo",
    "serve": "xmodal.cli.serve:serve",
    "embed-dataset": "xmodal.cli.scale:embed_dataset",
    "build-index": "xmodal.cli.scale:build_index",
}


class LazyCommands(TyperGroup):
    """The root group: sub-commands resolved from COMMANDS by name, their modules imported then."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        holder = typer.Typer(rich_markup_mode=None, add_completion=False)  # the root's settings
        if isinstance(found, typer.Typer):
            holder.add_typer(found, name=name)
        else:
            holder.command(name)(found)
        return typer.main.get_group(holder).commands[name]


app = typer.Typer(
    cls=LazyCommands,
    name="xmodal",
    help="Cross-modal retrieval: search photos, videos and documents by text or image, tag photos, benchmark, train and serve CLIP-family models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags as flags, values with their metavar, text wrapped to the terminal
)


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


def run() -> None:
    """The `xmodal` program: `main()`, then out without the interpreter's teardown. Everything a
    command writes is committed (catalog transactions, fsynced index files) before it returns, so
    all that is left is flushing the output; tearing down the loaded modules and threads would cost
    ~0.1 s on every command."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a closed pipe (`xmodal search ... | head`)
            pass
    logging.shutdown()
    os._exit(code)


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
        return EXIT_TERMINATED if signals.terminated() else EXIT_INTERRUPTED
    except XmodalError as exc:
        error(str(exc))
        return EXIT_BUSY if isinstance(exc, LibraryBusyError) else 1
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_TERMINATED if signals.terminated() else EXIT_INTERRUPTED
    return code if isinstance(code, int) else 0
