"""Progress reporting without printing: library code reports to a Progress; the CLI draws it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of one long job; implementations decide how (or whether) to show it."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    """Reports nowhere: the default for library calls."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass
