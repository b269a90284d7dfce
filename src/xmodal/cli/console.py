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
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgress,
)
from rich.text import Text

from xmodal.progress import NullProgress, Progress

console = Console()
err_console = Console(stderr=True)


def say(text: str, *, err: bool = False) -> None:
    """Plain text to stdout (or stderr): tables, paths and commands stay copy-pasteable (no markup,
    no wrapping)."""
    (err_console if err else console).print(text, markup=False, highlight=False, soft_wrap=True)


def error(message: str, option: str | None = None) -> None:
    """`error: [--option: ]message` on stderr."""
    where = f"{option}: " if option else ""
    err_console.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """`warning: message` on stderr."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def flag(help: str, *names: str, **kwargs: Any) -> Any:
    """A boolean option that is off unless given (`--quiet`), shown in --help as a plain flag."""
    return typer.Option(False, *names, help=help, metavar="", show_default=False, **kwargs)


class ItemsPerSecondColumn(ProgressColumn):
    """Throughput in items per second (Rich only ships a bytes/s column)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f} items/s" if task.speed else "", style="cyan")


class RichProgressReporter:
    """xmodal.progress.Progress drawn as a Rich bar with items/s and ETA."""

    def __init__(self, progress: RichProgress):
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Progress]:
    """A progress reporter: a live bar on a terminal, silent when quiet or not a TTY."""
    with progress_bars(1, quiet) as (bar,):
        yield bar


@contextmanager
def progress_bars(count: int, quiet: bool = False) -> Iterator[tuple[Progress, ...]]:
    """`count` reporters drawn as bars one above the other (e.g. shards and items of one job)."""
    if quiet or not err_console.is_terminal or not sys.stderr.isatty():
        yield tuple(NullProgress() for _ in range(count))
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecondColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=err_console) as bar:
        yield tuple(RichProgressReporter(bar) for _ in range(count))
