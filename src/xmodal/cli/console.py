"""Console helpers shared by the CLI commands: one Rich console, one message style, flags, and
progress bars.

Every message goes out as one line that the terminal may wrap but that is never broken by xmodal
(soft wrap), so a command inside a message stays copy-pastable; errors read `error: ...` (naming
the option when one is at fault: `error: --out: ...`), warnings `warning: ...`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

from xmodal.progress import NullProgress, Progress

if TYPE_CHECKING:
    from rich.console import Console

EXIT_BUSY = 75  # another process is indexing the library (sysexits' EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@cache
def _consoles() -> tuple[Console, Console]:
    """Rich's consoles (stdout, stderr), made on first use: Rich costs tens of milliseconds to
    import, which a plain `xmodal search` in a pipe never needs."""
    from rich.console import Console

    return Console(), Console(stderr=True)


def __getattr__(name: str) -> Console:
    if name in ("console", "err_console"):
        return _consoles()[name == "err_console"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def say(text: str, *, err: bool = False) -> None:
    """Plain text and a newline to stdout (or stderr), exactly as given: tables, paths, TSV (tabs
    stay tabs) and commands stay copy-pasteable (no markup, no wrapping)."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:  # a terminal that cannot show some character: escape it, never fail
        stream.flush()
        stream.buffer.write((text + "\n").encode(stream.encoding or "utf-8", "backslashreplace"))
    stream.flush()


def error(message: str, option: str | None = None) -> None:
    """`error: [--option: ]message` on stderr."""
    from rich.markup import escape

    where = f"{option}: " if option else ""
    _consoles()[1].print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """`warning: message` on stderr."""
    from rich.markup import escape

    _consoles()[1].print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def flag(help: str, *names: str, **kwargs: Any) -> Any:
    """A boolean option that is off unless given (`--quiet`), shown in --help as a plain flag."""
    return typer.Option(False, *names, help=help, metavar="", show_default=False, **kwargs)


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Progress]:
    """A progress reporter: a live bar on a terminal, silent when quiet or not a TTY."""
    with progress_bars(1, quiet) as (bar,):
        yield bar


@contextmanager
def progress_bars(count: int, quiet: bool = False) -> Iterator[tuple[Progress, ...]]:
    """`count` reporters drawn as bars one above the other (e.g. shards and items of one job)."""
    if quiet or not sys.stderr.isatty() or not _consoles()[1].is_terminal:
        yield tuple(NullProgress() for _ in range(count))
        return
    from xmodal.cli.progress_bar import rich_progress

    with rich_progress(_consoles()[1], count) as reporters:
        yield reporters
