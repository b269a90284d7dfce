"""Bounded parallel map: decode ahead of the model without holding a whole folder in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], args: Iterable[T], ahead: int) -> Iterator[R]:
    """`pool.map(fn, args)` in order, but with at most `ahead` tasks in flight (bounded memory)."""
    pending: deque[Future[R]] = deque()
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
