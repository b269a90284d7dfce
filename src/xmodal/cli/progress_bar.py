"""The Rich progress bar behind `console.progress_bar` (imported only when a bar is drawn)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
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
def rich_progress(console: Console, count: int = 1) -> Iterator[tuple[RichProgressReporter, ...]]:
    """`count` live bars with items/s and ETA on `console`, one above the other."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecondColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=console) as bar:
        yield tuple(RichProgressReporter(bar) for _ in range(count))
